"""Adapter behaviour that moto cannot provoke: PutRecords partial failures, throttling codes,
SQS batch failures, DynamoDB error mapping."""

from __future__ import annotations

import json
import zlib
from typing import Any

import orjson
import pytest
from botocore.exceptions import ClientError, ReadTimeoutError
from recpipe.adapters.dynamodb_users import (
    DynamoDBUserFeatureStore,
    decode_item,
    encode_item,
    map_client_error,
)
from recpipe.adapters.kinesis import PUT_RECORDS_MAX, KinesisEventPublisher
from recpipe.adapters.sqs import SqsFailureSink
from recpipe.domain.events import Event, parse_event
from recpipe.domain.user import UserFeatures, apply_event
from recpipe.ports import ConflictError, DependencyError, RetryableError

NOW = 1_764_010_000.0


def event(i: int, user: str = "u1") -> Event:
    return parse_event(
        {"event_id": f"e{i}", "user_id": user, "item_id": f"m{i}", "type": "view", "ts": NOW}, now=NOW
    )


def client_error(code: str, op: str = "PutRecords") -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": code}}, op)


class FakeKinesis:
    """Fails the records whose event ids are listed, for the given number of attempts."""

    def __init__(self, fail: dict[str, int], raise_first: list[Exception] | None = None) -> None:
        self.fail = dict(fail)
        self.raise_first = list(raise_first or [])
        self.calls: list[list[str]] = []

    def put_records(self, StreamName: str, Records: list[dict[str, Any]]) -> dict[str, Any]:
        if self.raise_first:
            raise self.raise_first.pop(0)
        ids = [json.loads(r["Data"])["event_id"] for r in Records]
        self.calls.append(ids)
        out = []
        for r, eid in zip(Records, ids, strict=True):
            assert r["PartitionKey"] == json.loads(r["Data"])["user_id"]
            if self.fail.get(eid, 0) > 0:
                self.fail[eid] -= 1
                out.append(
                    {"ErrorCode": "ProvisionedThroughputExceededException", "ErrorMessage": "slow down"}
                )
            else:
                out.append({"SequenceNumber": "1", "ShardId": "shardId-0"})
        return {"FailedRecordCount": sum("ErrorCode" in o for o in out), "Records": out}


def publisher(kinesis: FakeKinesis) -> tuple[KinesisEventPublisher, list[float]]:
    sleeps: list[float] = []
    return KinesisEventPublisher(kinesis, "s", sleep=sleeps.append), sleeps


def test_partially_failed_records_are_retried_alone_with_growing_backoff() -> None:
    kinesis = FakeKinesis({"e1": 2})
    pub, sleeps = publisher(kinesis)
    assert pub.publish([event(0), event(1), event(2)]) == []
    assert kinesis.calls == [["e0", "e1", "e2"], ["e1"], ["e1"]]
    assert len(sleeps) == 2 and sleeps[1] > sleeps[0] * 0.9  # exponential with jitter in [0.5, 1)


def test_records_failing_every_attempt_are_returned_with_the_reason() -> None:
    pub, _ = publisher(FakeKinesis({"e1": 99}))
    failed = pub.publish([event(0), event(1)])
    assert [(e.event_id, reason) for e, reason in failed] == [
        ("e1", "stream unavailable, retry (ProvisionedThroughputExceededException)")
    ]


def test_a_throttled_call_is_retried_and_a_fatal_one_is_not() -> None:
    kinesis = FakeKinesis({}, raise_first=[client_error("ProvisionedThroughputExceededException")])
    pub, _ = publisher(kinesis)
    assert pub.publish([event(0)]) == [] and kinesis.calls == [["e0"]]
    pub, _ = publisher(FakeKinesis({}, raise_first=[client_error("ResourceNotFoundException")]))
    [(_event, reason)] = pub.publish([event(0)])
    assert reason == "stream unavailable, retry (ResourceNotFoundException)"


def test_no_retry_starts_after_the_time_budget() -> None:
    now = [0.0]
    kinesis = FakeKinesis({"e1": 99})
    pub = KinesisEventPublisher(
        kinesis, "s", budget_s=0.1, sleep=lambda s: now.__setitem__(0, now[0] + s), clock=lambda: now[0]
    )
    kinesis.put_records = _slow(kinesis.put_records, now, 0.06)  # type: ignore[method-assign]
    [(_event, reason)] = pub.publish([event(0), event(1)])
    assert len(kinesis.calls) == 2 and reason.startswith("stream unavailable, retry")
    assert now[0] < 0.2


def _slow(call: Any, now: list[float], seconds: float) -> Any:
    def slow(**kwargs: Any) -> Any:
        now[0] += seconds
        return call(**kwargs)

    return slow


def test_large_requests_are_split_at_the_put_records_limit() -> None:
    kinesis = FakeKinesis({})
    pub, _ = publisher(kinesis)
    assert pub.publish([event(i) for i in range(PUT_RECORDS_MAX + 1)]) == []
    assert [len(c) for c in kinesis.calls] == [PUT_RECORDS_MAX, 1]


class FakeSqs:
    def __init__(self, failed: int = 0) -> None:
        self.sent: list[dict[str, Any]] = []
        self.failed = failed

    def send_message_batch(self, QueueUrl: str, Entries: list[dict[str, Any]]) -> dict[str, Any]:
        self.sent += [json.loads(e["MessageBody"]) for e in Entries]
        return {"Failed": [{"Id": "0", "Code": "InternalError"}] * self.failed}


def test_failure_reports_are_sent_in_batches_of_ten_and_partial_failure_is_an_error() -> None:
    sqs = FakeSqs()
    SqsFailureSink(sqs, "q").report([{"n": i} for i in range(23)])
    assert [m["n"] for m in sqs.sent] == list(range(23))
    with pytest.raises(RetryableError, match="InternalError"):
        SqsFailureSink(FakeSqs(failed=1), "q").report([{"n": 1}])


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (client_error("ConditionalCheckFailedException", "PutItem"), ConflictError),
        (client_error("ProvisionedThroughputExceededException", "PutItem"), RetryableError),
        (client_error("ThrottlingException", "PutItem"), RetryableError),
        (client_error("InternalServerError", "PutItem"), RetryableError),
        (client_error("AccessDeniedException", "PutItem"), DependencyError),
        (ReadTimeoutError(endpoint_url="http://x"), RetryableError),
    ],
)
def test_dynamodb_errors_map_to_domain_errors(exc: Exception, expected: type[Exception]) -> None:
    mapped = map_client_error(exc, "put user u1")
    assert type(mapped) is expected
    assert "put user u1" in str(mapped)


class ThrottledDynamoDB:
    def __init__(self, unprocessed_rounds: int) -> None:
        self.rounds = unprocessed_rounds
        self.calls = 0

    def batch_get_item(self, RequestItems: dict[str, Any]) -> dict[str, Any]:
        self.calls += 1
        keys = RequestItems["t"]["Keys"]
        if self.rounds > 0:
            self.rounds -= 1
            return {"Responses": {"t": []}, "UnprocessedKeys": {"t": {"Keys": keys}}}
        state = apply_event(None, event(1, user=keys[0]["user_id"]["S"]))
        return {"Responses": {"t": [encode_item(state)]}}


def test_unprocessed_keys_are_retried_then_reported_as_throttling() -> None:
    ddb = ThrottledDynamoDB(unprocessed_rounds=2)
    store = DynamoDBUserFeatureStore(ddb, "t", sleep=lambda _s: None)
    assert set(store.get_many(["u1"])) == {"u1"} and ddb.calls == 3
    store = DynamoDBUserFeatureStore(ThrottledDynamoDB(unprocessed_rounds=99), "t", sleep=lambda _s: None)
    with pytest.raises(RetryableError, match="unprocessed"):
        store.get_many(["u1"])


def test_a_corrupt_feature_document_is_a_dependency_error_not_a_crash() -> None:
    item = encode_item(apply_event(None, event(1)))
    assert decode_item(item).counts == {"view": 1}
    item["features"] = {"B": b"not zlib"}

    class OneItem:
        def get_item(self, **_: Any) -> dict[str, Any]:
            return {"Item": item}

    with pytest.raises(DependencyError, match="unreadable feature item"):
        DynamoDBUserFeatureStore(OneItem(), "t").get("u1")


def heavy_user(n: int = 600) -> UserFeatures:
    """A user whose document is well past the 8 KB deflate window: full recent, cart, purchases."""
    kinds = ("view", "add_to_cart", "purchase", "remove_from_cart")
    state = None
    for i in range(n):
        body = {"event_id": f"h{i}", "user_id": "heavy", "item_id": f"sku-{i * 7919 % 5000}"}
        body |= {"type": kinds[i % 4], "ts": NOW - (n - i) * 37.0}
        state = apply_event(state, parse_event(body, now=NOW), (f"c{i % 40}", f"c{i % 13}"), now=NOW)
    assert state is not None
    return state


def test_items_are_read_by_the_json_deflate_3_reader_of_earlier_releases() -> None:
    """What the release that introduced json+deflate/3 did to read an item: stdlib zlib with an
    8 KB window. Items written now must stay readable by it (a rollback stays safe)."""
    for state in (apply_event(None, event(1)), heavy_user()):
        item = encode_item(state)
        assert item["features_format"] == {"S": "json+deflate/3"}
        document = zlib.decompress(item["features"]["B"], -13)
        assert document == orjson.dumps(state.columns())
        old = UserFeatures.from_columns(
            orjson.loads(document), item["user_id"]["S"], int(item["version"]["N"]), item["applied"]["B"]
        )
        assert old == state == decode_item(item)
    assert len(zlib.decompress(encode_item(heavy_user())["features"]["B"], -13)) > 8192


class TransactionalDynamoDB:
    """TransactWriteItems like DynamoDB: all-or-nothing, conditional on each item's version;
    a cancelled transaction names each item's reason (ConditionalCheckFailed / None / ...).
    `reasons_once` forces reasons (by user) on the next transaction."""

    def __init__(self) -> None:
        self.versions: dict[str, int] = {}
        self.transactions: list[list[str]] = []
        self.single_puts: list[str] = []
        self.reasons_once: dict[str, str] = {}

    def _condition_holds(self, put: dict[str, Any]) -> bool:
        user = put["Item"]["user_id"]["S"]
        if put["ConditionExpression"] == "attribute_not_exists(user_id)":
            return user not in self.versions
        return self.versions.get(user) == int(put["ExpressionAttributeValues"][":expected"]["N"])

    def transact_write_items(self, TransactItems: list[dict[str, Any]], ClientRequestToken: str) -> None:
        puts = [t["Put"] for t in TransactItems]
        users = [p["Item"]["user_id"]["S"] for p in puts]
        self.transactions.append(users)
        forced, self.reasons_once = self.reasons_once, {}
        reasons = []
        for p, u in zip(puts, users, strict=True):
            code = forced.get(u) or ("None" if self._condition_holds(p) else "ConditionalCheckFailed")
            reasons.append({"Code": code})
        if any(r["Code"] != "None" for r in reasons):
            raise ClientError(
                {
                    "Error": {"Code": "TransactionCanceledException", "Message": "cancelled"},
                    "CancellationReasons": reasons,
                },
                "TransactWriteItems",
            )
        for p, u in zip(puts, users, strict=True):
            self.versions[u] = int(p["Item"]["version"]["N"])

    def put_item(self, **put: Any) -> None:
        user = put["Item"]["user_id"]["S"]
        self.single_puts.append(user)
        if not self._condition_holds(put):
            raise client_error("ConditionalCheckFailedException", "PutItem")
        self.versions[user] = int(put["Item"]["version"]["N"])


def test_put_many_commits_a_batch_in_one_transaction_and_reapplies_only_the_conflicting_user() -> None:
    ddb = TransactionalDynamoDB()
    store = DynamoDBUserFeatureStore(ddb, "t", sleep=lambda _s: None)
    users = [f"u{i}" for i in range(5)]
    first = store.put_many([(apply_event(None, event(i, user=u)), 0) for i, u in enumerate(users)])
    assert ddb.transactions == [users] and {u: f.version for u, f in first.items()} == dict.fromkeys(users, 1)  # type: ignore[union-attr]

    ddb.versions["u2"] = 2  # a concurrent writer (a replay) got to u2 first
    out = store.put_many([(apply_event(first[u], event(10 + i, user=u)), 1) for i, u in enumerate(users)])  # type: ignore[arg-type]
    # The first transaction is cancelled as a whole; the innocent four are re-submitted at once
    # (no backoff), u2 is left to the caller to re-read and re-apply.
    assert ddb.transactions[1:] == [users, ["u0", "u1", "u3", "u4"]]
    assert isinstance(out["u2"], ConflictError)
    assert {u: o.version for u, o in out.items() if u != "u2"} == {"u0": 2, "u1": 2, "u3": 2, "u4": 2}  # type: ignore[union-attr]
    assert ddb.versions == {"u0": 2, "u1": 2, "u2": 2, "u3": 2, "u4": 2}


def test_put_many_retries_throttled_items_with_backoff_then_gives_retryable_error() -> None:
    ddb = TransactionalDynamoDB()
    sleeps: list[float] = []
    store = DynamoDBUserFeatureStore(ddb, "t", sleep=sleeps.append)
    ddb.reasons_once = {"u1": "ThrottlingError"}
    out = store.put_many([(apply_event(None, event(i, user=f"u{i}")), 0) for i in range(3)])
    assert len(sleeps) == 1 and ddb.transactions == [["u0", "u1", "u2"]] * 2
    assert all(not isinstance(o, Exception) for o in out.values())

    class AlwaysThrottled(TransactionalDynamoDB):
        def transact_write_items(self, TransactItems: list[dict[str, Any]], ClientRequestToken: str) -> None:
            self.reasons_once = {
                t["Put"]["Item"]["user_id"]["S"]: "TransactionConflict" for t in TransactItems
            }
            super().transact_write_items(TransactItems, ClientRequestToken)

    store = DynamoDBUserFeatureStore(AlwaysThrottled(), "t", sleep=lambda _s: None)
    out = store.put_many([(apply_event(None, event(i, user=f"v{i}")), 0) for i in range(3)])
    assert all(isinstance(o, RetryableError) and "cancelled 4 times" in str(o) for o in out.values())


def test_put_many_maps_non_retryable_reasons_and_whole_request_errors() -> None:
    ddb = TransactionalDynamoDB()
    store = DynamoDBUserFeatureStore(ddb, "t", sleep=lambda _s: None)
    ddb.reasons_once = {"u0": "ValidationError"}
    out = store.put_many([(apply_event(None, event(i, user=f"u{i}")), 0) for i in range(2)])
    assert type(out["u0"]) is DependencyError and "ValidationError" in str(out["u0"])
    assert not isinstance(out["u1"], Exception)

    class Down(TransactionalDynamoDB):
        def transact_write_items(self, **_: Any) -> None:
            raise client_error("ThrottlingException", "TransactWriteItems")

    out = DynamoDBUserFeatureStore(Down(), "t").put_many(
        [(apply_event(None, event(i, user=f"w{i}")), 0) for i in range(2)]
    )
    assert all(type(o) is RetryableError for o in out.values())


def test_put_many_of_one_user_is_a_plain_conditional_put() -> None:
    ddb = TransactionalDynamoDB()
    store = DynamoDBUserFeatureStore(ddb, "t")
    store.put_many([(apply_event(None, event(1)), 0)])
    out = store.put_many([(apply_event(None, event(2)), 0)])  # stale expected version
    assert ddb.transactions == [] and ddb.single_puts == ["u1", "u1"]
    assert isinstance(out["u1"], ConflictError)
