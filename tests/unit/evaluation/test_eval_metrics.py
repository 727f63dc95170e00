"""The metric code against hand-computed cases (Microsoft Recommenders' definitions)."""

from __future__ import annotations

import math

import pytest
from recpipe.ranking_metrics import (
    RankingAccumulator,
    average_precision,
    average_precision_at_k,
    evaluate_lists,
    hit_rate_at_k,
    ndcg_at_k,
    precision_at_k,
    recall_at_k,
    recall_of_candidates,
    reciprocal_rank_at_k,
)

LN2, LN3, LN4 = math.log(2), math.log(3), math.log(4)


def test_two_hits_at_ranks_one_and_three() -> None:
    # GIVEN relevant {a, c, f} and the list a b c d e: hits at ranks 1 and 3
    rec, rel = ["a", "b", "c", "d", "e"], {"a", "c", "f"}
    assert precision_at_k(rec, rel, 5) == 2 / 5
    assert recall_at_k(rec, rel, 5) == 2 / 3
    assert ndcg_at_k(rec, rel, 5) == pytest.approx(
        (1 / LN2 + 1 / LN4) / (1 / LN2 + 1 / LN3 + 1 / LN4), rel=1e-12
    )
    # precision at each hit: 1/1 and 2/3; map divides by |R| = 3, map@5 by min(3, 5) = 3
    assert average_precision(rec, rel, 5) == pytest.approx(5 / 9, rel=1e-12)
    assert average_precision_at_k(rec, rel, 5) == pytest.approx(5 / 9, rel=1e-12)
    assert hit_rate_at_k(rec, rel, 5) == 1.0
    assert reciprocal_rank_at_k(rec, rel, 5) == 1.0


def test_map_and_map_at_k_differ_when_there_are_more_relevant_items_than_k() -> None:
    rec, rel = ["a", "b", "c"], {"a", "c", "f"}
    # cut at k=2: one hit at rank 1
    assert precision_at_k(rec, rel, 2) == 1 / 2
    assert recall_at_k(rec, rel, 2) == 1 / 3
    assert average_precision(rec, rel, 2) == pytest.approx(1 / 3, rel=1e-12)  # Recommenders `map`
    assert average_precision_at_k(rec, rel, 2) == pytest.approx(1 / 2, rel=1e-12)  # `map_at_k`
    assert ndcg_at_k(rec, rel, 2) == pytest.approx((1 / LN2) / (1 / LN2 + 1 / LN3), rel=1e-12)


def test_precision_divides_by_k_even_for_a_short_list() -> None:
    # Spark/Recommenders semantics: the best achievable precision is < 1 for a short list
    assert precision_at_k(["a"], {"a"}, 10) == 0.1
    assert ndcg_at_k(["a"], {"a"}, 10) == 1.0


def test_reciprocal_rank_uses_the_first_hit_only() -> None:
    assert reciprocal_rank_at_k(["x", "y", "a", "b"], {"a", "b"}, 10) == pytest.approx(1 / 3)
    assert reciprocal_rank_at_k(["x", "y", "a"], {"a"}, 2) == 0.0
    assert hit_rate_at_k(["x", "y", "a"], {"a"}, 2) == 0.0


def test_a_miss_scores_zero_and_a_duplicate_counts_once() -> None:
    assert ndcg_at_k(["x", "y"], {"a"}, 10) == 0.0
    assert precision_at_k(["a", "a", "b"], {"a", "b"}, 3) == 2 / 3


def test_mean_over_users_skips_users_without_relevant_items_and_reports_coverage() -> None:
    result = evaluate_lists(
        [
            (["a", "b"], {"a"}),  # ndcg 1, precision 1/2, recall 1
            (["c", "d"], {"d", "e"}),  # hit at rank 2
            (["a", "e"], set()),  # not a common user: skipped, like Recommenders
        ],
        k=2,
        catalogue_size=10,
    )
    second = (1 / LN3) / (1 / LN2 + 1 / LN3)
    assert result["n_evaluated"] == 2
    assert result["ndcg@2"] == pytest.approx((1 + second) / 2, rel=1e-12)
    assert result["precision@2"] == pytest.approx(0.5, rel=1e-12)
    assert result["recall@2"] == pytest.approx((1 + 0.5) / 2, rel=1e-12)
    assert result["map"] == pytest.approx((1 + (1 / 2) / 2) / 2, rel=1e-12)
    assert result["mrr@2"] == pytest.approx((1 + 1 / 2) / 2, rel=1e-12)
    assert result["coverage@2"] == pytest.approx(4 / 10)  # a b c d recommended to evaluated users
    # hit rate values 1 and 1: no spread; precision values 1/2 and 1/2: none either
    assert result["hit_rate@2_se"] == 0.0
    # mrr values 1 and 1/2: sample sd = sqrt(((1-.75)^2 + (.5-.75)^2) / 1), se = sd / sqrt(2)
    assert result["mrr@2_se"] == pytest.approx(math.sqrt(0.125) / math.sqrt(2), rel=1e-9)


def test_empty_accumulator_reports_zeros() -> None:
    result = RankingAccumulator(k=10, catalogue_size=5).result()
    assert result["n_evaluated"] == 0 and result["coverage@10"] == 0.0


def test_candidate_recall_is_the_ceiling_of_a_reranker() -> None:
    assert recall_of_candidates([(["a", "b", "c"], {"a", "z"}), (["d"], {"d"})], depth=2) == pytest.approx(
        0.75
    )
