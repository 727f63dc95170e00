"""Reads impressions and attributable events back from the archive (S3, or a directory with the
same layout: `events/year=/month=/day=/hour=/...`, `impressions/...`).

Every line is validated; bad lines are counted with their key and line (ArchiveReport), never
silently skipped. Events are parsed with the event schema (recpipe.domain.events), impressions
with recpipe.domain.impressions.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from recpipe.adapters.archive import EVENTS_PREFIX, ArchiveReport, EventArchive, _records, day_prefixes
from recpipe.domain.attribution import FeedbackEvent
from recpipe.domain.events import EventRejected, parse_event
from recpipe.domain.impressions import (
    IMPRESSIONS_PREFIX,
    Impression,
    ImpressionRejected,
    impression_from_record,
)


class ArchiveObjects:
    """(key, lines) of every object under a prefix's day partitions."""

    def objects(self, prefix: str, start: datetime, end: datetime) -> Iterator[tuple[str, list[bytes]]]:
        raise NotImplementedError


class S3Objects(ArchiveObjects):
    def __init__(self, s3: Any, bucket: str) -> None:
        self.s3 = s3
        self.bucket = bucket

    def objects(self, prefix: str, start: datetime, end: datetime) -> Iterator[tuple[str, list[bytes]]]:
        archive = EventArchive(self.s3, self.bucket, prefix)
        for key in archive.keys(start, end):
            yield key, archive._lines(key)


class DirectoryObjects(ArchiveObjects):
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def objects(self, prefix: str, start: datetime, end: datetime) -> Iterator[tuple[str, list[bytes]]]:
        for day in day_prefixes(start, end, prefix):
            base = self.root / day
            if not base.is_dir():
                continue
            for path in sorted(p for p in base.rglob("*") if p.is_file()):
                body = path.read_bytes()
                if path.suffix == ".gz" or body[:2] == b"\x1f\x8b":
                    body = gzip.decompress(body)
                yield str(path.relative_to(self.root)), body.splitlines()


def _bodies(
    source: ArchiveObjects, prefix: str, start: datetime, end: datetime, report: ArchiveReport
) -> Iterator[tuple[str, int, Any]]:
    for key, lines in source.objects(prefix, start, end):
        report.objects += 1
        for n, raw in enumerate(lines, start=1):
            if not raw.strip():
                continue
            report.lines += 1
            for body in _records(raw, key, n, report):
                yield key, n, body


def read_impressions(
    source: ArchiveObjects, start: datetime, end: datetime
) -> tuple[list[Impression], ArchiveReport]:
    report = ArchiveReport()
    out: list[Impression] = []
    lo, hi = start.timestamp(), end.timestamp()
    for key, n, body in _bodies(source, IMPRESSIONS_PREFIX, start, end, report):
        try:
            imp = impression_from_record(body) if isinstance(body, dict) else None
        except ImpressionRejected as exc:
            report.error(key, n, str(exc)[:200])
            continue
        if imp is None:
            report.error(key, n, "not a JSON object")
            continue
        if lo <= imp.ts < hi:
            out.append(imp)
    report.events = len(out)
    return out, report


def read_events(
    source: ArchiveObjects, start: datetime, end: datetime
) -> tuple[list[FeedbackEvent], ArchiveReport]:
    report = ArchiveReport()
    out: list[FeedbackEvent] = []
    lo, hi = start.timestamp(), end.timestamp()
    for key, n, body in _bodies(source, EVENTS_PREFIX, start, end, report):
        try:
            ev = parse_event(body, now=float("inf"))
        except EventRejected as exc:
            report.error(key, n, str(exc)[:200])
            continue
        if lo <= ev.ts < hi:
            rec = ev.context.recommendation_id if ev.context is not None else None
            out.append(FeedbackEvent(ev.event_id, ev.user_id, ev.item_id, str(ev.type), ev.ts, rec))
    report.events = len(out)
    return out, report
