"""The demo seeds the event archive in the layout the retrain workflow's reader expects."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import boto3
import numpy as np
from recpipe.adapters.archive import EventArchive, read_catalogue
from recpipe_dev.demo.archive import window_days, write_archive
from recpipe_dev.demo.data import synthetic


def test_every_interaction_and_the_catalogue_read_back_through_the_archive_reader(aws: None) -> None:
    now = 1_800_000_000.0
    data = synthetic(80, 60, 3000, now=now)
    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket="archive")

    objects = write_archive(s3, "archive", data)

    end = datetime.fromtimestamp(now, UTC)
    log, report = EventArchive(s3, "archive").read(end - timedelta(days=window_days(data, now)), end)
    assert objects > 24 and report.error_count == 0 and report.duplicates == 0
    assert len(log) == len(data.log)
    # Same rows: per-type counts and per-user totals survive the trip.
    assert np.array_equal(np.bincount(log.types, minlength=6), np.bincount(data.log.types, minlength=6))
    ours = sorted(np.bincount(data.log.users)[np.bincount(data.log.users) > 0].tolist())
    assert sorted(np.bincount(log.users).tolist()) == ours
    items, cat_report = read_catalogue(s3, "archive")
    assert cat_report.error_count == 0 and [m.item_id for m in items] == [m.item_id for m in data.items]
    assert items[0].title == data.items[0].title and items[0].categories == data.items[0].categories
