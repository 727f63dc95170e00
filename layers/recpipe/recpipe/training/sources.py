"""Data sources the `prepare` step can train from: the S3 event archive (production) and a
MovieLens-format directory (bootstrapping from history). Development tooling adds its own
(the synthetic shop) through `build_deps(extra_loaders=...)`."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from recpipe.adapters.archive import EventArchive, read_catalogue
from recpipe.domain.catalogue import InteractionLog, ItemMeta
from recpipe.training.movielens import LAYOUTS, load_movielens
from recpipe.training.workflow import DataLoader, RetrainError, archive_window

Loaded = tuple[InteractionLog, list[ItemMeta], dict[str, Any]]


def archive_loader(s3: Any, bucket: str) -> DataLoader:
    def load(source: Mapping[str, Any]) -> Loaded:
        start, end = archive_window(float(source.get("days", 90)))
        log, report = EventArchive(s3, bucket).read(start, end)
        items, cat_report = read_catalogue(
            s3, bucket, str(source.get("catalogue_key", "catalogue/items.jsonl"))
        )
        known = {m.item_id for m in items}
        # Items seen in events but absent from the catalogue still train CF; title = id.
        items += [ItemMeta(i, i) for i in log.item_vocab if i not in known]
        body = {**report.to_dict(), "catalogue": cat_report.to_dict()}
        body["error_count"] = report.error_count + cat_report.error_count
        return log, items, body

    return load


def movielens_loader(source: Mapping[str, Any]) -> Loaded:
    path = source.get("path")
    if not path:
        raise RetrainError(
            f"movielens source needs 'path' (a directory holding one of: {'; '.join(LAYOUTS)})"
        )
    log, items, report = load_movielens(Path(str(path)))
    return log, items, report.to_dict()


def default_loaders(s3: Any | None = None, bucket: str | None = None) -> dict[str, DataLoader]:
    loaders: dict[str, DataLoader] = {"movielens": movielens_loader}
    if s3 is not None and bucket:
        loaders["archive"] = archive_loader(s3, bucket)
    return loaders
