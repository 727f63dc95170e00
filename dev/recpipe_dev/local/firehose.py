"""The local stack's stand-in for the event archive's Firehose (Kinesis -> S3 `events/`).

A KinesisPoller of its own (its own iterator, like a second consumer of the stream) hands each
batch to `archive_handler`, which writes the records as one newline-delimited object under
`events/year=/month=/day=/hour=/` of the archive bucket, partitioned by arrival time as
Firehose's `!{timestamp:…}` prefix is. Correctness only: no buffering, one object per batch.
"""

from __future__ import annotations

import base64
import time
import uuid
from typing import Any

from recpipe.adapters.archive import archive_key


def archive_handler(s3: Any, bucket: str) -> Any:
    def handle(event: dict[str, Any], context: Any) -> dict[str, Any]:
        lines = [base64.b64decode(r["kinesis"]["data"]).rstrip(b"\n") for r in event.get("Records", [])]
        if lines:
            key = archive_key(time.time(), f"local-firehose-{uuid.uuid4().hex}")
            s3.put_object(Bucket=bucket, Key=key, Body=b"\n".join(lines) + b"\n")
        return {"batchItemFailures": []}

    return handle


def start_archive_poller(env: dict[str, str]) -> Any:
    """Start the stand-in against the local stack in `env`; returns the poller (stop() it)."""
    import boto3

    from recpipe_dev.local.poller import KinesisPoller

    session = boto3.session.Session(region_name=env["AWS_REGION"])
    endpoint = env["AWS_ENDPOINT_URL"]
    poller = KinesisPoller(
        session.client("kinesis", endpoint_url=endpoint),
        env["EVENT_STREAM_NAME"],
        archive_handler(session.client("s3", endpoint_url=endpoint), env["ARCHIVE_BUCKET"]),
        batch_size=500,
        starting_position="LATEST",
        idle_sleep_s=0.2,
    )
    poller.start()
    return poller
