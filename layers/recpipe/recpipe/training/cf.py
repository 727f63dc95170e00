"""Collaborative filtering with `implicit`: ALS factors, per-user top-N candidates, item neighbours.

Confidence comes from the event weights of the schema (EVENT_WEIGHTS; ratings scaled by stars),
summed per (user, item) and clipped at zero, so a remove_from_cart weakens but never inverts.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from recpipe.domain.catalogue import EVENT_TYPE_CODES, TYPE_CODE, InteractionLog
from recpipe.domain.events import EVENT_WEIGHTS, EventType

# implicit warns (and slows down) when BLAS runs its own threads next to implicit's.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

#: Scores held at once when ranking all items for every user / all neighbours (32 MiB; the
#: argpartition indices are twice that).
SCORE_BLOCK = 1 << 23


def _rows_per_block(n_items: int) -> int:
    return max(64, min(4096, SCORE_BLOCK // max(n_items, 1)))


def row_weights(log: InteractionLog) -> npt.NDArray[np.float32]:
    """Per-row interaction weight, the vectorised twin of Event.weight."""
    table = np.asarray([EVENT_WEIGHTS[t] for t in EVENT_TYPE_CODES], np.float32)
    w = table[log.types]
    rating = log.types == TYPE_CODE[EventType.RATING]
    w[rating] = EVENT_WEIGHTS[EventType.RATING] * np.nan_to_num(log.values[rating]) / 5.0
    return w


def confidence_matrix(log: InteractionLog, n_users: int, n_items: int) -> sp.csr_matrix:
    m = sp.coo_matrix(
        (row_weights(log), (log.users, log.items)), shape=(n_users, n_items), dtype=np.float32
    ).tocsr()
    m.sum_duplicates()
    m.data = np.maximum(m.data, 0.0)
    m.eliminate_zeros()
    return m


@dataclass(slots=True)
class CFModel:
    user_factors: npt.NDArray[np.float32]
    item_factors: npt.NDArray[np.float32]
    #: users x items confidence the model was fitted on (its non-zeros are "consumed").
    user_items: sp.csr_matrix
    #: BPR keeps an item bias as the last factor (users have a 1 there): scored, not embedded.
    bias_last: bool = False

    @property
    def normalised_items(self) -> npt.NDArray[np.float32]:
        f = self.item_factors[:, :-1] if self.bias_last else self.item_factors
        norms = np.linalg.norm(f, axis=1, keepdims=True)
        return np.where(norms > 0, f / np.maximum(norms, 1e-12), 0.0).astype(np.float32)


def fit_als(
    log: InteractionLog,
    n_users: int,
    n_items: int,
    *,
    factors: int,
    iterations: int,
    regularization: float,
    alpha: float,
    seed: int,
) -> CFModel:
    from implicit.cpu.als import AlternatingLeastSquares
    from threadpoolctl import threadpool_limits

    user_items = confidence_matrix(log, n_users, n_items)
    with threadpool_limits(1, "blas"):
        model = AlternatingLeastSquares(
            factors=factors,
            regularization=regularization,
            alpha=alpha,
            iterations=iterations,
            random_state=seed,
            calculate_training_loss=False,
        )
        model.fit(user_items, show_progress=False)
    user_f = np.asarray(model.user_factors, np.float32)
    item_f = np.asarray(model.item_factors, np.float32)
    # Users/items with no data keep their random init in implicit; zero them so that
    # they never look similar to anything.
    item_f[np.diff(user_items.tocsc().indptr) == 0] = 0.0
    user_f[np.diff(user_items.indptr) == 0] = 0.0
    return CFModel(user_factors=user_f, item_factors=item_f, user_items=user_items)


def fit_bpr(
    log: InteractionLog,
    n_users: int,
    n_items: int,
    *,
    factors: int,
    iterations: int,
    learning_rate: float,
    regularization: float,
    seed: int,
) -> CFModel:
    """implicit's BPR on the same interactions (binary: any positive confidence)."""
    from implicit.cpu.bpr import BayesianPersonalizedRanking
    from threadpoolctl import threadpool_limits

    user_items = confidence_matrix(log, n_users, n_items)
    with threadpool_limits(1, "blas"):
        model = BayesianPersonalizedRanking(
            factors=factors,
            learning_rate=learning_rate,
            regularization=regularization,
            iterations=iterations,
            random_state=seed,
        )
        binary = user_items.copy()
        binary.data[:] = 1.0
        model.fit(binary, show_progress=False)
    user_f = np.asarray(model.user_factors, np.float32)
    item_f = np.asarray(model.item_factors, np.float32)
    item_f[np.diff(user_items.tocsc().indptr) == 0] = 0.0
    user_f[np.diff(user_items.indptr) == 0] = 0.0
    return CFModel(user_factors=user_f, item_factors=item_f, user_items=user_items, bias_last=True)


def top_n(
    model: CFModel, users: npt.NDArray[np.int32], n: int
) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.float32]]:
    """Best `n` items per user excluding consumed ones: (items [u, n] -1 padded, scores [u, n]).

    Scoring and selection run in implicit's multi-threaded C++ top-k, a block of users at a time."""
    from implicit.cpu.topk import topk
    from threadpoolctl import threadpool_limits

    n_items = model.item_factors.shape[0]
    n = min(n, n_items)
    out_i = np.full((len(users), n), -1, np.int32)
    out_s = np.zeros((len(users), n), np.float32)
    items = np.ascontiguousarray(model.item_factors, np.float32)
    batch = _rows_per_block(n_items)
    with threadpool_limits(1, "blas"):
        for lo in range(0, len(users), batch):
            block = users[lo : lo + batch]
            query = np.ascontiguousarray(model.user_factors[block], np.float32)
            best, best_s = topk(items, query, n, filter_query_items=model.user_items[block], num_threads=0)
            best = np.asarray(best, np.int32)
            best_s = np.asarray(best_s, np.float32)
            # consumed items come back with -inf; users with no factors get nothing
            dead = ~np.isfinite(best_s) | (best < 0) | (np.abs(query).sum(axis=1) == 0)[:, None]
            best[dead] = -1
            best_s[dead] = 0.0
            out_i[lo : lo + len(block)] = best
            out_s[lo : lo + len(block)] = best_s
    return out_i, out_s


def neighbours(
    embeddings: npt.NDArray[np.float32], k: int
) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.float16]]:
    """Top-k cosine neighbours of every item from L2-normalised embeddings (-1 padded)."""
    n = embeddings.shape[0]
    batch = _rows_per_block(n)
    k = max(0, min(k, n - 1))
    idx = np.full((n, k), -1, np.int32)
    sim = np.zeros((n, k), np.float16)
    if k == 0:
        return idx, sim
    alive = np.abs(embeddings).sum(axis=1) > 0
    for lo in range(0, n, batch):
        s = embeddings[lo : lo + batch] @ embeddings.T
        rows = np.arange(s.shape[0])
        s[rows, lo + rows] = -np.inf  # never your own neighbour
        s[:, ~alive] = -np.inf
        part = np.argpartition(-s, k - 1, axis=1)[:, :k]
        ps = np.take_along_axis(s, part, axis=1)
        order = np.argsort(-ps, axis=1, kind="stable")
        best = np.take_along_axis(part, order, axis=1).astype(np.int32)
        best_s = np.take_along_axis(ps, order, axis=1)
        bad = ~np.isfinite(best_s) | (best_s <= 0) | ~alive[lo : lo + batch, None]
        best[bad] = -1
        best_s[bad] = 0.0
        idx[lo : lo + batch] = best
        sim[lo : lo + batch] = best_s.astype(np.float16)
    return idx, sim
