"""Reading the Firehose archive (moto S3): partitions, gzip, bad lines reported, duplicates dropped."""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime

import boto3
import pytest
from recpipe.adapters.archive import EventArchive, archive_key, catalogue_lines, read_catalogue
from recpipe.domain.catalogue import ItemMeta
from recpipe.domain.events import Event, EventContext, EventType

BUCKET = "archive"
DAY1 = datetime(2026, 3, 1, 10, tzinfo=UTC).timestamp()
DAY2 = datetime(2026, 3, 2, 23, tzinfo=UTC).timestamp()


def _event(
    n: int, ts: float, type_: EventType = EventType.VIEW, value: float | None = None
) -> dict[str, object]:
    return Event(
        event_id=f"e{n}",
        user_id=f"u{n % 3}",
        item_id=f"i{n % 5}",
        type=type_,
        ts=ts + n,
        value=value,
        context=EventContext(device="mobile"),
    ).to_record()


@pytest.fixture()
def s3(aws: None) -> object:
    client = boto3.client("s3")
    client.create_bucket(Bucket=BUCKET)
    return client


def test_reads_every_partition_in_the_window(s3: object) -> None:
    c: object = s3
    plain = [json.dumps(_event(n, DAY1)) for n in range(5)]
    plain.insert(2, '{"event_id": "bad", "user_id": "u1"}')  # line 3: invalid
    plain.append(json.dumps(_event(1, DAY1)))  # Firehose redelivery of e1
    c.put_object(Bucket=BUCKET, Key=archive_key(DAY1, "part-1"), Body="\n".join(plain).encode())  # type: ignore[attr-defined]
    # Firehose concatenates Kinesis records back to back (our producer adds no newline), gzipped
    gz = gzip.compress(
        "".join(json.dumps(_event(n, DAY2, EventType.RATING, 4.0)) for n in range(10, 14)).encode()
    )
    c.put_object(Bucket=BUCKET, Key=archive_key(DAY2, "part-2.gz"), Body=gz)  # type: ignore[attr-defined]
    # outside the window
    c.put_object(
        Bucket=BUCKET,
        Key=archive_key(DAY2 + 5 * 86400, "part-3"),
        Body=json.dumps(_event(99, DAY2 + 5 * 86400)).encode(),
    )  # type: ignore[attr-defined]

    log, report = EventArchive(c, BUCKET).read(
        datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 3, 3, tzinfo=UTC)
    )

    assert report.objects == 2
    assert report.events == len(log) == 9
    assert report.duplicates == 1
    assert report.error_count == 1
    key, line, reason = report.errors[0]
    assert (
        key.startswith("events/year=2026/month=03/day=01/hour=10/")
        and line == 3
        and "field required" in reason
    )
    ratings = log.values[~(log.values != log.values)]  # non-NaN
    assert sorted(ratings.tolist()) == [4.0] * 4
    assert log.devices is not None and (log.devices >= 0).all()


def test_catalogue_round_trip(s3: object) -> None:
    items = [ItemMeta("i1", "Espresso beans", ("coffee",), "dark roast", 1.7e9), ItemMeta("i2", "Mug")]
    s3.put_object(Bucket=BUCKET, Key="catalogue/items.jsonl", Body=catalogue_lines(items) + b"not json\n")  # type: ignore[attr-defined]
    got, report = read_catalogue(s3, BUCKET)
    assert got == items
    assert report.error_count == 1 and report.errors[0][1] == 3
