"""The stream path end to end on a real redis-server and moto: POST /events handler -> Kinesis ->
poller (event source mapping semantics) -> updater handler -> DynamoDB + Redis; failures to the
failure queue; `recpipe replay` re-drives them."""

from __future__ import annotations

import gc
import json
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import boto3
import pytest
import redis
from recpipe.adapters.dynamodb_users import DynamoDBUserFeatureStore
from recpipe.adapters.redis_session import RedisSessionStore, RedisTrendingStore
from recpipe.adapters.sqs import SqsFailureSink
from recpipe.domain.user import UserFeatures
from recpipe.ports import RetryableError
from recpipe.redis_keys import KeyLayout
from recpipe.stream.updater import FeatureUpdater, records_from_lambda_event
from recpipe.stream.wiring import UPDATER_GC_THRESHOLDS
from recpipe_dev.cli import main as cli_main
from recpipe_dev.local.functions import LambdaContext, load_function
from recpipe_dev.local.functions import sample_event as sample
from recpipe_dev.local.poller import KinesisPoller
from recpipe_dev.local.resources import (
    EVENT_STREAM,
    FAILURE_QUEUE,
    USER_FEATURES_TABLE,
    LocalNames,
    create_local_resources,
)

ROOT = Path(__file__).resolve().parents[3]
ENV = "itest"


@dataclass
class Stack:
    names: dict[str, str]
    redis: redis.Redis
    ingest: ModuleType
    update: ModuleType

    @property
    def users(self) -> DynamoDBUserFeatureStore:
        return DynamoDBUserFeatureStore(boto3.client("dynamodb"), self.names[USER_FEATURES_TABLE])

    @property
    def sessions(self) -> RedisSessionStore:
        return RedisSessionStore(self.redis, KeyLayout(ENV))

    def trending(self, now: float) -> list[tuple[str, float]]:
        return RedisTrendingStore(self.redis, KeyLayout(ENV), clock=lambda: now).top(now, 10)

    def poller(self, handler: Any = None, **kw: Any) -> KinesisPoller:
        return KinesisPoller(
            boto3.client("kinesis"),
            self.names[EVENT_STREAM],
            handler or self.update.handler,
            sqs=boto3.client("sqs"),
            failure_queue_url=self.names[FAILURE_QUEUE],
            **kw,
        )

    def queue(self) -> list[dict[str, Any]]:
        sqs = boto3.client("sqs")
        msgs = sqs.receive_message(
            QueueUrl=self.names[FAILURE_QUEUE], MaxNumberOfMessages=10, VisibilityTimeout=0
        )
        return [json.loads(m["Body"]) for m in msgs.get("Messages", [])]

    def post(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        event = sample("ingest_single.json")
        event["body"] = json.dumps(body)
        resp = self.ingest.handler(event, LambdaContext(timeout_s=30))
        return resp["statusCode"], json.loads(resp["body"])


@pytest.fixture()
def stack(
    aws: None, redis_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, write_items: Any
) -> Iterator[Stack]:
    names = create_local_resources(boto3.session.Session(), LocalNames(ENV))
    # The current bundle's item table gives the updater its categories (affinity).
    write_items(
        tmp_path / "bundle", "it-v1", {"260": ["Sci-Fi"], "1196": ["Sci-Fi", "War"], "1210": ["Drama"]}
    )
    for key, value in {
        "ENV_NAME": ENV,
        "REDIS_URL": redis_url,
        "USER_FEATURES_TABLE": names[USER_FEATURES_TABLE],
        "EVENT_STREAM_NAME": names[EVENT_STREAM],
        "FAILURE_QUEUE_URL": names[FAILURE_QUEUE],
        "RECPIPE_BUNDLE_DIR": str(tmp_path / "bundle"),
    }.items():
        monkeypatch.setenv(key, value)
    yield Stack(
        names,
        redis.Redis.from_url(redis_url),
        load_function("ingest_events"),
        load_function("update_features"),
    )


def features(stack: Stack, user: str) -> UserFeatures:
    got = stack.users.get(user)
    assert got is not None, f"no features for {user}"
    return got


def recent_batch() -> tuple[dict[str, Any], float]:
    """The sample batch moved to the last minutes (trending only counts the last hour)."""
    event = sample("ingest_batch.json")
    body = json.loads(event["body"])
    now = time.time()
    for e in body["events"]:
        e["ts"] = now - (1_764_008_200 - e["ts"])
    event["body"] = json.dumps(body)
    return event, now


def test_posted_events_reach_session_immediately_and_features_through_the_stream(stack: Stack) -> None:
    batch, now = recent_batch()
    resp = stack.ingest.handler(batch, LambdaContext(timeout_s=30))
    assert resp["statusCode"] == 202 and json.loads(resp["body"])["accepted"] == 4
    # Read-your-writes: the session is there before any stream processing.
    assert [e.item_id for e in stack.sessions.recent("u-42")] == ["260", "260"]
    assert stack.users.get("u-42") is None

    stats = stack.poller().drain()
    assert stats.delivered == 4 and stats.checkpointed == 4 and stats.sent_to_failure_queue == 0
    u42, u7 = features(stack, "u-42"), features(stack, "u-7")
    assert u42.counts == {"view": 1, "add_to_cart": 1} and u42.cart == frozenset({"260"})
    assert u7.counts == {"rating": 1, "purchase": 1} and set(u7.purchased) == {"1210"}
    assert set(u42.affinity) == {"Sci-Fi"} and set(u7.affinity) == {"Sci-Fi", "War", "Drama"}
    assert u7.affinity["Drama"][0] > u7.affinity["War"][0]  # purchase (8) > half a 4.5-star rating
    assert [e.item_id for e in stack.sessions.recent("u-42")] == ["260", "260"]  # no duplicates
    top = stack.trending(now)
    assert [i for i, _ in top] == ["1210", "260", "1196"]  # purchase 8 > view+cart 5 > rating 4.5/5*3

    # The same events again (producer retry) and a full redelivery of the stream: one effect.
    resp = stack.ingest.handler(batch, LambdaContext(timeout_s=30))
    assert json.loads(resp["body"])["accepted"] == 4
    stack.poller().drain()  # a new poller from TRIM_HORIZON redelivers everything
    # The retried records only move the user's shard mark (one write, no event applied) ...
    again = features(stack, "u-42")
    assert again.counts == u42.counts and again.applied == u42.applied
    # ... after which a redelivery from TRIM_HORIZON does not even write.
    stack.poller().drain()
    assert features(stack, "u-42").version == again.version
    assert stack.trending(now) == top
    assert [e.item_id for e in stack.sessions.recent("u-42")] == ["260", "260"]


def test_the_sample_kinesis_event_through_the_handler(stack: Stack) -> None:
    event = sample("kinesis_batch.json")
    resp = stack.update.handler(event, LambdaContext(timeout_s=30))
    assert resp == {"batchItemFailures": []}
    [poison] = stack.queue()
    assert (
        poison["kind"] == "poison_record"
        and poison["sequenceNumber"] == event["Records"][2]["kinesis"]["sequenceNumber"]
    )
    assert "type: field required" in poison["reason"]
    assert features(stack, "u-42").counts == {"view": 1, "add_to_cart": 1}
    assert stack.update.handler(event, LambdaContext(timeout_s=30)) == {"batchItemFailures": []}  # redelivery
    assert features(stack, "u-42").counts == {"view": 1, "add_to_cart": 1}


class ThrottledUsers:
    """The real DynamoDB store, with throttling injected for some users."""

    def __init__(self, inner: DynamoDBUserFeatureStore, throttled: set[str]) -> None:
        self.inner, self.throttled = inner, throttled

    def get(self, user_id: str) -> UserFeatures | None:
        return self.inner.get(user_id)

    def get_many(self, user_ids: Sequence[str]) -> dict[str, UserFeatures]:
        return self.inner.get_many(user_ids)

    def put(self, features: UserFeatures, expected_version: int) -> UserFeatures:
        if features.user_id in self.throttled:
            raise RetryableError("ProvisionedThroughputExceededException")
        return self.inner.put(features, expected_version)


def test_mixed_batch_gives_exact_batch_item_failures_and_failure_queue_messages(stack: Stack) -> None:
    event = sample("kinesis_batch.json")  # u-42 x2, poison, u-7 purchase, u-42 duplicate
    updater = FeatureUpdater(
        ThrottledUsers(stack.users, {"u-7"}),
        stack.sessions,
        RedisTrendingStore(stack.redis, KeyLayout(ENV), clock=lambda: 1_764_008_200.0),
        SqsFailureSink(boto3.client("sqs"), stack.names[FAILURE_QUEUE]),
    )
    result = updater.process(records_from_lambda_event(event))
    seqs = [r["kinesis"]["sequenceNumber"] for r in event["Records"]]
    assert result.batch_response() == {"batchItemFailures": [{"itemIdentifier": seqs[3]}]}
    assert [(m["kind"], m["sequenceNumber"]) for m in stack.queue()] == [("poison_record", seqs[2])]
    assert stack.users.get("u-7") is None and features(stack, "u-42").counts == {"view": 1, "add_to_cart": 1}


def test_exhausted_retries_go_to_the_failure_queue_and_replay_re_drives_them(
    stack: Stack, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for i in range(6):
        status, _ = stack.post(
            {
                "event_id": f"e{i}",
                "user_id": f"u{i % 2}",
                "item_id": f"m{i}",
                "type": "click",
                "ts": 1_764_008_000 + i,
            }
        )
        assert status == 202
    calls = {"n": 0}

    def broken(event: dict[str, Any], context: Any) -> dict[str, Any]:
        calls["n"] += 1
        raise TimeoutError("DynamoDB unreachable")

    poller = stack.poller(broken, batch_size=10, max_retries=2)
    stats = poller.drain()
    assert stats.sent_to_failure_queue == 6 and stack.users.get("u0") is None
    # 1 try + 2 retries per position; bisecting splits 6 -> 3 -> 1 before giving up on that record.
    assert calls["n"] >= 3
    [first, *_] = stack.queue()
    info = first["KinesisBatchInfo"]
    assert info["shardId"].startswith("shardId-") and info["streamArn"].endswith(stack.names[EVENT_STREAM])
    assert first["requestContext"]["condition"] == "RetryAttemptsExhausted"

    report_file = tmp_path / "replay.json"
    code = cli_main(["replay", "--queue-url", stack.names[FAILURE_QUEUE], "--json", str(report_file)])
    report = json.loads(report_file.read_text())
    assert code == 0, capsys.readouterr()
    assert (
        report["records_read"] == 6
        and report["events_applied"] == 6
        and report["deleted"] == report["messages"]
    )
    assert features(stack, "u0").counts == {"click": 3} and features(stack, "u1").counts == {"click": 3}
    assert stack.queue() == []
    # Replaying again is a no-op: nothing left, and re-applying the same range changes nothing.
    assert cli_main(["replay", "--queue-url", stack.names[FAILURE_QUEUE]]) == 0
    assert features(stack, "u0").counts == {"click": 3}


def test_partial_failures_are_redelivered_from_the_first_failed_record(stack: Stack) -> None:
    for i in range(4):
        stack.post(
            {
                "event_id": f"p{i}",
                "user_id": "solo",
                "item_id": f"m{i}",
                "type": "view",
                "ts": 1_764_008_000 + i,
            }
        )
    seen: list[list[str]] = []

    def flaky(event: dict[str, Any], context: Any) -> dict[str, Any]:
        seqs = [r["kinesis"]["sequenceNumber"] for r in event["Records"]]
        seen.append(seqs)
        if len(seen) == 1:  # first delivery: the third record fails
            return {"batchItemFailures": [{"itemIdentifier": seqs[2]}]}
        return stack.update.handler(event, context)

    stack.poller(flaky).drain()
    assert len(seen) == 2 and seen[1] == seen[0][2:]
    # Records 0 and 1 were checkpointed by the failing call and never applied here: the mapping
    # trusts the handler's answer, which is why the handler must only report what truly failed.
    assert features(stack, "solo").counts == {"view": 2}


def emf_metrics(out: str) -> list[dict[str, Any]]:
    """The CloudWatch EMF documents Powertools printed, one per invocation."""
    docs = [json.loads(line) for line in out.splitlines() if line.startswith("{") and '"_aws"' in line]
    return [d for d in docs if "CloudWatchMetrics" in d["_aws"]]


def test_the_handler_reports_user_state_cache_hits_and_misses(
    stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    event = sample("kinesis_batch.json")  # users u-42 and u-7
    capsys.readouterr()
    gc.unfreeze()
    thresholds = gc.get_threshold()
    try:
        update = load_function("update_features")  # the init phase: builds the updater
        assert gc.get_freeze_count() > 0, "the cold start's objects are left out of full collections"
        assert gc.get_threshold() == UPDATER_GC_THRESHOLDS
    finally:
        gc.set_threshold(*thresholds)
    update.handler(event, LambdaContext(timeout_s=30))
    first = emf_metrics(capsys.readouterr().out)
    update.handler(event, LambdaContext(timeout_s=30))  # a redelivery: both users cached
    second = emf_metrics(capsys.readouterr().out)
    # Powertools writes each metric's values as a list.
    assert [(d["UserStateCache_hits"], d["UserStateCache_misses"]) for d in first] == [([0.0], [2.0])]
    assert [(d["UserStateCache_hits"], d["UserStateCache_misses"]) for d in second] == [([2.0], [0.0])]
