"""`recpipe fetch ml-100k`: RecBole's atomic files become ml-100k's own layout, which the product's
importer reads like a GroupLens download; a wheel that is not the pinned one, or a bad row, stops
the conversion before anything is written. The wheels here are built in the test (no network)."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest
from recpipe.training.movielens import load_movielens
from recpipe_dev.datasets import (
    INTER_HEADER,
    ITEM_HEADER,
    DatasetError,
    convert_recbole_ml100k,
    fetch_ml100k,
)

MEMBER = "recbole/dataset_example/ml-100k/ml-100k"
INTER = [
    ["196", "242", "3", "881250949"],
    ["186", "302", "3", "891717742"],
    ["196", "267", "1", "881250950"],
    ["22", "543", "4.5", "878887116"],
]
ITEMS = [
    ["242", "Kolya", "1996", "Comedy"],
    ["302", "L.A. Confidential", "1997", "Crime Film-Noir Mystery Thriller"],
    ["267", "unkonwn", "unkonwn", "unknown"],  # RecBole's spelling of ml-100k's untitled movie
    ["543", "Misérables, Les", "1995", "Drama Musical"],
    ["1412", "Land Before Time III: The Time of the Great Giving (1995)", "V", "Animation Children's"],
]


def _wheel(path: Path, inter: list[list[str]], items: list[list[str]]) -> Path:
    def tsv(header: list[str], rows: list[list[str]]) -> str:
        return "".join("\t".join(r) + "\n" for r in [header, *rows])

    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(f"{MEMBER}.inter", tsv(INTER_HEADER, inter))
        zf.writestr(f"{MEMBER}.item", tsv(ITEM_HEADER, items))
    return path


def test_the_converted_files_import_as_ml100k_with_titles_years_and_genres(tmp_path: Path) -> None:
    out = tmp_path / "ml-100k"
    report = convert_recbole_ml100k(_wheel(tmp_path / "w.whl", INTER, ITEMS), out)
    assert (report.ratings, report.users, report.movies) == (4, 3, 5)
    assert {p.name for p in out.iterdir()} == {"u.data", "u.item", "u.genre", "SOURCE.txt"}

    log, catalogue, imported = load_movielens(out)
    assert imported.error_count == 0 and imported.unknown_items == 0
    assert (imported.interactions, imported.users, imported.items) == (4, 3, 5)
    by_id = {m.item_id: m for m in catalogue}
    assert by_id["302"].categories == ("Crime", "Film-Noir", "Mystery", "Thriller")
    assert by_id["543"].title == "Misérables, Les (1995)" and by_id["543"].created_ts is not None
    assert by_id["267"].title == "unknown" and by_id["267"].categories == ()
    # a title whose last parenthesis was not a year keeps it, as in the original u.item
    assert by_id["1412"].title.endswith("(1995) (V)") and by_id["1412"].categories == (
        "Animation",
        "Children's",
    )
    ratings = sorted(float(v) for v in log.values)
    assert ratings == [1.0, 3.0, 3.0, 4.5]


@pytest.mark.parametrize(
    ("inter", "items", "reason"),
    [
        ([["196", "242", "three", "881250949"]], ITEMS, "not numeric"),
        ([["196", "242", "3"]], ITEMS, "3 fields"),
        ([["196", "242", "7", "881250949"]], ITEMS, "not a rating row"),
        (INTER, [*ITEMS, ["9", "Heat", "1995", "Crime Heist"]], "not a movie row"),
    ],
)
def test_a_bad_row_stops_the_conversion_and_writes_nothing(
    tmp_path: Path, inter: list[list[str]], items: list[list[str]], reason: str
) -> None:
    out = tmp_path / "out"
    with pytest.raises(DatasetError, match=reason):
        convert_recbole_ml100k(_wheel(tmp_path / "w.whl", inter, items), out)
    assert not out.exists()


def test_a_wheel_that_is_not_the_pinned_one_or_is_missing_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(DatasetError, match="sha256"):
        fetch_ml100k(out, wheel=_wheel(tmp_path / "recbole.whl", INTER, ITEMS))
    with pytest.raises(DatasetError, match="cannot be read"):
        fetch_ml100k(out, wheel=tmp_path / "absent.whl")
    assert not out.exists()


def test_a_file_without_the_example_is_refused(tmp_path: Path) -> None:
    empty = tmp_path / "empty.whl"
    with zipfile.ZipFile(empty, "w") as zf:
        zf.writestr("recbole/__init__.py", "")
    with pytest.raises(DatasetError, match="no readable ml-100k"):
        convert_recbole_ml100k(empty, tmp_path / "out")


def test_a_directory_holding_another_data_set_is_refused_and_left_as_it_was(tmp_path: Path) -> None:
    # the importer would read ratings.csv before u.data: ml-100k written beside it would not be scored
    out = tmp_path / "out"
    out.mkdir()
    (out / "ratings.csv").write_text("userId,movieId,rating,timestamp\n", encoding="utf-8")
    with pytest.raises(DatasetError, match="not empty"):
        convert_recbole_ml100k(_wheel(tmp_path / "w.whl", INTER, ITEMS), out)
    assert [p.name for p in out.iterdir()] == ["ratings.csv"]


def test_fetching_again_into_the_same_directory_rewrites_it(tmp_path: Path) -> None:
    out = tmp_path / "out"
    wheel = _wheel(tmp_path / "w.whl", INTER, ITEMS)
    first = convert_recbole_ml100k(wheel, out)
    assert convert_recbole_ml100k(wheel, out) == first
