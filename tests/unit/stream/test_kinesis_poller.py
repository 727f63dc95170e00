"""KinesisPoller reproduces the event source mapping's batch semantics exactly (in-memory stream)."""

from __future__ import annotations

import base64
import json
import time
from datetime import UTC, datetime
from typing import Any

from recpipe_dev.local.poller import KinesisPoller

ARN = "arn:aws:kinesis:us-east-1:000000000000:stream/s"


class FakeKinesis:
    def __init__(self, n: int) -> None:
        self.records = [
            {
                "SequenceNumber": f"{1000 + i}",
                "Data": json.dumps({"n": i}).encode(),
                "PartitionKey": f"u{i}",
                "ApproximateArrivalTimestamp": datetime(2026, 1, 1, tzinfo=UTC),
            }
            for i in range(n)
        ]

    def describe_stream_summary(self, StreamName: str) -> dict[str, Any]:
        return {"StreamDescriptionSummary": {"StreamARN": ARN}}

    def list_shards(self, StreamName: str) -> dict[str, Any]:
        return {"Shards": [{"ShardId": "shardId-0"}]}

    def get_shard_iterator(self, **_: Any) -> dict[str, Any]:
        return {"ShardIterator": "0"}

    def get_records(self, ShardIterator: str, Limit: int) -> dict[str, Any]:
        start = int(ShardIterator)
        chunk = self.records[start : start + Limit]
        return {"Records": chunk, "NextShardIterator": str(start + len(chunk))}


class FakeSqs:
    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []

    def send_message(self, QueueUrl: str, MessageBody: str) -> None:
        self.messages.append(json.loads(MessageBody))


def numbers(event: dict[str, Any]) -> list[int]:
    return [json.loads(base64.b64decode(r["kinesis"]["data"]))["n"] for r in event["Records"]]


def test_a_raising_handler_is_bisected_down_to_the_bad_record_which_goes_to_the_failure_queue() -> None:
    delivered: list[list[int]] = []
    applied: list[int] = []

    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        ns = numbers(event)
        delivered.append(ns)
        assert context.get_remaining_time_in_millis() > 0
        if 3 in ns:
            raise RuntimeError("cannot process record 3")
        applied.extend(ns)
        return {"batchItemFailures": []}

    sqs = FakeSqs()
    poller = KinesisPoller(
        FakeKinesis(6), "s", handler, sqs=sqs, failure_queue_url="q", batch_size=10, max_retries=2
    )
    stats = poller.drain()
    assert delivered == [[0, 1, 2, 3, 4, 5], [0, 1, 2], [3, 4, 5], [3], [3], [4, 5]]
    assert applied == [0, 1, 2, 4, 5]
    assert stats.sent_to_failure_queue == 1 and stats.errors == 4
    [message] = sqs.messages
    info = message["KinesisBatchInfo"]
    assert (info["shardId"], info["startSequenceNumber"], info["endSequenceNumber"], info["batchSize"]) == (
        "shardId-0",
        "1003",
        "1003",
        1,
    )
    assert info["streamArn"] == ARN and message["requestContext"]["condition"] == "RetryAttemptsExhausted"


def test_partial_failures_checkpoint_before_the_first_failed_record() -> None:
    delivered: list[list[int]] = []

    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        ns = numbers(event)
        delivered.append(ns)
        seqs = [r["kinesis"]["sequenceNumber"] for r in event["Records"]]
        if len(delivered) == 1:  # records 2 and 4 failed; the mapping resumes at 2
            return {"batchItemFailures": [{"itemIdentifier": seqs[4]}, {"itemIdentifier": seqs[2]}]}
        return {"batchItemFailures": []}

    stats = KinesisPoller(FakeKinesis(6), "s", handler, batch_size=10).drain()
    assert delivered == [[0, 1, 2, 3, 4, 5], [2, 3, 4, 5]]
    assert stats.checkpointed == 6 and stats.redelivered == 4


def test_an_unknown_item_identifier_fails_the_whole_batch_and_retries_are_bounded() -> None:
    calls: list[list[int]] = []

    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        calls.append(numbers(event))
        return {"batchItemFailures": [{"itemIdentifier": "not-a-sequence-number"}]}

    sqs = FakeSqs()
    stats = KinesisPoller(FakeKinesis(3), "s", handler, sqs=sqs, failure_queue_url="q", max_retries=1).drain()
    assert calls == [[0, 1, 2], [0, 1, 2]]  # one try + one retry, never split (no function error)
    assert stats.sent_to_failure_queue == 3
    assert sqs.messages[0]["KinesisBatchInfo"]["startSequenceNumber"] == "1000"
    assert sqs.messages[0]["KinesisBatchInfo"]["endSequenceNumber"] == "1002"


def test_a_short_batch_waits_for_the_batching_window_and_a_full_one_does_not() -> None:
    delivered: list[list[int]] = []

    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        delivered.append(numbers(event))
        return {"batchItemFailures": []}

    short = KinesisPoller(FakeKinesis(3), "s", handler, batch_size=10, batching_window_s=0.05)
    assert short.poll_once().delivered == 0  # 3 of 10 records: the window has just started
    time.sleep(0.06)
    assert short.poll_once().delivered == 3 and delivered == [[0, 1, 2]]

    full = KinesisPoller(FakeKinesis(10), "s", handler, batch_size=10, batching_window_s=60.0)
    assert full.poll_once().delivered == 10
