"""Candidate generation: ALS top-N excludes consumed items; neighbours are cosine, never self."""

from __future__ import annotations

import numpy as np
import pytest
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
    from recpipe.training.cf import fit_item_linear, head_neighbours

    log = _two_taste_log()
    n_users, n_items = len(log.user_vocab), len(log.item_vocab)
    linear = fit_item_linear(log, n_users, n_items, head=10, regularization=10.0)
    fallback = neighbours(_fit(log).normalised_items, 5)
    idx, _ = head_neighbours(linear.head, linear.weights, fallback)
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


def test_sequential_counts_pairs_within_the_window_with_decay_and_damping() -> None:
    from recpipe.training.cf import fit_sequential

    # one user: a b c at t=1,2,3; another: a c at t=1,2 (c is one position from a there)
    log = InteractionLog.from_rows(
        [
            ("u1", "a", 1.0, EventType.VIEW, None),
            ("u1", "b", 2.0, EventType.VIEW, None),
            ("u1", "c", 3.0, EventType.VIEW, None),
            ("u2", "a", 1.0, EventType.VIEW, None),
            ("u2", "c", 2.0, EventType.VIEW, None),
            ("u2", "x", 3.0, EventType.REMOVE_FROM_CART, None),  # not interest: never counted
        ]
    )
    n_items = len(log.item_vocab)
    head = np.arange(n_items, dtype=np.int32)
    ix = {item: k for k, item in enumerate(log.item_vocab)}
    seq = fit_sequential(log, head, n_items, window=2, decay=0.5, damping=0.0)
    w = seq.weights
    a, b, c, x = ix["a"], ix["b"], ix["c"], ix["x"]
    assert w[a, b] == w[b, a] == 1.0
    assert w[b, c] == 1.0
    assert w[a, c] == w[c, a] == 0.5 + 1.0  # distance 2 for u1 (decayed), 1 for u2
    assert w[x].sum() == 0.0 and np.all(np.diag(w) == 0.0)
    # a window of 1 never pairs a and c in u1's sequence
    assert fit_sequential(log, head, n_items, window=1, decay=0.5, damping=0.0).weights[a, c] == 1.0
    # damping divides by (n_a n_c) ** damping: a and c have 2 users each
    damped = fit_sequential(log, head, n_items, window=2, decay=0.5, damping=1.0).weights
    assert damped[a, c] == np.float32(1.5 / 4.0)
    # a user's score sums the rows of their items
    scores = seq.scores(confidence_matrix(log, 2, n_items), np.asarray([1], np.int32))
    np.testing.assert_allclose(scores[0], w[a] + w[c])


@pytest.mark.parametrize("n", [1, 7, 700])
def test_spd_inverse_matches_the_general_inverse_and_refuses_an_indefinite_matrix(n: int) -> None:
    from recpipe.training.cf import spd_inverse

    rng = np.random.default_rng(n)
    x = rng.random((n + 5, n)).astype(np.float32)
    a = (x.T @ x + 3.0 * np.eye(n)).astype(np.float32)
    expect = np.linalg.inv(a.astype(np.float64))
    got = spd_inverse(a.copy())  # 700 spans two 512-row mirror blocks
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, expect, rtol=2e-3, atol=1e-4 * float(np.abs(expect).max()))
    np.testing.assert_array_equal(got, got.T)
    with pytest.raises(np.linalg.LinAlgError, match="positive definite"):
        spd_inverse(-np.eye(n, dtype=np.float32))


def test_time_local_ease_is_ease_over_the_gram_of_each_users_sliding_windows() -> None:
    from recpipe.training.cf import fit_sequential

    rng = np.random.default_rng(11)
    rows = [
        (f"u{u}", f"i{i}", float(t), EventType.VIEW, None)
        for u in range(15)
        for t, i in enumerate(rng.choice(25, int(rng.integers(3, 12)), replace=False).tolist())
    ]
    log = InteractionLog.from_rows(rows)
    n_items = len(log.item_vocab)
    head = np.arange(n_items, dtype=np.int32)
    window, lam = 3, 4.0
    # every window of window + 1 consecutive positions (the partial ones at both ends too) is a
    # row; the model's Gram is theirs over window + 1, so it is positive semi-definite
    length = window + 1
    win_rows = []
    for u in log.user_vocab:
        seq = [log.item_index[i] for uu, i, *_ in rows if uu == u]  # rows are in time order
        for start in range(-length + 1, len(seq)):
            row = np.zeros(n_items)
            row[seq[max(start, 0) : start + length]] = 1.0
            win_rows.append(row)
    x = np.asarray(win_rows)
    gram = x.T @ x / length + lam * np.eye(n_items)
    p = np.linalg.inv(gram)
    expect = -p / np.diag(p)
    np.fill_diagonal(expect, 0.0)
    got = fit_sequential(log, head, n_items, window=window, decay=0.5, damping=1.0, regularization=lam)
    np.testing.assert_allclose(got.weights, expect, atol=2e-5)
    # a ridge of 0 is the count model; a negative one is refused
    counts = fit_sequential(log, head, n_items, window=window, decay=0.5, damping=0.0).weights
    assert counts.min() >= 0.0 and got.weights.min() < 0.0
    with pytest.raises(ValueError, match="regularization"):
        fit_sequential(log, head, n_items, window=window, decay=0.5, damping=0.0, regularization=-1.0)


@pytest.mark.parametrize("weights", [(1.0, 1.0, 0.0), (0.0, 1.0, 1.0), (1.0, 2.0, 3.0)])
def test_fused_lists_blend_each_score_relative_to_each_users_best(
    weights: tuple[float, float, float],
) -> None:
    from recpipe.training.cf import BlendWeights, fit_item_linear, fit_sequential, fused_top_n

    log = _two_taste_log()
    n_users, n_items = len(log.user_vocab), len(log.item_vocab)
    linear = fit_item_linear(log, n_users, n_items, head=20, regularization=10.0)
    seq = fit_sequential(log, linear.head, n_items, window=3, decay=0.85, damping=0.3)
    users = np.arange(n_users, dtype=np.int32)
    model = _fit(log)
    plain_i, _ = fused_top_n(linear, model, users, 5)
    w_e, w_q, w_a = weights
    blend_i, blend_s = fused_top_n(linear, model, users, 5, sequential=seq, weights=BlendWeights(*weights))
    consumed = linear.user_items.toarray() > 0
    s_lin = linear.scores(users)
    s_seq = seq.scores(linear.user_items, users)
    s_als = model.user_factors @ model.item_factors.T
    for u in users.tolist():
        row = blend_i[u][blend_i[u] >= 0]
        assert not consumed[u, row].any()
        unseen = ~consumed[u]
        # ALS's negative scores count as no evidence (0), not as evidence against
        expect = (
            w_e * s_lin[u] / s_lin[u][unseen].max()
            + w_q * s_seq[u] / s_seq[u][unseen].max()
            + w_a * np.maximum(s_als[u] / s_als[u][unseen].max(), 0.0)
        )
        expect[~unseen] = -np.inf
        assert row[0] == int(np.argmax(expect))
        assert blend_s[u][0] == 1.0
    # weight 0 on all but EASE is the item-linear list
    np.testing.assert_array_equal(
        fused_top_n(linear, model, users, 5, sequential=seq, weights=BlendWeights(1.0, 0.0, 0.0))[0], plain_i
    )


def test_blend_weights_refuse_negative_or_all_zero_weights() -> None:
    from recpipe.training.cf import BlendWeights

    with pytest.raises(ValueError, match=">= 0"):
        BlendWeights(1.0, -1.0, 0.0)
    with pytest.raises(ValueError, match="at least one"):
        BlendWeights(0.0, 0.0, 0.0)


def test_train_params_refuse_an_unknown_neighbour_source_or_a_bad_sequential_setting() -> None:
    from recpipe.training.pipeline import TrainParams

    assert TrainParams().neighbour_source == "sequential"
    with pytest.raises(ValueError, match="neighbour_source"):
        TrainParams(neighbour_source="nearest")
    with pytest.raises(ValueError, match="sequential_window"):
        TrainParams(sequential_window=0)
    with pytest.raises(ValueError, match="sequential_weight"):
        TrainParams(sequential_weight=-1.0)
    with pytest.raises(ValueError, match="sequential_regularization"):
        TrainParams(sequential_regularization=-1.0)
    # a request written before neighbour_source named the old switch
    old = {k: v for k, v in TrainParams().to_dict().items() if k != "neighbour_source"}
    assert TrainParams.from_dict({**old, "linear_neighbours": True}).neighbour_source == "linear"
    assert TrainParams.from_dict({**old, "linear_neighbours": False}).neighbour_source == "cosine"


def test_item_linear_in_user_space_scores_as_the_item_space_closed_form() -> None:
    from recpipe.training.cf import fit_item_linear

    rng = np.random.default_rng(4)
    rows = [
        (f"u{u}", f"i{i}", float(u * 100 + i), EventType.VIEW, None)
        for u in range(12)
        for i in rng.choice(30, 8, replace=False).tolist()
    ]
    log = InteractionLog.from_rows(rows)
    n_users, n_items = len(log.user_vocab), len(log.item_vocab)
    model = fit_item_linear(log, n_users, n_items, head=n_items, regularization=5.0)
    assert model._weights is None  # 12 users < 30 head items: kept factorised
    x = confidence_matrix(log, n_users, n_items).toarray()[:, model.head] > 0
    gram = x.T.astype(np.float64) @ x + 5.0 * np.eye(len(model.head))
    p = np.linalg.inv(gram)
    w = -p / np.diag(p)
    np.fill_diagonal(w, 0.0)
    users = np.arange(n_users, dtype=np.int32)
    np.testing.assert_allclose(model.scores(users)[:, model.head], x @ w, atol=2e-4)
    np.testing.assert_allclose(model.weights, w, atol=2e-4)
    # once built, the dense weights score the same
    np.testing.assert_allclose(model.scores(users)[:, model.head], x @ w, atol=2e-4)


@pytest.mark.parametrize("n", [1, 7, 700])
def test_add_transpose_symmetrises_in_place_across_blocks(n: int) -> None:
    from recpipe.training.cf import _add_transpose

    c = np.random.default_rng(n).random((n, n)).astype(np.float32)
    expect = c + c.T
    _add_transpose(c)  # 700 spans two 512-row blocks
    np.testing.assert_array_equal(c, expect)


def test_sequential_pairs_flushed_in_many_batches_sum_as_in_one(monkeypatch: pytest.MonkeyPatch) -> None:
    from recpipe.training import cf

    rng = np.random.default_rng(5)
    log = InteractionLog.from_rows(
        [
            (f"u{u}", f"i{i}", float(t), EventType.VIEW, None)
            for u in range(12)
            for t, i in enumerate(rng.choice(20, int(rng.integers(4, 12)), replace=False).tolist())
        ]
    )
    n_items = len(log.item_vocab)
    head = np.arange(n_items, dtype=np.int32)
    once = cf.fit_sequential(log, head, n_items, window=4, decay=0.7, damping=0.0).weights
    monkeypatch.setattr(cf, "PAIRS_PER_FLUSH", 3)  # a flush after (nearly) every distance
    batched = cf.fit_sequential(log, head, n_items, window=4, decay=0.7, damping=0.0).weights
    assert once.sum() > 0
    np.testing.assert_allclose(batched, once, rtol=1e-6)
