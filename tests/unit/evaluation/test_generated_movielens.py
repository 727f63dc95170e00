"""The generated shop written as a MovieLens-format data set reads back through the product's
own importer: one rating per (user, item) pair, at its first interaction, stars by its
strongest event, categories as genres, users with too few pairs left out."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from recpipe.domain.events import EventType
from recpipe.training.movielens import load_movielens
from recpipe_dev.synthetic import MOVIELENS_STARS, generate, write_movielens


def test_the_generated_shop_round_trips_through_the_movielens_importer(tmp_path: Path) -> None:
    log, items = generate(n_users=300, n_items=400, n_interactions=8000, seed=3)
    rows = write_movielens(log, items, tmp_path, min_ratings=5)
    back, catalogue, report = load_movielens(tmp_path)
    assert report.error_count == 0 and report.unknown_items == 0
    assert len(back) == rows > 0

    # expected pairs, computed the plain way from the shop's events
    strongest: dict[tuple[str, str], float] = {}
    first: dict[tuple[str, str], float] = {}
    for r in range(len(log)):
        event = log.event(r)
        stars = float(event.value) if event.type is EventType.RATING else MOVIELENS_STARS[event.type]
        if stars <= 0:
            continue
        pair = (str(int(event.user_id[1:]) + 1), str(int(event.item_id[1:]) + 1))
        strongest[pair] = max(stars, strongest.get(pair, 0.0))
        first[pair] = min(event.ts, first.get(pair, np.inf))
    per_user: dict[str, int] = {}
    for u, _ in strongest:
        per_user[u] = per_user.get(u, 0) + 1
    expected = {p for p in strongest if per_user[p[0]] >= 5}
    assert 0 < len(expected) < len(strongest)  # some users are left out, most are kept

    got = {}
    for r in range(len(back)):
        e = back.event(r)
        got[(e.user_id, e.item_id)] = (float(e.value), e.ts)
    assert set(got) == expected
    for pair, (stars, ts) in got.items():
        assert stars == round(strongest[pair] * 2) / 2
        assert ts == int(first[pair])
    genres = {m.item_id: m.categories for m in catalogue}
    assert all(genres[str(int(m.item_id[1:]) + 1)] == m.categories for m in items)
