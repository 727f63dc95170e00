"""The updater's user-state cache: fewer reads, the same effects as without it."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest
from recpipe.domain.events import parse_event
from recpipe.domain.user import apply_event, event_fingerprint
from recpipe.ports import ConflictError, DependencyError, RetryableError
from recpipe.stream.state_cache import CachedUserFeatureStore
from recpipe.stream.updater import FeatureUpdater, StreamRecord
from recpipe_dev.testing.fakes_stream import (
    InMemoryFailureSink,
    InMemorySessionStore,
    InMemoryTrendingStore,
    InMemoryUserFeatureStore,
)

pytestmark = pytest.mark.unit


def fingerprints(*event_ids: str) -> bytes:
    return b"".join(event_fingerprint(e) for e in event_ids)


NOW = 1_764_010_000.0
_seq = iter(range(1, 1_000_000))


def ev(event_id: str, user: str, item: str = "m1", ts: float = NOW - 60) -> dict[str, Any]:
    return {"event_id": event_id, "user_id": user, "item_id": item, "type": "view", "ts": ts}


def records(*bodies: dict[str, Any]) -> list[StreamRecord]:
    return [
        StreamRecord(f"{next(_seq):05d}", json.dumps(b).encode(), partition_key=b["user_id"]) for b in bodies
    ]


class World:
    def __init__(self, write_mode: str = "transact", max_users: int = 100) -> None:
        self.store = InMemoryUserFeatureStore()
        self.cache = CachedUserFeatureStore(self.store, max_users)
        self.updater = FeatureUpdater(
            self.cache,
            InMemorySessionStore(),
            InMemoryTrendingStore(clock=lambda: NOW),
            InMemoryFailureSink(),
            write_mode=write_mode,
            clock=lambda: NOW,
        )

    def process(self, *bodies: dict[str, Any]) -> Any:
        return self.updater.process(records(*bodies))


@pytest.mark.parametrize("mode", ["transact", "item"])
def test_a_users_next_batch_is_folded_onto_the_state_written_last_without_a_read(mode: str) -> None:
    w = World(mode)
    w.process(ev("e1", "u1"), ev("e2", "u2"))
    reads = w.store.gets
    result = w.process(ev("e3", "u1", "m2"))
    assert w.store.gets == reads  # served from the cache
    assert result.applied == 1 and not result.failed
    stored = w.store.items["u1"]
    assert stored.version == 2 and stored.applied == fingerprints("e1", "e3")
    assert w.cache.stats.hits == 1 and w.cache.stats.misses == 2


@pytest.mark.parametrize("mode", ["transact", "item"])
def test_a_write_by_another_process_is_not_lost_the_stale_entry_conflicts_and_is_re_read(mode: str) -> None:
    w = World(mode)
    w.process(ev("e1", "u1"))
    # Another updater (a resharded stream, a replay run) folds e2 in behind this cache's back.
    other = w.store.items["u1"]
    event = parse_event(ev("e2", "u1", "m2"), now=NOW)
    w.store.put(apply_event(other, event), expected_version=other.version)

    result = w.process(ev("e3", "u1", "m3"))
    assert result.conflicts == 1 and result.applied == 1 and not result.failed
    stored = w.store.items["u1"]
    assert stored.applied == fingerprints("e1", "e2", "e3")
    assert {r.item_id for r in stored.recent} == {"m1", "m2", "m3"}
    assert stored.version == 3
    # The re-read state and then the written one are cached again.
    assert w.cache.get("u1") == stored


def test_a_redelivered_event_is_a_no_op_on_the_cached_state() -> None:
    w = World()
    w.process(ev("e1", "u1"))
    puts, reads = w.store.puts, w.store.gets
    result = w.process(ev("e1", "u1"))
    assert result.duplicates == 1 and result.applied == 0
    assert (w.store.puts, w.store.gets) == (puts, reads)


@pytest.mark.parametrize("mode", ["transact", "item"])
def test_a_failed_write_evicts_the_user_so_the_retry_reads_the_store(mode: str) -> None:
    w = World(mode)
    w.process(ev("e1", "u1"))
    w.store.fail_users["u1"] = RetryableError("throttled")
    first = w.process(ev("e2", "u1"))
    assert first.failed and first.retryable == 1
    assert len(w.cache) == 0 and w.cache.stats.invalidations == 1
    del w.store.fail_users["u1"]
    reads = w.store.gets
    again = w.process(ev("e2", "u1"))
    assert w.store.gets == reads + 1 and again.applied == 1
    assert w.store.items["u1"].applied == fingerprints("e1", "e2")


class TimingOutStore(InMemoryUserFeatureStore):
    """put_many raises (a request timeout: whether it committed is unknown)."""

    timeout = False

    def put_many(self, writes: Any) -> Any:
        if self.timeout:
            raise RetryableError("read timeout on TransactWriteItems")
        return super().put_many(writes)


def test_a_transaction_that_raises_evicts_every_user_it_carried() -> None:
    store = TimingOutStore()
    cache = CachedUserFeatureStore(store, 10)
    state = {u: cache.put_many([(replace_user(u), 0)])[u] for u in ("u1", "u2")}
    assert len(cache) == 2
    store.timeout = True

    with pytest.raises(DependencyError):
        cache.put_many([(s, s.version) for s in state.values()])
    assert len(cache) == 0
    store.timeout = False
    assert cache.get_many(["u1", "u2"]).keys() == {"u1", "u2"}
    assert cache.stats.misses == 2


def test_a_lost_race_in_put_is_raised_and_evicts() -> None:
    store = InMemoryUserFeatureStore()
    cache = CachedUserFeatureStore(store, 10)
    stored = cache.put(replace_user("u1"), 0)
    with pytest.raises(ConflictError):
        cache.put(stored, 0)
    assert len(cache) == 0


def test_the_least_recently_used_users_leave_first() -> None:
    store = InMemoryUserFeatureStore()
    cache = CachedUserFeatureStore(store, 2)
    for u in ("u1", "u2"):
        cache.put(replace_user(u), 0)
    cache.get("u1")  # u2 is now the least recently used
    cache.put(replace_user("u3"), 0)
    assert cache.stats.evictions == 1
    hits = cache.stats.hits
    assert set(cache.get_many(["u1", "u3"])) == {"u1", "u3"}
    assert cache.stats.hits == hits + 2
    cache.get("u2")
    assert cache.stats.misses == 1


def test_a_cache_needs_room_for_one_user() -> None:
    with pytest.raises(ValueError, match="max_users"):
        CachedUserFeatureStore(InMemoryUserFeatureStore(), 0)


def test_a_store_without_put_many_gives_a_cache_without_it() -> None:
    class PutOnly:
        def get(self, user_id: str) -> None:
            return None

        def get_many(self, user_ids: Any) -> dict[str, Any]:
            return {}

        def put(self, features: Any, expected_version: int) -> Any:
            return features

    assert not hasattr(CachedUserFeatureStore(PutOnly(), 5), "put_many")
    assert hasattr(CachedUserFeatureStore(InMemoryUserFeatureStore(), 5), "put_many")


def replace_user(user_id: str) -> Any:
    from recpipe.domain.user import UserFeatures

    return replace(UserFeatures(user_id=user_id), first_seen=NOW, last_seen=NOW)


def test_the_updater_store_is_cached_unless_the_setting_turns_it_off() -> None:
    from recpipe.adapters.dynamodb_users import DynamoDBUserFeatureStore
    from recpipe.config import UpdaterSettings, load_settings
    from recpipe.stream.wiring import updater_user_store
    from recpipe_dev.testing.settings import function_env

    cached = updater_user_store(
        load_settings(UpdaterSettings, function_env(USER_STATE_CACHE_USERS="7")), object()
    )
    assert isinstance(cached, CachedUserFeatureStore) and hasattr(cached, "put_many")
    plain = updater_user_store(
        load_settings(UpdaterSettings, function_env(USER_STATE_CACHE_USERS="0")), object()
    )
    assert type(plain) is DynamoDBUserFeatureStore
