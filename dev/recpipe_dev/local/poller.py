"""KinesisPoller: the local stack's stand-in for Lambda's Kinesis event source mapping.

It reads every shard of the (moto) stream and invokes the updater handler with the same event
shape and the same batch semantics as the mapping configured in template.yaml
(FunctionResponseTypes: ReportBatchItemFailures, BisectBatchOnFunctionError,
MaximumRetryAttempts, on-failure destination):
- the handler returns `batchItemFailures`: records before the lowest failed sequence number are
  checkpointed, the batch is redelivered from that record;
- the handler raises: the batch is retried, split in half first when bisecting is on;
- after `max_retries` failed attempts on the same first record, an on-failure message naming
  the shard and sequence range (KinesisBatchInfo, as Lambda sends it) goes to the failure queue
  and the records are skipped. `recpipe replay` re-drives them.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

logger = logging.getLogger(__name__)

Handler = Callable[[dict[str, Any], Any], dict[str, Any] | None]


@dataclass
class PollerContext:
    """The slice of the Lambda context the handlers use."""

    deadline: float
    function_name: str = "FeatureUpdaterFunction"
    memory_limit_in_mb: int = 1024
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:000000000000:function:FeatureUpdaterFunction"
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self.deadline - time.monotonic()) * 1000))


@dataclass
class _Shard:
    shard_id: str
    iterator: str | None
    pending: list[dict[str, Any]] = field(default_factory=list)
    attempts: int = 0
    limit: int = 0  # current batch size limit (halved by bisecting)
    #: When the oldest undelivered record was read (the batching window runs from here).
    waiting_since: float | None = None


@dataclass
class PollStats:
    delivered: int = 0
    checkpointed: int = 0
    redelivered: int = 0
    sent_to_failure_queue: int = 0
    errors: int = 0


class KinesisPoller:
    def __init__(
        self,
        kinesis: Any,
        stream_name: str,
        handler: Handler,
        *,
        sqs: Any = None,
        failure_queue_url: str | None = None,
        batch_size: int = 100,
        max_retries: int = 3,
        bisect_on_error: bool = True,
        starting_position: str = "TRIM_HORIZON",
        function_timeout_s: float = 60.0,
        idle_sleep_s: float = 0.05,
        batching_window_s: float = 0.0,
    ) -> None:
        self._kinesis = kinesis
        self._stream = stream_name
        self._handler = handler
        self._sqs = sqs
        self._queue_url = failure_queue_url
        self._batch_size = batch_size
        self._max_retries = max_retries
        self._bisect = bisect_on_error
        self._starting_position = starting_position
        self._timeout_s = function_timeout_s
        self._idle_sleep_s = idle_sleep_s
        # MaximumBatchingWindowInSeconds: a batch short of batch_size waits this long for more
        # records, as the event source mapping does (0: deliver whatever is there).
        self._window_s = batching_window_s
        self._shards: dict[str, _Shard] = {}
        self._stream_arn = ""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.totals = PollStats()

    # ---- lifecycle ----------------------------------------------------------------------------
    def start(self) -> None:
        self._discover()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="kinesis-poller", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                stats = self.poll_once()
            except Exception:
                logger.exception("poller round failed")
                self._stop.wait(1.0)
                continue
            if not stats.delivered:
                self._stop.wait(self._idle_sleep_s)

    # ---- one round over all shards --------------------------------------------------------------
    def poll_once(self) -> PollStats:
        if not self._shards:
            self._discover()
        stats = PollStats()
        for shard in self._shards.values():
            self._fill(shard)
            if shard.pending and self._batch_ready(shard):
                self._deliver(shard, stats)
        for name in ("delivered", "checkpointed", "redelivered", "sent_to_failure_queue", "errors"):
            setattr(self.totals, name, getattr(self.totals, name) + getattr(stats, name))
        return stats

    def drain(self, timeout_s: float = 30.0) -> PollStats:
        """Poll until a round delivers nothing (everything readable was processed)."""
        total = PollStats()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            stats = self.poll_once()
            for name in ("delivered", "checkpointed", "redelivered", "sent_to_failure_queue", "errors"):
                setattr(total, name, getattr(total, name) + getattr(stats, name))
            if not stats.delivered:
                return total
        raise TimeoutError(f"stream not drained within {timeout_s} s")

    def _discover(self) -> None:
        summary = self._kinesis.describe_stream_summary(StreamName=self._stream)["StreamDescriptionSummary"]
        self._stream_arn = summary["StreamARN"]
        for shard in self._kinesis.list_shards(StreamName=self._stream)["Shards"]:
            sid = shard["ShardId"]
            if sid not in self._shards:
                it = self._kinesis.get_shard_iterator(
                    StreamName=self._stream, ShardId=sid, ShardIteratorType=self._starting_position
                )["ShardIterator"]
                self._shards[sid] = _Shard(sid, it, limit=self._batch_size)

    def _batch_ready(self, shard: _Shard) -> bool:
        if not self._window_s or len(shard.pending) >= self._batch_size or shard.attempts:
            return True
        if shard.waiting_since is None:
            shard.waiting_since = time.monotonic()
        return time.monotonic() - shard.waiting_since >= self._window_s

    def _fill(self, shard: _Shard) -> None:
        if len(shard.pending) >= self._batch_size or shard.iterator is None:
            return
        resp = self._kinesis.get_records(ShardIterator=shard.iterator, Limit=self._batch_size * 2)
        shard.iterator = resp.get("NextShardIterator")
        shard.pending.extend(resp["Records"])

    # ---- the event source mapping's semantics -----------------------------------------------------
    def _deliver(self, shard: _Shard, stats: PollStats) -> None:
        batch = shard.pending[: max(1, min(shard.limit, self._batch_size))]
        shard.waiting_since = None
        event = {"Records": [self._lambda_record(shard.shard_id, r) for r in batch]}
        stats.delivered += len(batch)
        context = PollerContext(deadline=time.monotonic() + self._timeout_s)
        try:
            response = self._handler(event, context) or {}
            failures = [str(f["itemIdentifier"]) for f in response.get("batchItemFailures", [])]
        except Exception:
            logger.exception("updater raised on a batch of %d from %s", len(batch), shard.shard_id)
            stats.errors += 1
            self._failed_attempt(shard, batch, stats, bisect=True)
            return
        if not failures:
            del shard.pending[: len(batch)]
            stats.checkpointed += len(batch)
            shard.attempts, shard.limit = 0, self._batch_size
            return
        seqs = [r["SequenceNumber"] for r in batch]
        valid = [seqs.index(f) for f in failures if f in seqs]
        # An unknown or empty identifier fails the whole batch, as in Lambda.
        first = min(valid) if len(valid) == len(failures) else 0
        del shard.pending[:first]
        stats.checkpointed += first
        if first:
            shard.attempts = 0  # progress was made: the retry count restarts at the new position
        self._failed_attempt(shard, batch[first:], stats, bisect=False)

    def _failed_attempt(
        self, shard: _Shard, remaining: list[dict[str, Any]], stats: PollStats, *, bisect: bool
    ) -> None:
        shard.attempts += 1
        if shard.attempts > self._max_retries:
            self._send_on_failure(shard, remaining)
            del shard.pending[: len(remaining)]
            stats.sent_to_failure_queue += len(remaining)
            shard.attempts, shard.limit = 0, self._batch_size
            return
        stats.redelivered += len(remaining)
        if bisect and self._bisect and len(remaining) > 1:
            shard.limit = len(remaining) // 2

    def _send_on_failure(self, shard: _Shard, records: list[dict[str, Any]]) -> None:
        message = on_failure_message(
            shard.shard_id,
            self._stream_arn,
            records,
            attempts=shard.attempts,
            function_arn=PollerContext(0).invoked_function_arn,
        )
        if self._sqs is None or not self._queue_url:
            logger.error("records dropped after retries (no failure queue): %s", json.dumps(message))
            return
        self._sqs.send_message(QueueUrl=self._queue_url, MessageBody=json.dumps(message))

    def _lambda_record(self, shard_id: str, r: dict[str, Any]) -> dict[str, Any]:
        arrival = r.get("ApproximateArrivalTimestamp")
        return {
            "kinesis": {
                "kinesisSchemaVersion": "1.0",
                "partitionKey": r["PartitionKey"],
                "sequenceNumber": r["SequenceNumber"],
                "data": base64.b64encode(r["Data"]).decode(),
                "approximateArrivalTimestamp": arrival.timestamp()
                if isinstance(arrival, datetime)
                else arrival,
            },
            "eventSource": "aws:kinesis",
            "eventVersion": "1.0",
            "eventID": f"{shard_id}:{r['SequenceNumber']}",
            "eventName": "aws:kinesis:record",
            "awsRegion": "us-east-1",
            "eventSourceARN": self._stream_arn,
        }


def on_failure_message(
    shard_id: str, stream_arn: str, records: list[dict[str, Any]], *, attempts: int, function_arn: str
) -> dict[str, Any]:
    """The message Lambda sends to a Kinesis mapping's on-failure destination."""

    def iso(r: dict[str, Any]) -> str | None:
        ts = r.get("ApproximateArrivalTimestamp")
        return ts.astimezone(UTC).isoformat() if isinstance(ts, datetime) else None

    return {
        "requestContext": {
            "requestId": str(uuid.uuid4()),
            "functionArn": function_arn,
            "condition": "RetryAttemptsExhausted",
            "approximateInvokeCount": attempts,
        },
        "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"},
        "version": "1.0",
        "timestamp": datetime.now(UTC).isoformat(),
        "KinesisBatchInfo": {
            "shardId": shard_id,
            "startSequenceNumber": records[0]["SequenceNumber"],
            "endSequenceNumber": records[-1]["SequenceNumber"],
            "approximateArrivalOfFirstRecord": iso(records[0]),
            "approximateArrivalOfLastRecord": iso(records[-1]),
            "batchSize": len(records),
            "streamArn": stream_arn,
        },
    }
