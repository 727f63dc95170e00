"""The random protocol's ranker pieces: unseen-item ranks, relative scores, LambdaRank ties."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from recpipe.evaluation.two_stage import (
    TWO_STAGE_FEATURES,
    CandidateLists,
    LambdaRanker,
    _log_ranks,
    _relative,
    labels_for,
)


def test_log_ranks_count_only_unseen_items() -> None:
    scores = np.array([[0.9, 0.5, 0.7, 0.1]], np.float32)
    seen = sp.csr_matrix(np.array([[1, 0, 0, 0]], np.float32))
    ranks = np.expm1(_log_ranks(scores, seen)).round().astype(int)
    # item 0 is seen (ranked last), item 2 is the best unseen, then 1, then 3
    assert ranks[0].tolist() == [3, 1, 0, 2]


def test_relative_scores_divide_by_the_best_unseen_score() -> None:
    scores = np.array([[4.0, 2.0, 1.0]], np.float32)
    seen = sp.csr_matrix(np.array([[1, 0, 0]], np.float32))
    assert _relative(scores, seen)[0].tolist() == [2.0, 1.0, 0.5]


def test_labels_mark_held_out_candidates_only() -> None:
    cands = CandidateLists(
        items=np.array([[3, 1, -1]]),
        fused_order=np.array([[3, 1, -1]]),
        features=np.zeros((1, 3, len(TWO_STAGE_FEATURES)), np.float32),
        mask=np.array([[True, True, False]]),
    )
    truth = sp.csr_matrix(np.array([[0, 1, 0, 0]], np.float32))
    assert labels_for(cands, truth, np.array([0])).tolist() == [[0.0, 1.0, 0.0]]


def test_lambdarank_learns_a_one_feature_order_and_breaks_ties_by_ease_score() -> None:
    rng = np.random.default_rng(0)
    n_users, width = 60, 20
    feats = np.zeros((n_users, width, len(TWO_STAGE_FEATURES)), np.float32)
    ease = TWO_STAGE_FEATURES.index("ease_score_rel")
    feats[:, :, ease] = rng.random((n_users, width))
    items = np.tile(np.arange(width), (n_users, 1))
    # the relevant items are each user's three best by EASE score
    labels = np.zeros((n_users, width), np.float32)
    np.put_along_axis(labels, np.argsort(-feats[:, :, ease], axis=1)[:, :3], 1.0, axis=1)
    cands = CandidateLists(items=items, fused_order=items, features=feats, mask=np.ones_like(items, bool))
    ranker = LambdaRanker(num_leaves=3, n_estimators=20, min_child_samples=5, seed=1)
    assert ranker.fit(cands, labels)["train_lists"] == n_users
    top = ranker.rank(cands, 3)
    expected = np.argsort(-feats[:, :, ease], axis=1)[:, :3]
    # monotone in the EASE score and ties broken by it: exactly the EASE order
    assert np.array_equal(top, expected)
