"""A real MovieLens data set that the package registries carry: ml-100k, for `recpipe evaluate`.

Issue #14's defaults must hold on a MovieLens-format data set that is not in the repository.
grouplens.org is out of reach here, PyPI is not, and RecBole's wheel ships the whole ml-100k
(100,000 ratings of 1,682 movies by 943 users, with timestamps and genres) as its quick-start
example, in RecBole's tab-separated "atomic files". `fetch_ml100k` downloads that wheel, pinned
by version and sha256, and writes ml-100k's own layout (`u.data`, `u.item`, `u.genre`), which
`--data movielens:DIR` reads through the product's importer like any GroupLens download.

Nothing is stored in the repository: GroupLens's licence (research use, acknowledge the source,
no redistribution) stays with the user's copy, and `SOURCE.txt` in DIR says where it came from.
"""

from __future__ import annotations

import csv
import hashlib
import io
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from recpipe.training.movielens import ML100K_GENRES, ML100K_NO_GENRE

#: The wheel that carries ml-100k, pinned: a different file is refused, not converted.
RECBOLE_WHEEL = "recbole-1.2.1-py3-none-any.whl"
RECBOLE_REQUIREMENT = "recbole==1.2.1"
RECBOLE_SHA256 = "9c9948202011f37eb0a7c6768129313f00d6403ad221ec940d5e2d5d5f33a407"
_MEMBER = "recbole/dataset_example/ml-100k/ml-100k"
INTER_HEADER = ["user_id:token", "item_id:token", "rating:float", "timestamp:float"]
ITEM_HEADER = ["item_id:token", "movie_title:token_seq", "release_year:token", "class:token_seq"]
#: RecBole's spelling of ml-100k's one movie with no title and no date (id 267, "unknown").
_RECBOLE_UNKNOWN = "unkonwn"


class DatasetError(Exception):
    """The source cannot be fetched or is not the file it should be; nothing is written."""


@dataclass(frozen=True, slots=True)
class ConvertReport:
    ratings: int
    users: int
    movies: int
    directory: Path


#: What `convert_recbole_ml100k` writes; a directory holding anything else is refused.
WRITTEN = frozenset({"u.data", "u.item", "u.genre", "SOURCE.txt"})


def fetch_ml100k(directory: Path, wheel: Path | None = None) -> ConvertReport:
    """Download (or take `wheel`), check the pinned sha256, and write ml-100k into `directory`."""
    _check_target(directory)
    if wheel is not None:
        return convert_recbole_ml100k(_checked(wheel), directory)
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", RECBOLE_REQUIREMENT, "--no-deps"]
        cmd += ["--only-binary=:all:", "--disable-pip-version-check", "-q", "-d", tmp]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        path = Path(tmp) / RECBOLE_WHEEL
        if done.returncode != 0 or not path.is_file():
            raise DatasetError(f"pip download {RECBOLE_REQUIREMENT} failed: {done.stderr.strip()[-500:]}")
        return convert_recbole_ml100k(_checked(path), directory)


def _checked(wheel: Path) -> Path:
    try:
        digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    except OSError as exc:
        raise DatasetError(f"{wheel}: cannot be read ({exc.strerror})") from exc
    if digest != RECBOLE_SHA256:
        raise DatasetError(f"{wheel} has sha256 {digest}, expected {RECBOLE_SHA256} ({RECBOLE_WHEEL})")
    return wheel


def _check_target(directory: Path) -> None:
    # the importer takes the first layout it finds (ratings.csv before u.data): writing next to
    # another data set would leave `--data movielens:DIR` scoring that one, silently
    if directory.exists():
        other = sorted(p.name for p in directory.iterdir() if p.name not in WRITTEN)
        if not directory.is_dir() or other:
            raise DatasetError(f"{directory} is not empty or not a directory ({', '.join(other[:5])})")


def convert_recbole_ml100k(wheel: Path, directory: Path) -> ConvertReport:
    """RecBole's ml-100k atomic files -> u.data / u.item / u.genre. Every row is checked; any bad
    row stops the conversion before a file is written (a partial data set would score wrongly)."""
    _check_target(directory)
    try:
        with zipfile.ZipFile(wheel) as zf:
            inter = zf.read(f"{_MEMBER}.inter").decode("utf-8")
            items = zf.read(f"{_MEMBER}.item").decode("utf-8")
    except (OSError, KeyError, zipfile.BadZipFile, UnicodeDecodeError) as exc:
        raise DatasetError(f"{wheel}: no readable ml-100k example ({exc})") from exc

    data_lines: list[str] = []
    users: set[str] = set()
    for line, row in _rows(inter, INTER_HEADER, "ml-100k.inter"):
        user, item, rating, ts = row
        try:
            stars, when = float(rating), float(ts)
        except ValueError:
            raise DatasetError(f"ml-100k.inter line {line}: rating/timestamp not numeric") from None
        if not (user.isdigit() and item.isdigit() and 0 < stars <= 5 and when == int(when)):
            raise DatasetError(f"ml-100k.inter line {line}: not a rating row: {row}")
        data_lines.append(f"{user}\t{item}\t{stars:g}\t{int(when)}")
        users.add(user)

    item_lines: list[str] = []
    for line, row in _rows(items, ITEM_HEADER, "ml-100k.item"):
        item, title, year, genres = row
        title = ML100K_NO_GENRE if title == _RECBOLE_UNKNOWN else title
        year = "" if year == _RECBOLE_UNKNOWN else year
        names = genres.split() or [ML100K_NO_GENRE]
        unknown = [g for g in names if g not in ML100K_GENRES]
        if not item.isdigit() or "|" in title or unknown:
            raise DatasetError(f"ml-100k.item line {line}: not a movie row: {row}")
        flags = ["1" if g in names else "0" for g in ML100K_GENRES]
        # u.item: id|title (year)|release date|video release date|IMDb URL|19 genre flags. RecBole
        # cut the title's last parenthesis off as the year ("(V)" for a video), so put it back.
        full_title = f"{title} ({year})" if year else title
        item_lines.append("|".join([item, full_title, "", "", "", *flags]))

    directory.mkdir(parents=True, exist_ok=True)
    (directory / "u.data").write_text("\n".join(data_lines) + "\n", encoding="utf-8")
    (directory / "u.item").write_text("\n".join(item_lines) + "\n", encoding="utf-8")
    genre = "".join(f"{g}|{i}\n" for i, g in enumerate(ML100K_GENRES))
    (directory / "u.genre").write_text(genre, encoding="utf-8")
    (directory / "SOURCE.txt").write_text(
        f"MovieLens 100K (F. Maxwell Harper and Joseph A. Konstan, 2015, GroupLens Research),\n"
        f"taken from {RECBOLE_WHEEL} (sha256 {RECBOLE_SHA256}) by `recpipe fetch ml-100k`.\n"
        "GroupLens's licence applies: research use, acknowledge the source, do not redistribute.\n",
        encoding="utf-8",
    )
    return ConvertReport(len(data_lines), len(users), len(item_lines), directory)


def _rows(text: str, header: list[str], name: str) -> list[tuple[int, list[str]]]:
    reader = csv.reader(io.StringIO(text), delimiter="\t", quoting=csv.QUOTE_NONE)
    first = next(reader, None)
    if first != header:
        raise DatasetError(f"{name}: header {first}, expected {header}")
    rows: list[tuple[int, list[str]]] = []
    for line, row in enumerate(reader, start=2):
        if len(row) != len(header):
            raise DatasetError(f"{name} line {line}: {len(row)} fields, expected {len(header)}")
        rows.append((line, row))
    return rows
