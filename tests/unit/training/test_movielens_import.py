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


# ---- the classic layouts: ml-1m / ml-10m (.dat) and ml-100k (u.data, u.item) ----


def _write_bytes(d: Path, files: dict[str, bytes]) -> Path:
    for name, data in files.items():
        (d / name).write_bytes(data)
    return d


# ml-1m: "::"-separated, no header, ISO-8859-1.
ML1M_MOVIES = (
    "1::Toy Story (1995)::Animation|Children's|Comedy\n"  # line 1
    "2::American President, The (1995)::Comedy|Drama|Romance\n"  # line 2: comma in title
    "3::Pokémon: The First Movie (1998)::Animation|Children's\n"  # line 3: latin-1 title
    "4::Untitled::(no genres listed)\n"  # line 4: no year, no genres
    "5::Broken row\n"  # line 5: wrong field count
    "x y::Bad Id (1990)::Drama\n"  # line 6: bad id
)
ML1M_RATINGS = (
    "1::1::5::978300760\n"  # line 1
    "1::3::3::978302109\n"  # line 2
    "2::2::4::978301968\n"  # line 3
    "2::999::2::978300275\n"  # line 4: unknown movie, kept
    "1::2::five::978300760\n"  # line 5: rating not numeric
    "1::2::4\n"  # line 6: wrong field count
    "u 1::2::4::978300760\n"  # line 7: bad user id
)


def test_ml1m_dat_files_in_latin1_are_imported(tmp_path: Path) -> None:
    movies = ML1M_MOVIES.encode("latin-1")
    assert b"Pok\xe9mon" in movies  # really ISO-8859-1, not UTF-8
    d = _write_bytes(tmp_path, {"movies.dat": movies, "ratings.dat": ML1M_RATINGS.encode("latin-1")})
    log, items, report = load_movielens(d)

    assert log.user_vocab == ["1", "2"] and log.item_vocab == ["1", "3", "2", "999"]
    np.testing.assert_array_equal(log.users, [0, 0, 1, 1])
    np.testing.assert_array_equal(log.items, [0, 1, 2, 3])
    np.testing.assert_allclose(log.values, [5.0, 3.0, 4.0, 2.0])
    np.testing.assert_array_equal(log.ts, [978300760, 978302109, 978301968, 978300275])
    assert (log.types == TYPE_CODE[EventType.RATING]).all()

    by_id = {m.item_id: m for m in items}
    assert list(by_id) == ["1", "2", "3", "4", "999"]
    assert by_id["1"].categories == ("Animation", "Children's", "Comedy")
    assert by_id["2"].title == "American President, The (1995)"
    assert by_id["2"].categories == ("Comedy", "Drama", "Romance")
    assert by_id["3"].title == "Pokémon: The First Movie (1998)"
    assert by_id["3"].created_ts == 883612800.0  # 1998-01-01
    assert by_id["1"].created_ts == 788918400.0  # 1995-01-01
    assert by_id["4"].categories == () and by_id["4"].created_ts is None
    assert by_id["999"].title == "item 999" and by_id["999"].categories == ()

    assert (report.ratings_rows, report.movies_rows, report.tags_rows) == (7, 6, 0)
    assert (report.interactions, report.users, report.items, report.unknown_items) == (4, 2, 5, 1)
    assert {(f, n) for f, n, _ in report.errors} == {
        ("movies.dat", 5),
        ("movies.dat", 6),
        ("ratings.dat", 5),
        ("ratings.dat", 6),
        ("ratings.dat", 7),
    }
    assert report.error_count == 5
    reasons = {(f, n): r for f, n, r in report.errors}
    assert reasons[("movies.dat", 5)] == "expected 3 fields, got 2"
    assert reasons[("ratings.dat", 5)].startswith("rating/timestamp not numeric")
    assert reasons[("ratings.dat", 6)] == "expected 4 fields, got 3"
    assert reasons[("ratings.dat", 7)] == "bad userId 'u 1'"


def test_ml10m_dat_files_in_utf8_with_tags(tmp_path: Path) -> None:
    d = _write_bytes(
        tmp_path,
        {
            "movies.dat": (
                "1::Toy Story (1995)::Adventure|Animation|Children|Comedy|Fantasy\n"
                "4973::Amélie (Fabuleux destin d'Amélie Poulain, Le) (2001)::Comedy|Romance\n"
            ).encode(),
            "ratings.dat": (
                b"15::4973::4.5::1215184630\n"  # half stars, as in ml-10m
                b"15::1::0.5::1215184631\n"
                b"20::1::7.5e::1215184632\n"  # line 3: rating not numeric
            ),
            "tags.dat": (
                b"15::4973::whimsical::1215184640\n"
                b"15::4973::Paris, France::1215184641\n"  # comma inside a tag
                b"20::4973::whimsical::1215184642\n"  # repeated tag: once in the text
                b"20::1::pixar\n"  # line 4: wrong field count
            ),
        },
    )
    log, items, report = load_movielens(d)

    assert log.user_vocab == ["15"] and log.item_vocab == ["4973", "1"]
    np.testing.assert_allclose(log.values, [4.5, 0.5])
    np.testing.assert_array_equal(log.ts, [1215184630, 1215184631])
    by_id = {m.item_id: m for m in items}
    # UTF-8 decoded as such (latin-1 would give "AmÃ©lie")
    assert by_id["4973"].title == "Amélie (Fabuleux destin d'Amélie Poulain, Le) (2001)"
    assert by_id["4973"].created_ts == 978307200.0  # 2001-01-01
    assert by_id["4973"].text == "whimsical Paris, France"
    assert by_id["1"].text == ""
    assert (report.ratings_rows, report.movies_rows, report.tags_rows) == (3, 2, 4)
    assert [(f, n) for f, n, _ in report.errors] == [("tags.dat", 4), ("ratings.dat", 3)]


# ml-100k: u.data tab-separated; u.item "|"-separated with 19 genre flags named by u.genre.
ML100K_GENRE = (
    "unknown|0\nAction|1\nAdventure|2\nAnimation|3\nChildren's|4\nComedy|5\nCrime|6\n"
    "Documentary|7\nDrama|8\nFantasy|9\nFilm-Noir|10\nHorror|11\nMusical|12\nMystery|13\n"
    "Romance|14\nSci-Fi|15\nThriller|16\nWar|17\nWestern|18\n\n"
)
ML100K_ITEM = (
    "1|Toy Story (1995)|01-Jan-1995||http://us.imdb.com/M/title-exact?Toy%20Story%20(1995)|0|0|0|1|1|1|0|0|0|0|0|0|0|0|0|0|0|0|0\n"
    "2|Misérables, Les (1995)|01-Jan-1995||http://us.imdb.com/M/title-exact?Mis%E9rables%2C%20Les%20(1995)|0|0|0|0|0|0|0|0|1|0|0|0|1|0|0|0|0|0|0\n"
    "3|Kolya|24-Jan-1997||http://us.imdb.com/M/title-exact?Kolya%20(1996)|0|0|0|0|0|1|0|0|0|0|0|0|0|0|0|0|0|0|0\n"
    "267|unknown||||1|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0\n"
    "4|Too Few Flags (1995)|01-Jan-1995||http://x|0|1\n"  # line 5: wrong field count
    "5|Bad Flag (1995)|01-Jan-1995||http://x|0|0|0|0|0|0|0|0|2|0|0|0|0|0|0|0|0|0|0\n"  # line 6
)
ML100K_DATA = (
    "196\t1\t3\t881250949\n"  # line 1
    "186\t2\t4\t891717742\n"  # line 2
    "196\t3\t5\t878887116\n"  # line 3
    "22\t267\t1\t878887117\n"  # line 4
    "244\t51\t2\t880606923\n"  # line 5: not in u.item, kept
    "196\t3 x\t3\t881250949\n"  # line 6: bad item id
    "186 2 4 891717742\n"  # line 7: spaces, not tabs: wrong field count
    "22\t1\tx\t878887116\n"  # line 8: rating not numeric
    "2 2\t1\t4\t878887116\n"  # line 9: bad user id
)


def test_ml100k_u_data_and_u_item_with_genre_flags(tmp_path: Path) -> None:
    item = ML100K_ITEM.encode("latin-1")
    assert b"Mis\xe9rables" in item
    d = _write_bytes(
        tmp_path,
        {"u.data": ML100K_DATA.encode(), "u.item": item, "u.genre": ML100K_GENRE.encode()},
    )
    log, items, report = load_movielens(d)

    assert log.user_vocab == ["196", "186", "22", "244"]
    assert log.item_vocab == ["1", "2", "3", "267", "51"]
    np.testing.assert_array_equal(log.users, [0, 1, 0, 2, 3])
    np.testing.assert_array_equal(log.items, [0, 1, 2, 3, 4])
    np.testing.assert_allclose(log.values, [3, 4, 5, 1, 2])
    np.testing.assert_array_equal(log.ts, [881250949, 891717742, 878887116, 878887117, 880606923])
    assert (log.types == TYPE_CODE[EventType.RATING]).all()

    by_id = {m.item_id: m for m in items}
    assert list(by_id) == ["1", "2", "3", "267", "51"]
    assert by_id["1"].title == "Toy Story (1995)"
    assert by_id["1"].categories == ("Animation", "Children's", "Comedy")
    assert by_id["1"].created_ts == 788918400.0  # 1995-01-01, from the title
    assert by_id["2"].title == "Misérables, Les (1995)"
    assert by_id["2"].categories == ("Drama", "Musical")
    assert by_id["3"].created_ts == 852076800.0  # no year in the title: the release date's, 1997
    assert by_id["267"].title == "unknown"
    assert by_id["267"].categories == () and by_id["267"].created_ts is None  # "unknown" = none
    assert by_id["51"].title == "item 51"

    assert (report.ratings_rows, report.movies_rows, report.tags_rows) == (9, 6, 0)
    assert (report.interactions, report.users, report.items, report.unknown_items) == (5, 4, 5, 1)
    reasons = {(f, n): r for f, n, r in report.errors}
    assert set(reasons) == {
        ("u.item", 5),
        ("u.item", 6),
        ("u.data", 6),
        ("u.data", 7),
        ("u.data", 8),
        ("u.data", 9),
    }
    assert reasons[("u.item", 5)] == "expected 24 fields, got 7"
    assert "genre flags" in reasons[("u.item", 6)]
    assert reasons[("u.data", 6)] == "bad movieId '3 x'"
    assert reasons[("u.data", 7)] == "expected 4 fields, got 1"
    assert reasons[("u.data", 8)].startswith("rating/timestamp not numeric")
    assert reasons[("u.data", 9)] == "bad userId '2 2'"
    assert report.error_count == 6


def test_ml100k_without_u_genre_uses_the_documented_19_genres(tmp_path: Path) -> None:
    d = _write_bytes(tmp_path, {"u.data": b"1\t1\t4\t881250949\n", "u.item": ML100K_ITEM.encode("latin-1")})
    _, items, report = load_movielens(d)
    by_id = {m.item_id: m for m in items}
    assert by_id["1"].categories == ("Animation", "Children's", "Comedy")
    assert by_id["2"].categories == ("Drama", "Musical")
    assert by_id["267"].categories == ()
    assert report.movies_rows == 6 and report.error_count == 2


def test_a_directory_with_no_known_layout_names_all_three(tmp_path: Path) -> None:
    (tmp_path / "movies.dat").write_text("1::Toy Story (1995)::Comedy\n")
    with pytest.raises(DataImportError) as info:
        load_movielens(tmp_path)
    message = str(info.value)
    for name in ("ratings.csv", "ratings.dat", "u.data"):
        assert name in message
    (tmp_path / "ratings.dat").write_text("1::1::5::978300760\n")
    (tmp_path / "movies.dat").unlink()
    with pytest.raises(DataImportError, match="movies.dat"):
        load_movielens(tmp_path)


def test_ml100k_genre_names_and_their_order_come_from_u_genre(tmp_path: Path) -> None:
    d = _write_bytes(
        tmp_path,
        {
            "u.genre": b"Comedy|2\nunknown|0\nDrama|1\n\n",
            "u.item": b"7|Twelve Monkeys (1995)|01-Jan-1995||http://x|0|1|1\n8|Babe (1995)|01-Jan-1995||http://x|0|0|1\n",
            "u.data": b"1\t7\t4\t881250949\n",
        },
    )
    _, items, report = load_movielens(d)
    assert [(m.item_id, m.categories) for m in items] == [("7", ("Drama", "Comedy")), ("8", ("Comedy",))]
    assert report.error_count == 0
