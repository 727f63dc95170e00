"""Re-drive the records named by on-failure messages back through the feature updater.

An on-failure message (KinesisBatchInfo) names a shard and a sequence range, not the data: the
records are re-read from Kinesis (AT_SEQUENCE_NUMBER, so within the stream's retention only)
and processed again. Because every updater write is idempotent, replaying a range that was
partly applied is safe. A message is deleted only when its whole range succeeded; poison-record
reports (`kind: poison_record`) are never replayable and are left for a human.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from recpipe.stream.updater import StreamRecord, UpdateResult

logger = logging.getLogger(__name__)

Process = Callable[[Sequence[StreamRecord]], UpdateResult]


@dataclass
class RedriveReport:
    messages: int = 0
    batches_replayed: int = 0
    records_read: int = 0
    events_applied: int = 0
    duplicates: int = 0
    deleted: int = 0
    failed_batches: int = 0
    poison_reports_left: int = 0
    unrecognised_left: int = 0
    problems: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def stream_name_of(arn: str) -> str:
    return arn.rsplit("/", 1)[-1]


def read_range(kinesis: Any, stream_arn: str, shard_id: str, start: str, end: str) -> list[StreamRecord]:
    """Records of `shard_id` with start <= sequence number <= end."""
    stream = stream_name_of(stream_arn)
    iterator = kinesis.get_shard_iterator(
        StreamName=stream,
        ShardId=shard_id,
        ShardIteratorType="AT_SEQUENCE_NUMBER",
        StartingSequenceNumber=start,
    )["ShardIterator"]
    out: list[StreamRecord] = []
    last = int(end)
    while iterator:
        resp = kinesis.get_records(ShardIterator=iterator, Limit=1000)
        for r in resp["Records"]:
            if int(r["SequenceNumber"]) > last:
                return out
            out.append(
                StreamRecord(
                    sequence_number=r["SequenceNumber"],
                    data=r["Data"],
                    partition_key=r["PartitionKey"],
                    shard_id=shard_id,
                    stream_arn=stream_arn,
                )
            )
        if not resp["Records"] and resp.get("MillisBehindLatest", 0) == 0:
            return out
        iterator = resp.get("NextShardIterator")
    return out


class Redriver:
    def __init__(self, sqs: Any, kinesis: Any, queue_url: str, process: Process) -> None:
        self._sqs = sqs
        self._kinesis = kinesis
        self._queue_url = queue_url
        self._process = process

    def run(self, max_messages: int = 100, *, visibility_timeout_s: int = 300) -> RedriveReport:
        report = RedriveReport()
        seen: set[str] = set()
        while report.messages < max_messages:
            resp = self._sqs.receive_message(
                QueueUrl=self._queue_url,
                MaxNumberOfMessages=min(10, max_messages - report.messages),
                VisibilityTimeout=visibility_timeout_s,
                WaitTimeSeconds=0,
            )
            messages = [m for m in resp.get("Messages", []) if m["MessageId"] not in seen]
            if not messages:
                break
            for message in messages:
                seen.add(message["MessageId"])
                report.messages += 1
                self._handle(message, report)
        return report

    def _handle(self, message: dict[str, Any], report: RedriveReport) -> None:
        try:
            body = json.loads(message["Body"])
        except json.JSONDecodeError:
            body = None
        info = body.get("KinesisBatchInfo") if isinstance(body, dict) else None
        if not isinstance(info, dict):
            if isinstance(body, dict) and body.get("kind") == "poison_record":
                report.poison_reports_left += 1
            else:
                report.unrecognised_left += 1
                report.problems.append(f"message {message['MessageId']}: not an on-failure message")
            return
        try:
            records = read_range(
                self._kinesis,
                info["streamArn"],
                info["shardId"],
                info["startSequenceNumber"],
                info["endSequenceNumber"],
            )
        except Exception as exc:  # expired iterator, unknown shard, network: keep the message
            report.failed_batches += 1
            report.problems.append(f"{info.get('shardId')} {info.get('startSequenceNumber')}: {exc}")
            return
        report.records_read += len(records)
        if not records:
            report.failed_batches += 1
            report.problems.append(
                f"{info['shardId']} {info['startSequenceNumber']}..{info['endSequenceNumber']}: "
                "no records (past the stream's retention?)"
            )
            return
        result = self._process(records)
        report.batches_replayed += 1
        report.events_applied += result.applied
        report.duplicates += result.duplicates
        if result.failed:
            report.failed_batches += 1
            report.problems.append(
                f"{info['shardId']}: {len(result.failed)} records failed again; message kept"
            )
            return
        self._sqs.delete_message(QueueUrl=self._queue_url, ReceiptHandle=message["ReceiptHandle"])
        report.deleted += 1
