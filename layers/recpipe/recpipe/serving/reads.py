"""The per-request reads, issued concurrently, each under its own deadline.

A read that raises, times out or whose dependency already has too many calls in flight is
reported as degraded and the request goes on without it: a slow dependency costs at most the
read timeout, never the request.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass, field
from typing import Any, TypeVar

from recpipe.domain.user import UserFeatures
from recpipe.ports import CandidateCache, SessionEntry, SessionStore, TrendingStore, UserFeatureStore

T = TypeVar("T")

#: Names used in the response's `degraded` list and in metrics.
CANDIDATE_CACHE = "candidate_cache"
SESSION = "session"
USER_FEATURES = "user_features"
TRENDING = "trending"
CONTENT_INDEX = "content_index"

SESSION_LIMIT = 20
TRENDING_LIMIT = 100


@dataclass(slots=True)
class Reads:
    """What the request learned from the outside world; None = not available (degraded)."""

    candidates: list[tuple[str, float]] | None = None
    session: list[SessionEntry] | None = None
    user: UserFeatures | None = None
    trending: list[tuple[str, float]] | None = None
    degraded: list[str] = field(default_factory=list)
    #: Why each degraded read failed (logged, never returned to clients).
    failures: dict[str, str] = field(default_factory=dict)


class Bulkhead:
    """Caps calls in flight per dependency: a hung dependency cannot fill the thread pool."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._lock = threading.Lock()
        self._inflight: dict[str, int] = {}

    def acquire(self, name: str) -> bool:
        with self._lock:
            n = self._inflight.get(name, 0)
            if n >= self.limit:
                return False
            self._inflight[name] = n + 1
            return True

    def release(self, name: str) -> None:
        with self._lock:
            self._inflight[name] = self._inflight.get(name, 1) - 1


class DeadlineRunner:
    """Runs named calls on a shared pool and collects those finished by a deadline."""

    def __init__(self, executor: ThreadPoolExecutor, bulkhead: Bulkhead) -> None:
        self.executor = executor
        self.bulkhead = bulkhead

    def submit(self, name: str, fn: Callable[[], Any]) -> Future[Any] | None:
        if not self.bulkhead.acquire(name):
            return None

        def call() -> Any:
            try:
                return fn()
            finally:
                self.bulkhead.release(name)

        return self.executor.submit(call)

    def gather(
        self, calls: dict[str, Callable[[], Any]], timeout_s: float
    ) -> tuple[dict[str, Any], dict[str, str]]:
        """Results by name, and the reason for every call that did not produce one in time."""
        futures: dict[str, Future[Any]] = {}
        failures: dict[str, str] = {}
        if timeout_s <= 0:  # the request's budget is spent: do not even start the calls
            return {}, dict.fromkeys(calls, "request budget exhausted")
        for name, fn in calls.items():
            fut = self.submit(name, fn)
            if fut is None:
                failures[name] = "too many calls in flight"
            else:
                futures[name] = fut
        if futures:
            wait_futures(futures.values(), timeout=timeout_s)
        results: dict[str, Any] = {}
        for name, fut in futures.items():
            if not fut.done():
                if fut.cancel():  # queued, never started: it will not release its slot itself
                    self.bulkhead.release(name)
                failures[name] = f"timed out after {timeout_s * 1000:.0f} ms"
                continue
            exc = fut.exception()
            if exc is not None:
                failures[name] = f"{type(exc).__name__}: {exc}"[:300]
            else:
                results[name] = fut.result()
        return results, failures


class TrendingCache:
    """Trending is global: one read per container every `ttl_s` instead of one per request."""

    def __init__(self, store: TrendingStore, ttl_s: float = 1.0, clock: Callable[[], float] = time.monotonic):
        self.store = store
        self.ttl_s = ttl_s
        self.clock = clock
        self._value: list[tuple[str, float]] | None = None
        self._expires = 0.0
        self._lock = threading.Lock()

    def top(self, now: float, n: int) -> list[tuple[str, float]]:
        t = self.clock()
        with self._lock:
            if self._value is not None and t < self._expires:
                return self._value[:n]
        value = self.store.top(now, n)
        with self._lock:
            self._value, self._expires = value, t + self.ttl_s
        return value


class RequestReader:
    """Issues the four per-request reads concurrently under one deadline."""

    def __init__(
        self,
        runner: DeadlineRunner,
        *,
        candidates: CandidateCache | None,
        sessions: SessionStore | None,
        users: UserFeatureStore | None,
        trending: TrendingCache | None,
        timeout_s: float,
    ) -> None:
        self.runner = runner
        self.candidates = candidates
        self.sessions = sessions
        self.users = users
        self.trending = trending
        self.timeout_s = timeout_s

    def read(
        self,
        user_id: str,
        now: float,
        *,
        budget_s: float,
        timeout_s: float | None = None,
        candidate_version: str | None = None,
    ) -> Reads:
        calls: dict[str, Callable[[], Any]] = {}
        reads = Reads()
        cache, sessions, users, trending = self.candidates, self.sessions, self.users, self.trending
        # The DynamoDB read is the slowest: submitted first, its SDK work (signing,
        # serialisation) does not queue behind the Redis reads' for the GIL.
        if users is not None:
            calls[USER_FEATURES] = lambda: users.get(user_id)
        if cache is not None:
            calls[CANDIDATE_CACHE] = lambda: cache.get(user_id, candidate_version)
        if sessions is not None:
            calls[SESSION] = lambda: sessions.recent(user_id, SESSION_LIMIT)
        if trending is not None:
            calls[TRENDING] = lambda: trending.top(now, TRENDING_LIMIT)
        for name in (CANDIDATE_CACHE, SESSION, USER_FEATURES, TRENDING):
            if name not in calls:  # not configured in this environment
                reads.failures[name] = "not configured"
        timeout = self.timeout_s if timeout_s is None else timeout_s
        results, failures = self.runner.gather(calls, min(timeout, budget_s))
        reads.failures.update(failures)
        reads.candidates = results.get(CANDIDATE_CACHE)
        reads.session = results.get(SESSION)
        # A user unknown to the store is not a failure: None from a successful read = new user.
        reads.user = results.get(USER_FEATURES)
        reads.trending = results.get(TRENDING)
        reads.degraded = [
            n for n in (CANDIDATE_CACHE, SESSION, USER_FEATURES, TRENDING) if n in reads.failures
        ]
        return reads
