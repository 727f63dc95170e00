"""Import MovieLens-format history (ratings.csv, movies.csv, optional tags.csv).

Every row is checked; a malformed row is skipped *and reported* with its file and line
number, so a bad export is visible rather than quietly shrinking the training set. A file that
cannot be opened or lacks its header stops the import with DataImportError.
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np

from recpipe.compat import UTC
from recpipe.domain.catalogue import TYPE_CODE, InteractionLog, ItemMeta
from recpipe.domain.events import ID_PATTERN, EventType

RATINGS_HEADER = ("userId", "movieId", "rating", "timestamp")
MOVIES_HEADER = ("movieId", "title", "genres")
TAGS_HEADER = ("userId", "movieId", "tag", "timestamp")
NO_GENRES = "(no genres listed)"
#: Errors kept verbatim in the report; beyond this only the count grows.
MAX_REPORTED_ERRORS = 1000
#: Tags per movie folded into its content text.
MAX_TAGS_PER_ITEM = 20

_ID = re.compile(ID_PATTERN)
_YEAR = re.compile(r"\((\d{4})\)\s*$")


class DataImportError(Exception):
    """The input cannot be imported at all (missing/unreadable file, wrong header)."""


@dataclass(slots=True)
class ImportReport:
    ratings_rows: int = 0
    movies_rows: int = 0
    tags_rows: int = 0
    interactions: int = 0
    items: int = 0
    users: int = 0
    #: Ratings of movies absent from movies.csv (kept, with no metadata).
    unknown_items: int = 0
    error_count: int = 0
    #: (file, line number, reason), at most MAX_REPORTED_ERRORS.
    errors: list[tuple[str, int, str]] = field(default_factory=list)

    def error(self, file: str, line: int, reason: str) -> None:
        self.error_count += 1
        if len(self.errors) < MAX_REPORTED_ERRORS:
            self.errors.append((file, line, reason))

    def to_dict(self) -> dict[str, object]:
        return {
            "ratings_rows": self.ratings_rows,
            "movies_rows": self.movies_rows,
            "tags_rows": self.tags_rows,
            "interactions": self.interactions,
            "items": self.items,
            "users": self.users,
            "unknown_items": self.unknown_items,
            "error_count": self.error_count,
            "errors": [{"file": f, "line": n, "reason": r} for f, n, r in self.errors],
        }


def _rows(path: Path, header: tuple[str, ...]) -> Iterator[tuple[int, list[str]]]:
    """(line number, fields) for every data row; checks the header first."""
    try:
        f = path.open(newline="", encoding="utf-8")
    except OSError as exc:
        raise DataImportError(f"cannot read {path}: {exc.strerror or exc}") from None
    with f:
        reader = csv.reader(f)
        try:
            first = next(reader, None)
        except (csv.Error, UnicodeDecodeError) as exc:
            raise DataImportError(f"{path}: unreadable header ({exc})") from None
        if first is None or tuple(c.strip().lstrip("\ufeff") for c in first) != header:
            raise DataImportError(f"{path}: expected header {','.join(header)}, got {first!r}")
        while True:
            try:
                row = next(reader)
            except StopIteration:
                return
            except (csv.Error, UnicodeDecodeError) as exc:
                raise DataImportError(f"{path}:{reader.line_num}: unreadable ({exc})") from None
            yield reader.line_num, row


def _year_ts(title: str) -> float | None:
    m = _YEAR.search(title)
    if not m:
        return None
    year = int(m.group(1))
    if not 1870 <= year <= 2100:
        return None
    return datetime(year, 1, 1, tzinfo=UTC).timestamp()


def load_movies(path: Path, report: ImportReport) -> dict[str, ItemMeta]:
    movies: dict[str, ItemMeta] = {}
    for line, row in _rows(path, MOVIES_HEADER):
        report.movies_rows += 1
        if len(row) != 3:
            report.error(path.name, line, f"expected 3 fields, got {len(row)}")
            continue
        movie_id, title, genres = (c.strip() for c in row)
        if not _ID.match(movie_id):
            report.error(path.name, line, f"bad movieId {movie_id!r}")
            continue
        if not title:
            report.error(path.name, line, "empty title")
            continue
        if movie_id in movies:
            report.error(path.name, line, f"duplicate movieId {movie_id}")
            continue
        cats = () if genres in ("", NO_GENRES) else tuple(g for g in genres.split("|") if g)
        movies[movie_id] = ItemMeta(movie_id, title, cats, created_ts=_year_ts(title))
    return movies


def load_tags(path: Path, report: ImportReport) -> dict[str, list[str]]:
    tags: dict[str, list[str]] = {}
    for line, row in _rows(path, TAGS_HEADER):
        report.tags_rows += 1
        if len(row) != 4 or not _ID.match(row[1].strip()):
            report.error(path.name, line, "expected userId,movieId,tag,timestamp")
            continue
        tag = row[2].strip()
        bucket = tags.setdefault(row[1].strip(), [])
        if tag and tag not in bucket and len(bucket) < MAX_TAGS_PER_ITEM:
            bucket.append(tag)
    return tags


def load_movielens(directory: Path) -> tuple[InteractionLog, list[ItemMeta], ImportReport]:
    """ratings.csv -> rating events (value = stars); movies.csv -> catalogue (genres -> categories,
    release year -> created_ts); tags.csv, when present, -> item text for the content index."""
    directory = Path(directory)
    if not directory.is_dir():
        raise DataImportError(f"{directory} is not a directory")
    report = ImportReport()
    movies = load_movies(directory / "movies.csv", report)
    if (directory / "tags.csv").is_file():
        for movie_id, tags in load_tags(directory / "tags.csv", report).items():
            meta = movies.get(movie_id)
            if meta is not None:
                movies[movie_id] = ItemMeta(
                    meta.item_id, meta.title, meta.categories, " ".join(tags), meta.created_ts
                )

    user_index: dict[str, int] = {}
    item_index: dict[str, int] = {}
    users: list[int] = []
    items: list[int] = []
    ts: list[float] = []
    values: list[float] = []
    name = "ratings.csv"
    for line, row in _rows(directory / name, RATINGS_HEADER):
        report.ratings_rows += 1
        if len(row) != 4:
            report.error(name, line, f"expected 4 fields, got {len(row)}")
            continue
        user_id, movie_id, rating_s, ts_s = (c.strip() for c in row)
        if not _ID.match(user_id):
            report.error(name, line, f"bad userId {user_id!r}")
            continue
        if not _ID.match(movie_id):
            report.error(name, line, f"bad movieId {movie_id!r}")
            continue
        try:
            rating = float(rating_s)
            stamp = float(ts_s)
        except ValueError:
            report.error(name, line, f"rating/timestamp not numeric: {rating_s!r}, {ts_s!r}")
            continue
        if not (math.isfinite(rating) and 0.0 <= rating <= 10.0):
            report.error(name, line, f"rating {rating_s} outside 0..10")
            continue
        if not (math.isfinite(stamp) and stamp > 0):
            report.error(name, line, f"timestamp {ts_s} is not a positive epoch time")
            continue
        if movie_id not in movies and movie_id not in item_index:
            report.unknown_items += 1
        users.append(user_index.setdefault(user_id, len(user_index)))
        items.append(item_index.setdefault(movie_id, len(item_index)))
        ts.append(stamp)
        values.append(rating)

    log = InteractionLog(
        users=np.asarray(users, np.int32),
        items=np.asarray(items, np.int32),
        ts=np.asarray(ts, np.float64),
        types=np.full(len(users), TYPE_CODE[EventType.RATING], np.uint8),
        values=np.asarray(values, np.float32),
        user_vocab=list(user_index),
        item_vocab=list(item_index),
    )
    catalogue = list(movies.values())
    for movie_id in item_index:
        if movie_id not in movies:
            catalogue.append(ItemMeta(movie_id, f"item {movie_id}"))
    report.interactions, report.users, report.items = len(log), len(user_index), len(catalogue)
    return log, catalogue, report
