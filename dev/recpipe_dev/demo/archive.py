"""Seed the local event archive with the demo's history, as Firehose would have written it.

Locally there is no Firehose; to let the retrain workflow's `prepare` step read its training
window from the archive bucket exactly as in AWS, the generated history is written there in the
archive's layout (`recpipe.adapters.archive`): one gzip object per UTC hour under
`events/year=/month=/day=/hour=/`, one `Event.to_record()` JSON object per line, plus the
catalogue at `catalogue/items.jsonl`.
"""

from __future__ import annotations

import gzip
import json
import math
from typing import Any

import numpy as np
from recpipe.adapters.archive import CATALOGUE_KEY, archive_key, catalogue_lines
from recpipe.domain.catalogue import DEVICES, EVENT_TYPE_CODES
from recpipe.domain.events import EVENT_SCHEMA_VERSION

from recpipe_dev.demo.data import DemoData

HOUR_S = 3600.0


def records(data: DemoData, rows: np.ndarray) -> list[dict[str, Any]]:
    """`Event.to_record()` bodies for the given log rows (same event ids as InteractionLog.event)."""
    log = data.log
    out: list[dict[str, Any]] = []
    for row in rows.tolist():
        user, item = log.user_vocab[log.users[row]], log.item_vocab[log.items[row]]
        ts = float(log.ts[row])
        code = int(log.types[row])
        body: dict[str, Any] = {
            "event_id": f"log-{user}-{item}-{int(ts * 1000)}-{code}",
            "user_id": user,
            "item_id": item,
            "type": EVENT_TYPE_CODES[code].value,
            "ts": ts,
            "schema_version": EVENT_SCHEMA_VERSION,
        }
        value = float(log.values[row])
        if not math.isnan(value):
            body["value"] = value
        if log.devices is not None and log.devices[row] >= 0:
            body["context"] = {"device": DEVICES[int(log.devices[row])]}
        out.append(body)
    return out


def window_days(data: DemoData, now: float) -> float:
    """The archive window `prepare` must read to see the whole history."""
    return math.ceil((now - float(data.log.ts.min())) / 86_400.0) + 1.0


def write_archive(s3: Any, bucket: str, data: DemoData) -> int:
    """Write every interaction and the catalogue; returns the number of objects written."""
    from tqdm import tqdm

    hours = np.floor(data.log.ts / HOUR_S).astype(np.int64)
    order = np.argsort(hours, kind="stable")
    bounds = np.flatnonzero(np.diff(hours[order])) + 1
    groups = np.split(order, bounds)
    for rows in tqdm(groups, desc="archive events", unit="hour"):
        hour_ts = float(hours[rows[0]]) * HOUR_S
        lines = b"".join(json.dumps(r, separators=(",", ":")).encode() + b"\n" for r in records(data, rows))
        key = archive_key(hour_ts, f"recpipe-demo-{int(hour_ts)}.gz")
        s3.put_object(Bucket=bucket, Key=key, Body=gzip.compress(lines, compresslevel=1))
    s3.put_object(Bucket=bucket, Key=CATALOGUE_KEY, Body=catalogue_lines(data.items))
    return len(groups) + 1
