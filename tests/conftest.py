"""Shared fixtures. Markers are applied by folder: tests/unit -> unit (sockets disabled),
tests/integration -> integration, tests/e2e -> e2e, tests/infra -> infra."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
EVENTS_DIR = ROOT / "events"
DATASET_DIR = ROOT.parent / "shared" / "datasets" / "ml-latest-small"

_FOLDER_MARKERS = {"unit": "unit", "integration": "integration", "e2e": "e2e", "infra": "infra"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        parts = Path(str(item.fspath)).relative_to(ROOT / "tests").parts
        marker = _FOLDER_MARKERS.get(parts[0]) if parts else None
        if marker:
            item.add_marker(getattr(pytest.mark, marker))


@pytest.fixture(autouse=True)
def _aws_test_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Never reach real AWS from a test, whatever the developer's shell has configured."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.setenv("POWERTOOLS_TRACE_DISABLED", "true")
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", "recpipe-test")
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", "recpipe")
    # What template.yaml gives the functions, with test names; tests override what they exercise.
    from recpipe_dev.testing.settings import FUNCTION_ENV

    for name, value in FUNCTION_ENV.items():
        if name not in os.environ:
            monkeypatch.setenv(name, value)


@pytest.fixture(autouse=True)
def _served_version() -> Iterator[None]:
    """Each test starts outside any request (recpipe.ports.SERVED_VERSION is per context, and a
    test's requests would otherwise leave theirs to the next test in the same thread)."""
    from recpipe.ports import SERVED_VERSION

    token = SERVED_VERSION.set(None)
    yield
    SERVED_VERSION.reset(token)


def load_event(name: str) -> dict[str, Any]:
    """A sample payload from events/ (the same files `sam local invoke -e` uses)."""
    return json.loads((EVENTS_DIR / name).read_text())


@pytest.fixture(scope="session")
def dataset_dir() -> Path:
    if not (DATASET_DIR / "ratings.csv").is_file():
        pytest.skip(f"MovieLens data not found at {DATASET_DIR}")
    return DATASET_DIR


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A throw-away redis-server on a free port (REDIS_TEST_URL overrides)."""
    url = os.environ.get("REDIS_TEST_URL")
    if url:
        yield url
        return
    from recpipe_dev.local.redis_server import RedisServer

    with RedisServer(tmp_path_factory.mktemp("redis")) as server:
        yield server.url


@pytest.fixture()
def redis_url(redis_server: str) -> Iterator[str]:
    import redis

    client = redis.Redis.from_url(redis_server)
    client.flushdb()
    yield redis_server
    client.flushdb()
    client.close()


@pytest.fixture()
def aws() -> Iterator[None]:
    """In-process moto for every AWS service."""
    from moto import mock_aws

    with mock_aws():
        yield
