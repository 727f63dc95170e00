"""Ranking rules: top k and MMR diversity."""

from __future__ import annotations

import numpy as np
from recpipe.serving.rules import mmr, top_k
from serving_catalogue import make_items


def test_top_k_is_best_first_and_stable() -> None:
    scores = np.asarray([0.1, 0.9, 0.5, 0.9, 0.3], np.float32)
    assert top_k(scores, 3).tolist() == [1, 3, 2]
    assert top_k(scores, 10).tolist() == [1, 3, 2, 4, 0]
    assert top_k(np.zeros(0, np.float32), 3).tolist() == []


def test_no_diversity_is_the_ranker_order() -> None:
    items = make_items()
    scores = np.random.default_rng(1).random(len(items)).astype(np.float32)
    assert mmr(scores, items.embeddings, 10, 0.0).tolist() == top_k(scores, 10).tolist()


def test_diversity_spreads_the_list_over_categories() -> None:
    items = make_items()
    # The ranker loves category 0 ("books"): every book outranks everything else.
    first_cat = items.category_ids[:, 0]
    scores = np.where(first_cat == 0, 1.0, 0.5).astype(np.float32) + np.linspace(
        0.01, 0, len(items), dtype=np.float32
    )

    def spread(diversity: float) -> int:
        picked = mmr(scores, items.embeddings, 5, diversity)
        assert len(set(picked.tolist())) == 5
        return len(set(first_cat[picked].tolist()))

    assert spread(0.0) == 1
    assert spread(0.7) >= 4
    # The best item is always first, whatever the diversity.
    assert mmr(scores, items.embeddings, 5, 0.9)[0] == top_k(scores, 1)[0]


def test_k_larger_than_the_pool_returns_the_pool() -> None:
    items = make_items(8)
    scores = np.arange(8, dtype=np.float32)
    assert sorted(mmr(scores, items.embeddings, 20, 0.5).tolist()) == list(range(8))
