"""Datasets for evaluation, named `movielens:DIR`. MovieLens ratings become `rating` events."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from recpipe.domain.catalogue import TYPE_CODE, InteractionLog, ItemMeta
from recpipe.domain.events import EventType


class DatasetError(ValueError):
    """A dataset spec or file that cannot be evaluated (precise reason in the message)."""


@dataclass(slots=True)
class Dataset:
    name: str
    log: InteractionLog
    items: dict[str, ItemMeta]


def load_dataset(spec: str) -> Dataset:
    kind, _, location = spec.partition(":")
    if kind != "movielens" or not location:
        raise DatasetError(f"unsupported dataset {spec!r}: expected movielens:DIR")
    return load_movielens(Path(location))


def load_movielens(directory: Path) -> Dataset:
    """Read ratings.csv and movies.csv (the ml-latest* layout) into an InteractionLog."""
    ratings, movies = directory / "ratings.csv", directory / "movies.csv"
    for path in (ratings, movies):
        if not path.is_file():
            raise DatasetError(f"{path} not found: expected a MovieLens ml-latest* directory")
    items: dict[str, ItemMeta] = {}
    with movies.open(newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            genres = tuple(g for g in row["genres"].split("|") if g and g != "(no genres listed)")
            items[row["movieId"]] = ItemMeta(item_id=row["movieId"], title=row["title"], categories=genres)
    user_index: dict[str, int] = {}
    item_index: dict[str, int] = {}
    users: list[int] = []
    item_codes: list[int] = []
    ts: list[float] = []
    values: list[float] = []
    with ratings.open(newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            users.append(user_index.setdefault(row["userId"], len(user_index)))
            item_codes.append(item_index.setdefault(row["movieId"], len(item_index)))
            ts.append(float(row["timestamp"]))
            values.append(float(row["rating"]))
    log = InteractionLog(
        users=np.asarray(users, np.int32),
        items=np.asarray(item_codes, np.int32),
        ts=np.asarray(ts, np.float64),
        types=np.full(len(users), TYPE_CODE[EventType.RATING], np.uint8),
        values=np.asarray(values, np.float32),
        user_vocab=list(user_index),
        item_vocab=list(item_index),
    )
    return Dataset(name=f"movielens:{directory.name}", log=log, items=items)
