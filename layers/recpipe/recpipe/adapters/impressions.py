"""Impression writers: Firehose in AWS, the archive bucket directly on the local stack.

* FirehoseImpressionWriter: PutRecordBatch (500 records / 4 MiB per call) to the impressions
  delivery stream, which buffers and writes gzip objects to
  s3://<archive>/impressions/year=/month=/day=/hour=/ (template.yaml ImpressionArchiveFirehose).
  Records Firehose reports as failed are retried, then returned.
* S3ImpressionWriter: one JSON-lines object per batch under the same prefix (the local stack has
  no Firehose; the layout the report reads is the same).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from recpipe.adapters.archive import archive_key
from recpipe.domain.impressions import IMPRESSIONS_PREFIX

#: PutRecordBatch limits.
FIREHOSE_MAX_RECORDS = 500
FIREHOSE_MAX_BYTES = 4 * 1024 * 1024
RETRIES = 2

Failed = list[tuple[Mapping[str, Any], str]]


def encode(record: Mapping[str, Any]) -> bytes:
    return (json.dumps(record, separators=(",", ":")) + "\n").encode()


class FirehoseImpressionWriter:
    def __init__(self, firehose: Any, stream_name: str) -> None:
        self._firehose = firehose
        self.stream_name = stream_name

    def write(self, records: Sequence[Mapping[str, Any]]) -> Failed:
        failed: Failed = []
        chunk: list[tuple[Mapping[str, Any], bytes]] = []
        size = 0
        for record in records:
            data = encode(record)
            if chunk and (len(chunk) == FIREHOSE_MAX_RECORDS or size + len(data) > FIREHOSE_MAX_BYTES):
                failed += self._put(chunk)
                chunk, size = [], 0
            chunk.append((record, data))
            size += len(data)
        if chunk:
            failed += self._put(chunk)
        return failed

    def _put(self, chunk: list[tuple[Mapping[str, Any], bytes]]) -> Failed:
        pending = chunk
        reason = ""
        for attempt in range(RETRIES + 1):
            try:
                resp = self._firehose.put_record_batch(
                    DeliveryStreamName=self.stream_name, Records=[{"Data": d} for _, d in pending]
                )
            except (ClientError, BotoCoreError) as exc:
                reason = f"firehose: {exc}"
            else:
                if not resp.get("FailedPutCount"):
                    return []
                results = resp["RequestResponses"]
                reasons = [r.get("ErrorCode", "") for r in results]
                pending = [p for p, r in zip(pending, results, strict=True) if r.get("ErrorCode")]
                reason = f"firehose: {sorted(set(filter(None, reasons)))}"
            if attempt < RETRIES:
                time.sleep(0.05 * (attempt + 1))
        return [(r, reason) for r, _ in pending]


class S3ImpressionWriter:
    def __init__(self, s3: Any, bucket: str, prefix: str = IMPRESSIONS_PREFIX) -> None:
        self._s3 = s3
        self.bucket = bucket
        self.prefix = prefix

    def write(self, records: Sequence[Mapping[str, Any]]) -> Failed:
        if not records:
            return []
        key = archive_key(time.time(), f"impressions-{uuid.uuid4().hex}.jsonl", self.prefix)
        try:
            self._s3.put_object(Bucket=self.bucket, Key=key, Body=b"".join(encode(r) for r in records))
        except (ClientError, BotoCoreError) as exc:
            return [(r, f"s3: {exc}") for r in records]
        return []
