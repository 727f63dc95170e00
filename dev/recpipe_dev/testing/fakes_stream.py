"""In-memory SessionStore, TrendingStore, UserFeatureStore, EventPublisher and FailureSink.

They keep the adapters' observable semantics (session dedup and bounds, trending buckets and
normalisation, exactly-once `add_once`, conditional writes with versions) so unit tests of any
path can rely on them. Faults are injected explicitly (`fail_next`, `fail_users`, ...).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from recpipe.domain.events import Event
from recpipe.domain.user import UserFeatures
from recpipe.ports import ConflictError, DependencyError, SessionEntry, TrendingHit
from recpipe.redis_keys import (
    SESSION_MAX_ITEMS,
    SESSION_TTL_S,
    TRENDING_BUCKETS,
    TRENDING_HALF_LIFE_BUCKETS,
    trending_bucket_of,
)


class InMemorySessionStore:
    """`clock` given: a session whose newest entry is SESSION_TTL_S old reads as empty, as the
    Redis key expires SESSION_TTL_S after its last write (training's replay uses the same rule)."""

    def __init__(self, clock: Callable[[], float] | None = None) -> None:
        self.clock = clock
        self.sessions: dict[str, dict[tuple[str, str, float], SessionEntry]] = {}
        self.fail_with: Exception | None = None
        self.appends = 0

    def append(self, user_id: str, entries: Sequence[SessionEntry]) -> None:
        self.append_many({user_id: entries})

    def append_many(self, entries_by_user: Mapping[str, Sequence[SessionEntry]]) -> None:
        if self.fail_with is not None:
            raise self.fail_with
        for user_id, entries in entries_by_user.items():
            self.appends += 1
            session = self.sessions.setdefault(user_id, {})
            for e in entries:
                # Same identity as the Redis member: item, type and ts to the millisecond.
                session[(e.item_id, e.type, round(e.ts, 3))] = SessionEntry(e.item_id, e.type, round(e.ts, 3))
            if len(session) > SESSION_MAX_ITEMS:
                keep = sorted(session, key=lambda k: -session[k].ts)[:SESSION_MAX_ITEMS]
                self.sessions[user_id] = {k: session[k] for k in keep}

    def recent(self, user_id: str, limit: int = 20) -> list[SessionEntry]:
        if self.fail_with is not None:
            raise self.fail_with
        entries = sorted(self.sessions.get(user_id, {}).values(), key=lambda e: -e.ts)
        if entries and self.clock is not None and self.clock() - entries[0].ts >= SESSION_TTL_S:
            return []
        return entries[: max(0, limit)]


class InMemoryTrendingStore:
    def __init__(self, clock: Callable[[], float] | None = None) -> None:
        self.buckets: dict[int, dict[str, float]] = {}
        self.counted_event_ids: set[str] = set()
        self.fail_with: Exception | None = None
        self._clock = clock

    def add(self, weights: Mapping[tuple[int, str], float]) -> None:
        if self.fail_with is not None:
            raise self.fail_with
        for (bucket, item_id), w in weights.items():
            b = self.buckets.setdefault(bucket, {})
            b[item_id] = b.get(item_id, 0.0) + w

    def add_once(self, hits: Sequence[TrendingHit]) -> int:
        if self.fail_with is not None:
            raise self.fail_with
        counted = 0
        oldest = trending_bucket_of(self._clock()) - TRENDING_BUCKETS if self._clock else None
        for h in hits:
            bucket = trending_bucket_of(h.ts)
            if oldest is not None and bucket <= oldest:
                continue
            if h.event_id in self.counted_event_ids:
                continue
            self.counted_event_ids.add(h.event_id)
            self.add({(bucket, h.item_id): h.weight})
            counted += 1
        return counted

    def top(self, now: float, n: int) -> list[tuple[str, float]]:
        if self.fail_with is not None:
            raise self.fail_with
        current = trending_bucket_of(now)
        totals: dict[str, float] = {}
        for age in range(TRENDING_BUCKETS):
            w = math.pow(0.5, age / TRENDING_HALF_LIFE_BUCKETS)
            for item, score in self.buckets.get(current - age, {}).items():
                totals[item] = totals.get(item, 0.0) + w * score
        ranked = sorted(((i, s) for i, s in totals.items() if s > 0), key=lambda p: (-p[1], p[0]))[:n]
        if not ranked:
            return []
        best = ranked[0][1]
        return [(i, s / best) for i, s in ranked]


class InMemoryUserFeatureStore:
    """Conditional writes on `version` like DynamoDB. `fail_users` maps a user to the error the
    next calls touching it raise (e.g. RetryableError for throttling)."""

    def __init__(self) -> None:
        self.items: dict[str, UserFeatures] = {}
        self.fail_users: dict[str, Exception] = {}
        self.fail_with: Exception | None = None
        self.puts = 0
        self.batch_puts = 0
        self.gets = 0
        #: Called before each put: lets a test simulate a concurrent writer.
        self.before_put: Callable[[UserFeatures], None] | None = None

    def _check(self, user_id: str) -> None:
        if self.fail_with is not None:
            raise self.fail_with
        if user_id in self.fail_users:
            raise self.fail_users[user_id]

    def get(self, user_id: str) -> UserFeatures | None:
        self._check(user_id)
        self.gets += 1
        return self.items.get(user_id)

    def get_many(self, user_ids: Sequence[str]) -> dict[str, UserFeatures]:
        if self.fail_with is not None:
            raise self.fail_with
        self.gets += 1
        return {u: self.items[u] for u in user_ids if u in self.items and u not in self.fail_users}

    def put(self, features: UserFeatures, expected_version: int) -> UserFeatures:
        self._check(features.user_id)
        if self.before_put is not None:
            hook, self.before_put = self.before_put, None
            hook(features)
        current = self.items.get(features.user_id)
        current_version = current.version if current is not None else 0
        if current_version != expected_version:
            raise ConflictError(f"user {features.user_id}: version {current_version} != {expected_version}")
        stored = replace(features, version=expected_version + 1)
        self.items[features.user_id] = stored
        self.puts += 1
        return stored

    def put_many(
        self, writes: Sequence[tuple[UserFeatures, int]]
    ) -> dict[str, UserFeatures | ConflictError | DependencyError]:
        """BatchUserFeatureWriter: the per-user outcomes the DynamoDB adapter's transactions give
        (each write conditional on its own version; failures are per user, never raised)."""
        self.batch_puts += 1
        out: dict[str, UserFeatures | ConflictError | DependencyError] = {}
        for features, expected_version in writes:
            try:
                out[features.user_id] = self.put(features, expected_version)
            except (ConflictError, DependencyError) as exc:
                out[features.user_id] = exc
        return out


class InMemoryEventPublisher:
    """EventPublisher: keeps what was published; `fail_event_ids` never get through."""

    def __init__(self) -> None:
        self.published: list[Event] = []
        self.fail_event_ids: set[str] = set()
        self.fail_with: DependencyError | None = None

    def publish(self, events: Sequence[Event]) -> list[tuple[Event, str]]:
        if self.fail_with is not None:
            return [(e, f"stream unavailable, retry ({self.fail_with})") for e in events]
        failed = [
            (e, "stream unavailable, retry (throttled)") for e in events if e.event_id in self.fail_event_ids
        ]
        self.published += [e for e in events if e.event_id not in self.fail_event_ids]
        return failed


@dataclass
class InMemoryFailureSink:
    """FailureSink: poison records reported by the updater."""

    reports: list[dict[str, Any]] = field(default_factory=list)
    fail_with: Exception | None = None

    def report(self, failures: Sequence[Mapping[str, Any]]) -> None:
        if self.fail_with is not None:
            raise self.fail_with
        self.reports.extend(dict(f) for f in failures)
