"""EventPublisher on Kinesis Data Streams.

PutRecords is not atomic: some records of a call can fail (throttled shard, internal error)
while the rest succeed. Failed records are retried alone with exponential backoff and jitter;
the ones that still fail are returned to the caller, which must not report them accepted.
Partition key is `user_id`, so one user's events stay ordered on one shard.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Sequence
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from recpipe.domain.events import Event

#: PutRecords limits: 500 records and 5 MiB per call.
PUT_RECORDS_MAX = 500
PUT_RECORDS_MAX_BYTES = 5 * 1024 * 1024
RETRYABLE_CODES = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "InternalFailure",
        "ServiceUnavailable",
        "KMSThrottlingException",
        "LimitExceededException",
    }
)


def encode_record(event: Event) -> bytes:
    return json.dumps(event.to_record(), separators=(",", ":")).encode()


class KinesisEventPublisher:
    def __init__(
        self,
        client: Any,
        stream_name: str,
        *,
        max_attempts: int = 4,
        base_delay_s: float = 0.025,
        max_delay_s: float = 0.4,
        budget_s: float = 3.0,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._kinesis = client
        self._stream = stream_name
        self._max_attempts = max_attempts
        self._base_delay_s = base_delay_s
        self._max_delay_s = max_delay_s
        # No retry starts after this long: the API call must answer well inside its timeout
        # (and the client retries the events we report failed).
        self._budget_s = budget_s
        self._sleep = sleep
        self._clock = clock
        self.retries = 0  # records re-sent (exposed for metrics)

    def publish(self, events: Sequence[Event]) -> list[tuple[Event, str]]:
        failed: list[tuple[Event, str]] = []
        deadline = self._clock() + self._budget_s
        for chunk in _chunks([(e, encode_record(e)) for e in events]):
            failed += self._publish_chunk(chunk, deadline)
        return failed

    def _publish_chunk(self, chunk: list[tuple[Event, bytes]], deadline: float) -> list[tuple[Event, str]]:
        pending = chunk
        reasons: dict[str, str] = {e.event_id: "out of time" for e, _ in chunk}
        for attempt in range(self._max_attempts):
            if attempt:
                delay = min(self._max_delay_s, self._base_delay_s * 2 ** (attempt - 1)) * (
                    0.5 + random.random() / 2
                )
                if self._clock() + delay >= deadline:
                    break
                self.retries += len(pending)
                self._sleep(delay)
            elif self._clock() >= deadline:
                break
            try:
                resp = self._kinesis.put_records(
                    StreamName=self._stream,
                    Records=[{"Data": data, "PartitionKey": e.user_id} for e, data in pending],
                )
            except ClientError as exc:
                code = exc.response.get("Error", {}).get("Code", "")
                reason = code or str(exc)
                if code and code not in RETRYABLE_CODES:
                    return [(e, f"stream unavailable, retry ({reason})") for e, _ in pending]
                reasons = {e.event_id: reason for e, _ in pending}
                continue
            except BotoCoreError as exc:  # connection reset, timeout: the whole call may retry
                reasons = {e.event_id: type(exc).__name__ for e, _ in pending}
                continue
            still: list[tuple[Event, bytes]] = []
            for (event, data), result in zip(pending, resp["Records"], strict=True):
                if "ErrorCode" in result:
                    still.append((event, data))
                    reasons[event.event_id] = str(result["ErrorCode"])
            pending = still
            if not pending:
                return []
        return [(e, f"stream unavailable, retry ({reasons.get(e.event_id, 'unknown')})") for e, _ in pending]


def _chunks(records: list[tuple[Event, bytes]]) -> list[list[tuple[Event, bytes]]]:
    out: list[list[tuple[Event, bytes]]] = []
    current: list[tuple[Event, bytes]] = []
    size = 0
    for event, data in records:
        n = len(data) + len(event.user_id.encode())
        if current and (len(current) == PUT_RECORDS_MAX or size + n > PUT_RECORDS_MAX_BYTES):
            out.append(current)
            current, size = [], 0
        current.append((event, data))
        size += n
    if current:
        out.append(current)
    return out
