"""Impression writers: Firehose in AWS, the archive bucket directly on the local stack.

Both take archive lines (one impression = one line of compact JSON ending in a newline, encoded
by the request path) and never re-encode them.

* FirehoseImpressionWriter: packs many lines into each Firehose record (up to 1,000 KiB, the
  record limit) and sends them with one PutRecordBatch (500 records / 4 MiB per call) to the
  impressions delivery stream. The stream has no transformation and no record delimiter of its
  own: it concatenates records into gzip objects under
  s3://<archive>/impressions/year=/month=/day=/hour=/ (template.yaml ImpressionArchiveFirehose),
  so a packed record lands as the same lines an unpacked one would. Packing is what makes a
  flush cheap: the SDK's per-record work (base64, JSON, one entry of the response to parse) is
  paid once per ~1,000 impressions instead of once per impression. Records Firehose reports as
  failed are retried, then their lines are returned.
* S3ImpressionWriter: one JSON-lines object per batch under the same prefix (the local stack has
  no Firehose; the layout the report reads is the same).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from recpipe.adapters.archive import archive_key
from recpipe.domain.impressions import IMPRESSIONS_PREFIX

#: PutRecordBatch limits: records per call, bytes per call, bytes per record (1,000 KiB).
FIREHOSE_MAX_RECORDS = 500
FIREHOSE_MAX_BYTES = 4 * 1024 * 1024
FIREHOSE_MAX_RECORD_BYTES = 1000 * 1024
RETRIES = 2
RETRY_PAUSE_S = 0.05

Failed = list[tuple[bytes, str]]


def pack(lines: Sequence[bytes], max_bytes: int = FIREHOSE_MAX_RECORD_BYTES) -> list[list[bytes]]:
    """Consecutive lines grouped so that each group's total stays within `max_bytes` (a line
    longer than that is a group of its own, and Firehose refuses it as a failed record)."""
    groups: list[list[bytes]] = []
    group: list[bytes] = []
    size = 0
    for line in lines:
        if group and size + len(line) > max_bytes:
            groups.append(group)
            group, size = [], 0
        group.append(line)
        size += len(line)
    if group:
        groups.append(group)
    return groups


class FirehoseImpressionWriter:
    def __init__(
        self, firehose: Any, stream_name: str, max_record_bytes: int = FIREHOSE_MAX_RECORD_BYTES
    ) -> None:
        self._firehose = firehose
        self.stream_name = stream_name
        self.max_record_bytes = max_record_bytes
        #: PutRecordBatch calls made, Firehose records sent, calls that were retries and why the
        #: last one was needed (for the benchmark's report and the log).
        self.calls = 0
        self.records_sent = 0
        self.retries = 0
        self.last_retry_reason = ""

    def write(self, lines: Sequence[bytes]) -> Failed:
        failed: Failed = []
        call: list[list[bytes]] = []
        size = 0
        for group in pack(lines, self.max_record_bytes):
            n = sum(len(line) for line in group)
            if call and (len(call) == FIREHOSE_MAX_RECORDS or size + n > FIREHOSE_MAX_BYTES):
                failed += self._put(call)
                call, size = [], 0
            call.append(group)
            size += n
        if call:
            failed += self._put(call)
        return failed

    def _put(self, groups: list[list[bytes]]) -> Failed:
        pending = groups
        reason = ""
        for attempt in range(RETRIES + 1):
            if attempt:
                self.retries += 1
                self.last_retry_reason = reason
            self.calls += 1
            self.records_sent += len(pending)
            try:
                resp = self._firehose.put_record_batch(
                    DeliveryStreamName=self.stream_name, Records=[{"Data": b"".join(g)} for g in pending]
                )
            except (ClientError, BotoCoreError) as exc:
                reason = f"firehose: {exc}"
            else:
                if not resp.get("FailedPutCount"):
                    return []
                results = resp["RequestResponses"]
                reasons = [r.get("ErrorCode", "") for r in results]
                pending = [g for g, r in zip(pending, results, strict=True) if r.get("ErrorCode")]
                reason = f"firehose: {sorted(set(filter(None, reasons)))}"
            if attempt < RETRIES:
                time.sleep(RETRY_PAUSE_S * (attempt + 1))
        return [(line, reason) for g in pending for line in g]


class S3ImpressionWriter:
    def __init__(self, s3: Any, bucket: str, prefix: str = IMPRESSIONS_PREFIX) -> None:
        self._s3 = s3
        self.bucket = bucket
        self.prefix = prefix

    def write(self, lines: Sequence[bytes]) -> Failed:
        if not lines:
            return []
        key = archive_key(time.time(), f"impressions-{uuid.uuid4().hex}.jsonl", self.prefix)
        try:
            self._s3.put_object(Bucket=self.bucket, Key=key, Body=b"".join(lines))
        except (ClientError, BotoCoreError) as exc:
            return [(line, f"s3: {exc}") for line in lines]
        return []
