"""Top-k ranking metrics with the definitions of Microsoft Recommenders' python evaluation.

Reference: recommenders-team/recommenders, `recommenders/evaluation/python_evaluation.py`
(release 1.2, where `map` and `map_at_k` were split). With binary relevance and one list per
user, for a user with relevant set R (|R| = "actual") and a ranked list L cut at k:

* precision@k = hits / k                       (Spark semantics: divided by k even if |L| < k)
* recall@k    = hits / |R|
* ndcg@k      = sum_{hit at rank r} 1/log(1+r)  /  sum_{i=1..min(|R|,k)} 1/log(1+i)
* map         = sum_{j-th hit at rank r} (j/r)  /  |R|          (Recommenders `map`)
* map@k       = sum_{j-th hit at rank r} (j/r)  /  min(|R|, k)  (Recommenders `map_at_k`)

Every metric is averaged over the users that have both a list and at least one relevant item
("common users" in Recommenders). We add the event-level metrics of the stream protocol:

* hit_rate@k = 1 if the one held-out item is in the list
* mrr@k      = 1/rank of the first relevant item in the list (0 when none)

and catalogue coverage@k = distinct items recommended / catalogue size. Each mean comes with its
standard error (`<metric>_se`, sample standard deviation / sqrt(n)).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field

RANKING_METRICS = ("precision", "recall", "ndcg", "map", "map@", "hit_rate", "mrr")


def _hit_ranks(recommended: Sequence[object], relevant: Collection[object], k: int) -> list[int]:
    """1-based ranks of the relevant items among the first k recommended (duplicates ignored)."""
    seen: set[object] = set()
    ranks: list[int] = []
    for rank, item in enumerate(recommended[:k], start=1):
        if item in seen:
            continue
        seen.add(item)
        if item in relevant:
            ranks.append(rank)
    return ranks


def precision_at_k(recommended: Sequence[object], relevant: Collection[object], k: int) -> float:
    return len(_hit_ranks(recommended, relevant, k)) / k


def recall_at_k(recommended: Sequence[object], relevant: Collection[object], k: int) -> float:
    if not relevant:
        return 0.0
    return len(_hit_ranks(recommended, relevant, k)) / len(relevant)


def ndcg_at_k(recommended: Sequence[object], relevant: Collection[object], k: int) -> float:
    if not relevant:
        return 0.0
    dcg = sum(1.0 / math.log(1 + r) for r in _hit_ranks(recommended, relevant, k))
    idcg = sum(1.0 / math.log(1 + i) for i in range(1, min(len(relevant), k) + 1))
    return dcg / idcg


def _precision_sum(ranks: list[int]) -> float:
    return sum(j / r for j, r in enumerate(ranks, start=1))


def average_precision(recommended: Sequence[object], relevant: Collection[object], k: int) -> float:
    """Recommenders' `map` per user: normalised by the number of relevant items."""
    if not relevant:
        return 0.0
    return _precision_sum(_hit_ranks(recommended, relevant, k)) / len(relevant)


def average_precision_at_k(recommended: Sequence[object], relevant: Collection[object], k: int) -> float:
    """Recommenders' `map_at_k` per user: normalised by min(#relevant, k)."""
    if not relevant:
        return 0.0
    return _precision_sum(_hit_ranks(recommended, relevant, k)) / min(len(relevant), k)


def hit_rate_at_k(recommended: Sequence[object], relevant: Collection[object], k: int) -> float:
    return 1.0 if _hit_ranks(recommended, relevant, k) else 0.0


def reciprocal_rank_at_k(recommended: Sequence[object], relevant: Collection[object], k: int) -> float:
    ranks = _hit_ranks(recommended, relevant, k)
    return 1.0 / ranks[0] if ranks else 0.0


@dataclass(slots=True)
class RankingAccumulator:
    """Averages per-list metrics over evaluated lists (users in the random protocol, events in the
    stream protocol) and tracks which items were recommended, for coverage."""

    k: int
    catalogue_size: int
    n: int = 0
    sums: dict[str, float] = field(default_factory=dict)
    squares: dict[str, float] = field(default_factory=dict)
    recommended_items: set[object] = field(default_factory=set)

    def add(self, recommended: Sequence[object], relevant: Collection[object]) -> None:
        """Score one list. Lists without a relevant item are skipped, as Recommenders does."""
        if not relevant:
            return
        k = self.k
        top = list(recommended[:k])
        self.recommended_items.update(top)
        values = {
            f"precision@{k}": precision_at_k(top, relevant, k),
            f"recall@{k}": recall_at_k(top, relevant, k),
            f"ndcg@{k}": ndcg_at_k(top, relevant, k),
            "map": average_precision(top, relevant, k),
            f"map@{k}": average_precision_at_k(top, relevant, k),
            f"hit_rate@{k}": hit_rate_at_k(top, relevant, k),
            f"mrr@{k}": reciprocal_rank_at_k(top, relevant, k),
        }
        for name, v in values.items():
            self.sums[name] = self.sums.get(name, 0.0) + v
            self.squares[name] = self.squares.get(name, 0.0) + v * v
        self.n += 1

    def result(self) -> dict[str, float]:
        out = {name: (total / self.n if self.n else 0.0) for name, total in self.sums.items()}
        # Standard error of each mean (lists are independent samples), to read differences.
        for name, total in self.sums.items():
            var = max(self.squares[name] / self.n - (total / self.n) ** 2, 0.0) if self.n > 1 else 0.0
            out[f"{name}_se"] = math.sqrt(var / (self.n - 1)) if self.n > 1 else 0.0
        out[f"coverage@{self.k}"] = (
            len(self.recommended_items) / self.catalogue_size if self.catalogue_size else 0.0
        )
        out["n_evaluated"] = float(self.n)
        return out


def evaluate_lists(
    lists: Iterable[tuple[Sequence[object], Collection[object]]], k: int, catalogue_size: int
) -> dict[str, float]:
    """Mean metrics over (recommended, relevant) pairs."""
    acc = RankingAccumulator(k=k, catalogue_size=catalogue_size)
    for recommended, relevant in lists:
        acc.add(recommended, relevant)
    return acc.result()


def recall_of_candidates(lists: Iterable[tuple[Sequence[object], Collection[object]]], depth: int) -> float:
    """Mean recall@depth of candidate lists: the ceiling a re-ranker over them can reach."""
    total, n = 0.0, 0
    for cands, relevant in lists:
        if relevant:
            total += recall_at_k(cands, relevant, depth)
            n += 1
    return total / n if n else 0.0
