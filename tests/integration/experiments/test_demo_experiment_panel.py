"""The demo page's experiment panel: CTR per variant from the archive (moto S3)."""

from __future__ import annotations

import json
import time

import boto3
import pytest
from recpipe.adapters.archive import archive_key
from recpipe.domain.events import Event, EventContext, EventType
from recpipe.domain.impressions import IMPRESSIONS_PREFIX, Impression, ShownItem
from recpipe_dev.demo.server import ExperimentPanel

BUCKET = "archive"


def test_the_panel_shows_ctr_per_variant_of_the_last_experiment(
    aws: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in {
        "ENV_NAME": "demo",
        "MODEL_BUCKET": "models",
        "MODEL_POINTER_PARAM": "/recpipe/demo/model/current",
        "EXPERIMENT_PARAM": "/recpipe/demo/model/experiment",
        "ARCHIVE_BUCKET": BUCKET,
    }.items():
        monkeypatch.setenv(key, value)
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=BUCKET)
    now = time.time()
    imps = [
        Impression(
            f"r{n}",
            f"u{n}",
            now,
            "v1",
            "ab",
            "control" if n < 4 else "treatment",
            (ShownItem("x", 1, ("cf",)),),
        )
        for n in range(8)
    ]
    click = Event(
        event_id="e1", user_id="u5", item_id="x", type=EventType.CLICK, ts=now + 1,
        context=EventContext(recommendation_id="r5"),
    )  # fmt: skip
    s3.put_object(
        Bucket=BUCKET,
        Key=archive_key(now, "i.jsonl", IMPRESSIONS_PREFIX),
        Body="".join(json.dumps(i.to_record()) + "\n" for i in imps).encode(),
    )
    s3.put_object(Bucket=BUCKET, Key=archive_key(now, "e.jsonl"), Body=json.dumps(click.to_record()).encode())
    body = ExperimentPanel()()
    assert body["experiment"] == "ab" and body["live"] is False
    assert body["variants"]["control"]["ctr"] == 0.0
    assert body["variants"]["treatment"] == {
        **body["variants"]["treatment"],
        "impressions": 4,
        "clicked": 1,
        "ctr": 0.25,
    }
