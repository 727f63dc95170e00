"""Pieces of the demo that need no servers: data shifting, checks' arithmetic, sample users."""

from __future__ import annotations

import numpy as np
from recpipe.domain.catalogue import InteractionLog, ItemMeta
from recpipe_dev.demo.data import DAY_S, shift_to_now, synthetic
from recpipe_dev.demo.scenario import Call, latency_summary, share
from recpipe_dev.demo.server import sample_users


def test_history_moves_by_whole_days_to_end_just_before_now() -> None:
    log = InteractionLog.from_rows(
        [("u1", "i1", 1_000_000.0 + 3600 * 7, "view", None), ("u1", "i2", 1_000_500.0, "click", None)]
    )
    items = [ItemMeta("i1", "One", ("A",), created_ts=900_000.0), ItemMeta("i2", "Two", ("B",))]
    now = 1_700_000_000.0
    moved, moved_items = shift_to_now(log, items, now)
    shift = moved.ts[0] - log.ts[0]
    assert shift % DAY_S == 0  # time of day kept
    assert now - DAY_S <= moved.ts.max() <= now
    assert moved_items[0].created_ts == 900_000.0 + shift and moved_items[1].created_ts is None


def test_generated_demo_shop_ends_before_now() -> None:
    now = 1_800_000_000.0
    data = synthetic(50, 60, 1500, now=now)
    assert data.log.ts.max() <= now and data.log.ts.min() >= now - 29 * DAY_S
    assert "synthetic shop: 50 users, 60 items, 1,500 interactions" in data.description


def test_share_counts_items_carrying_the_category() -> None:
    items = [{"categories": ["A", "B"]}, {"categories": ["B"]}, {"categories": []}, {}]
    assert share(items, "B") == 0.5 and share(items, "A") == 0.25 and share([], "A") == 0.0


def test_latency_summary_per_route_with_handler_time_when_reported() -> None:
    calls = [Call("GET /recommendations", 200, float(ms), took_ms=ms / 2) for ms in range(1, 101)]
    calls.append(Call("POST /events", 202, 40.0))
    summary = latency_summary(calls)
    rec = summary["GET /recommendations"]
    assert rec["requests"] == 100 and rec["client_p50_ms"] == 50.5 and np.isclose(rec["took_p50_ms"], 25.25)
    assert "took_p50_ms" not in summary["POST /events"]


def test_sample_users_have_distinct_favourite_categories() -> None:
    data = synthetic(300, 200, 20_000, now=1_800_000_000.0)
    users = sample_users(data, n=8)
    favourites = [u["top_categories"][0] for u in users]
    assert len(users) >= 5 and len(set(favourites)) == len(favourites)
    assert all(u["user_id"] in data.log.user_index for u in users)
