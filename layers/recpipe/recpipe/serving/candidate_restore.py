"""Self-healing candidate cache: restore the CF lists from the served bundle when Redis lost them.

ElastiCache replaces a failed node, or a self-managed Redis restarts without persistence: the
pointer and every list are gone, and until the next retrain every answer would silently lose its
CF candidates. The bundle the scoring function already serves carries the same lists
(`bundle.CANDIDATES_NPZ`), so the first request that finds the cache empty starts a restore in
the background (never on the request path) and answers `degraded: [candidate_cache]` meanwhile.
One instance restores at a time (a Redis lock with a TTL, in case it dies); the others keep
answering degraded and see the restored pointer within the cache's pointer TTL. The publish is
the normal one: lists, then meta, then the pointer, so a half-done restore is never read.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

logger = logging.getLogger(__name__)

#: A failed or refused attempt is not retried sooner than this (per instance).
RETRY_AFTER_S = 5.0
#: The restore lock outlives a restorer that died mid-way by this much at most.
LOCK_TTL_S = 300

Lists = Iterable[tuple[str, Sequence[tuple[str, float]]]]


class RestorableCache(Protocol):
    def try_lock(self, ttl_s: int) -> bool: ...

    def unlock(self) -> None: ...

    def publish(self, version: str, lists: Lists, meta: Mapping[str, object]) -> int: ...


@dataclass(slots=True)
class RestoreStats:
    attempts: int = 0
    restored: int = 0
    lists_written: int = 0
    last_error: str | None = None
    last_restored_version: str | None = None


class CandidateRestorer:
    def __init__(
        self,
        cache: RestorableCache,
        lists_of: Callable[[], tuple[str, Lists] | None],
        *,
        retry_after_s: float = RETRY_AFTER_S,
        clock: Callable[[], float] = time.monotonic,
        on_event: Callable[[str, dict[str, Any]], None] | None = None,
    ) -> None:
        self._cache = cache
        self._lists_of = lists_of
        self._retry_after_s = retry_after_s
        self._clock = clock
        self._on_event = on_event or (lambda _e, _d: None)
        self._lock = threading.Lock()
        self._running = False
        self._last_start = float("-inf")
        self.stats = RestoreStats()

    def trigger(self) -> None:
        """Start a restore in the background unless one runs or one started moments ago."""
        with self._lock:
            now = self._clock()
            if self._running or now - self._last_start < self._retry_after_s:
                return
            self._running, self._last_start = True, now
        threading.Thread(target=self._run, name="candidate-restore", daemon=True).start()

    def restore_now(self) -> bool:
        """One restore attempt in the caller's thread (tests, tools). True when restored."""
        with self._lock:
            if self._running:
                return False
            self._running, self._last_start = True, self._clock()
        return self._run()

    def _run(self) -> bool:
        self.stats.attempts += 1
        try:
            source = self._lists_of()
            if source is None:
                self.stats.last_error = "the served bundle carries no candidate lists"
                self._on_event("candidate_restore_unavailable", {"reason": self.stats.last_error})
                return False
            version, lists = source
            if not self._cache.try_lock(LOCK_TTL_S):
                return False  # another instance is restoring
            try:
                t0 = time.perf_counter()
                written = self._cache.publish(version, lists, {"restored_from": "bundle"})
            finally:
                self._cache.unlock()
            self.stats.restored += 1
            self.stats.lists_written += written
            self.stats.last_restored_version, self.stats.last_error = version, None
            self._on_event(
                "candidate_cache_restored",
                {
                    "version": version,
                    "lists": written,
                    "took_ms": round((time.perf_counter() - t0) * 1000, 1),
                },
            )
            return True
        except Exception as exc:  # a background thread: report, never raise
            self.stats.last_error = f"{type(exc).__name__}: {exc}"
            self._on_event("candidate_restore_failed", {"reason": self.stats.last_error})
            logger.warning("candidate cache restore failed: %s", self.stats.last_error)
            return False
        finally:
            with self._lock:
                self._running = False
