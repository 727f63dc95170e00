"""Importing MovieLens-format history: every bad row is reported with file and line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from recpipe.domain.catalogue import TYPE_CODE
from recpipe.domain.events import EventType
from recpipe.training.movielens import DataImportError, load_movielens


def _write(d: Path, ratings: str, movies: str) -> Path:
    (d / "ratings.csv").write_text(ratings)
    (d / "movies.csv").write_text(movies)
    return d


MOVIES = (
    "movieId,title,genres\n"
    "1,Toy Story (1995),Adventure|Animation|Children\n"
    '2,"Shawshank Redemption, The (1994)",Crime|Drama\n'
    "3,Untitled,(no genres listed)\n"
)


def test_ratings_become_rating_events_and_genres_categories(tmp_path: Path) -> None:
    d = _write(
        tmp_path,
        "userId,movieId,rating,timestamp\n1,1,4.0,964982703\n1,2,5,964981247\n2,3,0.5,1000000000\n",
        MOVIES,
    )
    log, items, report = load_movielens(d)

    assert len(log) == 3 and report.error_count == 0
    assert log.user_vocab == ["1", "2"] and log.item_vocab == ["1", "2", "3"]
    assert (log.types == TYPE_CODE[EventType.RATING]).all()
    np.testing.assert_allclose(log.values, [4.0, 5.0, 0.5])
    by_id = {m.item_id: m for m in items}
    assert by_id["1"].categories == ("Adventure", "Animation", "Children")
    assert by_id["2"].title == "Shawshank Redemption, The (1994)"
    assert by_id["3"].categories == ()
    assert by_id["1"].created_ts == 788918400.0  # 1995-01-01
    assert by_id["3"].created_ts is None
    event = log.event(0)
    assert event.type is EventType.RATING and event.value == 4.0 and event.user_id == "1"


def test_malformed_rows_are_counted_with_line_numbers_not_silently_dropped(tmp_path: Path) -> None:
    d = _write(
        tmp_path,
        "userId,movieId,rating,timestamp\n"
        "1,1,4.0,964982703\n"  # line 2 ok
        "1,2,four,964981247\n"  # line 3 not numeric
        "1,2\n"  # line 4 too few fields
        "1,2,11,964981247\n"  # line 5 out of range
        "x y,2,3,964981247\n"  # line 6 bad user id
        "2,99,3,964981247\n",  # line 7 unknown movie: kept, counted
        MOVIES + "x y,Title,Drama\n",  # movies line 5
    )
    log, _, report = load_movielens(d)

    assert len(log) == 2
    assert report.unknown_items == 1
    lines = {(f, n) for f, n, _ in report.errors}
    assert lines == {
        ("ratings.csv", 3),
        ("ratings.csv", 4),
        ("ratings.csv", 5),
        ("ratings.csv", 6),
        ("movies.csv", 5),
    }
    assert report.error_count == 5
    assert any("outside 0..10" in r for _, _, r in report.errors)


def test_a_missing_or_wrong_file_stops_the_import(tmp_path: Path) -> None:
    (tmp_path / "movies.csv").write_text(MOVIES)
    with pytest.raises(DataImportError, match="ratings.csv"):
        load_movielens(tmp_path)
    (tmp_path / "ratings.csv").write_text("user,item,stars\n1,1,4\n")
    with pytest.raises(DataImportError, match="expected header"):
        load_movielens(tmp_path)
    with pytest.raises(DataImportError, match="not a directory"):
        load_movielens(tmp_path / "nope")
