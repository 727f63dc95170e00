"""Datasets for evaluation, named `movielens:DIR`. Loaded with the project's one MovieLens
importer (recpipe.training.movielens), so evaluation sees exactly what training sees."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from recpipe.domain.catalogue import InteractionLog, ItemMeta


class DatasetError(ValueError):
    """A dataset spec or file that cannot be evaluated (precise reason in the message)."""


@dataclass(slots=True)
class Dataset:
    name: str
    log: InteractionLog
    #: item_id -> catalogue entry
    items: dict[str, ItemMeta]

    @property
    def catalogue(self) -> list[ItemMeta]:
        return list(self.items.values())


def load_dataset(spec: str) -> Dataset:
    kind, _, location = spec.partition(":")
    if kind != "movielens" or not location:
        raise DatasetError(f"unsupported dataset {spec!r}: expected movielens:DIR")
    return load_movielens(Path(location))


def load_movielens(directory: Path) -> Dataset:
    from recpipe.training.movielens import DataImportError
    from recpipe.training.movielens import load_movielens as import_movielens

    try:
        log, items, _report = import_movielens(directory)
    except (DataImportError, FileNotFoundError) as exc:
        raise DatasetError(f"cannot load MovieLens from {directory}: {exc}") from None
    if len(log) == 0:
        raise DatasetError(f"no ratings in {directory}")
    return Dataset(name=f"movielens:{directory.name}", log=log, items={m.item_id: m for m in items})
