"""CandidateRestorer: one restore at a time across instances, never raising, throttled."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from recpipe.ports import DependencyError
from recpipe.serving.candidate_restore import CandidateRestorer


class Cache:
    def __init__(self) -> None:
        self.locked = False
        self.published: dict[str, dict[str, list[tuple[str, float]]]] = {}
        self.fail: Exception | None = None

    def try_lock(self, ttl_s: int) -> bool:
        if self.locked:
            return False
        self.locked = True
        return True

    def unlock(self) -> None:
        self.locked = False

    def publish(
        self,
        version: str,
        lists: Iterable[tuple[str, Sequence[tuple[str, float]]]],
        meta: Mapping[str, object],
    ) -> int:
        if self.fail is not None:
            raise self.fail
        self.published[version] = {u: list(p) for u, p in lists}
        return len(self.published[version])


LISTS = [("u1", [("i1", 0.9)]), ("u2", [("i2", 0.8)])]


def test_the_served_bundle_lists_are_published_under_its_version() -> None:
    cache, events = Cache(), []
    r = CandidateRestorer(cache, lambda: ("v7", iter(LISTS)), on_event=lambda e, d: events.append(e))
    assert r.restore_now() is True
    assert cache.published == {"v7": {"u1": [("i1", 0.9)], "u2": [("i2", 0.8)]}} and not cache.locked
    assert events == ["candidate_cache_restored"] and r.stats.lists_written == 2


def test_another_instance_holding_the_lock_restores_instead() -> None:
    cache = Cache()
    cache.locked = True
    r = CandidateRestorer(cache, lambda: ("v7", iter(LISTS)))
    assert r.restore_now() is False and cache.published == {}


def test_a_failed_restore_is_reported_releases_the_lock_and_never_raises() -> None:
    cache, events = Cache(), []
    cache.fail = DependencyError("redis: connection refused")
    r = CandidateRestorer(cache, lambda: ("v7", iter(LISTS)), on_event=lambda e, d: events.append(e))
    assert r.restore_now() is False
    assert events == ["candidate_restore_failed"] and "connection refused" in (r.stats.last_error or "")
    assert not cache.locked


def test_a_bundle_without_lists_says_so() -> None:
    r = CandidateRestorer(Cache(), lambda: None)
    assert r.restore_now() is False and "no candidate lists" in (r.stats.last_error or "")


def test_triggers_from_many_requests_start_one_attempt_per_retry_period() -> None:
    now = [0.0]
    calls = []

    def lists_of() -> None:
        calls.append(now[0])

    r = CandidateRestorer(Cache(), lists_of, retry_after_s=5.0, clock=lambda: now[0])
    r.restore_now()
    for t in (1.0, 2.0, 4.9):
        now[0] = t
        r.trigger()
    assert len(calls) == 1
    now[0] = 5.0
    r.trigger()
    import time

    deadline = time.monotonic() + 2
    while len(calls) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert calls == [0.0, 5.0]
