"""A write-through cache of the user states one feature-updater process last read or wrote.

Kinesis routes a user's events by partition key (= user_id) to one shard, and a shard's batches
go to one warm Lambda environment at a time, so the state this process last wrote for a user is
almost always still the stored one when the user's next event arrives. Keeping it saves the
strongly consistent BatchGetItem (read units, a round trip) and the decoding for every such
user. bench/stream.py runs with and without the cache and reports the hit rate (figures:
docs/stream.md, User-state cache).

Correctness does not depend on the cache being right: every write stays conditional on the
version the state was read at, so a stale entry (another process wrote the user: a resharded
stream, a parallelised shard, a replay run) makes the write fail with ConflictError, and the
updater then re-reads from the store, which goes past the cache because a failed or
undecided write evicts its user. Duplicate detection is also safe on a stale entry: stored
states only ever grow from the cached one by folding more events in, so an event id the
entry holds was applied to the stored state too, and a shard mark of the entry is at or below
the stored one.

Bounded by users (least recently used first out). A cached state is a few KB of Python
objects for a typical user and up to ~60 KB for one with full histories; the default
bound is sized for the updater's 512 MB (see docs/stream.md and docs/configuration.md).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields

from recpipe.domain.user import UserFeatures
from recpipe.ports import BatchUserFeatureWriter, ConflictError, DependencyError, UserFeatureStore


@dataclass(slots=True)
class CacheStats:
    hits: int = 0
    misses: int = 0
    evictions: int = 0
    invalidations: int = 0

    def since(self, before: CacheStats) -> CacheStats:
        return CacheStats(**{f.name: getattr(self, f.name) - getattr(before, f.name) for f in fields(self)})


class CachedUserFeatureStore:
    """UserFeatureStore (and BatchUserFeatureWriter when the store is one) in front of `store`."""

    def __init__(self, store: UserFeatureStore, max_users: int) -> None:
        if max_users < 1:
            raise ValueError(f"max_users must be >= 1, got {max_users}")
        self._store = store
        self._max = max_users
        self._states: OrderedDict[str, UserFeatures] = OrderedDict()
        # Chunks of a batch run on threads (disjoint users): the OrderedDict needs one lock.
        self._lock = threading.Lock()
        self.stats = CacheStats()
        if hasattr(store, "put_many"):
            self.put_many = self._put_many

    def __len__(self) -> int:
        return len(self._states)

    def get(self, user_id: str) -> UserFeatures | None:
        return self.get_many([user_id]).get(user_id)

    def get_many(self, user_ids: Sequence[str]) -> dict[str, UserFeatures]:
        out: dict[str, UserFeatures] = {}
        missing: list[str] = []
        with self._lock:
            for u in user_ids:
                state = self._states.get(u)
                if state is None:
                    missing.append(u)
                else:
                    self._states.move_to_end(u)
                    out[u] = state
            self.stats.hits += len(out)
            self.stats.misses += len(missing)
        if missing:
            read = self._store.get_many(missing)
            with self._lock:
                for u, state in read.items():
                    self._keep(u, state)
            out.update(read)
        return out

    def put(self, features: UserFeatures, expected_version: int) -> UserFeatures:
        try:
            stored = self._store.put(features, expected_version)
        except (ConflictError, DependencyError):
            # Lost a race, or the write's outcome is unknown: the next read must see the store.
            self.invalidate(features.user_id)
            raise
        with self._lock:
            self._keep(stored.user_id, stored)
        return stored

    def _put_many(
        self, writes: Sequence[tuple[UserFeatures, int]]
    ) -> Mapping[str, UserFeatures | ConflictError | DependencyError]:
        writer: BatchUserFeatureWriter = self._store  # type: ignore[assignment]
        try:
            outcomes = writer.put_many(writes)
        except DependencyError:
            for features, _ in writes:
                self.invalidate(features.user_id)
            raise
        with self._lock:
            for features, _ in writes:
                got = outcomes.get(features.user_id)
                if isinstance(got, UserFeatures):
                    self._keep(features.user_id, got)
                else:
                    self._drop(features.user_id)
        return outcomes

    def invalidate(self, user_id: str) -> None:
        with self._lock:
            self._drop(user_id)

    def _keep(self, user_id: str, state: UserFeatures) -> None:
        self._states[user_id] = state
        self._states.move_to_end(user_id)
        if len(self._states) > self._max:
            self._states.popitem(last=False)
            self.stats.evictions += 1

    def _drop(self, user_id: str) -> None:
        if self._states.pop(user_id, None) is not None:
            self.stats.invalidations += 1
