"""Import MovieLens-format history in any of the three layouts GroupLens has published:

* ``ratings.csv`` + ``movies.csv`` (+ ``tags.csv``), with header rows, UTF-8: ml-latest,
  ml-latest-small, ml-20m, ml-25m, ml-32m;
* ``ratings.dat`` + ``movies.dat`` (+ ``tags.dat``), ``::``-separated, no header: ml-1m
  (ISO-8859-1) and ml-10m (UTF-8);
* ``u.data`` (tab-separated ratings) + ``u.item`` (``|``-separated, 19 genre flags named by
  ``u.genre``), no header, ISO-8859-1: ml-100k.

The layout is chosen by which ratings file the directory holds, in that order. A headerless file
is read as UTF-8 when all of it decodes as UTF-8, else as ISO-8859-1. Every row is checked by the
same rules whatever the layout; a malformed row is skipped *and reported* with its file and line
number, so a bad export is visible rather than quietly shrinking the training set. A directory with
none of the layouts, or a file that cannot be opened or lacks its header, stops the import with
DataImportError. Files are read line by line (ml-10m has 10M ratings).
"""

from __future__ import annotations

import codecs
import csv
import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import NamedTuple

import numpy as np

from recpipe.compat import UTC
from recpipe.domain.catalogue import TYPE_CODE, InteractionLog, ItemMeta
from recpipe.domain.events import ID_PATTERN, EventType

RATINGS_HEADER = ("userId", "movieId", "rating", "timestamp")
MOVIES_HEADER = ("movieId", "title", "genres")
TAGS_HEADER = ("userId", "movieId", "tag", "timestamp")
NO_GENRES = "(no genres listed)"
#: ml-100k's genre flags when u.genre is absent (its README's order).
ML100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
    "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi",
    "Thriller", "War", "Western",
)  # fmt: skip
#: ml-100k's flag for "no genre", the counterpart of NO_GENRES.
ML100K_NO_GENRE = "unknown"
#: u.item's fields before the genre flags: id, title, release date, video release date, IMDb URL.
ML100K_ITEM_FIELDS = 5
#: The accepted layouts, as named in the error for a directory holding none of them.
LAYOUTS = (
    "ratings.csv + movies.csv [+ tags.csv] (ml-latest, ml-20m, ml-25m, ml-32m)",
    "ratings.dat + movies.dat [+ tags.dat] (ml-1m, ml-10m)",
    "u.data + u.item [+ u.genre] (ml-100k)",
)
#: Errors kept verbatim in the report; beyond this only the count grows.
MAX_REPORTED_ERRORS = 1000
#: Tags per movie folded into its content text.
MAX_TAGS_PER_ITEM = 20

_ID = re.compile(ID_PATTERN)
_YEAR = re.compile(r"\((\d{4})\)\s*$")
#: ml-100k release dates look like 01-Jan-1995.
_DATE_YEAR = re.compile(r"-(\d{4})\s*$")

#: (line number, fields) of every data row of one file.
_Rows = Iterator[tuple[int, list[str]]]
#: A movie row -> (categories, created_ts to use when the title has no year), or why it is bad.
_MovieExtra = Callable[[list[str]], tuple[tuple[str, ...], float | None] | str]


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
    #: Ratings of movies absent from the movies file (kept, with no metadata).
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


def _csv_rows(path: Path, header: tuple[str, ...]) -> _Rows:
    """(line number, fields) for every data row of a CSV file; checks the header first."""
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


def _encoding(path: Path) -> str:
    """UTF-8 if the whole file decodes as UTF-8, else ISO-8859-1 (ml-1m, ml-100k), which never
    fails. Decided per file before reading it, in chunks, so ml-10m's 250 MB stay out of memory."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    try:
        with path.open("rb") as f:
            while chunk := f.read(1 << 20):
                decoder.decode(chunk)
        decoder.decode(b"", final=True)
    except OSError as exc:
        raise DataImportError(f"cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        return "latin-1"
    return "utf-8"


def _split(text: str, sep: str, n_fields: int, free: int | None) -> list[str]:
    """`text` split on `sep`; when `free` is a field index, surplus separators stay inside that
    field (a title or tag), so only a row with too *few* fields has the wrong count."""
    if not text:
        return []  # as csv.reader reports a blank line: no fields
    parts = text.split(sep)
    if free is None or len(parts) <= n_fields:
        return parts
    tail = len(parts) - (n_fields - 1 - free)
    return [*parts[:free], sep.join(parts[free:tail]), *parts[tail:]]


def _text_rows(path: Path, sep: str, n_fields: int, free: int | None = None) -> _Rows:
    """(line number, fields) for every line of a headerless `sep`-separated file."""
    encoding = _encoding(path)
    try:
        f = path.open("rb")
    except OSError as exc:
        raise DataImportError(f"cannot read {path}: {exc.strerror or exc}") from None
    with f:
        # Binary lines split on b"\n" only (a stray \r cannot shift line numbers); \n is never
        # inside a UTF-8 or ISO-8859-1 character, so decoding line by line is exact.
        for number, raw in enumerate(f, 1):
            text = raw.decode(encoding).rstrip("\r\n")
            if number == 1:
                text = text.lstrip("\ufeff")
            yield number, _split(text, sep, n_fields, free)


class _File(NamedTuple):
    """One input file's rows, whatever its layout, and how many fields a good row has."""

    name: str
    rows: _Rows
    n_fields: int


def _csv(path: Path, header: tuple[str, ...]) -> _File:
    return _File(path.name, _csv_rows(path, header), len(header))


def _text(path: Path, sep: str, n_fields: int, free: int | None = None) -> _File:
    return _File(path.name, _text_rows(path, sep, n_fields, free), n_fields)


def _year_start(year: int) -> float | None:
    if not 1870 <= year <= 2100:
        return None
    return datetime(year, 1, 1, tzinfo=UTC).timestamp()


def _year_ts(title: str) -> float | None:
    m = _YEAR.search(title)
    return _year_start(int(m.group(1))) if m else None


def _genre_list(row: list[str]) -> tuple[tuple[str, ...], None]:
    """CSV and .dat: `|`-separated genres in the third field."""
    genres = row[2].strip()
    cats = () if genres in ("", NO_GENRES) else tuple(g for g in genres.split("|") if g)
    return cats, None


def _genre_flags(names: tuple[str, ...], row: list[str]) -> tuple[tuple[str, ...], float | None] | str:
    """ml-100k: one 0/1 flag per genre after the first ML100K_ITEM_FIELDS fields; the release
    date's year stands in for a title without one."""
    flags = [c.strip() for c in row[ML100K_ITEM_FIELDS:]]
    if any(f not in ("0", "1") for f in flags):
        return f"genre flags must be 0 or 1, got {'|'.join(flags)!r}"
    cats = tuple(n for n, f in zip(names, flags, strict=True) if f == "1" and n != ML100K_NO_GENRE)
    m = _DATE_YEAR.search(row[2])
    return cats, _year_start(int(m.group(1))) if m else None


def _ml100k_genres(path: Path) -> tuple[str, ...]:
    """u.genre (`name|index` lines) in index order; the README's 19 names if it is absent."""
    if not path.exists():
        return ML100K_GENRES
    by_index: dict[int, str] = {}
    for line, row in _text_rows(path, "|", 2):
        if not row:
            continue  # the released file ends with a blank line
        if len(row) != 2 or not row[1].strip().isdecimal() or not row[0].strip():
            raise DataImportError(f"{path}:{line}: expected name|index, got {'|'.join(row)!r}")
        index = int(row[1])
        if index in by_index:
            raise DataImportError(f"{path}:{line}: genre index {index} given twice")
        by_index[index] = row[0].strip()
    if not by_index or sorted(by_index) != list(range(len(by_index))):
        raise DataImportError(f"{path}: genre indexes must run 0..n-1, got {sorted(by_index)}")
    return tuple(by_index[i] for i in range(len(by_index)))


def _load_movies(file: _File, extra: _MovieExtra, report: ImportReport) -> dict[str, ItemMeta]:
    """Every layout's movie rows start with id and title; `extra` reads the rest."""
    name = file.name
    movies: dict[str, ItemMeta] = {}
    for line, row in file.rows:
        report.movies_rows += 1
        if len(row) != file.n_fields:
            report.error(name, line, f"expected {file.n_fields} fields, got {len(row)}")
            continue
        movie_id, title = row[0].strip(), row[1].strip()
        if not _ID.match(movie_id):
            report.error(name, line, f"bad movieId {movie_id!r}")
            continue
        if not title:
            report.error(name, line, "empty title")
            continue
        if movie_id in movies:
            report.error(name, line, f"duplicate movieId {movie_id}")
            continue
        parsed = extra(row)
        if isinstance(parsed, str):
            report.error(name, line, parsed)
            continue
        cats, fallback_ts = parsed
        created_ts = _year_ts(title)
        movies[movie_id] = ItemMeta(
            movie_id, title, cats, created_ts=fallback_ts if created_ts is None else created_ts
        )
    return movies


def _load_tags(file: _File, report: ImportReport) -> dict[str, list[str]]:
    name = file.name
    tags: dict[str, list[str]] = {}
    for line, row in file.rows:
        report.tags_rows += 1
        if len(row) != file.n_fields or not _ID.match(row[1].strip()):
            report.error(name, line, "expected userId,movieId,tag,timestamp")
            continue
        tag = row[2].strip()
        bucket = tags.setdefault(row[1].strip(), [])
        if tag and tag not in bucket and len(bucket) < MAX_TAGS_PER_ITEM:
            bucket.append(tag)
    return tags


def _load_ratings(file: _File, movies: dict[str, ItemMeta], report: ImportReport) -> InteractionLog:
    """user, movie, rating, timestamp rows (the same four fields in every layout) -> rating events."""
    name = file.name
    user_index: dict[str, int] = {}
    item_index: dict[str, int] = {}
    users: list[int] = []
    items: list[int] = []
    ts: list[float] = []
    values: list[float] = []
    for line, row in file.rows:
        report.ratings_rows += 1
        if len(row) != file.n_fields:
            report.error(name, line, f"expected {file.n_fields} fields, got {len(row)}")
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
    return InteractionLog(
        users=np.asarray(users, np.int32),
        items=np.asarray(items, np.int32),
        ts=np.asarray(ts, np.float64),
        types=np.full(len(users), TYPE_CODE[EventType.RATING], np.uint8),
        values=np.asarray(values, np.float32),
        user_vocab=list(user_index),
        item_vocab=list(item_index),
    )


def load_movielens(directory: Path) -> tuple[InteractionLog, list[ItemMeta], ImportReport]:
    """Ratings -> rating events (value = stars); movies -> catalogue (genres -> categories,
    release year -> created_ts); tags, when present, -> item text for the content index.

    The layout (see the module docstring) is the first of ratings.csv, ratings.dat, u.data found."""
    directory = Path(directory)
    if not directory.is_dir():
        raise DataImportError(f"{directory} is not a directory")
    report = ImportReport()
    tags: _File | None = None
    # exists(), not is_file(): a ratings file that is there but unreadable should say so.
    if (directory / "ratings.csv").exists():
        movies = _load_movies(_csv(directory / "movies.csv", MOVIES_HEADER), _genre_list, report)
        if (directory / "tags.csv").is_file():
            tags = _csv(directory / "tags.csv", TAGS_HEADER)
        ratings = _csv(directory / "ratings.csv", RATINGS_HEADER)
    elif (directory / "ratings.dat").exists():
        # Titles hold commas, quotes and parentheses but not "::"; the title is the middle field.
        movies = _load_movies(_text(directory / "movies.dat", "::", 3, free=1), _genre_list, report)
        if (directory / "tags.dat").is_file():
            tags = _text(directory / "tags.dat", "::", 4, free=2)
        ratings = _text(directory / "ratings.dat", "::", 4)
    elif (directory / "u.data").exists():
        genres = _ml100k_genres(directory / "u.genre")
        items = _text(directory / "u.item", "|", ML100K_ITEM_FIELDS + len(genres))
        movies = _load_movies(items, partial(_genre_flags, genres), report)
        ratings = _text(directory / "u.data", "\t", 4)
    else:
        raise DataImportError(f"{directory} holds no MovieLens data; expected one of: {'; '.join(LAYOUTS)}")

    if tags is not None:
        for movie_id, texts in _load_tags(tags, report).items():
            meta = movies.get(movie_id)
            if meta is not None:
                movies[movie_id] = ItemMeta(
                    meta.item_id, meta.title, meta.categories, " ".join(texts), meta.created_ts
                )

    log = _load_ratings(ratings, movies, report)
    catalogue = list(movies.values())
    for movie_id in log.item_vocab:
        if movie_id not in movies:
            catalogue.append(ItemMeta(movie_id, f"item {movie_id}"))
    report.interactions, report.users, report.items = len(log), len(log.user_vocab), len(catalogue)
    return log, catalogue, report
