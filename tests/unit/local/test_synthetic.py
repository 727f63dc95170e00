"""The synthetic shop: exact sizes, determinism, and the structure a recommender should find."""

from __future__ import annotations

import numpy as np
import pytest
from recpipe.domain.catalogue import EVENT_TYPE_CODES, TYPE_CODE
from recpipe.domain.events import EventType, parse_event
from recpipe_dev.synthetic import CATEGORIES, CATEGORY_NAMES, DAY_S, generate


@pytest.fixture(scope="module")
def shop() -> tuple:
    return generate(n_users=800, n_items=1500, n_interactions=60_000, seed=7)


def test_exact_size_sorted_and_within_span(shop: tuple) -> None:
    log, items = shop
    assert len(log) == 60_000
    assert len(items) == 1500 and len(log.item_vocab) == 1500 and len(log.user_vocab) == 800
    assert np.all(np.diff(log.ts) >= 0)
    start = 1_735_689_600.0
    assert log.ts.min() >= start and log.ts.max() <= start + 28 * DAY_S
    assert log.users.max() < 800 and log.items.max() < 1500


def test_same_seed_same_log_other_seed_other_log() -> None:
    a, ia = generate(50, 100, 2000, seed=3)
    b, ib = generate(50, 100, 2000, seed=3)
    c, _ = generate(50, 100, 2000, seed=4)
    assert np.array_equal(a.items, b.items) and np.array_equal(a.ts, b.ts) and ia == ib
    assert not np.array_equal(a.items, c.items)


def test_every_row_is_a_valid_schema_event(shop: tuple) -> None:
    log, _ = shop
    rows = np.random.default_rng(0).choice(len(log), 300, replace=False)
    for row in rows:
        event = log.event(int(row))
        parse_event(event.to_record(), now=log.ts.max() + 1)
    rating = log.types == TYPE_CODE[EventType.RATING]
    assert rating.any() and np.all((log.values[rating] >= 3) & (log.values[rating] <= 5))
    assert np.all(np.isnan(log.values[~rating]))


def test_event_mix_has_every_type_with_views_dominant(shop: tuple) -> None:
    log, _ = shop
    share = np.bincount(log.types, minlength=len(EVENT_TYPE_CODES)) / len(log)
    assert all(share > 0)
    assert share[TYPE_CODE[EventType.VIEW]] > 0.5
    assert share[TYPE_CODE[EventType.PURCHASE]] < share[TYPE_CODE[EventType.ADD_TO_CART]]


def test_catalogue_is_readable_and_titles_unique(shop: tuple) -> None:
    _, items = shop
    assert len({i.title for i in items}) == len(items)
    assert {i.categories[0] for i in items} == set(CATEGORY_NAMES)
    assert all(i.categories[0] in i.text.lower() or i.categories[0].lower() in i.text for i in items)
    assert any(len(i.categories) == 2 for i in items)


def test_popularity_is_long_tailed(shop: tuple) -> None:
    log, items = shop
    counts = np.sort(np.bincount(log.items, minlength=len(items)))[::-1]
    assert counts[: len(items) // 10].sum() > 0.4 * counts.sum()


def test_users_have_concentrated_tastes(shop: tuple) -> None:
    log, items = shop
    cat_of = np.array([CATEGORY_NAMES.index(i.categories[0]) for i in items])
    active = np.bincount(log.users) >= 40
    matrix = np.zeros((len(log.user_vocab), len(CATEGORIES)))
    np.add.at(matrix, (log.users, cat_of[log.items]), 1)
    top2 = np.sort(matrix[active], axis=1)[:, -2:].sum(axis=1) / matrix[active].sum(axis=1)
    # Uniform tastes would give 2/24 = 8%; planted tastes give most activity in two categories.
    assert np.median(top2) > 0.6


def test_category_appeal_follows_time_of_day(shop: tuple) -> None:
    log, items = shop
    cat_of = np.array([CATEGORY_NAMES.index(i.categories[0]) for i in items])
    hours = ((log.ts % DAY_S) // 3600).astype(int)
    coffee = cat_of[log.items] == CATEGORY_NAMES.index("Coffee & Tea")
    games = cat_of[log.items] == CATEGORY_NAMES.index("Video Games")
    morning = (hours >= 6) & (hours < 10)
    night = (hours >= 21) | (hours < 2)
    assert coffee[morning].mean() > 1.5 * coffee[night].mean()
    assert games[night].mean() > 1.5 * games[morning].mean()


def test_no_interaction_before_an_item_exists(shop: tuple) -> None:
    log, items = shop
    created = np.array([i.created_ts for i in items])
    assert np.all(log.ts >= created[log.items])
    new = created > log.ts.min()
    assert new.any(), "some items arrive during the log (cold-start items)"


def test_large_catalogue_scales() -> None:
    log, items = generate(n_users=20_000, n_items=100_000, n_interactions=200_000, seed=1)
    assert len(items) == 100_000 and len(log) == 200_000
    assert len({i.title for i in items}) == 100_000


def test_refuses_nonsense_sizes() -> None:
    with pytest.raises(ValueError):
        generate(0, 10, 10)
    with pytest.raises(ValueError):
        generate(10, 10, 10, span_days=0)
