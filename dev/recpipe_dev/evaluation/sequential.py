"""Time-local item co-occurrence: items rated close together in a user's own rating sequence.

MovieLens users rate in bursts, so items rated a few positions apart by the same user are related
in a way whole-profile models (EASE, item-kNN) ignore: they count every pair of a 1,000-rating
profile alike. This similarity counts a pair only when the two items are at most `window`
positions apart in a user's time-ordered training ratings, weighted by `decay` ** (distance - 1),
and damps popular items: S_ij = C_ij / (n_i n_j) ** damping, with n the item's number of users.

Only the matrix it is fitted on informs it (the caller passes training timestamps only).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp


class SequentialCooccurrence:
    """Item-item similarity from time-adjacent ratings; a user's score is the sum over the
    items the user rated (like item-kNN, but with this similarity)."""

    name = "sequential"

    def __init__(self, window: int = 20, decay: float = 0.85, damping: float = 0.3) -> None:
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        self.window = window
        self.decay = decay
        self.damping = damping
        self.similarity: sp.csr_matrix | None = None

    def fit(self, times: sp.csr_matrix) -> None:
        """`times`: user x item matrix whose stored cells hold the interaction time."""
        n_items = times.shape[1]
        tc = times.tocoo()
        # Per user in time order; equal timestamps are ordered by item index so the result is
        # deterministic (MovieLens stores many ratings of one burst under the same second).
        order = np.lexsort((tc.col, tc.data, tc.row))
        users = tc.row[order]
        items = tc.col[order].astype(np.int64)
        left: list[npt.NDArray[np.int64]] = []
        right: list[npt.NDArray[np.int64]] = []
        weight: list[npt.NDArray[np.float64]] = []
        for d in range(1, min(self.window, max(len(items) - 1, 0)) + 1):
            same = users[d:] == users[:-d]
            left.append(items[:-d][same])
            right.append(items[d:][same])
            weight.append(np.full(int(same.sum()), self.decay ** (d - 1)))
        i = np.concatenate(left) if left else np.zeros(0, np.int64)
        j = np.concatenate(right) if right else np.zeros(0, np.int64)
        w = np.concatenate(weight) if weight else np.zeros(0)
        counts = sp.csr_matrix(
            (np.concatenate([w, w]), (np.concatenate([i, j]), np.concatenate([j, i]))),
            shape=(n_items, n_items),
        )
        n_users = np.bincount(tc.col, minlength=n_items).astype(np.float64)
        damp = sp.diags(np.where(n_users > 0, 1.0 / np.maximum(n_users, 1.0) ** self.damping, 0.0))
        self.similarity = (damp @ counts @ damp).tocsr()

    def scores(self, users: npt.NDArray[np.int64], x: sp.csr_matrix) -> npt.NDArray[np.float32]:
        """Dense [len(users), n_items]: sum of similarities to the items in the users' rows of `x`."""
        assert self.similarity is not None, "fit first"
        return np.asarray((x[users].astype(np.float64) @ self.similarity).toarray(), np.float32)
