"""The per-request reads: concurrent, each under a deadline, failures degrade instead of raise."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from recpipe.domain.user import UserFeatures
from recpipe.ports import DependencyError, SessionEntry
from recpipe.serving.reads import Bulkhead, DeadlineRunner, RequestReader, TrendingCache
from recpipe_dev.testing.fakes_candidates import InMemoryCandidateCache
from recpipe_dev.testing.fakes_stream import (
    InMemorySessionStore,
    InMemoryTrendingStore,
    InMemoryUserFeatureStore,
)


class SlowUsers(InMemoryUserFeatureStore):
    def __init__(self, delay_s: float, release: threading.Event) -> None:
        super().__init__()
        self.delay_s = delay_s
        self.release = release

    def get(self, user_id: str) -> UserFeatures | None:
        self.release.wait(self.delay_s)
        return super().get(user_id)


@pytest.fixture()
def runner() -> Iterator[DeadlineRunner]:
    pool = ThreadPoolExecutor(max_workers=8)
    yield DeadlineRunner(pool, Bulkhead(2))
    pool.shutdown(wait=False, cancel_futures=True)


def stores() -> tuple[InMemoryCandidateCache, InMemorySessionStore, InMemoryTrendingStore]:
    cache = InMemoryCandidateCache()
    cache.publish("v1", [("u1", [("a", 0.9), ("b", 0.5)])], {})
    sessions = InMemorySessionStore()
    sessions.append("u1", [SessionEntry("c", "view", 1_700_000_000.0)])
    return cache, sessions, InMemoryTrendingStore()


def test_all_reads_succeed_and_an_unknown_user_is_not_a_failure(runner: DeadlineRunner) -> None:
    cache, sessions, trending = stores()
    reader = RequestReader(
        runner, candidates=cache, sessions=sessions, users=InMemoryUserFeatureStore(),
        trending=TrendingCache(trending), timeout_s=1.0,
    )  # fmt: skip
    reads = reader.read("u1", 1_700_000_001.0, budget_s=1.0)
    assert reads.candidates == [("a", 0.9), ("b", 0.5)]
    assert [e.item_id for e in reads.session or []] == ["c"]
    assert reads.user is None and reads.trending == []
    assert reads.degraded == []


def test_a_slow_read_degrades_within_its_timeout(runner: DeadlineRunner) -> None:
    cache, sessions, trending = stores()
    release = threading.Event()
    reader = RequestReader(
        runner, candidates=cache, sessions=sessions, users=SlowUsers(5.0, release),
        trending=TrendingCache(trending), timeout_s=0.05,
    )  # fmt: skip
    t0 = time.perf_counter()
    reads = reader.read("u1", 1_700_000_001.0, budget_s=1.0)
    elapsed = time.perf_counter() - t0
    release.set()
    assert reads.degraded == ["user_features"]
    assert "timed out after 50 ms" in reads.failures["user_features"]
    assert reads.candidates == [("a", 0.9), ("b", 0.5)], "the other reads are kept"
    assert elapsed < 0.5


def test_the_overall_budget_caps_the_read_timeout(runner: DeadlineRunner) -> None:
    release = threading.Event()
    reader = RequestReader(
        runner, candidates=None, sessions=None, users=SlowUsers(5.0, release), trending=None, timeout_s=5.0
    )
    t0 = time.perf_counter()
    reads = reader.read("u1", 0.0, budget_s=0.03)
    release.set()
    assert time.perf_counter() - t0 < 0.5
    assert set(reads.degraded) == {"candidate_cache", "session", "user_features", "trending"}
    assert reads.failures["session"] == "not configured"


def test_failing_dependencies_are_reported_not_raised(runner: DeadlineRunner) -> None:
    cache, sessions, trending = stores()
    sessions.fail_with = DependencyError("redis: connection refused")
    trending.fail_with = DependencyError("redis: connection refused")
    users = InMemoryUserFeatureStore()
    reader = RequestReader(
        runner,
        candidates=cache,
        sessions=sessions,
        users=users,
        trending=TrendingCache(trending),
        timeout_s=1.0,
    )
    reads = reader.read("u1", 0.0, budget_s=1.0)
    assert reads.degraded == ["session", "trending"]
    assert "connection refused" in reads.failures["session"]
    assert reads.candidates and reads.session is None


def test_bulkhead_skips_a_dependency_with_too_many_calls_in_flight(runner: DeadlineRunner) -> None:
    release = threading.Event()
    reader = RequestReader(
        runner, candidates=None, sessions=None, users=SlowUsers(5.0, release), trending=None, timeout_s=0.01
    )
    for _ in range(2):  # two hung calls fill the bulkhead (limit 2)
        assert reader.read("u1", 0.0, budget_s=1.0).failures["user_features"].startswith("timed out")
    t0 = time.perf_counter()
    reads = reader.read("u1", 0.0, budget_s=1.0)
    assert reads.failures["user_features"] == "too many calls in flight"
    assert time.perf_counter() - t0 < 0.01
    release.set()


def test_trending_is_read_once_per_ttl() -> None:
    trending = InMemoryTrendingStore()
    calls = []
    real_top = trending.top

    def counting_top(now: float, n: int) -> list[tuple[str, float]]:
        calls.append(now)
        return real_top(now, n)

    trending.top = counting_top  # type: ignore[method-assign]
    clock = [0.0]
    cache = TrendingCache(trending, ttl_s=1.0, clock=lambda: clock[0])
    cache.top(1.0, 10)
    cache.top(1.0, 10)
    clock[0] = 1.5
    cache.top(2.0, 10)
    assert len(calls) == 2


def test_a_call_cancelled_before_it_started_frees_its_bulkhead_slot() -> None:
    pool = ThreadPoolExecutor(max_workers=1)
    gate = threading.Event()
    pool.submit(gate.wait)  # the only worker is busy: the next calls stay queued
    runner = DeadlineRunner(pool, Bulkhead(1))
    for _ in range(3):
        _, failures = runner.gather({"users": lambda: None}, 0.01)
        assert failures["users"].startswith("timed out"), "not 'too many calls in flight'"
    gate.set()
    pool.shutdown(wait=True)


def test_no_budget_left_means_no_call(runner: DeadlineRunner) -> None:
    called = []
    results, failures = runner.gather({"content_index": lambda: called.append(1)}, -0.004)
    assert results == {} and failures == {"content_index": "request budget exhausted"} and not called
