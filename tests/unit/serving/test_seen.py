"""The seen-items rule matches training: replay never offers a user an item they interacted with."""

from __future__ import annotations

import numpy as np
from recpipe.domain.catalogue import InteractionLog
from recpipe.domain.events import EventType
from recpipe.ports import SessionEntry
from recpipe.serving.recommender import blocked_items, seen_items
from recpipe.serving.request import parse_body
from recpipe.training.history import CandidatePolicy, TrendingWindow, replay
from serving_catalogue import make_items, make_neighbours

ITEMS = make_items()
T0 = 1_700_000_000.0


def replayed(rows: list[tuple[str, str, float, EventType, float | None]]) -> tuple[InteractionLog, object]:
    log = InteractionLog.from_rows(rows)
    n = len(log)
    item_ids = [log.item_vocab[i] for i in log.items.tolist()]
    _, state = replay(
        log,
        np.arange(n, dtype=np.int64),
        np.zeros(n, np.bool_),
        items=ITEMS,
        neighbours=make_neighbours(ITEMS),
        categories_of=lambda i: ITEMS.categories_of(log.item_vocab[i]),
        cf_of=lambda u: [],
        trending=TrendingWindow(log.ts, log.items, np.ones(n, np.float32), item_ids),
        policy=CandidatePolicy(),
        negatives=1,
        seed=0,
    )
    return log, state


def test_serving_leaves_out_what_training_replay_excludes() -> None:
    types = [
        EventType.VIEW,
        EventType.CLICK,
        EventType.ADD_TO_CART,
        EventType.REMOVE_FROM_CART,
        EventType.PURCHASE,
    ]
    rows = [("u1", f"i{3 * n % 40}", T0 + 60 * n, types[n % len(types)], None) for n in range(30)]
    rows += [("u2", "i5", T0, EventType.VIEW, None)]
    log, state = replayed(rows)
    u1 = log.user_index["u1"]
    excluded_by_training = {log.item_vocab[i] for i in state.seen[u1]}  # type: ignore[attr-defined]
    now = T0 + 60 * 30
    features = state.features[u1]  # type: ignore[attr-defined]
    session = state.session_at(u1, now)  # type: ignore[attr-defined]
    assert session, "the live session is part of what serving knows"
    assert seen_items(features, session) == excluded_by_training
    # From the session alone (the user store down) and from the stored features alone.
    assert seen_items(None, session) == {e.item_id for e in session}
    assert seen_items(features, []) == excluded_by_training


def test_blocked_items_add_the_seen_ones_unless_turned_off() -> None:
    req = parse_body('{"user_id": "u1", "exclude": ["i40"], "context": {"cart": ["i41"]}}')
    session = [SessionEntry("i3", "view", T0), SessionEntry("i4", "add_to_cart", T0 + 1)]
    assert blocked_items(req, None, session) == {"i40", "i41", "i3", "i4"}
    assert blocked_items(req, None, session, exclude_seen=False) == {"i40", "i41", "i4"}
