"""Read the event archive Firehose writes to S3, and the catalogue file next to it.

    s3://<bucket>/events/year=YYYY/month=MM/day=DD/hour=HH/<firehose object>[.gz]
        one `Event.to_record()` JSON object per line (gzip when the key ends in .gz or the
        object starts with the gzip magic)
    s3://<bucket>/catalogue/items.jsonl
        one {"item_id", "title", "categories": [...], "text", "created_ts"} per line

Every line is validated with the event schema; a bad line is reported with its object key and
line number. Firehose delivers at least once, so events are de-duplicated by event_id.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import numpy as np
from botocore.exceptions import BotoCoreError, ClientError

from recpipe.compat import UTC
from recpipe.domain.catalogue import DEVICES, TYPE_CODE, InteractionLog, ItemMeta
from recpipe.domain.events import EventRejected, parse_event
from recpipe.ports import DependencyError, RetryableError

EVENTS_PREFIX = "events/"
CATALOGUE_KEY = "catalogue/items.jsonl"
MAX_REPORTED_ERRORS = 1000


@dataclass(slots=True)
class ArchiveReport:
    objects: int = 0
    lines: int = 0
    events: int = 0
    duplicates: int = 0
    error_count: int = 0
    #: (object key, line number, reason)
    errors: list[tuple[str, int, str]] = field(default_factory=list)

    def error(self, key: str, line: int, reason: str) -> None:
        self.error_count += 1
        if len(self.errors) < MAX_REPORTED_ERRORS:
            self.errors.append((key, line, reason))

    def to_dict(self) -> dict[str, Any]:
        return {
            "objects": self.objects,
            "lines": self.lines,
            "events": self.events,
            "duplicates": self.duplicates,
            "error_count": self.error_count,
            "errors": [{"key": k, "line": n, "reason": r} for k, n, r in self.errors],
        }


def day_prefixes(start: datetime, end: datetime, prefix: str = EVENTS_PREFIX) -> list[str]:
    """Partition prefixes of every UTC day touching [start, end)."""
    day = start.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    out = []
    while day < end:
        out.append(f"{prefix}year={day:%Y}/month={day:%m}/day={day:%d}/")
        day += timedelta(days=1)
    return out


class EventArchive:
    def __init__(self, s3: Any, bucket: str, prefix: str = EVENTS_PREFIX) -> None:
        self._s3 = s3
        self.bucket = bucket
        self.prefix = prefix

    def keys(self, start: datetime, end: datetime) -> Iterator[str]:
        paginator = self._s3.get_paginator("list_objects_v2")
        try:
            for day in day_prefixes(start, end, self.prefix):
                for page in paginator.paginate(Bucket=self.bucket, Prefix=day):
                    for obj in page.get("Contents", []):
                        yield str(obj["Key"])
        except ClientError as exc:
            raise DependencyError(
                f"s3 list {self.bucket}: {exc.response.get('Error', {}).get('Code')}"
            ) from exc
        except BotoCoreError as exc:
            raise RetryableError(f"s3 list {self.bucket}: {exc}") from exc

    def _lines(self, key: str) -> list[bytes]:
        try:
            body: bytes = self._s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except ClientError as exc:
            raise DependencyError(f"s3 get {key}: {exc.response.get('Error', {}).get('Code')}") from exc
        except BotoCoreError as exc:
            raise RetryableError(f"s3 get {key}: {exc}") from exc
        if key.endswith(".gz") or body[:2] == b"\x1f\x8b":
            body = gzip.decompress(body)
        # Firehose concatenates records; our producer ends each with a newline.
        return body.splitlines()

    def read(self, start: datetime, end: datetime) -> tuple[InteractionLog, ArchiveReport]:
        """Every valid event with start <= ts < end, de-duplicated, as an InteractionLog."""
        report = ArchiveReport()
        lo, hi = start.timestamp(), end.timestamp()
        seen: set[str] = set()
        users: dict[str, int] = {}
        items: dict[str, int] = {}
        cols: dict[str, list[Any]] = {k: [] for k in ("u", "i", "ts", "type", "value", "device")}
        for key in self.keys(start, end):
            report.objects += 1
            for n, raw in enumerate(self._lines(key), start=1):
                if not raw.strip():
                    continue
                report.lines += 1
                for body in _records(raw, key, n, report):
                    try:
                        event = parse_event(body, now=float("inf"))
                    except EventRejected as exc:
                        report.error(key, n, str(exc)[:200])
                        continue
                    if not lo <= event.ts < hi:
                        continue
                    if event.event_id in seen:
                        report.duplicates += 1
                        continue
                    seen.add(event.event_id)
                    cols["u"].append(users.setdefault(event.user_id, len(users)))
                    cols["i"].append(items.setdefault(event.item_id, len(items)))
                    cols["ts"].append(event.ts)
                    cols["type"].append(TYPE_CODE[event.type])
                    cols["value"].append(np.nan if event.value is None else event.value)
                    cols["device"].append(DEVICES.index(event.device) if event.device in DEVICES else -1)
        report.events = len(cols["u"])
        log = InteractionLog(
            users=np.asarray(cols["u"], np.int32),
            items=np.asarray(cols["i"], np.int32),
            ts=np.asarray(cols["ts"], np.float64),
            types=np.asarray(cols["type"], np.uint8),
            values=np.asarray(cols["value"], np.float32),
            user_vocab=list(users),
            item_vocab=list(items),
            devices=np.asarray(cols["device"], np.int8),
        )
        return log, report


_DECODER = json.JSONDecoder()


def _records(raw: bytes, key: str, line: int, report: ArchiveReport) -> Iterator[Any]:
    """JSON objects on one line: Firehose concatenates Kinesis records as they were put, so a
    line may hold one object (newline-delimited producers) or many back to back."""
    try:
        text = raw.decode()
    except UnicodeDecodeError as exc:
        report.error(key, line, f"not UTF-8: {exc}")
        return
    pos, end = 0, len(text)
    while pos < end:
        while pos < end and text[pos].isspace():
            pos += 1
        if pos >= end:
            return
        try:
            body, pos = _DECODER.raw_decode(text, pos)
        except ValueError as exc:
            report.error(
                key, line, f"not JSON at column {pos + 1}: {exc.args[0][:120]}; rest of line skipped"
            )
            return
        yield body


def archive_key(ts: float, name: str, prefix: str = EVENTS_PREFIX) -> str:
    """Where Firehose (with our dynamic partitioning) puts a record of time `ts`."""
    d = datetime.fromtimestamp(ts, UTC)
    return f"{prefix}year={d:%Y}/month={d:%m}/day={d:%d}/hour={d:%H}/{name}"


def parse_catalogue(
    lines: Iterable[bytes | str], source: str = CATALOGUE_KEY
) -> tuple[list[ItemMeta], ArchiveReport]:
    report = ArchiveReport()
    out: dict[str, ItemMeta] = {}
    for n, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        report.lines += 1
        try:
            d = json.loads(raw)
            meta = ItemMeta(
                item_id=str(d["item_id"]),
                title=str(d.get("title") or d["item_id"]),
                categories=tuple(str(c) for c in d.get("categories", [])),
                text=str(d.get("text", "")),
                created_ts=None if d.get("created_ts") is None else float(d["created_ts"]),
            )
        except (ValueError, KeyError, TypeError) as exc:
            report.error(source, n, f"bad catalogue line: {exc}")
            continue
        out[meta.item_id] = meta
    report.events = len(out)
    return list(out.values()), report


def read_catalogue(s3: Any, bucket: str, key: str = CATALOGUE_KEY) -> tuple[list[ItemMeta], ArchiveReport]:
    try:
        body: bytes = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
            return [], ArchiveReport()
        raise DependencyError(f"s3 get {key}: {exc.response.get('Error', {}).get('Code')}") from exc
    if key.endswith(".gz"):
        body = gzip.decompress(body)
    return parse_catalogue(body.splitlines(), key)


def catalogue_lines(items: Iterable[ItemMeta]) -> bytes:
    return b"".join(
        json.dumps(
            {
                "item_id": m.item_id,
                "title": m.title,
                "categories": list(m.categories),
                "text": m.text,
                "created_ts": m.created_ts,
            }
        ).encode()
        + b"\n"
        for m in items
    )
