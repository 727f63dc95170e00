"""Exactly-once for users of any size (issue #15, defect 1).

GIVEN five users with 300 events each, applied through the updater as Kinesis delivers them
WHEN the oldest 20 of each are posted again (producer retries: same event_id, new records) and
     the whole shard is then redelivered from TRIM_HORIZON (a re-created event source mapping)
THEN every stored feature equals the ground truth: nothing is applied twice.
"""

from __future__ import annotations

import json
from typing import Any

from recpipe.domain.user import DEDUP_WINDOW_S, FINGERPRINT_BYTES, MAX_APPLIED_IDS
from recpipe.stream.updater import FeatureUpdater, StreamRecord
from recpipe_dev.testing.fakes_stream import (
    InMemoryFailureSink,
    InMemorySessionStore,
    InMemoryTrendingStore,
    InMemoryUserFeatureStore,
)

T0 = 1_764_000_000.0
USERS, PER_USER, REPOSTED = 5, 300, 20


class Shard:
    """A shard's records in order, with growing sequence numbers, as Kinesis keeps them."""

    def __init__(self, shard_id: str = "shardId-000000000000", first_seq: int = 49_000_000) -> None:
        self.shard_id = shard_id
        self.records: list[StreamRecord] = []
        self._next = first_seq

    def put(self, body: dict[str, Any]) -> StreamRecord:
        self._next += 7
        rec = StreamRecord(str(self._next), json.dumps(body).encode(), body["user_id"], self.shard_id)
        self.records.append(rec)
        return rec


class Clock:
    def __init__(self) -> None:
        self.now = T0 + 10_000

    def __call__(self) -> float:
        return self.now


def body(user: int, n: int) -> dict[str, Any]:
    return {
        "event_id": f"u{user}-e{n}",
        "user_id": f"u{user}",
        "item_id": f"i{n % 37}",
        "type": "click" if n % 3 else "view",
        "ts": T0 + n,
    }


def updater(users: InMemoryUserFeatureStore, clock: Clock, failures: InMemoryFailureSink) -> FeatureUpdater:
    return FeatureUpdater(
        users, InMemorySessionStore(), InMemoryTrendingStore(clock=clock), failures, clock=clock
    )


def deliver(u: FeatureUpdater, recs: list[StreamRecord], batch: int = 100) -> int:
    applied = 0
    for start in range(0, len(recs), batch):
        result = u.process(recs[start : start + batch])
        assert result.failed == [] and result.poison == 0
        applied += result.applied
    return applied


def stored_events(users: InMemoryUserFeatureStore) -> dict[str, int]:
    return {u: s.total_events for u, s in users.items.items()}


def test_retries_and_a_full_redelivery_of_heavy_users_apply_nothing_twice() -> None:
    users, clock, failures = InMemoryUserFeatureStore(), Clock(), InMemoryFailureSink()
    u = updater(users, clock, failures)
    shard = Shard()
    # Interleaved as producers post them.
    first = [shard.put(body(user, n)) for n in range(PER_USER) for user in range(USERS)]
    assert deliver(u, first) == USERS * PER_USER
    truth = {f"u{user}": PER_USER for user in range(USERS)}
    assert stored_events(users) == truth

    clock.now += 600  # client retries of old events, ten minutes later
    retries = [shard.put(body(user, n)) for user in range(USERS) for n in range(REPOSTED)]
    assert deliver(u, retries) == 0
    assert stored_events(users) == truth

    clock.now += 2 * DEDUP_WINDOW_S  # past the retry window: the marks alone must hold
    assert deliver(u, shard.records) == 0  # poller restarted from TRIM_HORIZON
    assert stored_events(users) == truth
    for user in range(USERS):
        state = users.items[f"u{user}"]
        last = [r for r in shard.records if r.partition_key == f"u{user}"][-1]
        assert state.marks == {shard.shard_id: last.sequence_number}
        # The fingerprints are those of the window only (none are left two windows on).
        assert len(state.applied) == sum(c for _, c in state.applied_runs) * FINGERPRINT_BYTES
        assert len(state.applied) <= MAX_APPLIED_IDS * FINGERPRINT_BYTES


def test_a_reshard_keeps_both_shards_marks() -> None:
    users, clock, failures = InMemoryUserFeatureStore(), Clock(), InMemoryFailureSink()
    u = updater(users, clock, failures)
    parent, child = Shard("shardId-000000000000", 100), Shard("shardId-000000000001", 10_000)
    before = [parent.put(body(0, n)) for n in range(150)]
    after = [child.put(body(0, n)) for n in range(150, 300)]
    assert deliver(u, before) + deliver(u, after) == 300
    clock.now += 3 * DEDUP_WINDOW_S
    # A mapping re-created at TRIM_HORIZON reads the parent, then the child.
    assert deliver(u, before) + deliver(u, after) == 0
    assert users.items["u0"].total_events == 300
    assert set(users.items["u0"].marks) == {parent.shard_id, child.shard_id}


def test_a_retry_within_the_window_is_a_no_op_even_from_another_record() -> None:
    users, clock, failures = InMemoryUserFeatureStore(), Clock(), InMemoryFailureSink()
    u = updater(users, clock, failures)
    shard = Shard()
    deliver(u, [shard.put(body(0, n)) for n in range(3)])
    clock.now += DEDUP_WINDOW_S - 60
    retry = shard.put(body(0, 1))
    result = u.process([retry])
    assert result.applied == 0 and result.duplicates == 1
    # The retry's record moved the mark, so its own redelivery stays a no-op after the window.
    assert users.items["u0"].marks[shard.shard_id] == retry.sequence_number
    clock.now += 2 * DEDUP_WINDOW_S
    assert deliver(u, [retry]) == 0
    assert users.items["u0"].total_events == 3


def test_a_flood_keeps_the_fingerprints_bounded() -> None:
    users, clock, failures = InMemoryUserFeatureStore(), Clock(), InMemoryFailureSink()
    u = updater(users, clock, failures)
    shard = Shard()
    n = MAX_APPLIED_IDS + 500
    assert deliver(u, [shard.put(body(0, i)) for i in range(n)], batch=500) == n
    state = users.items["u0"]
    assert len(state.applied) == MAX_APPLIED_IDS * FINGERPRINT_BYTES
    assert sum(c for _, c in state.applied_runs) == MAX_APPLIED_IDS
    # Redelivery of the whole flood is still a no-op (marks, not fingerprints).
    assert deliver(u, shard.records, batch=500) == 0
    assert users.items["u0"].total_events == n


def test_a_re_drive_of_records_lambda_skipped_applies_them_once() -> None:
    # Lambda gives up on u0's records (retries exhausted, sent to the failure queue) and moves
    # on: u0's later records move the mark past them. `recpipe replay` must still apply them,
    # and only them, even for a range that also holds records that were applied.
    users, clock, failures = InMemoryUserFeatureStore(), Clock(), InMemoryFailureSink()
    u = updater(users, clock, failures)
    shard = Shard()
    skipped = [shard.put(body(0, n)) for n in range(10)]
    other = [shard.put(body(1, n)) for n in range(10)]
    later = [shard.put(body(0, n)) for n in range(10, 20)]
    assert deliver(u, other + later) == 20
    clock.now += DEDUP_WINDOW_S - 3600  # the operator re-drives within the stream's retention
    failed_range = skipped + other
    assert u.redrive(failed_range).applied == 10
    assert u.redrive(failed_range).applied == 0
    assert deliver(u, shard.records) == 0
    assert stored_events(users) == {"u0": 20, "u1": 10}
