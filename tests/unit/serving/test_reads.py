"""The per-request reads: concurrent, each under a deadline, failures degrade instead of raise."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from recpipe.domain.user import UserFeatures
from recpipe.ports import DependencyError, SessionEntry
from recpipe.serving.reads import Bulkhead, CircuitBreakers, DeadlineRunner, RequestReader, TrendingCache
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


def test_a_failing_read_is_skipped_after_a_few_misses_and_probed_off_the_request_path() -> None:
    """Once a dependency has missed the deadline a few times in a row, requests stop waiting
    for it (and stop opening connections to it); one background probe per interval checks
    whether it is back, and the first answer within the deadline closes the breaker."""
    pool = ThreadPoolExecutor(max_workers=8)
    clock = [0.0]
    breakers = CircuitBreakers(threshold=3, open_s=0.5, clock=lambda: clock[0])
    runner = DeadlineRunner(pool, Bulkhead(8), breakers)
    slow = threading.Event()  # set: the dependency answers at once
    calls: list[float] = []

    def read() -> str:
        calls.append(clock[0])
        if not slow.is_set():
            time.sleep(0.05)
        return "ok"

    for _ in range(3):
        _, failures = runner.gather({"session": read}, 0.01)
        assert failures["session"].startswith("timed out")
    time.sleep(0.15)  # the late calls end and are recorded as misses
    assert len(calls) == 3
    t0 = time.perf_counter()
    for _ in range(20):
        _, failures = runner.gather({"session": read}, 0.01)
        assert failures["session"].startswith("circuit open")
    assert time.perf_counter() - t0 < 0.05, "skipped reads do not wait out the deadline"
    assert len(calls) == 3, "no call reaches the failing dependency while the breaker is open"

    clock[0] = 0.6  # the interval is over: the next request starts a probe, without waiting
    slow.set()
    t0 = time.perf_counter()
    _, failures = runner.gather({"session": read}, 0.01)
    assert failures["session"] == "circuit open, probing"
    assert time.perf_counter() - t0 < 0.01
    time.sleep(0.05)
    assert len(calls) == 4
    results, failures = runner.gather({"session": read}, 0.01)
    assert results == {"session": "ok"} and failures == {}, "the probe's answer closed the breaker"
    pool.shutdown(wait=True)


def test_a_failed_probe_keeps_the_breaker_open_for_another_interval() -> None:
    pool = ThreadPoolExecutor(max_workers=4)
    clock = [0.0]
    runner = DeadlineRunner(
        pool, Bulkhead(4), CircuitBreakers(threshold=1, open_s=0.5, clock=lambda: clock[0])
    )

    def broken() -> None:
        raise DependencyError("redis: connection refused")

    runner.gather({"trending": broken}, 0.05)
    clock[0] = 0.6
    assert runner.gather({"trending": broken}, 0.05)[1]["trending"] == "circuit open, probing"
    time.sleep(0.02)
    clock[0] = 0.7
    assert runner.gather({"trending": broken}, 0.05)[1]["trending"].startswith("circuit open after")
    clock[0] = 1.2
    assert runner.gather({"trending": broken}, 0.05)[1]["trending"] == "circuit open, probing"
    pool.shutdown(wait=True)


def test_health_probes_bypass_the_breakers() -> None:
    pool = ThreadPoolExecutor(max_workers=2)
    runner = DeadlineRunner(pool, Bulkhead(2), CircuitBreakers(threshold=1, open_s=60.0))

    def broken() -> None:
        raise DependencyError("down")

    runner.gather({"candidate_cache": broken}, 0.05)
    assert runner.gather({"candidate_cache": lambda: 1}, 0.05)[1]["candidate_cache"].startswith(
        "circuit open"
    )
    assert runner.gather({"candidate_cache": lambda: 1}, 0.05, guarded=False) == ({"candidate_cache": 1}, {})
    pool.shutdown(wait=True)


def test_a_probe_may_take_longer_than_a_read_as_it_reconnects_first() -> None:
    pool = ThreadPoolExecutor(max_workers=2)
    clock = [0.0]
    runner = DeadlineRunner(
        pool, Bulkhead(2), CircuitBreakers(threshold=1, open_s=0.5, clock=lambda: clock[0])
    )

    def broken() -> None:
        raise DependencyError("redis: connection reset")

    def reconnecting() -> str:
        time.sleep(0.03)  # a new connection's handshake: 1.5 deadlines
        return "ok"

    runner.gather({"session": broken}, 0.02)
    clock[0] = 0.6
    assert runner.gather({"session": reconnecting}, 0.02)[1]["session"] == "circuit open, probing"
    time.sleep(0.1)
    assert runner.gather({"session": lambda: "ok"}, 0.02) == ({"session": "ok"}, {}), "closed"
    pool.shutdown(wait=True)
