"""`recpipe local up|down|status`: real redis-server and moto server processes, template resources."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from recpipe_dev.local.stack import AlreadyRunning, LocalStack, LocalStackError, aws_session, redis_ping


@pytest.fixture()
def stack(tmp_path: Path) -> Iterator[LocalStack]:
    s = LocalStack(tmp_path / "state")
    s.start()
    yield s
    s.stop()


def _cli(*args: str, state_dir: Path, path: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "RECPIPE_STATE_DIR": str(state_dir)}
    env.pop("REDIS_URL", None)
    if path is not None:
        env["PATH"] = path
    return subprocess.run(
        [sys.executable, "-m", "recpipe_dev.cli", "local", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def test_up_creates_the_template_resources_in_moto_and_a_live_redis(stack: LocalStack) -> None:
    state = stack.state
    assert state is not None
    assert redis_ping(state.redis_url)
    session = aws_session(state.moto_url)
    table = session.client("dynamodb").describe_table(TableName=state.resources["UserFeaturesTable"])["Table"]
    assert table["KeySchema"] == [{"AttributeName": "user_id", "KeyType": "HASH"}]
    ttl = session.client("dynamodb").describe_time_to_live(TableName=state.resources["UserFeaturesTable"])
    assert ttl["TimeToLiveDescription"]["AttributeName"] == "expires_at"
    stream = session.client("kinesis").describe_stream_summary(StreamName=state.resources["EventStream"])
    assert stream["StreamDescriptionSummary"]["StreamStatus"] == "ACTIVE"
    session.client("s3").head_bucket(Bucket=state.resources["ModelArtifactsBucket"])
    pointer = session.client("ssm").get_parameter(Name=state.resources["ModelPointerParameter"])
    assert pointer["Parameter"]["Name"] == "/recpipe/local/model/current"
    assert pointer["Parameter"]["Value"] == "none"  # no model promoted yet, as deployed
    # The environment handed to the handlers names exactly these resources.
    assert state.environment["USER_FEATURES_TABLE"] == state.resources["UserFeaturesTable"]
    assert state.environment["AWS_ENDPOINT_URL"] == state.moto_url
    assert all(ok for ok, _ in stack.health(state).values())


def test_a_second_up_is_refused_while_one_runs(stack: LocalStack) -> None:
    other = LocalStack(stack.state_dir)
    with pytest.raises(AlreadyRunning, match="already running"):
        other.start()
    # The refusal left the running stack alone.
    assert stack.state is not None and redis_ping(stack.state.redis_url)


def test_stop_ends_both_processes_and_removes_the_state_file(tmp_path: Path) -> None:
    s = LocalStack(tmp_path)
    state = s.start()
    s.stop()
    assert not s.state_path.exists()
    assert not redis_ping(state.redis_url, timeout=0.3)
    assert s.running() is None


def test_cli_up_status_down_round_trip(tmp_path: Path) -> None:
    up = _cli("up", state_dir=tmp_path)
    try:
        assert up.returncode == 0, up.stderr
        assert "export REDIS_URL=redis://127.0.0.1:" in up.stdout
        assert "UserFeaturesTable" in up.stdout
        status = _cli("status", state_dir=tmp_path)
        assert status.returncode == 0, status.stdout
        assert "ok   redis" in status.stdout and "ok   EventStream" in status.stdout
        again = _cli("up", state_dir=tmp_path)
        assert again.returncode == 2 and "already running" in again.stderr
    finally:
        down = _cli("down", state_dir=tmp_path)
    assert down.returncode == 0 and "stopped" in down.stdout
    after = _cli("status", state_dir=tmp_path)
    assert after.returncode == 1 and "not running" in after.stdout


def test_cli_refuses_clearly_without_redis_server(tmp_path: Path) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    result = _cli("up", state_dir=tmp_path / "state", path=str(empty))
    assert result.returncode == 2
    assert "redis-server was not found" in result.stderr and "apt-get install redis-server" in result.stderr
    assert not (tmp_path / "state" / "local.json").exists()


def test_external_redis_url_that_does_not_answer_is_refused(tmp_path: Path) -> None:
    s = LocalStack(tmp_path, redis_url="redis://127.0.0.1:1/0")
    with pytest.raises(LocalStackError, match="does not answer"):
        s.start()
