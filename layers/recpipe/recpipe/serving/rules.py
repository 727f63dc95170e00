"""Rules after ranking: the final eligibility check, diversity and the top k.

Diversity is maximal marginal relevance on the bundle's item embeddings: each pick maximises
`(1 - diversity) * relevance - diversity * max similarity to what is already picked`, so
diversity=0 is the ranker's order and 1 spreads the list as much as the embeddings allow.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

#: MMR only looks this far down the ranked list (per requested item) to stay O(k * pool).
MMR_POOL_PER_ITEM = 5
MMR_MIN_POOL = 50


def top_k(scores: npt.NDArray[np.float32], k: int) -> npt.NDArray[np.int64]:
    """Positions of the k best scores, best first (stable for equal scores)."""
    n = len(scores)
    if n == 0 or k <= 0:
        return np.zeros(0, np.int64)
    k = min(k, n)
    if k < n:
        part = np.argpartition(-scores, k - 1)[:k]
        return part[np.lexsort((part, -scores[part]))]
    return np.lexsort((np.arange(n), -scores))


def mmr(
    scores: npt.NDArray[np.float32],
    embeddings: npt.NDArray[np.float32],
    k: int,
    diversity: float,
) -> npt.NDArray[np.int64]:
    """Positions picked by maximal marginal relevance (embeddings L2-normalised, one row each)."""
    if diversity <= 0.0 or len(scores) <= 1:
        return top_k(scores, k)
    pool = top_k(scores, max(MMR_MIN_POOL, MMR_POOL_PER_ITEM * k))
    s = scores[pool].astype(np.float64)
    span = float(s.max() - s.min())
    rel = (s - s.min()) / span if span > 0 else np.ones_like(s)
    emb = embeddings[pool].astype(np.float32)
    lam = 1.0 - diversity
    max_sim = np.full(len(pool), -np.inf)
    available = np.ones(len(pool), np.bool_)
    picked: list[int] = []
    for _ in range(min(k, len(pool))):
        sim_term = np.where(np.isfinite(max_sim), max_sim, 0.0)
        value = lam * rel - diversity * sim_term
        value[~available] = -np.inf
        j = int(np.argmax(value))
        picked.append(j)
        available[j] = False
        max_sim = np.maximum(max_sim, emb @ emb[j])
    return pool[np.asarray(picked, np.int64)]
