"""The per-request reads, issued concurrently, each under its own deadline.

A read that raises, times out or whose dependency already has too many calls in flight is
reported as degraded and the request goes on without it: a slow dependency costs at most the
read timeout, never the request. After a few failed or late calls in a row a read is skipped
outright for a short while (CircuitBreakers): waiting out the deadline on every request would
cost each of them the whole timeout, and every call abandoned mid-reply drops its connection,
so the next one would open another (TCP, TLS, AUTH) against the struggling dependency.
"""

from __future__ import annotations

import contextvars
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


#: A probe usually opens a new connection (TCP, TLS, AUTH) before its command: judged against
#: this many read deadlines, so one slow handshake does not keep a recovered dependency skipped
#: for another interval. A dependency still slower than that fails the probe (its client's
#: socket timeouts end the call first).
PROBE_DEADLINE_FACTOR = 3.0


class CircuitBreakers:
    """One breaker per call name: after `threshold` failed or late calls in a row the call is
    skipped (answered degraded at once) for `open_s`. Then the next request's call runs as a
    probe in the background, which that request does not wait for: one call per `open_s` tests
    the dependency, off the request path, and an answer within PROBE_DEADLINE_FACTOR deadlines
    closes the breaker.
    """

    def __init__(
        self, threshold: int = 3, open_s: float = 0.5, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.threshold = threshold
        self.open_s = open_s
        self.clock = clock
        self._lock = threading.Lock()
        self._failures: dict[str, int] = {}
        self._open_until: dict[str, float] = {}
        self._probing: set[str] = set()

    def admit(self, name: str) -> str:
        """'call' (closed), 'probe' (run it, but do not wait for it) or 'skip' (open)."""
        with self._lock:
            until = self._open_until.get(name)
            if until is None:
                return "call"
            if name in self._probing or self.clock() < until:
                return "skip"
            self._probing.add(name)
            return "probe"

    def record(self, name: str, ok: bool) -> None:
        with self._lock:
            self._probing.discard(name)
            if ok:
                self._failures.pop(name, None)
                self._open_until.pop(name, None)
                return
            n = self._failures.get(name, 0) + 1
            self._failures[name] = n
            if n >= self.threshold:
                self._open_until[name] = self.clock() + self.open_s


class DeadlineRunner:
    """Runs named calls on a shared pool and collects those finished by a deadline."""

    def __init__(
        self, executor: ThreadPoolExecutor, bulkhead: Bulkhead, breakers: CircuitBreakers | None = None
    ) -> None:
        self.executor = executor
        self.bulkhead = bulkhead
        self.breakers = breakers

    def submit(self, name: str, fn: Callable[[], Any], deadline_s: float | None = None) -> Future[Any] | None:
        """Start `fn` unless `name` has too many calls in flight. With a deadline and breakers,
        the call's outcome (an answer within the deadline, or not) is recorded when it ends."""
        if not self.bulkhead.acquire(name):
            return None
        breakers = self.breakers if deadline_s is not None else None

        def call() -> Any:
            t0 = time.monotonic()
            ok = False
            try:
                value = fn()
                ok = deadline_s is None or time.monotonic() - t0 <= deadline_s
                return value
            finally:
                self.bulkhead.release(name)
                if breakers is not None:
                    breakers.record(name, ok)

        # The caller's context travels with the call (recpipe.ports.SERVED_VERSION: the version
        # this request is served with, which versioned reads follow).
        return self.executor.submit(contextvars.copy_context().run, call)

    def gather(
        self, calls: dict[str, Callable[[], Any]], timeout_s: float, *, guarded: bool = True
    ) -> tuple[dict[str, Any], dict[str, str]]:
        """Results by name, and the reason for every call that did not produce one in time.

        `guarded=False` bypasses the circuit breakers (the /health probes must reach the
        dependency to tell whether it is back)."""
        futures: dict[str, Future[Any]] = {}
        failures: dict[str, str] = {}
        if timeout_s <= 0:  # the request's budget is spent: do not even start the calls
            return {}, dict.fromkeys(calls, "request budget exhausted")
        breakers = self.breakers if guarded else None
        for name, fn in calls.items():
            admit = "call" if breakers is None else breakers.admit(name)
            if admit == "skip":
                failures[name] = "circuit open after repeated timeouts or errors"
                continue
            deadline = None if breakers is None else timeout_s
            if admit == "probe":
                deadline = timeout_s * PROBE_DEADLINE_FACTOR
            fut = self.submit(name, fn, deadline)
            if fut is None:
                if admit == "probe" and breakers is not None:  # no slot: the next request tries
                    breakers.record(name, False)
                failures[name] = "too many calls in flight"
            elif admit == "probe":
                failures[name] = "circuit open, probing"
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
