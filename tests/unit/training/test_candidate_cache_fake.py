"""The in-memory Candidate Cache keeps the Redis publish semantics other tests rely on."""

from __future__ import annotations

import pytest
from recpipe_dev.testing.fakes_candidates import InMemoryCandidateCache


def test_interrupted_publish_is_invisible_and_rerun_completes() -> None:
    cache = InMemoryCandidateCache(fail_after=1)
    with pytest.raises(ConnectionError):
        cache.publish("v1", [("u1", [("i1", 1.0)]), ("u2", [("i2", 0.5)])], {})
    assert cache.current_version() is None
    assert cache.get("u1") == []

    cache.fail_after = None
    assert cache.publish("v1", [("u1", [("i1", 1.0)]), ("u2", [("i2", 0.5)])], {}) == 2
    assert cache.get("u2") == [("i2", 0.5)]
    assert cache.publish("v1", [("u1", [("other", 1.0)])], {}) == 0
    assert cache.get("u1") == [("i1", 1.0)]


def test_switch_marks_previous_version_expiring() -> None:
    cache = InMemoryCandidateCache()
    cache.publish("v1", [("u1", [("a", 1.0)])], {})
    cache.publish("v2", [("u1", [("b", 1.0)])], {})
    assert cache.current_version() == "v2"
    assert cache.expired == ["v1"]
