"""Impressions reach the archive (Firehose in AWS, the bucket directly locally; moto) and the
report reads them back with the events, from S3 or a directory with the same layout."""

from __future__ import annotations

import gzip
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from recpipe.adapters.archive import archive_key
from recpipe.adapters.feedback_archive import DirectoryObjects, S3Objects, read_events, read_impressions
from recpipe.adapters.impressions import FirehoseImpressionWriter, S3ImpressionWriter
from recpipe.domain.events import Event, EventContext, EventType
from recpipe.serving.impressions import ImpressionLog

BUCKET = "archive"
NOW = time.time()
ITEMS = [{"item_id": "a", "sources": ["cf"]}, {"item_id": "b", "sources": ["content"]}]


@pytest.fixture()
def s3(aws: None) -> Any:
    client = boto3.client("s3")
    client.create_bucket(Bucket=BUCKET)
    return client


def served(log: ImpressionLog, n: int) -> None:
    log.record(
        recommendation_id=f"r{n}", user_id=f"u{n}", model_version="v1", experiment="ab",
        variant="control" if n % 2 else "treatment", items=ITEMS,
    )  # fmt: skip


def window() -> tuple[datetime, datetime]:
    now = datetime.now(UTC)
    return now - timedelta(hours=1), now + timedelta(hours=1)


def test_the_local_writer_puts_impressions_where_the_report_reads_them(s3: Any) -> None:
    log = ImpressionLog(S3ImpressionWriter(s3, BUCKET), start=False, batch_size=3)
    for n in range(7):
        served(log, n)
    assert log.flush() == 7
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET)["Contents"]]
    assert len(keys) == 2 and all(k.startswith("impressions/year=") for k in keys)  # <= 2 x 3 per object
    impressions, report = read_impressions(S3Objects(s3, BUCKET), *window())
    assert sorted(i.recommendation_id for i in impressions) == [f"r{n}" for n in range(7)]
    assert report.error_count == 0


def _delivery_stream(prefix: str) -> Any:
    """A DirectPut delivery stream named "impressions" into the archive bucket under `prefix`."""
    firehose = boto3.client("firehose")
    firehose.create_delivery_stream(
        DeliveryStreamName="impressions",
        DeliveryStreamType="DirectPut",
        ExtendedS3DestinationConfiguration={
            "BucketARN": f"arn:aws:s3:::{BUCKET}",
            "RoleARN": "arn:aws:iam::123456789012:role/firehose",
            "Prefix": prefix,
        },
    )
    return firehose


def test_the_firehose_writer_delivers_to_the_archive_prefix(s3: Any) -> None:
    firehose = _delivery_stream("impressions/")
    log = ImpressionLog(FirehoseImpressionWriter(firehose, "impressions"), start=False)
    for n in range(4):
        served(log, n)
    assert log.flush() == 4 and log.stats()["failed"] == 0
    lines = [
        json.loads(line)
        for o in s3.list_objects_v2(Bucket=BUCKET, Prefix="impressions/")["Contents"]
        for line in s3.get_object(Bucket=BUCKET, Key=o["Key"])["Body"].read().splitlines()
        if line.strip()
    ]
    assert sorted(r["recommendation_id"] for r in lines) == ["r0", "r1", "r2", "r3"]


def test_packed_firehose_records_read_back_as_one_impression_per_line(s3: Any) -> None:
    firehose = _delivery_stream(archive_key(NOW, "", "impressions/"))
    writer = FirehoseImpressionWriter(firehose, "impressions", max_record_bytes=20_000)
    log = ImpressionLog(writer, start=False)
    for n in range(1200):
        served(log, n)
    assert log.flush() == 1200 and log.stats()["failed"] == 0
    assert writer.calls == 2 and 1200 / writer.records_sent > 50, "many impressions per Firehose record"
    impressions, report = read_impressions(S3Objects(s3, BUCKET), *window())
    assert sorted(i.recommendation_id for i in impressions) == sorted(f"r{n}" for n in range(1200))
    assert report.error_count == 0


def test_an_unknown_stream_is_reported_as_failed_not_raised(s3: Any) -> None:
    log = ImpressionLog(FirehoseImpressionWriter(boto3.client("firehose"), "missing"), start=False)
    served(log, 1)
    assert log.flush() == 0 and log.stats()["failed"] == 1


def test_a_directory_archive_reads_gzip_events_and_reports_bad_lines(tmp_path: Path) -> None:
    click = Event(
        event_id="e1", user_id="u1", item_id="a", type=EventType.CLICK, ts=NOW,
        context=EventContext(recommendation_id="r1"),
    ).to_record()  # fmt: skip
    path = tmp_path / archive_key(NOW, "part-1.gz")
    path.parent.mkdir(parents=True)
    path.write_bytes(gzip.compress((json.dumps(click) + "\n{broken\n").encode()))
    events, report = read_events(DirectoryObjects(tmp_path), *window())
    assert [(e.event_id, e.recommendation_id, e.type) for e in events] == [("e1", "r1", "click")]
    assert report.error_count == 1 and report.errors[0][1] == 2
