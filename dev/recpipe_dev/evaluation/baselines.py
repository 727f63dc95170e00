"""Baseline recommenders for the offline protocols: popularity, ALS and BPR (implicit), item-kNN
(implicit's cosine / BM25 item-item) and EASE (Steck 2019, closed form).

Every model is fitted on a binary user x item CSR matrix and scores a block of users densely
(ml-latest-small is 610 x 9.7k: a dense block is cheap and keeps top-k exact). Seeds are fixed and
implicit runs single-threaded so results reproduce bit for bit.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

Params = Mapping[str, Any]


class ScoringModel(Protocol):
    name: str

    def fit(self, x: sp.csr_matrix) -> None: ...

    def scores(self, users: npt.NDArray[np.int64], x: sp.csr_matrix) -> npt.NDArray[np.float32]:
        """Dense [len(users), n_items] scores; `x` holds the users' known interactions (rows)."""
        ...


def interaction_matrix(
    users: npt.NDArray[np.integer[Any]], items: npt.NDArray[np.integer[Any]], n_users: int, n_items: int
) -> sp.csr_matrix:
    """Binary user x item matrix (repeated interactions count once)."""
    m = sp.csr_matrix(
        (np.ones(len(users), np.float32), (users.astype(np.int64), items.astype(np.int64))),
        shape=(n_users, n_items),
    )
    m.data[:] = 1.0
    return m


def top_k(scores: npt.NDArray[np.float32], exclude: sp.csr_matrix | None, k: int) -> npt.NDArray[np.int64]:
    """Indices of the k best items per row, best first, never an excluded (already seen) item.
    Ties break on the lower item index so results are deterministic."""
    s = np.array(scores, dtype=np.float64, copy=True)
    if exclude is not None:
        rows, cols = exclude.nonzero()
        s[rows, cols] = -np.inf
    k = min(k, s.shape[1])
    part = np.argpartition(-s, k - 1, axis=1)[:, :k]
    part.sort(axis=1)  # lower index first, so the stable sort below breaks ties on it
    order = np.argsort(-np.take_along_axis(s, part, axis=1), axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1)


@dataclass(slots=True)
class Popularity:
    name: str = "popularity"
    counts: npt.NDArray[np.float32] | None = None

    def fit(self, x: sp.csr_matrix) -> None:
        self.counts = np.asarray(x.sum(axis=0), dtype=np.float32).ravel()

    def scores(self, users: npt.NDArray[np.int64], x: sp.csr_matrix) -> npt.NDArray[np.float32]:
        assert self.counts is not None, "fit first"
        return np.broadcast_to(self.counts, (len(users), len(self.counts))).copy()


class EASE:
    """EASE^R: B = I - P / diag(P) with P = (X^T X + lambda I)^-1 and diag(B) = 0.

    When there are fewer users than items the item-space inverse is replaced by the exact
    Woodbury identity in user space: X_q P = (X_q - (X_q X^T) K^-1 X) / lambda with
    K = lambda I + X X^T, and diag(P)_j = (1 - x_j^T K^-1 x_j) / lambda. Same scores, a
    610 x 610 solve instead of a 9.7k x 9.7k inverse."""

    name = "ease"

    def __init__(self, reg: float = 500.0) -> None:
        self.reg = float(reg)
        self._x: sp.csr_matrix | None = None
        self._kinv_x: npt.NDArray[np.float64] | None = None
        self._diag_p: npt.NDArray[np.float64] | None = None
        self._b: npt.NDArray[np.float64] | None = None

    def fit(self, x: sp.csr_matrix) -> None:
        x = x.astype(np.float64)
        n_users, n_items = x.shape
        lam = self.reg
        if n_users < n_items:
            gram_u = (x @ x.T).toarray()
            gram_u[np.diag_indices_from(gram_u)] += lam
            kinv_x = np.linalg.solve(gram_u, x.toarray())
            self._x, self._kinv_x = x.tocsr(), kinv_x
            self._diag_p = (1.0 - np.asarray(x.multiply(kinv_x).sum(axis=0)).ravel()) / lam
            self._b = None
        else:
            gram = (x.T @ x).toarray()
            gram[np.diag_indices_from(gram)] += lam
            p = np.linalg.inv(gram)
            b = -p / np.diag(p)
            b[np.diag_indices_from(b)] = 0.0
            self._b = b

    def scores(self, users: npt.NDArray[np.int64], x: sp.csr_matrix) -> npt.NDArray[np.float32]:
        xq = x[users].astype(np.float64)
        if self._b is not None:
            return np.asarray(xq @ self._b, dtype=np.float32)
        assert self._x is not None and self._kinv_x is not None and self._diag_p is not None
        xq_p = (xq.toarray() - (xq @ self._x.T).toarray() @ self._kinv_x) / self.reg
        return np.asarray(xq.toarray() - xq_p / self._diag_p, dtype=np.float32)


class DLAE:
    """Denoising linear autoencoders (Steck 2020, "Autoencoders that don't overfit towards the
    identity"), closed form with the dropout-induced regulariser
    Lambda = p / (1 - p) * diag(diag(G)) + lambda I, G = X^T X:

    * DLAE: B = (G + Lambda)^-1 G (no diagonal constraint);
    * EDLAE (`emphasized=True`, full rank): EASE's form with Lambda in place of lambda I,
      B = I - P / diag(P), P = (G + Lambda)^-1, diag(B) = 0.

    With fewer users than items both use the Woodbury identity in user space, with
    D = diag(Lambda) and K = I + X D^-1 X^T: DLAE scores are (X_q D^-1 X^T) K^-1 X, and EDLAE
    scores are X_q - R / (1 - q) with R = X_q - (X_q D^-1 X^T) K^-1 X and
    q_j = x_j^T K^-1 x_j / d_j (a 610 x 610 solve for ml-latest-small). p = 0 gives ridge
    regression (DLAE) and EASE (EDLAE)."""

    name = "dlae"

    def __init__(self, reg: float = 200.0, dropout: float = 0.5, emphasized: bool = False) -> None:
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.reg = float(reg)
        self.dropout = float(dropout)
        self.emphasized = emphasized
        self._x: sp.csr_matrix | None = None
        self._d: npt.NDArray[np.float64] | None = None
        self._kinv_x: npt.NDArray[np.float64] | None = None
        self._q: npt.NDArray[np.float64] | None = None
        self._b: npt.NDArray[np.float64] | None = None

    def penalty(self, x: sp.csr_matrix) -> npt.NDArray[np.float64]:
        """diag(Lambda) for the binary matrix `x`."""
        counts = np.asarray(x.multiply(x).sum(axis=0), dtype=np.float64).ravel()
        return self.dropout / (1.0 - self.dropout) * counts + self.reg

    def fit(self, x: sp.csr_matrix) -> None:
        x = x.astype(np.float64).tocsr()
        n_users, n_items = x.shape
        d = self.penalty(x)
        if n_users < n_items:
            xd = x.toarray()
            k = (x @ sp.diags(1.0 / d) @ x.T).toarray()
            k[np.diag_indices_from(k)] += 1.0
            kinv_x = np.linalg.solve(k, xd)
            self._x, self._d, self._kinv_x, self._b = x, d, kinv_x, None
            self._q = (xd * kinv_x).sum(axis=0) / d
        else:
            gram = (x.T @ x).toarray()
            p = np.linalg.inv(gram + np.diag(d))
            if self.emphasized:
                b = -p / np.diag(p)
                b[np.diag_indices_from(b)] = 0.0
            else:
                b = np.eye(n_items) - p * d  # (G + D)^-1 G = I - (G + D)^-1 D
            self._b = b

    def scores(self, users: npt.NDArray[np.int64], x: sp.csr_matrix) -> npt.NDArray[np.float32]:
        xq = x[users].astype(np.float64)
        if self._b is not None:
            return np.asarray(xq @ self._b, dtype=np.float32)
        assert self._x is not None and self._d is not None and self._kinv_x is not None
        assert self._q is not None
        a = (xq @ sp.diags(1.0 / self._d) @ self._x.T).toarray()
        dlae = a @ self._kinv_x
        if not self.emphasized:
            return np.asarray(dlae, dtype=np.float32)
        dense = xq.toarray()
        return np.asarray(dense - (dense - dlae) / (1.0 - self._q), dtype=np.float32)


class _ImplicitFactors:
    """Shared scoring for implicit's matrix-factorisation models (dot product of factors)."""

    name = "mf"
    model: Any

    def scores(self, users: npt.NDArray[np.int64], x: sp.csr_matrix) -> npt.NDArray[np.float32]:
        uf = np.asarray(self.model.user_factors)[users]
        return np.asarray(uf @ np.asarray(self.model.item_factors).T, dtype=np.float32)

    @property
    def item_factors(self) -> npt.NDArray[np.float32]:
        return np.asarray(self.model.item_factors, dtype=np.float32)


class ALS(_ImplicitFactors):
    name = "als"

    def __init__(
        self,
        factors: int = 64,
        regularization: float = 0.05,
        alpha: float = 1.0,
        iterations: int = 15,
        seed: int = 0,
    ) -> None:
        from implicit.cpu.als import AlternatingLeastSquares

        self.model = AlternatingLeastSquares(
            factors=factors,
            regularization=regularization,
            alpha=alpha,
            iterations=iterations,
            random_state=seed,
            num_threads=1,
            calculate_training_loss=False,
        )

    def fit(self, x: sp.csr_matrix) -> None:
        # implicit's own loops are the parallelism; BLAS threads inside them only contend.
        with threadpool_limits(1, "blas"):
            self.model.fit(x.astype(np.float32).tocsr(), show_progress=False)


class BPR(_ImplicitFactors):
    name = "bpr"

    def __init__(
        self,
        factors: int = 64,
        learning_rate: float = 0.05,
        regularization: float = 0.01,
        iterations: int = 100,
        seed: int = 0,
    ) -> None:
        from implicit.cpu.bpr import BayesianPersonalizedRanking

        self.model = BayesianPersonalizedRanking(
            factors=factors,
            learning_rate=learning_rate,
            regularization=regularization,
            iterations=iterations,
            random_state=seed,
            num_threads=1,
        )

    def fit(self, x: sp.csr_matrix) -> None:
        # implicit's own loops are the parallelism; BLAS threads inside them only contend.
        with threadpool_limits(1, "blas"):
            self.model.fit(x.astype(np.float32).tocsr(), show_progress=False)


class ItemKNN:
    """implicit's item-item neighbourhood models: score = sum of similarities to seen items."""

    name = "item_knn"

    def __init__(self, similarity: str = "cosine", neighbours: int = 100) -> None:
        from implicit.nearest_neighbours import BM25Recommender, CosineRecommender

        self.similarity = similarity
        if similarity == "cosine":
            self.model: Any = CosineRecommender(K=neighbours, num_threads=1)
        elif similarity == "bm25":
            self.model = BM25Recommender(K=neighbours, num_threads=1)
        else:
            raise ValueError(f"unknown item-kNN similarity {similarity!r}")

    def fit(self, x: sp.csr_matrix) -> None:
        # implicit's own loops are the parallelism; BLAS threads inside them only contend.
        with threadpool_limits(1, "blas"):
            self.model.fit(x.astype(np.float32).tocsr(), show_progress=False)

    def scores(self, users: npt.NDArray[np.int64], x: sp.csr_matrix) -> npt.NDArray[np.float32]:
        return np.asarray((x[users].astype(np.float32) @ self.model.similarity).toarray(), np.float32)


def make_model(method: str, params: Params, seed: int) -> ScoringModel:
    if method == "popularity":
        return Popularity()
    if method == "ease":
        return EASE(**params)
    if method == "als":
        return ALS(**params, seed=seed)
    if method == "bpr":
        return BPR(**params, seed=seed)
    if method == "item_knn":
        return ItemKNN(**params)
    raise ValueError(f"unknown method {method!r}")


#: The search space per method. Every tuned method gets the same budget (8 configurations).
SEARCH_SPACE: dict[str, list[dict[str, Any]]] = {
    "popularity": [{}],
    "als": [
        # weak ridges (the usual iALS defaults) next to the strong ridges the product's ALS uses
        # (docs/training.md); without those this baseline would be weaker than the ALS inside the
        # product. Eight configurations, the same budget as every other tuned method.
        {"factors": f, "regularization": r, "alpha": a}
        for f in (64, 128)
        for r, a in ((0.5, 1.0), (20.0, 10.0), (50.0, 10.0), (100.0, 10.0))
    ],
    "bpr": [
        {"factors": f, "learning_rate": lr, "regularization": r}
        for f in (64, 128)
        for lr in (0.01, 0.05)
        for r in (0.001, 0.01)
    ],
    "item_knn": [{"similarity": s, "neighbours": n} for s in ("cosine", "bm25") for n in (25, 50, 100, 200)],
    "ease": [{"reg": r} for r in (50.0, 100.0, 200.0, 350.0, 500.0, 750.0, 1000.0, 1500.0)],
}
