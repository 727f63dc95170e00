"""The local stack's state file and shell export lines."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
from recpipe_dev.local.stack import LocalStack, LocalStackError, StackState, export_lines


def test_state_round_trips_through_json() -> None:
    state = StackState(
        env_name="local",
        redis_url="redis://127.0.0.1:1234/0",
        redis_pid=10,
        moto_url="http://127.0.0.1:5000",
        moto_pid=11,
        resources={"EventStream": "recpipe-local-eventstream"},
        environment={"REDIS_URL": "redis://127.0.0.1:1234/0"},
    )
    assert StackState.from_json(state.to_json()) == state


def test_export_lines_are_shell_safe() -> None:
    text = export_lines({"B": "two words", "A": "x'y"})
    lines = text.splitlines()
    assert lines[0].startswith("export A=")
    assert shlex.split(lines[1]) == ["export", "B=two words"]


def test_a_corrupt_state_file_is_reported_not_ignored(tmp_path: Path) -> None:
    (tmp_path / "local.json").write_text("{not json")
    with pytest.raises(LocalStackError, match="not a recpipe state file"):
        LocalStack(tmp_path).read_state()


def test_a_stale_state_file_is_not_a_running_stack(tmp_path: Path) -> None:
    stale = StackState("local", "redis://x:1/0", 2**22 + 12345, "http://x:1", None, {}, {})
    (tmp_path / "local.json").write_text(stale.to_json())
    assert LocalStack(tmp_path).running() is None
