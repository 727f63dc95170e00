"""The two-stage (candidates -> learned ranker) pipeline of the random protocol.

Candidate stage: the union of the EASE and ALS top lists (each tuned like the baselines), fused
by reciprocal rank so the stage also has its own order (its recall@200 is the ranker's ceiling).
Ranker: LightGBM LambdaRank (gradient-boosted trees optimising nDCG per user list) over
per-(user, candidate) features: EASE / ALS / item-kNN / BPR scores (raw, relative to the user's
best, rank among all unseen items), a second EASE with a stronger regularisation, similarity to
the user's best-rated items, item popularity, mean rating and rating count, the user's activity
and mean rating, genre affinity, and item-side time context (how often the item was rated while
the user was active, when it first and last appeared relative to the user's ratings). It is
trained on carve-outs of the training part (base models refitted on the rest), so test rows
never inform it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from recpipe.domain.catalogue import ItemMeta
from recpipe.evaluation.baselines import ALS, BPR, EASE, ItemKNN, top_k

TWO_STAGE_FEATURES: tuple[str, ...] = (
    "ease_score",
    "ease_score_rel",
    "ease_log_rank",
    "ease_strong_score_rel",
    "ease_strong_log_rank",
    "als_score",
    "als_score_rel",
    "als_log_rank",
    "knn_score_rel",
    "knn_log_rank",
    "knn_liked_score_rel",
    "bpr_score_rel",
    "bpr_log_rank",
    "in_ease",
    "in_als",
    "item_log_popularity",
    "item_mean_rating",
    "item_rating_std",
    "genre_affinity",
    "user_log_activity",
    "user_mean_rating",
    "user_log_span_days",
    "window_popularity",
    "window_share",
    "first_seen_gap",
    "last_seen_gap",
    "item_mean_time_gap",
)
#: Features whose scale moves with the amount of training data (raw scores, absolute counts,
#: activity spans): they shift between the carve-outs the ranker learns on and the full fit.
SHIFTING_FEATURES = frozenset(
    {
        "ease_score",
        "als_score",
        "user_log_activity",
        "item_log_popularity",
        "first_seen_gap",
        "last_seen_gap",
        "item_mean_time_gap",
        "user_log_span_days",
    }
)
#: Feature sets the ranker search chooses between: everything, or the scale-free subset.
FEATURE_SETS: dict[str, tuple[str, ...]] = {
    "all": TWO_STAGE_FEATURES,
    "scale_free": tuple(n for n in TWO_STAGE_FEATURES if n not in SHIFTING_FEATURES),
}
#: Monotone constraints: more CF evidence never ranks an item lower (+1 on scores, -1 on ranks).
MONOTONE: dict[str, int] = {
    name: (-1 if name.endswith("log_rank") else 1)
    for name in TWO_STAGE_FEATURES
    if name.split("_")[0] in {"ease", "als", "knn", "bpr"}
}
MONTH_S = 30 * 86400.0
YEAR_S = 365 * 86400.0


@dataclass(slots=True)
class ItemSide:
    """Item attributes the ranker uses: genres (multi-hot, normalised)."""

    genres: npt.NDArray[np.float32]  # [n_items, n_genres], rows sum to 1 (or 0)

    @classmethod
    def build(cls, item_vocab: Sequence[str], meta: Mapping[str, ItemMeta]) -> ItemSide:
        vocab = sorted({g for m in meta.values() for g in m.categories})
        gi = {g: i for i, g in enumerate(vocab)}
        genres = np.zeros((len(item_vocab), max(len(vocab), 1)), np.float32)
        for i, item in enumerate(item_vocab):
            m = meta.get(item)
            if m is None:
                continue
            for g in m.categories:
                genres[i, gi[g]] = 1.0
        sums = genres.sum(axis=1, keepdims=True)
        np.divide(genres, sums, out=genres, where=sums > 0)
        return cls(genres=genres)


@dataclass(slots=True)
class TrainingPart:
    """What a candidate stage may see: the binary matrix, and the same cells holding the
    interaction time and the rating value."""

    x: sp.csr_matrix
    times: sp.csr_matrix
    ratings: sp.csr_matrix


@dataclass(slots=True)
class CandidateStageConfig:
    ease: Mapping[str, Any]
    als: Mapping[str, Any]
    knn: Mapping[str, Any] = field(default_factory=lambda: {"similarity": "cosine", "neighbours": 100})
    bpr: Mapping[str, Any] | None = None
    #: Depth taken from each source before the union.
    per_source: int = 150
    #: The second, more strongly regularised EASE (a multiple of the tuned lambda).
    strong_ease_factor: float = 5.0
    seed: int = 0


@dataclass(slots=True)
class CandidateLists:
    """Per-user candidate matrices (padded with -1) and their features."""

    items: npt.NDArray[np.int64]  # [n_users, C]
    fused_order: npt.NDArray[np.int64]  # [n_users, C] item ids in fused (RRF) order, -1 padded
    features: npt.NDArray[np.float32]  # [n_users, C, F]
    mask: npt.NDArray[np.bool_]  # [n_users, C]


def _log_ranks(scores: npt.NDArray[np.float32], seen: sp.csr_matrix) -> npt.NDArray[np.float32]:
    """log1p(rank) of every item among the user's unseen items (0 = best)."""
    s = np.array(scores, dtype=np.float64, copy=True)
    rows, cols = seen.nonzero()
    s[rows, cols] = -np.inf
    order = np.argsort(-s, axis=1, kind="stable")
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.arange(s.shape[1])[None, :].repeat(s.shape[0], 0), axis=1)
    return np.log1p(ranks).astype(np.float32)


def _relative(scores: npt.NDArray[np.float32], seen: sp.csr_matrix) -> npt.NDArray[np.float32]:
    """Scores divided by the user's best unseen score (scale-free across users)."""
    s = np.array(scores, dtype=np.float64, copy=True)
    rows, cols = seen.nonzero()
    s[rows, cols] = -np.inf
    best = np.maximum(s.max(axis=1, keepdims=True), 1e-9)
    return (scores / best).astype(np.float32)


class CandidateStage:
    """Fits EASE, ALS, item-kNN and BPR on a training part and produces featurised candidates."""

    def __init__(self, config: CandidateStageConfig, item_side: ItemSide) -> None:
        self.config = config
        self.item_side = item_side

    def run(self, part: TrainingPart, users: npt.NDArray[np.int64]) -> CandidateLists:
        cfg = self.config
        x, times, ratings = part.x, part.times, part.ratings
        xu = x[users]
        ease = EASE(**cfg.ease)
        ease.fit(x)
        s_ease = ease.scores(users, x)
        strong = EASE(reg=float(cfg.ease.get("reg", 500.0)) * cfg.strong_ease_factor)
        strong.fit(x)
        s_strong = strong.scores(users, x)
        als = ALS(**cfg.als, seed=cfg.seed)
        als.fit(x)
        s_als = als.scores(users, x)
        knn = ItemKNN(**cfg.knn)
        knn.fit(x)
        s_knn = knn.scores(users, x)
        # similarity to the items the user rated at or above their own mean rating
        r_u = ratings[users].tocsr()
        liked = r_u.copy()
        means = np.asarray(r_u.sum(axis=1)).ravel() / np.maximum(np.diff(r_u.indptr), 1)
        liked.data = (liked.data >= np.repeat(means, np.diff(r_u.indptr))).astype(np.float32)
        liked.eliminate_zeros()
        s_liked = np.asarray((liked.astype(np.float32) @ knn.model.similarity).toarray(), np.float32)
        if cfg.bpr is not None:
            bpr = BPR(**cfg.bpr, seed=cfg.seed)
            bpr.fit(x)
            s_bpr = bpr.scores(users, x)
        else:
            s_bpr = np.zeros_like(s_ease)

        depth = cfg.per_source
        top_e = top_k(s_ease, xu, depth)
        top_a = top_k(s_als, xu, depth)
        columns = {
            "ease_score": s_ease,
            "ease_score_rel": _relative(s_ease, xu),
            "ease_log_rank": _log_ranks(s_ease, xu),
            "ease_strong_score_rel": _relative(s_strong, xu),
            "ease_strong_log_rank": _log_ranks(s_strong, xu),
            "als_score": s_als,
            "als_score_rel": _relative(s_als, xu),
            "als_log_rank": _log_ranks(s_als, xu),
            "knn_score_rel": _relative(s_knn, xu),
            "knn_log_rank": _log_ranks(s_knn, xu),
            "knn_liked_score_rel": _relative(s_liked, xu),
            "bpr_score_rel": _relative(s_bpr, xu),
            "bpr_log_rank": _log_ranks(s_bpr, xu),
        }

        n_items = x.shape[1]
        counts = np.asarray(x.sum(axis=0)).ravel()
        log_pop = np.log1p(counts).astype(np.float32)
        rc = ratings.tocsc()
        r_sum = np.asarray(rc.sum(axis=0)).ravel()
        r_sq = np.asarray(rc.multiply(rc).sum(axis=0)).ravel()
        # shrunk towards the global mean so items with few ratings are not extreme
        g_mean = float(ratings.data.mean()) if ratings.nnz else 0.0
        item_mean = ((r_sum + 5.0 * g_mean) / (counts + 5.0)).astype(np.float32)
        item_std = np.sqrt(np.maximum(r_sq / np.maximum(counts, 1) - (r_sum / np.maximum(counts, 1)) ** 2, 0))
        side = self.item_side
        # When each item was rated, from training rows only: a user active in 2001 did not rate
        # a film that first appears in 2015 (item-side time context, legitimate in this split).
        tc = times.tocoo()
        t_origin = float(tc.data.min()) if tc.nnz else 0.0
        month = ((tc.data - t_origin) // MONTH_S).astype(np.int64)
        n_months = int(month.max()) + 3 if tc.nnz else 3
        per_month = np.zeros((n_items, n_months + 1), np.float32)
        np.add.at(per_month, (tc.col, month + 1), 1.0)
        cum_month = np.cumsum(per_month, axis=1)
        first_seen = np.full(n_items, np.inf)
        np.minimum.at(first_seen, tc.col, tc.data)
        last_seen = np.full(n_items, -np.inf)
        np.maximum.at(last_seen, tc.col, tc.data)
        t_sum = np.zeros(n_items)
        np.add.at(t_sum, tc.col, tc.data)
        item_mean_t = np.where(counts > 0, t_sum / np.maximum(counts, 1), np.nan)

        width = 2 * depth
        names = TWO_STAGE_FEATURES
        items = np.full((len(users), width), -1, np.int64)
        fused = np.full((len(users), width), -1, np.int64)
        feats = np.zeros((len(users), width, len(names)), np.float32)
        mask = np.zeros((len(users), width), np.bool_)
        for row, u in enumerate(users):
            rr_e = np.zeros(n_items, np.float32)
            rr_a = np.zeros(n_items, np.float32)
            rr_e[top_e[row]] = 1.0 / (1.0 + np.arange(depth))
            rr_a[top_a[row]] = 1.0 / (1.0 + np.arange(depth))
            cand = np.union1d(top_e[row], top_a[row])
            # Reciprocal-rank fusion (k=60 as in Cormack et al.) gives the stage's own order.
            rrf = np.zeros(len(cand))
            for order in (top_e[row], top_a[row]):
                pos = np.full(n_items, -1, np.int64)
                pos[order] = np.arange(len(order))
                p = pos[cand]
                rrf += np.where(p >= 0, 1.0 / (60 + np.maximum(p, 0)), 0.0)
            n = len(cand)
            items[row, :n] = cand
            fused[row, :n] = cand[np.argsort(-rrf, kind="stable")]
            mask[row, :n] = True
            seen = x[u].indices
            profile = side.genres[seen].sum(axis=0)
            if profile.sum() > 0:
                profile = profile / profile.sum()
            ut = times[u].data
            ur = ratings[u].data
            lo = int((ut.min() - t_origin) // MONTH_S) if len(ut) else 0
            hi = int((ut.max() - t_origin) // MONTH_S) if len(ut) else n_months - 2
            lo, hi = max(lo - 1, 0), min(hi + 2, n_months)
            in_window = cum_month[cand, hi] - cum_month[cand, lo]
            first = float(ut.min()) if len(ut) else 0.0
            last = float(ut.max()) if len(ut) else 0.0
            mid = float(ut.mean()) if len(ut) else 0.0
            fs, ls = first_seen[cand], last_seen[cand]
            f = {name: col[row, cand] for name, col in columns.items()}
            f |= {
                "in_ease": (rr_e[cand] > 0).astype(np.float32),
                "in_als": (rr_a[cand] > 0).astype(np.float32),
                "item_log_popularity": log_pop[cand],
                "item_mean_rating": item_mean[cand],
                "item_rating_std": item_std[cand],
                "genre_affinity": side.genres[cand] @ profile * len(profile),
                "user_log_activity": np.full(n, np.log1p(len(seen))),
                "user_mean_rating": np.full(n, float(ur.mean()) if len(ur) else g_mean),
                "user_log_span_days": np.full(n, np.log1p((last - first) / 86400.0)),
                "window_popularity": np.log1p(in_window),
                "window_share": in_window / np.maximum(counts[cand], 1),
                "first_seen_gap": np.where(np.isfinite(fs), (fs - last) / YEAR_S, 0.0),
                "last_seen_gap": np.where(np.isfinite(ls), (ls - first) / YEAR_S, 0.0),
                "item_mean_time_gap": np.nan_to_num((item_mean_t[cand] - mid) / YEAR_S),
            }
            feats[row, :n] = np.stack([np.asarray(f[name], np.float32) for name in names], axis=1)
        return CandidateLists(items=items, fused_order=fused, features=feats, mask=mask)


class LambdaRanker:
    """LightGBM LambdaRank over each user's candidate list (deterministic, fixed threads)."""

    def __init__(
        self,
        *,
        num_leaves: int = 31,
        n_estimators: int = 300,
        learning_rate: float = 0.05,
        min_child_samples: int = 200,
        monotone: bool = True,
        features: str = "all",
        seed: int = 0,
    ) -> None:
        self.monotone = monotone
        self.features = FEATURE_SETS[features]
        self._cols = [TWO_STAGE_FEATURES.index(n) for n in self.features]
        self.params = {
            "objective": "lambdarank",
            "num_leaves": num_leaves,
            "learning_rate": learning_rate,
            "min_data_in_leaf": min_child_samples,
            "bagging_fraction": 0.8,
            "bagging_freq": 1,
            "feature_fraction": 0.8,
            "lambdarank_truncation_level": 20,
            "seed": seed,
            "deterministic": True,
            "force_row_wise": True,
            "num_threads": 2,
            "verbose": -1,
        }
        self.n_estimators = n_estimators
        self._model: Any = None

    def fit(self, cands: CandidateLists, labels: npt.NDArray[np.float32]) -> dict[str, float]:
        import lightgbm as lgb

        keep = (labels.sum(axis=1) > 0) & cands.mask.any(axis=1)  # lists without positives teach nothing
        feats, mask, y = cands.features[keep], cands.mask[keep], labels[keep]
        x = feats[mask][:, self._cols]
        groups = mask.sum(axis=1)
        params = dict(self.params)
        if self.monotone:
            params["monotone_constraints"] = [MONOTONE.get(n, 0) for n in self.features]
            params["monotone_constraints_method"] = "advanced"
        data = lgb.Dataset(x, label=y[mask], group=groups, feature_name=list(self.features))
        self._model = lgb.train(params, data, num_boost_round=self.n_estimators)
        return {"train_lists": float(keep.sum()), "train_rows": float(len(x))}

    def scores(self, cands: CandidateLists, n_estimators: int | None = None) -> npt.NDArray[np.float64]:
        assert self._model is not None, "fit first"
        out = np.full(cands.mask.shape, -np.inf)
        out[cands.mask] = self._model.predict(
            cands.features[cands.mask][:, self._cols], num_iteration=n_estimators
        )
        return out

    def rank(self, cands: CandidateLists, k: int, n_estimators: int | None = None) -> npt.NDArray[np.int64]:
        scores = self.scores(cands, n_estimators)
        # Trees give piecewise-constant scores: ties are broken by the EASE score, not item id.
        tie = np.where(cands.mask, cands.features[:, :, TWO_STAGE_FEATURES.index("ease_score_rel")], -np.inf)
        order = np.lexsort((-tie, -scores), axis=1)[:, :k]
        return np.take_along_axis(cands.items, order, axis=1)

    def importance(self) -> dict[str, int]:
        assert self._model is not None, "fit first"
        gains = self._model.feature_importance(importance_type="gain")
        return {n: round(float(g)) for n, g in zip(self.features, gains, strict=True)}


def labels_for(
    cands: CandidateLists, truth: sp.csr_matrix, users: npt.NDArray[np.int64]
) -> npt.NDArray[np.float32]:
    """1 where the candidate is a held-out item of the user."""
    labels = np.zeros(cands.items.shape, np.float32)
    for row, u in enumerate(users):
        rel = truth[u].indices
        labels[row] = np.isin(cands.items[row], rel) & cands.mask[row]
    return labels
