"""FeatureUpdater against in-memory stores: exactly-once effect, failure classification, timing."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from recpipe.domain.events import parse_event
from recpipe.domain.user import UserFeatures, apply_event
from recpipe.ports import DependencyError, RetryableError
from recpipe.stream.updater import FeatureUpdater, StreamRecord, records_from_lambda_event
from recpipe_dev.testing.fakes_stream import (
    InMemoryFailureSink,
    InMemorySessionStore,
    InMemoryTrendingStore,
    InMemoryUserFeatureStore,
)

NOW = 1_764_010_000.0
EVENTS_DIR = Path(__file__).resolve().parents[3] / "events"
CATEGORIES = {"m1": ("Drama",), "m2": ("Comedy", "Drama"), "m3": ("Horror",)}


class World:
    def __init__(self, write_workers: int = 1, write_mode: str = "item") -> None:
        self.users = InMemoryUserFeatureStore()
        self.sessions = InMemorySessionStore()
        self.trending = InMemoryTrendingStore(clock=lambda: NOW)
        self.failures = InMemoryFailureSink()
        self.updater = FeatureUpdater(
            self.users,
            self.sessions,
            self.trending,
            self.failures,
            lambda item: CATEGORIES.get(item, ()),
            write_workers=write_workers,
            write_mode=write_mode,
            clock=lambda: NOW,
        )


def ev(
    event_id: str, user: str, item: str, type_: str = "view", ts: float = NOW - 60, **extra: Any
) -> dict[str, Any]:
    return {"event_id": event_id, "user_id": user, "item_id": item, "type": type_, "ts": ts, **extra}


def records(*bodies: dict[str, Any] | bytes, start: int = 1) -> list[StreamRecord]:
    out = []
    for n, body in enumerate(bodies, start=start):
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        pk = body["user_id"] if isinstance(body, dict) else "u?"
        out.append(
            StreamRecord(sequence_number=f"{n:05d}", data=data, partition_key=pk, shard_id="shardId-0")
        )
    return out


def expected_state(events: Sequence[dict[str, Any]]) -> UserFeatures | None:
    state = None
    for raw in events:
        e = parse_event(raw, now=NOW)
        state = apply_event(state, e, CATEGORIES.get(e.item_id, ()))
    return state


def strip_version(f: UserFeatures | None) -> dict[str, Any] | None:
    if f is None:
        return None
    item = f.to_item()
    # The features themselves; when and from where they were applied is checked on its own.
    for bookkeeping in ("version", "applied_runs", "marks"):
        item.pop(bookkeeping)
    return item


@pytest.fixture(
    params=[(1, "item"), (8, "item"), (1, "transact")], ids=["sequential", "8-writers", "transact"]
)
def world(request: pytest.FixtureRequest) -> World:
    workers, mode = request.param
    return World(write_workers=workers, write_mode=mode)


def test_a_batch_updates_features_session_and_trending(world: World) -> None:
    bodies = [
        ev("e1", "u1", "m1"),
        ev("e2", "u1", "m2", "add_to_cart", ts=NOW - 30),
        ev("e3", "u2", "m3", "purchase"),
    ]
    result = world.updater.process(records(*bodies))
    assert result.failed == [] and result.applied == 3 and result.users_written == 2
    assert strip_version(world.users.items["u1"]) == strip_version(expected_state(bodies[:2]))
    assert world.users.items["u1"].cart == frozenset({"m2"})
    assert [e.item_id for e in world.sessions.recent("u1")] == ["m2", "m1"]
    assert [i for i, _ in world.trending.top(NOW, 3)] == ["m3", "m2", "m1"]  # purchase 8 > cart 4 > view 1


def test_duplicates_and_redeliveries_have_one_effect(world: World) -> None:
    bodies = [ev("e1", "u1", "m1"), ev("e2", "u1", "m2", "click"), ev("e1", "u1", "m1")]  # producer retry
    first = world.updater.process(records(*bodies))
    snapshot = (dict(world.users.items), dict(world.sessions.sessions["u1"]), world.trending.top(NOW, 5))
    second = world.updater.process(records(*bodies))  # Kinesis redelivers the whole batch
    assert first.applied == 2 and first.duplicates == 1
    assert second.applied == 0 and second.duplicates == 3 and second.users_written == 0
    assert world.users.items == snapshot[0] and world.users.items["u1"].counts == {"view": 1, "click": 1}
    assert world.sessions.sessions["u1"] == snapshot[1]
    assert world.trending.top(NOW, 5) == snapshot[2]
    assert world.trending.buckets and sum(sum(b.values()) for b in world.trending.buckets.values()) == 3.0


def test_out_of_order_events_give_the_in_order_state(world: World) -> None:
    in_order = [ev(f"e{i}", "u1", f"m{1 + i % 3}", "click", ts=NOW - 86400 * (5 - i)) for i in range(5)]
    shuffled = [in_order[i] for i in (3, 0, 4, 2, 1)]
    for i, body in enumerate(shuffled):  # one event per batch, late ones last
        world.updater.process(records(body, start=i + 1))
    reference = World()
    reference.updater.process(records(*in_order))
    got, want = world.users.items["u1"], reference.users.items["u1"]
    assert got.affinity.keys() == want.affinity.keys()
    for cat, (value, ref) in want.affinity.items():
        assert got.affinity[cat][1] == ref
        assert got.affinity[cat][0] == pytest.approx(value, rel=1e-9)
    assert got.recent == want.recent and got.first_seen == want.first_seen and got.last_seen == want.last_seen


def test_late_add_to_cart_does_not_resurrect_a_removed_item(world: World) -> None:
    world.updater.process(records(ev("r", "u1", "m1", "remove_from_cart", ts=NOW - 10)))
    world.updater.process(records(ev("a", "u1", "m1", "add_to_cart", ts=NOW - 20), start=2))
    assert world.users.items["u1"].cart == frozenset()


def test_mixed_batch_returns_exactly_the_throttled_records_and_reports_poison(world: World) -> None:
    world.users.fail_users["u-throttled"] = RetryableError("ProvisionedThroughputExceededException")
    batch = records(
        ev("g1", "u1", "m1"),  # 00001 good
        b"{not json",  # 00002 poison
        ev("t1", "u-throttled", "m1"),  # 00003 throttled
        ev("g2", "u2", "m2"),  # 00004 good
        {"event_id": "p2", "user_id": "u2", "item_id": "m1", "type": "teleport", "ts": NOW},  # 00005 poison
        ev("t2", "u-throttled", "m2"),  # 00006 throttled
        ev("f1", "u3", "m1", ts=NOW + 3600),  # 00007 poison: far in the future
    )
    result = world.updater.process(batch)
    assert result.batch_response() == {
        "batchItemFailures": [{"itemIdentifier": "00003"}, {"itemIdentifier": "00006"}]
    }
    assert [(r["sequenceNumber"], r["kind"]) for r in world.failures.reports] == [
        ("00002", "poison_record"),
        ("00005", "poison_record"),
        ("00007", "poison_record"),
    ]
    reasons = [r["reason"] for r in world.failures.reports]
    assert "not JSON" in reasons[0] and "type" in reasons[1] and "future" in reasons[2]
    assert set(world.users.items) == {"u1", "u2"}
    # Session and trending do not wait for DynamoDB: the throttled user's events are live already.
    assert sorted(e.item_id for e in world.sessions.recent("u-throttled")) == ["m1", "m2"]
    trending = world.trending.top(NOW, 5)
    # The throttled user succeeds on redelivery, without double counting anything.
    del world.users.fail_users["u-throttled"]
    again = world.updater.process([r for r in batch if r.sequence_number >= "00003"])
    assert again.failed == [] and again.applied == 2 and again.duplicates == 1
    assert world.users.items["u-throttled"].counts == {"view": 2}
    assert sorted(e.item_id for e in world.sessions.recent("u-throttled")) == ["m1", "m2"]
    assert world.trending.top(NOW, 5) == trending and again.trending_counted == 0


def test_poison_that_cannot_be_reported_is_retried_not_lost(world: World) -> None:
    world.failures.fail_with = RetryableError("sqs down")
    result = world.updater.process(records(ev("g", "u1", "m1"), b"[]"))
    assert result.failed == ["00002"] and world.users.items["u1"].counts == {"view": 1}


def test_redis_failure_returns_every_valid_record_for_redelivery(world: World) -> None:
    world.sessions.fail_with = DependencyError("redis down")
    world.users.fail_users["u2"] = RetryableError("throttled as well")
    result = world.updater.process(records(ev("e1", "u1", "m1"), ev("e2", "u2", "m1")))
    assert result.failed == ["00001", "00002"] and result.retryable == 2  # each record once
    world.sessions.fail_with = None
    del world.users.fail_users["u2"]
    again = world.updater.process(records(ev("e1", "u1", "m1"), ev("e2", "u2", "m1")))
    assert again.failed == [] and again.applied == 1 and again.duplicates == 1
    assert world.users.items["u1"].counts == {"view": 1}
    assert [e.item_id for e in world.sessions.recent("u1")] == ["m1"]
    assert world.trending.top(NOW, 1) == [("m1", 1.0)]


def test_a_lost_write_race_is_re_read_and_re_applied(world: World) -> None:
    world.updater.process(records(ev("e1", "u1", "m1")))
    concurrent = apply_event(world.users.items["u1"], parse_event(ev("x", "u1", "m3", "purchase"), now=NOW))

    def other_writer(_: UserFeatures) -> None:
        world.users.items["u1"] = world.users.put(concurrent, expected_version=concurrent.version)

    world.users.before_put = other_writer
    result = world.updater.process(records(ev("e2", "u1", "m2", "click"), start=2))
    assert result.failed == [] and result.conflicts == 1
    assert world.users.items["u1"].counts == {"view": 1, "purchase": 1, "click": 1}
    assert world.users.items["u1"].version == 3


def test_when_time_runs_short_the_rest_is_returned_unprocessed(world: World) -> None:
    bodies = [ev(f"e{i}", f"u{i}", "m1") for i in range(250)]
    # Enough time for two chunks of 100 users, not for the third.
    budget = lambda: 10_000 if world.users.puts < 200 else 100  # noqa: E731
    result = world.updater.process(records(*bodies), remaining_ms=budget)
    assert result.unprocessed == 50
    assert result.failed == [f"{n:05d}" for n in range(201, 251)]
    assert len(world.users.items) == 200


def test_time_is_checked_per_user_within_a_chunk() -> None:
    world = World()  # sequential writes, so the budget is consumed in user order
    calls = {"n": 0}

    def remaining() -> int:
        calls["n"] += 1
        return 10_000 if calls["n"] <= 4 else 100  # chunk check + three users, then out of time

    result = world.updater.process(
        records(*[ev(f"e{i}", f"u{i}", "m1") for i in range(5)]), remaining_ms=remaining
    )
    assert sorted(world.users.items) == ["u0", "u1", "u2"]
    assert result.unprocessed == 2 and result.failed == ["00004", "00005"]
    # Session and trending were written for every valid event (redelivery counts them once).
    assert sorted(world.sessions.sessions) == ["u0", "u1", "u2", "u3", "u4"]


def test_a_replayed_old_range_updates_features_but_not_the_live_session(world: World) -> None:
    result = world.updater.process(
        records(ev("old", "u1", "m1", "click", ts=NOW - 2 * 86400), ev("new", "u1", "m2"))
    )
    assert result.applied == 2 and world.users.items["u1"].counts == {"click": 1, "view": 1}
    assert [e.item_id for e in world.sessions.recent("u1")] == ["m2"]


def test_unknown_items_count_without_affinity(world: World) -> None:
    world.updater.process(records(ev("e1", "u1", "not-in-catalogue", "purchase")))
    f = world.users.items["u1"]
    assert f.affinity == {} and f.counts == {"purchase": 1} and f.purchased


def test_the_sample_kinesis_event(world: World) -> None:
    recs = records_from_lambda_event(json.loads((EVENTS_DIR / "kinesis_batch.json").read_text()))
    result = world.updater.process(recs)
    assert result.failed == [] and result.poison == 1 and result.applied == 3 and result.duplicates == 1
    assert world.failures.reports[0]["sequenceNumber"] == recs[2].sequence_number
    assert world.failures.reports[0]["shardId"] == "shardId-000000000000"
    assert world.users.items["u-42"].counts == {"view": 1, "add_to_cart": 1}
    assert world.users.items["u-7"].purchased.keys() == {"1210"}


def test_transact_mode_writes_a_chunk_of_users_in_one_request_and_re_applies_a_cancelled_one() -> None:
    world = World(write_mode="transact")
    world.updater.process(records(*(ev(f"e{i}", f"u{i}", "m1") for i in range(150))))
    # 150 users: two reads of 100 users, two put_many calls (the store splits at 100 per transaction).
    assert world.users.batch_puts == 2 and world.users.puts == 150

    # A store whose transaction cancels one user's Put (ConditionalCheckFailed: a concurrent
    # writer moved it on) — that user is re-read and re-applied, the others written once.
    concurrent = apply_event(world.users.items["u7"], parse_event(ev("x", "u7", "m3", "purchase"), now=NOW))
    world.users.before_put = lambda _f: world.users.items.__setitem__("u7", replace(concurrent, version=2))
    result = world.updater.process(
        records(*(ev(f"f{i}", f"u{i}", "m2", "click") for i in range(5, 10)), start=200)
    )
    assert result.failed == [] and result.conflicts == 1 and result.users_written == 5
    assert world.users.items["u7"].counts == {"view": 1, "purchase": 1, "click": 1}
    assert world.users.items["u5"].counts == {"view": 1, "click": 1}


def test_transact_mode_needs_a_store_with_put_many() -> None:
    class PlainStore:
        def get(self, user_id: str) -> None: ...

    with pytest.raises(TypeError, match="put_many"):
        FeatureUpdater(
            PlainStore(),
            InMemorySessionStore(),
            InMemoryTrendingStore(),
            InMemoryFailureSink(),
            write_mode="transact",
        )  # type: ignore[arg-type]


def _chunked_world(chunk_workers: int) -> World:
    world = World(write_mode="transact")
    world.updater = FeatureUpdater(
        world.users,
        world.sessions,
        world.trending,
        world.failures,
        lambda item: CATEGORIES.get(item, ()),
        write_mode="transact",
        chunk_workers=chunk_workers,
        clock=lambda: NOW,
    )
    return world


def test_chunks_in_flight_together_give_the_sequential_outcome() -> None:
    """350 users (4 chunks), several events each, a redelivered range and a throttled user."""
    bodies = [ev(f"e{i}", f"u{i % 350}", f"m{1 + i % 3}", ts=NOW - 1000 + i) for i in range(1000)]
    outcomes = []
    for workers in (1, 3):
        world = _chunked_world(workers)
        world.updater.process(records(*bodies[:400]))
        world.users.fail_users["u123"] = RetryableError("throttled")
        result = world.updater.process(records(*bodies[300:], start=301))
        outcomes.append(
            (
                result,
                {u: strip_version(f) for u, f in world.users.items.items()},
                world.sessions.sessions,
                world.trending.buckets,
            )
        )
    assert outcomes[0] == outcomes[1]
    result = outcomes[1][0]
    assert result.failed == [f"{n:05d}" for n in range(301, 1001) if (n - 1) % 350 == 123]
    assert result.duplicates == 100 and result.retryable == 2


def test_chunks_started_after_the_time_ran_out_are_returned_unprocessed() -> None:
    world = _chunked_world(2)
    started = {"n": 0}

    def remaining() -> int:
        started["n"] += 1  # transact mode asks once per chunk start and once per attempt
        return 10_000 if world.users.batch_puts == 0 else 100

    result = world.updater.process(records(*(ev(f"e{i}", f"u{i}", "m1") for i in range(450))), remaining)
    written = len(world.users.items)
    assert written in (100, 200)  # the chunks already in flight when the first write landed
    assert result.unprocessed == 450 - written and len(result.failed) == 450 - written
