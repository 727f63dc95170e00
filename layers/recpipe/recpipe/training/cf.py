"""Collaborative filtering with `implicit`: ALS factors, per-user top-N candidates, item neighbours.

Confidence comes from the event weights of the schema (EVENT_WEIGHTS; ratings scaled by stars),
summed per (user, item) and clipped at zero, so a remove_from_cart weakens but never inverts.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp
from scipy.linalg import lapack

from recpipe.domain.catalogue import EVENT_TYPE_CODES, TYPE_CODE, InteractionLog
from recpipe.domain.events import EVENT_WEIGHTS, EventType

# implicit warns (and slows down) when BLAS runs its own threads next to implicit's.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

#: Scores held at once when ranking all items for every user / all neighbours (32 MiB; the
#: argpartition indices are twice that).
SCORE_BLOCK = 1 << 23


#: Rows per block when a dense head x head matrix is mirrored or symmetrised in place (two
#: 512 x 512 float32 blocks are 2 MB, where a whole transposed copy would be the matrix again).
SQUARE_BLOCK = 512

#: Co-occurrence pairs added at once in fit_sequential (12 bytes each while pending).
PAIRS_PER_FLUSH = 1 << 24


def spd_inverse(a: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """Inverse of a symmetric positive definite float32 matrix, computed in place of `a` (which
    is overwritten and returned). Cholesky (potrf + potri) took 2.5 s where `np.linalg.inv` took
    9.7 s on a 5,000-item Gram (measured beside a running benchmark) and needs no second n x n
    buffer; EASE's Gram plus its ridge is always positive definite."""
    n = a.shape[0]
    if n == 0:
        return a
    # a C-ordered symmetric matrix, transposed, is the same matrix in Fortran order: no copy
    c, info = lapack.spotrf(a.T, lower=1, overwrite_a=1)
    if info != 0:
        raise np.linalg.LinAlgError(f"matrix is not positive definite (potrf info {info})")
    inv, info = lapack.spotri(c, lower=1, overwrite_c=1)
    if info != 0:
        raise np.linalg.LinAlgError(f"matrix is singular (potri info {info})")
    out: npt.NDArray[np.float32] = inv.T  # C order again; potri filled its upper triangle
    # mirror the upper triangle into the lower one a block of rows at a time (no n x n temporary)
    block = SQUARE_BLOCK
    for lo in range(0, n, block):
        hi = min(lo + block, n)
        out[lo:hi, :lo] = out[:lo, lo:hi].T
        d = out[lo:hi, lo:hi]
        low = np.tril_indices(hi - lo, -1)
        d[low] = d.T[low]
    return out


def _add_transpose(c: npt.NDArray[np.float32], block: int = SQUARE_BLOCK) -> None:
    """c += c.T in place, one pair of blocks at a time: no n x n temporary (c.T.copy() is one,
    and a transposed copy is slow: 0.53 s against 0.09 s at 5,000 items)."""
    n = c.shape[0]
    for lo in range(0, n, block):
        hi = min(lo + block, n)
        d = c[lo:hi, lo:hi]
        d[:] = d + d.T
        for lo2 in range(hi, n, block):
            hi2 = min(lo2 + block, n)
            s = c[lo:hi, lo2:hi2] + c[lo2:hi2, lo:hi].T
            c[lo:hi, lo2:hi2] = s
            c[lo2:hi2, lo:hi] = s.T


def ease_weights(gram: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """EASE's closed form from a Gram matrix with its ridge already on the diagonal, in place of
    `gram`: W = -P / diag(P) with a zero diagonal, P = gram^-1 (Steck 2019)."""
    w = spd_inverse(gram)
    w /= -w.diagonal().copy()
    np.fill_diagonal(w, 0.0)
    return w


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
    """Top-k cosine neighbours of every item from L2-normalised embeddings (-1 padded).

    Scoring and selection run in implicit's C++ top-k, a block of items at a time."""
    from implicit.cpu.topk import topk

    n = embeddings.shape[0]
    batch = _rows_per_block(n)
    k = max(0, min(k, n - 1))
    idx = np.full((n, k), -1, np.int32)
    sim = np.zeros((n, k), np.float16)
    if k == 0:
        return idx, sim
    emb = np.ascontiguousarray(embeddings, np.float32)
    alive = np.abs(emb).sum(axis=1) > 0
    dead = np.flatnonzero(~alive).astype(np.int32)
    for lo in range(0, n, batch):
        hi = min(lo + batch, n)
        # k + 1, then drop the item itself (or the last one when it is not among them)
        best, best_s = topk(emb, emb[lo:hi], k + 1, filter_items=dead if len(dead) else None, num_threads=0)
        best = np.asarray(best, np.int64)
        best_s = np.asarray(best_s, np.float32)
        own = best == np.arange(lo, hi)[:, None]
        own[~own.any(axis=1), -1] = True
        best = best[~own].reshape(hi - lo, k).astype(np.int32)
        best_s = best_s[~own].reshape(hi - lo, k)
        bad = ~np.isfinite(best_s) | (best_s <= 0) | (best < 0) | ~alive[lo:hi, None]
        best[bad] = -1
        best_s[bad] = 0.0
        idx[lo:hi] = best
        sim[lo:hi] = best_s.astype(np.float16)
    return idx, sim


def head_neighbours(
    head: npt.NDArray[np.int32],
    weights: npt.NDArray[np.float32],
    fallback: tuple[npt.NDArray[np.int32], npt.NDArray[np.float16]],
) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.float16]]:
    """Neighbour lists from item-to-item weights over a head of the catalogue: for an item of the
    head, the items its presence in a history raises most (its row of `weights`, positive weights
    only), then the `fallback` (cosine) neighbours it does not already hold; items outside the
    head keep the fallback. Such weights (item-linear or time-local) predict a
    user's next items from their history, so they make better "because you viewed" candidates
    than embedding similarity alone."""
    idx, sim = fallback
    k = idx.shape[1]
    if k == 0 or len(head) < 2:
        return idx, sim
    idx, sim = idx.copy(), sim.copy()
    w = weights
    best = top_columns(w, min(k, len(head) - 1))
    best_w = np.take_along_axis(w, best, axis=1)
    for row, item in enumerate(head.tolist()):
        ok = best_w[row] > 0
        mine = head[best[row][ok]]
        rest = idx[item][(idx[item] >= 0) & ~np.isin(idx[item], mine)]
        merged = np.concatenate([mine, rest])[:k]
        idx[item] = -1
        idx[item, : len(merged)] = merged
        # relative to the row's best weight: in (0, 1], which float16 keeps well whatever the
        # weights' scale (damped co-occurrence counts span orders of magnitude)
        top = float(best_w[row][0]) if ok.any() else 1.0
        scores = np.concatenate([best_w[row][ok] / top, np.zeros(len(rest), np.float32)])[:k]
        sim[item] = 0
        sim[item, : len(merged)] = scores.astype(np.float16)
    return idx, sim


@dataclass(slots=True)
class ItemLinearModel:
    """EASE (Steck 2019) over a bounded head of the catalogue: the `head` most-interacted items.

    Item-to-item weights are a dense [len(head), len(head)] float32 matrix, so memory is bounded
    by the head size (5,000 items: 100 MB), never by the catalogue (100,000 items would be
    40 GB). Scores for items outside the head are zero (the ALS list fills those lists).

    With fewer users than head items the weights are kept factorised (the Woodbury form in user
    space, `_xa`, `_kinv_x`, `_diag_p`): scoring a block of users is then a users x users
    product instead of a head x head one, and `weights` is only built when asked for.
    """

    head: npt.NDArray[np.int32]
    #: binary users x items matrix the model was fitted on (its non-zeros are "consumed")
    user_items: sp.csr_matrix
    n_items: int
    _weights: npt.NDArray[np.float32] | None = None
    _xa: sp.csr_matrix | None = None
    _kinv_x: npt.NDArray[np.float32] | None = None
    _diag_p: npt.NDArray[np.float32] | None = None
    regularization: float = 0.0

    @property
    def weights(self) -> npt.NDArray[np.float32]:
        """Dense [head, head] item-to-item weights (zero diagonal)."""
        if self._weights is None:
            assert self._xa is not None and self._kinv_x is not None and self._diag_p is not None
            p = -np.asarray(self._xa.T @ self._kinv_x, np.float32) / np.float32(self.regularization)
            p[np.diag_indices_from(p)] += np.float32(1.0 / self.regularization)
            w = (-p / self._diag_p).astype(np.float32)
            np.fill_diagonal(w, 0.0)
            self._weights = w
        return self._weights

    def scores(self, users: npt.NDArray[np.int32]) -> npt.NDArray[np.float32]:
        """Dense [len(users), n_items] scores (zero outside the head)."""
        out = np.zeros((len(users), self.n_items), np.float32)
        out[:, self.head] = self.head_scores(users)
        return out

    def head_scores(self, users: npt.NDArray[np.int32]) -> npt.NDArray[np.float32]:
        """Dense [len(users), len(head)] scores of the head's items, in `head` order."""
        xq = self.user_items[users][:, self.head].astype(np.float32)
        if self._weights is None and self._xa is not None:
            assert self._kinv_x is not None and self._diag_p is not None
            # X_u P = (X_u - (X_u X^T) K^-1 X) / lambda;  X_u W = -X_u P / diag(P) + X_u
            # (W = -P / diag(P) with its diagonal set to zero)
            xx = np.asarray((xq @ self._xa.T).todense(), np.float32)
            xp = (xq.toarray() - xx @ self._kinv_x) / np.float32(self.regularization)
            return np.asarray(-xp / self._diag_p + xq.toarray(), np.float32)
        return np.asarray(xq @ self.weights, np.float32)


def fit_item_linear(
    log: InteractionLog, n_users: int, n_items: int, *, head: int, regularization: float
) -> ItemLinearModel:
    """Closed-form EASE on the binary matrix restricted to the `head` most popular items.

    With fewer users than head items the item-space inverse is replaced by the exact Woodbury
    identity in user space (a users x users solve)."""
    return next(fit_item_linear_grid(log, n_users, n_items, head=head, regularizations=(regularization,)))


def fit_item_linear_grid(
    log: InteractionLog, n_users: int, n_items: int, *, head: int, regularizations: tuple[float, ...]
) -> Iterator[ItemLinearModel]:
    """`fit_item_linear` at each of `regularizations`, in the order given, sharing the matrix
    and its Gram (only the ridge term and the inverse differ). A generator: one model's dense
    weights at a time, so a caller that scores and drops each holds one."""
    user_items = confidence_matrix(log, n_users, n_items)
    user_items.data[:] = 1.0
    user_items = user_items.tocsr()
    counts = np.diff(user_items.tocsc().indptr)
    alive = np.flatnonzero(counts > 0)
    order = alive[np.argsort(-counts[alive], kind="stable")]
    keep = np.sort(order[:head]).astype(np.int32)
    # float32: twice the speed of float64 in the two big products/inverse; the ridge term keeps
    # the system well conditioned at the regularisations validation picks (>= 100)
    x = user_items[:, keep].astype(np.float32)
    active = np.flatnonzero(np.diff(x.indptr) > 0)
    if len(keep) == 0:
        for _ in regularizations:
            yield ItemLinearModel(keep, user_items, n_items, _weights=np.zeros((0, 0), np.float32))
        return
    if len(active) < len(keep):
        xa = x[active].tocsr()
        xa_dense = xa.toarray()
        gram_u = (xa @ xa.T).toarray().astype(np.float32)
        for reg in regularizations:
            lam = float(reg)
            kinv_x = np.linalg.solve(
                gram_u + np.float32(lam) * np.eye(len(gram_u), dtype=np.float32), xa_dense
            )
            kinv_x = kinv_x.astype(np.float32)  # [users, head]
            # P = (I - X^T K^-1 X) / lambda, kept factorised; only its diagonal is needed here
            diag_p = ((1.0 - np.asarray(xa.multiply(kinv_x).sum(axis=0)).ravel()) / lam).astype(np.float32)
            yield ItemLinearModel(
                head=keep,
                user_items=user_items,
                n_items=n_items,
                _xa=xa,
                _kinv_x=kinv_x,
                _diag_p=diag_p,
                regularization=lam,
            )
        return
    gram = (x.T @ x).toarray().astype(np.float32)
    diag = gram.diagonal().copy()
    for reg in regularizations:
        gram[np.diag_indices_from(gram)] = diag + np.float32(reg)
        # on a copy: the Gram stays for the next regularisation
        w = ease_weights(gram.copy())
        yield ItemLinearModel(
            head=keep, user_items=user_items, n_items=n_items, _weights=w, regularization=float(reg)
        )
        del w


@dataclass(slots=True)
class SequentialModel:
    """Time-local item-to-item weights over the item-linear model's head: what a user's items
    say about the items users interact with close to them in time (at most `window` positions
    apart in their own time-ordered history).

    Users of shops and of MovieLens act in bursts, so items close together in one user's
    sequence are related in a way whole-profile models (EASE) do not see: they weigh every pair
    of a long profile alike. Two ways to turn the time-local pairs into weights
    (`fit_sequential`):

    * **time-local EASE** (`regularization > 0`, the default): EASE's closed form over the
      Gram matrix of every user's sliding windows (pairs at distance d weigh 1 - d / (window + 1),
      an item with itself 1), so the weights are a regression, not counts: an item that merely
      co-occurs with everything gets little weight. On the random protocol's validation splits
      it alone scores +0.014 nDCG@10 above whole-profile EASE alone, and blended with EASE
      +0.016 (docs/training.md);
    * **damped counts** (`regularization = 0`): C_ij, the pairs weighted by decay ** (d - 1),
      summed over users (both directions) and damped by popularity, S_ij = C_ij / (n_i n_j) **
      damping, n = the item's number of users.

    Dense [len(head), len(head)] float32, like the item-linear weights: bounded by the head,
    never by the catalogue. A user's score is the sum of the rows of the items in their history.
    """

    head: npt.NDArray[np.int32]
    weights: npt.NDArray[np.float32]
    n_items: int

    def scores(self, user_items: sp.csr_matrix, users: npt.NDArray[np.int32]) -> npt.NDArray[np.float32]:
        """Dense [len(users), n_items] scores (zero outside the head) from binary `user_items`."""
        out = np.zeros((len(users), self.n_items), np.float32)
        out[:, self.head] = self.head_scores(user_items, users)
        return out

    def head_scores(self, user_items: sp.csr_matrix, users: npt.NDArray[np.int32]) -> npt.NDArray[np.float32]:
        """Dense [len(users), len(head)] scores of the head's items, in `head` order."""
        return np.asarray(user_items[users][:, self.head] @ self.weights, np.float32)


def fit_sequential(
    log: InteractionLog,
    head: npt.NDArray[np.int32],
    n_items: int,
    *,
    window: int,
    decay: float,
    damping: float,
    regularization: float = 0.0,
) -> SequentialModel:
    """SequentialModel over `head` from `log` (rows with a positive weight; each (user, item)
    at its latest time, equal times ordered by item so the result is deterministic): time-local
    EASE with ridge `regularization` when it is > 0, damped counts (`decay`, `damping`) when 0."""
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    if regularization < 0:
        raise ValueError(f"regularization must be >= 0, got {regularization}")
    local_ease = regularization > 0
    h = len(head)
    keep = np.flatnonzero(row_weights(log) > 0)
    users = log.users[keep].astype(np.int64)
    items = log.items[keep].astype(np.int64)
    order = np.lexsort((items, log.ts[keep], users))
    users, items = users[order], items[order]
    # one row per (user, item): its last occurrence in time order
    cell = users * n_items + items
    _, last = np.unique(cell[::-1], return_index=True)
    rows = np.sort(len(cell) - 1 - last)
    del keep, order, cell, last
    users, items = users[rows].astype(np.int32), items[rows]
    pos = np.full(n_items, -1, np.int64)
    pos[head] = np.arange(h)
    hp = pos[items]
    del items, rows
    # float32 accumulator: the head x head matrix is 100 MB at 5,000 items. Pairs of several
    # distances are added in one unbuffered np.add.at, flushed every PAIRS_PER_FLUSH pairs so a
    # 10M-interaction log never holds all its pairs at once (a bincount over all h * h cells
    # took 2-3x as long and a float64 temporary of twice the matrix).
    counts = np.zeros(h * h, np.float32)
    idx: list[npt.NDArray[np.int64]] = []
    wts: list[npt.NDArray[np.float32]] = []
    pending = 0

    def flush() -> None:
        nonlocal pending
        if pending:
            np.add.at(counts, np.concatenate(idx), np.concatenate(wts))
        idx.clear()
        wts.clear()
        pending = 0

    for d in range(1, min(window, max(len(hp) - 1, 0)) + 1):
        a, b = hp[:-d], hp[d:]
        ok = (users[d:] == users[:-d]) & (a >= 0) & (b >= 0) & (a != b)
        pair = a[ok] * h + b[ok]
        idx.append(pair)
        # the triangular kernel keeps the Gram positive semi-definite (it is the Gram of each
        # user's sliding windows), which EASE's solve needs; counts take the decay
        wts.append(np.full(len(pair), 1.0 - d / (window + 1) if local_ease else decay ** (d - 1), np.float32))
        pending += len(pair)
        if pending >= PAIRS_PER_FLUSH:
            flush()
    flush()
    c = counts.reshape(h, h)
    _add_transpose(c)
    n_users = np.bincount(hp[hp >= 0], minlength=h).astype(np.float64)
    if local_ease:
        c[np.diag_indices_from(c)] = (n_users + regularization).astype(np.float32)
        return SequentialModel(head=head, weights=ease_weights(c), n_items=n_items)
    damp = np.where(n_users > 0, 1.0 / np.maximum(n_users, 1.0) ** damping, 0.0).astype(np.float32)
    c *= damp[:, None]
    c *= damp[None, :]
    return SequentialModel(head=head, weights=c, n_items=n_items)


def _relative_rows(s: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """Rows divided by their best finite positive score (rows without one unchanged)."""
    finite = np.where(np.isfinite(s), s, 0.0)
    top = finite.max(axis=1, keepdims=True)
    return np.where(top > 0, s / np.where(top > 0, top, 1.0), s).astype(np.float32)


@dataclass(frozen=True, slots=True)
class BlendWeights:
    """Weights of the fixed blend that orders the published CF lists: EASE (`linear`), the
    time-local EASE (`sequential`) and ALS (`als`), each score relative to the user's best
    unseen item (ALS's negative scores count as 0: no evidence, not evidence against)."""

    linear: float
    sequential: float
    als: float

    def __post_init__(self) -> None:
        if not (self.linear >= 0 and self.sequential >= 0 and self.als >= 0):
            raise ValueError(f"blend weights must be >= 0, got {self}")
        if not self.linear + self.sequential + self.als > 0:
            raise ValueError("at least one blend weight must be > 0")

    def combine(
        self,
        rel_e: npt.NDArray[np.float32],
        rel_q: npt.NDArray[np.float32] | None,
        rel_a: npt.NDArray[np.float32] | None,
    ) -> npt.NDArray[np.float32]:
        """The blend of relative scores of one shape (-inf at seen items stays -inf: a zero
        weight's term is skipped, never multiplied, as 0 x -inf would be NaN)."""
        out = np.zeros(rel_e.shape, np.float32)
        for w, rel in ((self.linear, rel_e), (self.sequential, rel_q), (self.als, rel_a)):
            if w > 0 and rel is not None:
                out += np.float32(w) * rel
        out[np.isneginf(rel_e)] = -np.inf
        return out


def relative_als(s_a: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """ALS scores relative to the row's best, negatives (and users without factors) at 0,
    -inf kept at seen items."""
    rel = _relative_rows(s_a)
    return np.where(np.isneginf(rel), rel, np.maximum(rel, 0.0)).astype(np.float32)


def top_columns(s: npt.NDArray[np.float32], k: int) -> npt.NDArray[np.int64]:
    """Each row's best `k` columns (all, when the row is shorter), best first. One partial
    partition and a sort of only `k` per row: a full argsort of a catalogue-wide row is what
    the retrain's blocks cannot afford."""
    k = min(k, s.shape[1])
    part = np.argpartition(-s, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(s, part, axis=1), axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1)


def _top_rows(s: npt.NDArray[np.float32], n: int) -> npt.NDArray[np.int32]:
    """Each row's best `n` columns by score, best first; -1 where the score is -inf (and as
    padding past a short row)."""
    best = top_columns(s, n)
    out = np.full((len(s), n), -1, np.int32)
    out[:, : best.shape[1]] = np.where(np.isfinite(np.take_along_axis(s, best, axis=1)), best, -1)
    return out


def fused_top_n(
    linear: ItemLinearModel | None,
    model: CFModel,
    users: npt.NDArray[np.int32],
    n: int,
    *,
    sequential: SequentialModel | None = None,
    weights: BlendWeights = BlendWeights(1.0, 0.0, 0.0),
) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.float32]]:
    """The published CF list: items by the blend (`weights`) of the item-linear (EASE), the
    time-local and the ALS scores, each relative to the user's best unseen item; then the ALS
    list's items the blend does not reach (users whose history lies outside the head, with no
    positive ALS score), -1 padded.

    Scores: the blend's for the first part; below it, ALS items get its last score times a
    decaying factor, so the list's score order is its rank order; then divided by the user's
    best score."""
    if linear is None or not len(users):
        als_i, als_s = top_n(model, users, n)
        return als_i, _relative(als_s)
    n = min(n, model.item_factors.shape[0])
    out_i = np.full((len(users), n), -1, np.int32)
    out_s = np.zeros((len(users), n), np.float32)
    batch = _rows_per_block(linear.n_items)
    for lo in range(0, len(users), batch):
        block = users[lo : lo + batch]
        seen = linear.user_items[block]
        r, c = seen.nonzero()
        rel_q = rel_a = None
        if weights.als > 0:
            # one ALS product per block serves both its blend term and the list's fill
            a = (model.user_factors[block] @ model.item_factors.T).astype(np.float32)
            a[r, c] = -np.inf
            als_i = _top_rows(a, n)
            als_i[np.abs(model.user_factors[block]).sum(axis=1) == 0] = -1  # no factors: no fill
            rel_a = relative_als(a)  # all-zero scores stay 0: no ALS term, not -inf
            del a
        else:
            # ALS a block at a time too: for every user at once its lists were [users, n] twice
            # (320 MB at 200,000 users), held through the whole loop at the retrain's memory peak
            als_i, _ = top_n(model, block, n)
        if sequential is not None and weights.sequential > 0:
            q = sequential.scores(linear.user_items, block)
            q[r, c] = -np.inf
            rel_q = _relative_rows(q)
            del q
        s = linear.scores(block)
        s[r, c] = -np.inf
        s = weights.combine(_relative_rows(s), rel_q, rel_a)
        del rel_q, rel_a
        best = top_columns(s, n)
        best_s = np.take_along_axis(s, best, axis=1)
        for row in range(len(block)):
            ok = np.isfinite(best_s[row]) & (best_s[row] > 0)
            items_l = best[row][ok]
            scores_l = best_s[row][ok]
            m = len(items_l)
            out_i[lo + row, :m] = items_l
            out_s[lo + row, :m] = scores_l
            if m < n:
                a_row = als_i[row]
                extra = a_row[(a_row >= 0) & ~np.isin(a_row, items_l)][: n - m]
                floor = float(scores_l[-1]) if m else 1.0
                out_i[lo + row, m : m + len(extra)] = extra
                out_s[lo + row, m : m + len(extra)] = floor * 0.5 / (1.0 + np.arange(len(extra)))
    return out_i, _relative(out_s)


def _relative(scores: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """Each user's scores divided by the user's best (published lists hold scores in (0, 1],
    which keep their precision in the cache's 5-decimal encoding)."""
    top = scores.max(axis=1, keepdims=True) if scores.size else np.zeros((len(scores), 1), np.float32)
    return np.where(top > 0, scores / np.where(top > 0, top, 1.0), 0.0).astype(np.float32)
