"""The Redis and DynamoDB stores of the stream path against a real redis-server and moto."""

from __future__ import annotations

import json
import zlib
from dataclasses import replace
from typing import Any

import boto3
import pytest
import redis
from recpipe.adapters.dynamodb_users import DynamoDBUserFeatureStore
from recpipe.adapters.redis_session import RedisSessionStore, RedisTrendingStore
from recpipe.domain.events import parse_event
from recpipe.domain.user import StreamPosition, apply_event, behind_mark, event_fingerprint
from recpipe.ports import ConflictError, DependencyError, SessionEntry, TrendingHit
from recpipe.redis_keys import SESSION_MAX_ITEMS, TRENDING_BUCKET_S, TRENDING_BUCKETS, KeyLayout
from recpipe_dev.local.resources import USER_FEATURES_TABLE, dynamodb_create_args, load_template
from recpipe_dev.testing.fakes_stream import InMemorySessionStore, InMemoryTrendingStore

NOW = 1_750_000_000.0


@pytest.fixture()
def client(redis_url: str) -> redis.Redis:
    return redis.Redis.from_url(redis_url)


@pytest.fixture(params=["document", "native"])
def table(aws: None, request: pytest.FixtureRequest) -> DynamoDBUserFeatureStore:
    ddb = boto3.client("dynamodb")
    ddb.create_table(**dynamodb_create_args(load_template(), USER_FEATURES_TABLE, "users"))
    return DynamoDBUserFeatureStore(ddb, "users", clock=lambda: NOW, layout=request.param)


def test_session_is_newest_first_bounded_and_duplicate_free(client: redis.Redis) -> None:
    store, fake = RedisSessionStore(client, KeyLayout("t")), InMemorySessionStore()
    entries = [SessionEntry(f"i{n}", "view", NOW + n) for n in range(SESSION_MAX_ITEMS + 10)]
    for s in (store, fake):
        s.append("u1", entries[:30])
        s.append("u1", entries[25:])  # overlap: written by ingest and again by the updater
        s.append("u1", [SessionEntry("late", "click", NOW - 100)])  # older than everything kept
    got = store.recent("u1", limit=100)
    assert [e.item_id for e in got] == [f"i{n}" for n in range(SESSION_MAX_ITEMS + 9, 9, -1)]
    assert got == fake.recent("u1", limit=100)
    assert store.recent("u1", limit=2) == got[:2]
    assert store.recent("nobody") == []
    assert 0 < client.ttl(KeyLayout("t").session("u1")) <= 1800


def test_a_batch_of_users_is_appended_like_one_user_at_a_time(client: redis.Redis) -> None:
    """append_many (one Lua script) gives every user what append gives: more entries than one
    ZADD takes (250), a repeated entry, an empty list, the bound and the TTL."""
    batch, fake = RedisSessionStore(client, KeyLayout("t")), InMemorySessionStore()
    many = [SessionEntry(f"i{n}", "view", NOW + n * 0.001) for n in range(250)]
    by_user = {
        "a": many,
        "b": [
            SessionEntry("x", "click", NOW),
            SessionEntry("x", "click", NOW),
            SessionEntry("y", "view", NOW + 1),
        ],
        "c": [],
        "d": [SessionEntry("z", "purchase", NOW - 7)],
    }
    batch.append_many(by_user)
    fake.append_many(by_user)
    for user in by_user:
        assert batch.recent(user, limit=1000) == fake.recent(user, limit=1000)
    assert len(batch.recent("a", limit=1000)) == SESSION_MAX_ITEMS
    assert client.zcard(KeyLayout("t").session("b")) == 2
    assert not client.exists(KeyLayout("t").session("c"))
    assert 0 < client.ttl(KeyLayout("t").session("d")) <= 1800
    batch.append_many({})  # nothing to write: no round trip, no error


def test_trending_counts_each_event_once_and_normalises(client: redis.Redis) -> None:
    store = RedisTrendingStore(client, KeyLayout("t"), clock=lambda: NOW)
    fake = InMemoryTrendingStore(clock=lambda: NOW)
    hits = [
        TrendingHit("e1", "a", NOW - 10, 8.0),
        TrendingHit("e2", "b", NOW - 10, 2.0),
        TrendingHit("e3", "b", NOW - TRENDING_BUCKET_S * 3, 2.0),
        TrendingHit("e4", "c", NOW - TRENDING_BUCKET_S * (TRENDING_BUCKETS + 2), 50.0),  # too old
        TrendingHit("e5", "d", NOW - 5, -1.0),  # net negative: never trending
    ]
    assert store.add_once(hits) == 4
    assert store.add_once(hits) == 0  # redelivery
    assert fake.add_once(hits) == 4 and fake.add_once(hits) == 0
    top = store.top(NOW, 10)
    assert [i for i, _ in top] == ["a", "b"]
    assert top[0][1] == pytest.approx(1.0)
    assert top[1][1] == pytest.approx((2.0 + 2.0 * 0.5 ** (3 / 4)) / 8.0, rel=1e-6)
    fake_top = fake.top(NOW, 10)
    assert [i for i, _ in fake_top] == ["a", "b"]
    assert [s for _, s in fake_top] == pytest.approx([s for _, s in top], rel=1e-6)
    assert store.top(NOW, 1) == top[:1]


def test_trending_counts_an_event_given_twice_in_one_call_once(client: redis.Redis) -> None:
    store = RedisTrendingStore(client, KeyLayout("t"), clock=lambda: NOW)
    hit = TrendingHit("e9", "a/b:c", NOW - 1, 1.5)
    other_bucket = TrendingHit("e10", "a/b:c", NOW - TRENDING_BUCKET_S, 0.25)
    assert store.add_once([hit, other_bucket, hit]) == 2
    assert store.add_once([hit]) == 0
    scores = [
        client.zscore(KeyLayout("t").trending_bucket(int(h.ts // TRENDING_BUCKET_S)), h.item_id)
        for h in (hit, other_bucket)
    ]
    assert scores == [1.5, 0.25]


def test_user_features_round_trip_and_conflicts(table: DynamoDBUserFeatureStore) -> None:
    ev = parse_event(
        {"event_id": "e1", "user_id": "u1", "item_id": "i1", "type": "add_to_cart", "ts": NOW}, now=NOW
    )
    features = apply_event(None, ev, ["Drama", "Comedy"])
    stored = table.put(features, expected_version=0)
    assert stored.version == 1
    got = table.get("u1")
    assert got == stored
    assert got is not None and got.cart == frozenset({"i1"})
    with pytest.raises(ConflictError):
        table.put(features, expected_version=0)
    with pytest.raises(ConflictError):
        table.put(stored, expected_version=5)
    assert table.put(stored, expected_version=1).version == 2
    assert table.get("missing") is None
    many = table.get_many(["u1", "missing", "u1"])
    assert set(many) == {"u1"} and many["u1"].version == 2


def test_both_layouts_are_readable_and_keep_floats_exact(aws: None) -> None:
    ddb = boto3.client("dynamodb")
    ddb.create_table(**dynamodb_create_args(load_template(), USER_FEATURES_TABLE, "users"))
    doc = DynamoDBUserFeatureStore(ddb, "users", clock=lambda: NOW)
    native = DynamoDBUserFeatureStore(ddb, "users", layout="native")
    state = None
    for i, ts in enumerate((NOW - 0.1, NOW - 1e-3 / 3, NOW)):
        raw = {
            "event_id": f"e{i}",
            "user_id": "u1",
            "item_id": f"i{i}",
            "type": "rating",
            "value": 4.5,
            "ts": ts,
        }
        state = apply_event(state, parse_event(raw, now=NOW), ["Drama"])
    assert state is not None
    native.put(state, expected_version=0)
    assert doc.get("u1") == replace(state, version=1)  # native item read by the document store
    stored = doc.put(doc.get("u1") or state, expected_version=1)
    item = ddb.get_item(TableName="users", Key={"user_id": {"S": "u1"}})["Item"]
    assert item["features_format"]["S"] == "json+deflate/3" and item["total_events"]["N"] == "3"
    # The applied events' fingerprints sit beside the document, 8 bytes each, oldest first.
    assert item["applied"]["B"] == b"".join(event_fingerprint(f"e{i}") for i in range(3))
    assert int(item["expires_at"]["N"]) == int(NOW) + 180 * 24 * 3600
    assert native.get("u1") == stored and stored.affinity == state.affinity  # bit-exact floats


def test_items_written_before_fingerprints_are_read_and_bad_fingerprints_refused(aws: None) -> None:
    ddb = boto3.client("dynamodb")
    ddb.create_table(**dynamodb_create_args(load_template(), USER_FEATURES_TABLE, "users"))
    store = DynamoDBUserFeatureStore(ddb, "users", clock=lambda: NOW)
    raw = {"event_id": "e1", "user_id": "u1", "item_id": "i1", "type": "view", "ts": NOW}
    state = apply_event(None, parse_event(raw, now=NOW))
    body = state.to_item()
    del body["user_id"], body["version"], body["applied"]
    body["applied_event_ids"] = ["e1"]
    v1 = {
        "user_id": {"S": "u1"},
        "version": {"N": "4"},
        "features_format": {"S": "json+zlib/1"},
        "features": {"B": zlib.compress(json.dumps(body).encode())},
    }
    ddb.put_item(TableName="users", Item=v1)
    assert store.get("u1") == replace(state, version=4)
    # Written back, it takes the current format: the redelivered e1 is still known.
    store.put(store.get("u1") or state, expected_version=4)
    again = store.get("u1")
    assert again is not None and again.has_applied("e1") and again.version == 5

    item = ddb.get_item(TableName="users", Key={"user_id": {"S": "u1"}})["Item"]
    item["applied"] = {"B": item["applied"]["B"][:-1]}  # truncated: not whole fingerprints
    ddb.put_item(TableName="users", Item=item)
    with pytest.raises(DependencyError, match="unreadable feature item.*not a whole number of fingerprints"):
        store.get("u1")


def test_items_of_the_previous_document_format_are_read_and_written_back_in_the_current_one(
    aws: None,
) -> None:
    """json+zlib/2 (nested pairs, what deployments wrote before columns) stays readable; a write
    turns the item into json+deflate/3 with the same state, fingerprints and marks."""
    ddb = boto3.client("dynamodb")
    ddb.create_table(**dynamodb_create_args(load_template(), USER_FEATURES_TABLE, "users"))
    store = DynamoDBUserFeatureStore(ddb, "users", clock=lambda: NOW)
    state = None
    for i, (typ, ts) in enumerate(
        (("add_to_cart", NOW - 60), ("purchase", NOW - 30), ("view", NOW - 1e-3 / 3))
    ):
        raw = {"event_id": f"e{i}", "user_id": "u1", "item_id": f"i{i}", "type": typ, "ts": ts}
        state = apply_event(
            state,
            parse_event(raw, now=NOW),
            ["Drama"],
            position=StreamPosition("shard-0", f"{10 + i}"),
            now=NOW,
        )
    assert state is not None and state.marks and state.cart_ops and state.purchased
    v2 = {
        "user_id": {"S": "u1"},
        "version": {"N": "3"},
        "total_events": {"N": "3"},
        "features_format": {"S": "json+zlib/2"},
        # As the previous encoder wrote it: zlib(JSON of document()), fingerprints beside it.
        "features": {"B": zlib.compress(json.dumps(state.document()).encode(), 1)},
        "applied": {"B": state.applied},
    }
    ddb.put_item(TableName="users", Item=v2)
    read = store.get("u1")
    assert read == replace(state, version=3)
    assert (
        read is not None
        and read.has_applied("e2")
        and behind_mark(read.marks, StreamPosition("shard-0", "12"))
    )
    written = store.put(read, expected_version=3)
    item = ddb.get_item(TableName="users", Key={"user_id": {"S": "u1"}})["Item"]
    assert item["features_format"]["S"] == "json+deflate/3"
    assert store.get("u1") == written == replace(state, version=4)


def test_put_many_transaction_against_moto_reports_the_conflicting_user(
    table: DynamoDBUserFeatureStore,
) -> None:
    def view(i: int, user: str) -> Any:
        e = {"event_id": f"t{i}", "user_id": user, "item_id": f"i{i}", "type": "view", "ts": NOW}
        return parse_event(e, now=NOW)

    users = [f"u{i}" for i in range(4)]
    first = table.put_many([(apply_event(None, view(i, u)), 0) for i, u in enumerate(users)])
    assert {u: getattr(f, "version", f) for u, f in first.items()} == dict.fromkeys(users, 1)
    # u1 moves on behind the batch's back: its Put fails its condition and cancels the
    # transaction; moto names the reason per item and the other three are committed on re-submit.
    assert table.put(apply_event(table.get("u1"), view(99, "u1")), expected_version=1).version == 2
    out = table.put_many([(apply_event(table.get(u), view(10 + i, u)), 1) for i, u in enumerate(users)])
    assert isinstance(out["u1"], ConflictError)
    got = table.get_many(users)
    assert {u: f.version for u, f in got.items()} == {"u0": 2, "u1": 2, "u2": 2, "u3": 2}
    # u1 holds the concurrent writer's event, not the batch's (the caller re-reads and re-applies).
    assert got["u1"].has_applied("t99") and not got["u1"].has_applied("t11")
    assert got["u0"].has_applied("t10")
