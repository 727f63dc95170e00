"""Candidate generation: ALS top-N excludes consumed items; neighbours are cosine, never self."""

from __future__ import annotations

import numpy as np
from recpipe.domain.catalogue import InteractionLog
from recpipe.domain.events import EventType
from recpipe.training.cf import CFModel, confidence_matrix, fit_als, neighbours, top_n


def _two_taste_log() -> InteractionLog:
    rows = []
    ts = 1_700_000_000.0
    # users 0-19 like items a0..a9, users 20-39 like b0..b9; each misses one item of its group
    for u in range(40):
        group = "a" if u < 20 else "b"
        for i in range(10):
            if i == u % 10:
                continue
            rows.append((f"u{u}", f"{group}{i}", ts, EventType.VIEW, None))
            ts += 1
    return InteractionLog.from_rows(rows)


def _fit(log: InteractionLog) -> CFModel:
    # Regularised enough that 8 factors cannot memorise 20 items: with 0.05 the missing item
    # came top for 36-40 of 40 users depending on the seed and the machine's BLAS.
    return fit_als(
        log,
        len(log.user_vocab),
        len(log.item_vocab),
        factors=8,
        iterations=15,
        regularization=1.0,
        alpha=5.0,
        seed=1,
    )


def test_confidence_follows_event_weights_and_clips_negatives() -> None:
    log = InteractionLog.from_rows(
        [
            ("u", "i", 1.0, EventType.PURCHASE, None),
            ("u", "i", 2.0, EventType.VIEW, None),
            ("u", "j", 3.0, EventType.ADD_TO_CART, None),
            ("u", "j", 4.0, EventType.REMOVE_FROM_CART, None),
            ("u", "k", 5.0, EventType.REMOVE_FROM_CART, None),
            ("u", "r", 6.0, EventType.RATING, 2.5),
        ]
    )
    m = confidence_matrix(log, 1, 4).toarray()[0]
    np.testing.assert_allclose(m, [9.0, 3.0, 0.0, 1.5])


def test_top_n_recommends_the_missing_item_of_the_users_taste_and_never_a_consumed_one() -> None:
    log = _two_taste_log()
    model = _fit(log)
    users = np.arange(len(log.user_vocab), dtype=np.int32)
    best, scores = top_n(model, users, 3)
    consumed = model.user_items.toarray() > 0
    for u in users.tolist():
        assert not consumed[u, best[u][best[u] >= 0]].any()
        assert list(scores[u]) == sorted(scores[u], reverse=True)
        group = "a" if u < 20 else "b"
        assert log.item_vocab[best[u][0]] == f"{group}{u % 10}"


def test_neighbours_are_same_taste_items_and_never_the_item_itself() -> None:
    log = _two_taste_log()
    model = _fit(log)
    idx, sim = neighbours(model.normalised_items, 5)
    for i, item in enumerate(log.item_vocab):
        row = idx[i][idx[i] >= 0]
        assert i not in row.tolist()
        assert {log.item_vocab[j][0] for j in row.tolist()} == {item[0]}
        assert list(sim[i]) == sorted(sim[i], reverse=True)


def test_linear_neighbours_come_from_the_item_linear_weights_and_keep_the_fallback_outside_the_head() -> None:
    from recpipe.training.cf import fit_item_linear, linear_neighbours

    log = _two_taste_log()
    n_users, n_items = len(log.user_vocab), len(log.item_vocab)
    linear = fit_item_linear(log, n_users, n_items, head=10, regularization=10.0)
    fallback = neighbours(_fit(log).normalised_items, 5)
    idx, _ = linear_neighbours(linear, fallback)
    head = set(linear.head.tolist())
    for i, item in enumerate(log.item_vocab):
        row = idx[i][idx[i] >= 0]
        assert i not in row.tolist()
        if i in head:
            pos = {int(h): k for k, h in enumerate(linear.head.tolist())}
            w = linear.weights[pos[i]]
            # the strongest positive weights of the item's row lead, in order (ties: any of them)
            top = np.sort(w[w > 0])[::-1][:5]
            got = np.asarray([w[pos[j]] for j in row[: len(top)].tolist()])
            np.testing.assert_allclose(got, top, rtol=1e-5)
            assert {log.item_vocab[j][0] for j in row.tolist()} == {item[0]}
        else:
            np.testing.assert_array_equal(idx[i], fallback[0][i])
