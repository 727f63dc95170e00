"""Seeded splits, the EASE and DLAE / EDLAE closed forms and top-k exclusion."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from recpipe.domain.catalogue import InteractionLog
from recpipe_dev.evaluation.baselines import DLAE, EASE, Popularity, interaction_matrix, top_k
from recpipe_dev.evaluation.splits import stratified_split, time_split


def _log(n_users: int = 6, per_user: int = 9, seed: int = 0) -> InteractionLog:
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        for j, item in enumerate(rng.choice(30, per_user + u, replace=False)):
            rows.append((f"u{u}", f"i{item}", 1000.0 + 10 * j + u, "rating", 4.0))
    return InteractionLog.from_rows(rows)


def test_stratified_split_keeps_the_ratio_per_user_and_is_seeded() -> None:
    log = _log()
    train = stratified_split(log, 0.75, seed=3)
    for u in range(len(log.user_vocab)):
        n = int((log.users == u).sum())
        assert int(train[log.users == u].sum()) == round(0.75 * n)
    assert np.array_equal(train, stratified_split(log, 0.75, seed=3))
    assert not np.array_equal(train, stratified_split(log, 0.75, seed=4))


def test_time_split_trains_on_rows_before_the_quantile() -> None:
    log = _log()
    train, cut = time_split(log, 0.8)
    assert cut == pytest.approx(float(np.quantile(log.ts, 0.8)))
    assert (log.ts[train] < cut).all() and (log.ts[~train] >= cut).all()


def test_split_refuses_a_ratio_outside_zero_one() -> None:
    with pytest.raises(ValueError, match="ratio"):
        stratified_split(_log(), 1.0, seed=0)


def _ease_reference(x: sp.csr_matrix, lam: float) -> np.ndarray:
    """Steck (2019) item-space closed form, computed directly."""
    g = (x.T @ x).toarray().astype(np.float64)
    p = np.linalg.inv(g + lam * np.eye(g.shape[0]))
    b = -p / np.diag(p)
    np.fill_diagonal(b, 0.0)
    return x.toarray() @ b


def test_ease_user_space_solution_equals_the_item_space_closed_form() -> None:
    rng = np.random.default_rng(1)
    x = sp.csr_matrix((rng.random((8, 20)) < 0.3).astype(np.float32))  # fewer users than items
    model = EASE(reg=3.0)
    model.fit(x)
    got = model.scores(np.arange(8), x)
    np.testing.assert_allclose(got, _ease_reference(x, 3.0), rtol=1e-4, atol=1e-5)
    tall = sp.csr_matrix((rng.random((30, 6)) < 0.4).astype(np.float32))  # item-space branch
    model.fit(tall)
    np.testing.assert_allclose(
        model.scores(np.arange(30), tall), _ease_reference(tall, 3.0), rtol=1e-4, atol=1e-5
    )


def test_dlae_and_edlae_match_hand_computed_closed_forms_in_user_space() -> None:
    # One user who rated both items, lambda = 1, p = 0.5: Lambda = diag(1 * [1, 1] + 1) = 2 I,
    # G + Lambda = [[3, 1], [1, 3]], its inverse P = [[3, -1], [-1, 3]] / 8.
    # DLAE: B = P G = [[1, 1], [1, 1]] / 4. EDLAE: B_ij = -P_ij / P_jj = 1/3 off the diagonal.
    x = sp.csr_matrix(np.array([[1.0, 1.0]], np.float32))
    query = sp.csr_matrix(np.array([[1.0, 1.0], [1.0, 0.0]], np.float32))
    dlae = DLAE(reg=1.0, dropout=0.5)
    dlae.fit(x)  # 1 user < 2 items: the user-space (Woodbury) branch
    np.testing.assert_allclose(dlae.scores(np.arange(2), query), [[0.5, 0.5], [0.25, 0.25]], atol=1e-6)
    edlae = DLAE(reg=1.0, dropout=0.5, emphasized=True)
    edlae.fit(x)
    np.testing.assert_allclose(edlae.scores(np.arange(2), query), [[1 / 3, 1 / 3], [0.0, 1 / 3]], atol=1e-6)


def test_dlae_and_edlae_match_hand_computed_closed_forms_in_item_space() -> None:
    # Three users, two items (item-space branch): G = [[2, 1], [1, 2]], lambda = 1, p = 0.5 so
    # Lambda = 3 I, P = (G + 3 I)^-1 = [[5, -1], [-1, 5]] / 24.
    # DLAE: B = I - 3 P = [[3, 1], [1, 3]] / 8. EDLAE: B_ij = -P_ij / P_jj = 1/5 off the diagonal.
    x = sp.csr_matrix(np.array([[1.0, 1.0], [1.0, 0.0], [0.0, 1.0]], np.float32))
    dlae = DLAE(reg=1.0, dropout=0.5)
    dlae.fit(x)
    np.testing.assert_allclose(dlae.scores(np.array([1]), x), [[3 / 8, 1 / 8]], atol=1e-6)
    edlae = DLAE(reg=1.0, dropout=0.5, emphasized=True)
    edlae.fit(x)
    np.testing.assert_allclose(edlae.scores(np.array([1, 0]), x), [[0.0, 0.2], [0.2, 0.2]], atol=1e-6)


def _dlae_reference(x: sp.csr_matrix, lam: float, p: float, emphasized: bool) -> np.ndarray:
    """Steck (2020) item-space closed forms, computed directly."""
    g = (x.T @ x).toarray().astype(np.float64)
    reg = np.diag(p / (1 - p) * np.diag(g) + lam)
    if not emphasized:
        return x.toarray() @ np.linalg.solve(g + reg, g)
    inv = np.linalg.inv(g + reg)
    b = -inv / np.diag(inv)
    np.fill_diagonal(b, 0.0)
    return x.toarray() @ b


@pytest.mark.parametrize("emphasized", [False, True])
def test_dlae_user_space_solution_equals_the_item_space_closed_form(emphasized: bool) -> None:
    rng = np.random.default_rng(2)
    x = sp.csr_matrix((rng.random((8, 20)) < 0.3).astype(np.float32))
    model = DLAE(reg=3.0, dropout=0.4, emphasized=emphasized)
    model.fit(x)
    np.testing.assert_allclose(
        model.scores(np.arange(8), x), _dlae_reference(x, 3.0, 0.4, emphasized), rtol=1e-4, atol=1e-5
    )


def test_edlae_without_dropout_is_ease() -> None:
    rng = np.random.default_rng(3)
    x = sp.csr_matrix((rng.random((8, 20)) < 0.3).astype(np.float32))
    ease, edlae = EASE(reg=3.0), DLAE(reg=3.0, dropout=0.0, emphasized=True)
    ease.fit(x)
    edlae.fit(x)
    np.testing.assert_allclose(edlae.scores(np.arange(8), x), ease.scores(np.arange(8), x), atol=1e-5)


def test_top_k_never_returns_a_seen_item_and_breaks_ties_on_the_lower_index() -> None:
    x = interaction_matrix(np.array([0, 0]), np.array([0, 2]), n_users=1, n_items=5)
    pop = Popularity()
    pop.fit(interaction_matrix(np.array([0, 1, 1, 2]), np.array([3, 3, 1, 4]), n_users=3, n_items=5))
    scores = pop.scores(np.array([0]), x)  # counts: item3=2, item1=1, item4=1
    assert top_k(scores, x, 3).tolist() == [[3, 1, 4]]
    assert top_k(np.ones((1, 5), np.float32), x, 2).tolist() == [[1, 3]]
