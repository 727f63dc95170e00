"""Learned fusion of the CF models: the order of each user's published CF list.

EASE, the time-local model and ALS each see a different side of a user's history
(whole profile, order, low-rank taste); a fixed blend weighs them alike for every user. Fusion
learns how to combine them, with item and user context, from **carve-outs**: a quarter of some
users' items before the holdout is held out, the CF models are refitted on the rest, and a small
listwise MLP (TensorFlow) learns to put the held-out items first in each user's candidate pool
(the blend's top list united with ALS's). Training happens in the batch path only; the published
list carries the fused order and a relative score, so a returning user's list is long-term taste
as the fusion orders it, and the online ranker (TFLite) keeps its job: sessions and visitors.

It is adopted only when it beats the fixed blend on the carve-outs' validation users by more
than two standard errors (figures in the run's metrics); otherwise the blend's order is
published, as before.

Pools are built a block of users at a time (the same blocks `cf.fused_top_n` uses), so memory
is bounded by the block, never by users x items. Within a block only ALS is scored over the
whole catalogue; EASE, the time-local model and the blend live on the head, and every feature is
gathered at the pool's candidates (at 100,000 items: 7x faster than full-width rows).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from recpipe.domain.catalogue import InteractionLog
from recpipe.ranking_metrics import ndcg_at_k
from recpipe.training.cf import (
    BlendWeights,
    CFModel,
    ItemLinearModel,
    SequentialModel,
    _relative,
    _relative_rows,
    _rows_per_block,
    relative_als,
    row_weights,
    top_columns,
)

FUSION_FEATURES: tuple[str, ...] = (
    "blend_rel",
    "blend_rrank",
    "ease_rel",
    "ease_rrank",
    "seq_rel",
    "seq_rrank",
    "als_rel",
    "als_rrank",
    "item_log_popularity",
    "category_affinity",
    "user_log_activity",
    "window_popularity",
    "first_seen_after_user",
    "first_seen_gap",
)
MONTH_S = 30 * 86400.0
YEAR_S = 365 * 86400.0
#: Month bins of the window-popularity table (older months share the first bin).
MAX_MONTHS = 480


#: Standard errors of its paired gain a retrain's own choice must clear to leave a default (the
#: fusion over the blend here, lambda and the time-local weight in `training/tuning.py`): the best
#: of several noisy alternatives beats the default by one standard error easily.
CHOICE_MARGIN_SE = 2.0


@dataclass(frozen=True, slots=True)
class FusionParams:
    #: carve-outs (each one refit of the CF models on the window before the holdout); 0 = off.
    #: Folds stop early once `max_lists` user lists are collected (big shops need two)
    folds: int = 6
    max_lists: int = 4000
    #: users carved out per fold (a seeded sample; all when fewer)
    users: int = 2000
    ratio: float = 0.25
    #: pool: the blend's top `depth` united with ALS's top `als_depth`
    depth: int = 150
    als_depth: int = 150
    hidden: int = 32
    #: validation nDCG is flat after the first few epochs (docs/training.md)
    epochs: int = 6
    learning_rate: float = 0.01
    batch_size: int = 32
    #: models whose logits are summed, trained side by side in one graph: one training moves a
    #: split's nDCG by more than most settings do. Four beat two by +0.0023 +- 0.0006 on ten
    #: validation splits x three trainings; eight scored the same as four on five splits
    #: (docs/training.md)
    members: int = 4
    #: share of users kept for validation, the same users in every carve-out: they never train
    #: the fusion. Half of them choose each member's epoch, the other half judge the adoption
    validation: float = 0.2
    #: adopted only for a gain on the validation users above this many standard errors, the
    #: retrain's rule for leaving any default (CHOICE_MARGIN_SE): a fusion within noise of the
    #: blend cost ml-100k's validation splits -0.0014 on average (docs/training.md); a large
    #: negative value adopts it whatever, which is how its own effect is measured (`recpipe validate`)
    adopt_margin_se: float = CHOICE_MARGIN_SE

    def __post_init__(self) -> None:
        # a retrain request's params come from outside: refuse nonsense before any fitting
        counts = {
            "users": self.users,
            "max_lists": self.max_lists,
            "depth": self.depth,
            "hidden": self.hidden,
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "members": self.members,
        }
        bad = [f"{name}={value}" for name, value in counts.items() if value < 1]
        if self.folds < 0 or self.als_depth < 0:
            bad.append(f"folds={self.folds}, als_depth={self.als_depth} (>= 0)")
        if not math.isfinite(self.adopt_margin_se):
            bad.append(f"adopt_margin_se={self.adopt_margin_se} (finite)")
        if not 0 < self.ratio < 1 or not 0 < self.validation < 1 or not self.learning_rate > 0:
            bad.append(
                f"ratio={self.ratio}, validation={self.validation} (in (0, 1)), learning_rate={self.learning_rate}"
            )
        if bad:
            raise ValueError("bad fusion params: " + "; ".join(bad))


@dataclass(slots=True)
class Context:
    """Item- and user-side data of one fit window, for the context features."""

    log_pop: npt.NDArray[np.float32]
    #: [n_items, n_categories] CSR, rows sum to 1 (or 0)
    categories: sp.csr_matrix
    n_categories: int
    #: [n_items, months + 1] cumulative interactions per month
    cum_month: npt.NDArray[np.float32]
    first_seen: npt.NDArray[np.float64]
    t_origin: float
    user_first: npt.NDArray[np.float64]
    user_last: npt.NDArray[np.float64]
    #: binary users x items of the window (the user's history)
    user_items: sp.csr_matrix

    @classmethod
    def build(
        cls,
        window: InteractionLog,
        n_users: int,
        n_items: int,
        item_categories: list[list[str]],
    ) -> Context:
        keep = row_weights(window) > 0
        users, items, ts = window.users[keep], window.items[keep], window.ts[keep]
        x = sp.csr_matrix((np.ones(len(users), np.float32), (users, items)), shape=(n_users, n_items))
        x.sum_duplicates()
        x.data[:] = 1.0
        counts = np.asarray(x.sum(axis=0)).ravel()
        log_pop = (np.log1p(counts) / np.log1p(max(float(counts.max(initial=0.0)), 1.0))).astype(np.float32)
        vocab = sorted({c for cats in item_categories for c in cats})
        ci = {c: k for k, c in enumerate(vocab)}
        rows = [i for i, cats in enumerate(item_categories) for _ in cats]
        cols = [ci[c] for cats in item_categories for c in cats]
        cat = sp.csr_matrix(
            (np.ones(len(rows), np.float32), (rows, cols)), shape=(n_items, max(len(vocab), 1))
        )
        sums = np.asarray(cat.sum(axis=1)).ravel()
        cat = sp.diags(np.where(sums > 0, 1.0 / np.maximum(sums, 1.0), 0.0).astype(np.float32)) @ cat
        t_origin = float(ts.min()) if len(ts) else 0.0
        t_end = float(ts.max()) if len(ts) else 0.0
        total = int((t_end - t_origin) // MONTH_S) + 3
        n_months = min(total, MAX_MONTHS)
        # the newest months keep their own bins; anything older shares bin 0
        t_origin += MONTH_S * (total - n_months)
        month = np.clip((ts - t_origin) // MONTH_S, 0, n_months - 1).astype(np.int64)
        per = np.zeros((n_items, n_months + 1), np.float32)
        np.add.at(per, (items, month + 1), 1.0)
        first = np.full(n_items, np.inf)
        np.minimum.at(first, items, ts)
        ufirst = np.full(n_users, np.inf)
        ulast = np.full(n_users, -np.inf)
        np.minimum.at(ufirst, users, ts)
        np.maximum.at(ulast, users, ts)
        return cls(
            log_pop=log_pop,
            categories=cat.tocsr(),
            n_categories=len(vocab),
            cum_month=np.cumsum(per, axis=1),
            first_seen=first,
            t_origin=t_origin,
            user_first=ufirst,
            user_last=ulast,
            user_items=x,
        )


@dataclass(frozen=True, slots=True)
class CFModels:
    """One fit of the CF models the fusion combines (the time-local model over the item-linear
    model's head, as `fit_sequential(window, linear.head, ...)` fits it)."""

    linear: ItemLinearModel
    sequential: SequentialModel | None
    als: CFModel


@dataclass(slots=True)
class Pools:
    """Per-user candidate pools (-1 padded), their features and the blend's own order."""

    users: npt.NDArray[np.int32]  # [users]
    items: npt.NDArray[np.int32]  # [users, C]
    features: npt.NDArray[np.float32]  # [users, C, F]
    blend: npt.NDArray[np.float32]  # [users, C] blend score (-inf where padded)

    @property
    def mask(self) -> npt.NDArray[np.bool_]:
        return self.items >= 0


def pools(
    models: CFModels,
    ctx: Context,
    users: npt.NDArray[np.int32],
    params: FusionParams,
    *,
    weights: BlendWeights,
) -> Pools:
    """Candidate pools and features for `users` (the blend's top united with ALS's top)."""
    n_items = models.linear.n_items
    width = params.depth + params.als_depth
    out_i = np.full((len(users), width), -1, np.int32)
    out_f = np.zeros((len(users), width, len(FUSION_FEATURES)), np.float32)
    out_b = np.full((len(users), width), -np.inf, np.float32)
    batch = _rows_per_block(n_items)
    for lo in range(0, len(users), batch):
        block = users[lo : lo + batch]
        i, f, b = _block(models, ctx, block, params, weights)
        out_i[lo : lo + len(block), : i.shape[1]] = i
        out_f[lo : lo + len(block), : i.shape[1]] = f
        out_b[lo : lo + len(block), : i.shape[1]] = b
    return Pools(users, out_i, out_f, out_b)


def _block(
    models: CFModels,
    ctx: Context,
    block: npt.NDArray[np.int32],
    params: FusionParams,
    weights: BlendWeights,
) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """One block of users' pools. EASE and the time-local model score nothing outside the head:
    they are computed over the head only ([block, head]); ALS is the one model scored over the
    whole catalogue (its top can be anywhere), so outside the head the blend is its ALS term. Everything else is gathered at the pool's
    (at most depth + als_depth) candidates, so the cost per user grows with the catalogue only
    through the ALS product and its top-k."""
    linear, sequential, model = models.linear, models.sequential, models.als
    n_items = linear.n_items
    head = linear.head.astype(np.int64)
    n_head = len(head)
    head_pos = np.full(n_items, -1, np.int64)
    head_pos[head] = np.arange(n_head)
    seen = linear.user_items[block]
    r, c = seen.nonzero()
    seen_pos = head_pos[c]
    hr, hc = r[seen_pos >= 0], seen_pos[seen_pos >= 0]  # seen head items, in head positions
    s_e = linear.head_scores(block)
    s_e[hr, hc] = -np.inf
    if sequential is not None:
        s_q = sequential.head_scores(linear.user_items, block)  # fitted on the same head
        s_q[hr, hc] = -np.inf
    else:
        s_q = np.zeros_like(s_e)
        s_q[hr, hc] = -np.inf
    # relative to each row's best; over the head alone this is the same as over the catalogue
    # (items outside the head score 0, and a best <= 0 leaves a row unchanged either way)
    rel_e, rel_q = _relative_rows(s_e), _relative_rows(s_q)
    uf = model.user_factors[block]
    s_a = (uf @ model.item_factors.T).astype(np.float32)
    seen_a = model.user_items[block]
    ra, ca = seen_a.nonzero()
    s_a[ra, ca] = -np.inf
    s_a[r, c] = -np.inf
    has_als = np.abs(uf).sum(axis=1) > 0
    rel_a = _relative_rows(s_a)
    # the blend over the head; a candidate outside it has only its ALS term (cf.fused_top_n
    # blends over the catalogue, where EASE and the time-local model score 0 outside the head)
    rel_a_pos = relative_als(s_a)
    blend = weights.combine(rel_e, rel_q, rel_a_pos[:, head] if n_head else None)

    d = params.depth
    top_b = top_columns(blend, d) if n_head else np.zeros((len(block), 0), np.int64)  # head positions
    ok_b = np.take_along_axis(blend, top_b, axis=1) > 0
    top_a = top_columns(s_a, params.als_depth)
    ok_a = np.isfinite(np.take_along_axis(s_a, top_a, axis=1)) & has_als[:, None]
    top_e = top_columns(s_e, d) if n_head else top_b
    ok_e = np.take_along_axis(s_e, top_e, axis=1) > 0
    top_q = top_columns(s_q, d) if n_head else top_b
    ok_q = np.take_along_axis(s_q, top_q, axis=1) > 0

    cand = np.concatenate([np.where(ok_b, head[top_b], -1), np.where(ok_a, top_a, -1)], axis=1)
    cand = np.sort(cand, axis=1)
    dup = np.zeros(cand.shape, np.bool_)
    dup[:, 1:] = cand[:, 1:] == cand[:, :-1]
    cand[dup] = -1
    rows = np.arange(len(block))[:, None]

    def at_head(m: npt.NDArray[np.float32], items: npt.NDArray[np.int64]) -> npt.NDArray[np.float32]:
        """Head-space `m` at catalogue `items` (valid, unseen: 0 outside the head)."""
        pos = head_pos[np.maximum(items, 0)]
        return np.where(pos >= 0, m[rows, np.maximum(pos, 0)], 0.0).astype(np.float32)

    def rel_als(items: npt.NDArray[np.int64]) -> npt.NDArray[np.float32]:
        return rel_a[rows, np.maximum(items, 0)]

    # valid candidates first (by blend score, then ALS), padding last
    valid = cand >= 0
    key_b = np.where(valid, at_head(blend, cand), -np.inf)
    key_a = np.where(valid, rel_als(cand), -np.inf)
    key_b = np.where(np.isfinite(key_b) & (key_b > 0), key_b, -1.0)
    order = np.lexsort((-key_a, -key_b, ~valid), axis=1)
    cand = np.take_along_axis(cand, order, axis=1)
    valid = cand >= 0
    safe = np.maximum(cand, 0)

    def kept(v: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        return np.where(valid & np.isfinite(v), v, 0.0).astype(np.float32)

    def rrank(top: npt.NDArray[np.int64], ok: npt.NDArray[np.bool_]) -> npt.NDArray[np.float32]:
        """Reciprocal rank of each candidate in `top` (catalogue items; 0 when absent)."""
        rk, ck = np.nonzero(ok)
        keys = rk.astype(np.int64) * n_items + top[rk, ck]
        sort = np.argsort(keys, kind="stable")
        keys, vals = keys[sort], (1.0 / (1.0 + ck[sort])).astype(np.float32)
        want = (rows * n_items + safe).ravel()
        at = np.minimum(np.searchsorted(keys, want), max(len(keys) - 1, 0))
        hit = (keys[at] == want) if len(keys) else np.zeros(len(want), np.bool_)
        out = np.where(hit, vals[at] if len(keys) else 0.0, 0.0).reshape(cand.shape)
        return np.where(valid, out, 0.0).astype(np.float32)

    # category affinity: the user's category profile (share of history per category) against
    # the candidate's categories, x n_categories so 1 means "as likely as a uniform profile"
    hist = ctx.user_items[block]
    profile = np.asarray((hist @ ctx.categories).todense(), np.float32)
    tot = profile.sum(axis=1, keepdims=True)
    profile = np.where(tot > 0, profile / np.maximum(tot, 1e-9), 0.0).astype(np.float32)
    cats = ctx.categories[safe.ravel()]
    per_row = np.repeat(np.arange(len(block)), cand.shape[1])
    affinity = np.asarray(cats.multiply(profile[per_row]).sum(axis=1), np.float32).reshape(cand.shape)
    affinity = affinity * np.float32(max(ctx.n_categories, 1))
    n_hist = np.diff(hist.indptr).astype(np.float32)
    first, last = ctx.user_first[block], ctx.user_last[block]
    known = np.isfinite(first)
    n_months = ctx.cum_month.shape[1] - 1
    m_lo = np.where(known, ((np.where(known, first, 0.0) - ctx.t_origin) // MONTH_S) - 1, 0)
    m_hi = np.where(known, ((np.where(known, last, 0.0) - ctx.t_origin) // MONTH_S) + 2, n_months)
    m_lo = np.clip(m_lo, 0, n_months).astype(np.int64)
    m_hi = np.clip(m_hi, 0, n_months).astype(np.int64)
    win = np.log1p(ctx.cum_month[safe, m_hi[:, None]] - ctx.cum_month[safe, m_lo[:, None]])
    win = np.where(valid, win, 0.0)
    win = win / np.maximum(win.max(axis=1, keepdims=True), 1e-6)
    fs = ctx.first_seen[safe]
    lastc = np.where(known, last, np.inf)[:, None]
    gap = np.where(
        np.isfinite(fs) & np.isfinite(lastc), (fs - np.where(np.isfinite(lastc), lastc, 0.0)) / YEAR_S, 0.0
    )
    rel_a_c = kept(rel_als(cand))
    # the blend at each candidate: over the head, or its ALS term alone outside it
    outside = valid & (head_pos[safe] < 0)
    blend_c = np.where(valid, at_head(blend, cand), -np.inf).astype(np.float32)
    als_c = rel_a_pos[rows, safe]
    als_c = np.float32(weights.als) * np.where(np.isfinite(als_c), als_c, 0.0)  # -inf: padding
    blend_c = np.where(outside, als_c, blend_c).astype(np.float32)
    blend_max = np.where(valid, blend_c, -np.inf).max(axis=1, keepdims=True)
    columns = {
        "blend_rel": kept(blend_c / np.maximum(blend_max, 1e-6)),
        "blend_rrank": rrank(head[top_b], ok_b),
        "ease_rel": kept(at_head(rel_e, cand)),
        "ease_rrank": rrank(head[top_e], ok_e),
        "seq_rel": kept(at_head(rel_q, cand)),
        "seq_rrank": rrank(head[top_q], ok_q),
        "als_rel": rel_a_c,
        "als_rrank": rrank(top_a, ok_a),
        "item_log_popularity": np.where(valid, ctx.log_pop[safe], 0.0),
        "category_affinity": kept(affinity),
        "user_log_activity": np.where(valid, (np.log1p(n_hist) / 10.0)[:, None], 0.0),
        "window_popularity": win,
        "first_seen_after_user": np.where(valid, gap > 0, False),
        "first_seen_gap": np.where(valid, np.clip(gap, -5.0, 5.0) / 5.0, 0.0),
    }
    feats = np.stack([np.asarray(columns[n], np.float32) for n in FUSION_FEATURES], axis=2)
    # candidates without a positive blend score sit below every one with, in ALS's order
    bl = np.where(valid & ~(blend_c > 0), -1.0 + rel_a_c * 0.5, blend_c).astype(np.float32)
    return cand.astype(np.int32), feats, bl


@dataclass(slots=True)
class FusionModel:
    """Standardisation + an ensemble of small MLPs, evaluated in numpy (batch path only)."""

    mean: npt.NDArray[np.float32]
    scale: npt.NDArray[np.float32]
    members: list[list[tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]]] = field(default_factory=list)

    def logits(self, feats: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        x = (feats - self.mean) / self.scale
        total = np.zeros(feats.shape[:-1], np.float32)
        for layers in self.members:
            h = x
            for k, (w, b) in enumerate(layers):
                h = h @ w + b
                if k < len(layers) - 1:
                    h = np.maximum(h, 0.0)
            total += h[..., 0]
        return total

    def order(self, p: Pools, n: int) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.float32]]:
        """Top-`n` of each pool by fused logit, scores mapped into (0, 1] (rank-preserving)."""
        lg = np.where(p.mask, self.logits(p.features), -np.inf)
        o = np.argsort(-lg, axis=1, kind="stable")[:, :n]
        items = np.take_along_axis(p.items, o, axis=1)
        s = np.take_along_axis(lg, o, axis=1)
        ok = np.isfinite(s)
        hi = np.where(ok, s, -np.inf).max(axis=1, keepdims=True)
        lo = np.where(ok, s, np.inf).min(axis=1, keepdims=True)
        span = np.where(hi > lo, hi - lo, 1.0)
        rel = np.where(ok, 0.01 + 0.99 * (s - lo) / span, 0.0).astype(np.float32)
        items = np.where(ok, items, -1).astype(np.int32)
        return items, rel


def user_clustered_se(diff: npt.NDArray[np.float64], users: npt.NDArray[np.int32]) -> float:
    """Standard error of a mean per-list difference when a user has several lists (one per
    carve-out). One user's lists share most of their features and labels, so the user, not the
    list, is the independent unit: the SE over the users' mean differences (a list-level SE
    shrinks with the folds without any more evidence: 1.1-1.3x too small on ml-latest-small's
    six carve-outs, up to sqrt(folds) for identical lists)."""
    _, user_of = np.unique(users, return_inverse=True)
    per_user = np.bincount(user_of, weights=diff) / np.bincount(user_of)
    if len(per_user) < 2:
        return 0.0
    return float(per_user.std(ddof=1) / np.sqrt(len(per_user)))


def adopt(gain: float, gain_se: float, margin_se: float) -> bool:
    """Whether the fused order replaces the blend's: its validation gain against the margin."""
    return gain > margin_se * gain_se


def blend_order(p: Pools, n: int) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.float32]]:
    o = np.argsort(-p.blend, axis=1, kind="stable")[:, :n]
    items = np.take_along_axis(p.items, o, axis=1)
    s = np.take_along_axis(p.blend, o, axis=1)
    ok = np.isfinite(s)
    return np.where(ok, items, -1).astype(np.int32), _relative(np.where(ok, np.maximum(s, 0.0), 0.0))


def ndcg_lists(
    order: npt.NDArray[np.int32], truth: list[npt.NDArray[np.int64]], k: int
) -> npt.NDArray[np.float64]:
    """Per-list nDCG@k of `order` (items, -1 padded) against each list's relevant items (the
    project's one definition, `ranking_metrics.ndcg_at_k`)."""
    return np.asarray(
        [
            ndcg_at_k(order[row, :k].tolist(), set(rel.tolist()), k)  # -1 is never relevant
            for row, rel in enumerate(truth)
        ],
        np.float64,
    )


def adoption_half(users: npt.NDArray[np.int32], seed: int) -> npt.NDArray[np.bool_]:
    """Which validation lists judge the adoption (True) rather than the epoch choice: half of
    the users, all lists of a user on one side. Judging on the users whose lists chose each
    member's best epoch would reward that choice's luck: over ml-latest-small's validation
    splits the fusion cleared two standard errors there and then lost to the blend on the held
    out items (docs/training.md)."""
    if not len(users):
        return np.zeros(0, np.bool_)
    side = np.random.default_rng([seed, 2]).random(int(users.max()) + 1) < 0.5
    half = side[users]
    if half.all() or not half.any():  # one user (or one side empty): both jobs on all lists
        return np.ones(len(users), np.bool_)
    return half


def train_fusion(
    train: tuple[Pools, npt.NDArray[np.float32]],
    val: tuple[Pools, list[npt.NDArray[np.int64]]],
    params: FusionParams,
    *,
    seed: int,
    k: int = 10,
) -> tuple[FusionModel, dict[str, Any]]:
    """Listwise MLPs on the training pools. Each member keeps its best epoch on half of the
    validation users' pools; the reported gain over the blend is measured on the other half
    (`adoption_half`)."""
    import tensorflow as tf

    pools_t, labels = train
    feats = pools_t.features[pools_t.mask]
    mean = feats.mean(axis=0).astype(np.float32)
    std = feats.std(axis=0)
    # a constant column is ignored, not blown up by a tiny scale
    scale = np.where(std > 1e-6, std, 1e6).astype(np.float32)
    keep = labels.sum(axis=1) > 0  # a list without a positive teaches nothing listwise
    # pools are padded to depth + als_depth; the union is usually shorter (valid slots first)
    width = int(pools_t.mask.sum(axis=1).max(initial=1))
    x = ((pools_t.features[keep, :width] - mean) / scale).astype(np.float32)
    y = labels[keep, :width] / labels[keep, :width].sum(axis=1, keepdims=True)
    m = pools_t.mask[keep, :width].astype(np.float32)
    pv, truth = val
    vw = int(pv.mask.sum(axis=1).max(initial=1))
    judge = adoption_half(pv.users, seed)
    choose = ~judge if (~judge).any() else judge
    pv_all = Pools(pv.users, pv.items[:, :vw], pv.features[:, :vw], pv.blend[:, :vw])
    pv, choose_truth = _rows(pv_all, choose), [t for t, c in zip(truth, choose.tolist(), strict=True) if c]
    pj, judge_truth = _rows(pv_all, judge), [t for t, j in zip(truth, judge.tolist(), strict=True) if j]
    # All members train in one graph, each on its own permutation of the lists (so each sees
    # its own batches): a step costs about what one member's step costs, and Keras's per-step
    # overhead, not the arithmetic, is what a small MLP's training time is made of.
    tf.keras.utils.set_random_seed(seed)
    n_members = params.members
    perms = [np.arange(len(x))] + [
        np.random.default_rng(seed + member).permutation(len(x)) for member in range(1, n_members)
    ]
    x_ins, m_ins, outs = [], [], []
    for member in range(n_members):
        x_in = tf.keras.Input(shape=(None, x.shape[2]), name=f"x{member}")
        m_in = tf.keras.Input(shape=(None,), name=f"mask{member}")
        h = tf.keras.layers.Dense(params.hidden, activation="relu", name=f"m{member}_0")(x_in)
        h = tf.keras.layers.Dense(params.hidden, activation="relu", name=f"m{member}_1")(h)
        score = tf.keras.layers.Reshape((-1,))(tf.keras.layers.Dense(1, name=f"m{member}_2")(h))
        masked = tf.keras.layers.Lambda(lambda t: t[0] + (t[1] - 1.0) * 1e9)([score, m_in])
        x_ins.append(x_in)
        m_ins.append(m_in)
        outs.append(masked)
    net = tf.keras.Model([*x_ins, *m_ins], outs)
    net.compile(
        optimizer=tf.keras.optimizers.Adam(params.learning_rate),
        loss=[tf.keras.losses.CategoricalCrossentropy(from_logits=True) for _ in range(n_members)],
    )
    best: list[tuple[float, Any]] = [(-1.0, []) for _ in range(n_members)]
    curves: list[list[float]] = [[] for _ in range(n_members)]

    def keep_best(epoch: int, logs: Any = None) -> None:
        for member in range(n_members):
            layers = [
                (
                    np.asarray(net.get_layer(f"m{member}_{j}").kernel, np.float32),
                    np.asarray(net.get_layer(f"m{member}_{j}").bias, np.float32),
                )
                for j in range(3)
            ]
            v = float(ndcg_lists(FusionModel(mean, scale, [layers]).order(pv, k)[0], choose_truth, k).mean())
            curves[member].append(round(v, 5))
            if v > best[member][0]:
                best[member] = (v, layers)

    # one fit call (the inputs are converted once); each member keeps its best epoch on validation
    net.fit(
        [*(x[pm] for pm in perms), *(m[pm] for pm in perms)],
        [y[pm] for pm in perms],
        epochs=params.epochs,
        batch_size=params.batch_size,
        verbose=0,
        shuffle=True,
        callbacks=[tf.keras.callbacks.LambdaCallback(on_epoch_end=keep_best)],
    )
    model_out = FusionModel(mean, scale, [layers for _, layers in best])
    fused = ndcg_lists(model_out.order(pj, k)[0], judge_truth, k)
    blend = ndcg_lists(blend_order(pj, k)[0], judge_truth, k)
    diff = fused - blend
    return model_out, {
        "fusion_train_lists": int(keep.sum()),
        "fusion_epoch_choice_lists": len(choose_truth),
        "fusion_validation_lists": len(judge_truth),
        f"fusion_validation_ndcg@{k}": round(float(fused.mean()), 5),
        f"fusion_validation_blend_ndcg@{k}": round(float(blend.mean()), 5),
        "fusion_validation_gain_se": round(user_clustered_se(diff, pj.users), 5),
        "fusion_validation_curves": curves,
    }


FitModels = Callable[[InteractionLog], CFModels]


class CarveOuts:
    """Random hold-outs of users' (user, item) cells in a window: the validation data of the
    choices a retrain makes on its own data (the fusion; the item-linear regularisation)."""

    def __init__(self, window: InteractionLog, n_users: int, n_items: int) -> None:
        self.window, self.n_items = window, n_items
        keep_rows = row_weights(window) > 0
        self.cell = window.users.astype(np.int64) * n_items + window.items
        self.cells = np.unique(self.cell[keep_rows])
        self.cu = (self.cells // n_items).astype(np.int64)
        #: users with at least 4 items (one held out of four leaves three to fit on)
        self.eligible = np.flatnonzero(np.bincount(self.cu, minlength=n_users) >= 4)

    def fold(
        self, max_users: int, ratio: float, rng: np.random.Generator
    ) -> tuple[InteractionLog, npt.NDArray[np.int32], npt.NDArray[np.int64]]:
        """(the window without the held-out cells, the carved users, the held-out cells sorted):
        up to `max_users` eligible users (a seeded sample) each lose a random `ratio` of cells."""
        chosen = self.eligible
        if len(chosen) > max_users:
            chosen = np.sort(rng.choice(chosen, max_users, replace=False))
        cells, cell = self.cells, self.cell
        sel = np.isin(self.cu, chosen)
        held = np.zeros(len(cells), np.bool_)
        held[np.flatnonzero(sel)[rng.random(int(sel.sum())) < ratio]] = True
        # a row is dropped when its (user, item) cell is held out: a sorted lookup (rows with a
        # non-positive weight may have cells outside `cells`: those are never held)
        at = np.minimum(np.searchsorted(cells, cell), len(cells) - 1)
        fit_log = self.window.take(np.flatnonzero(~((cells[at] == cell) & held[at])))
        return fit_log, chosen.astype(np.int32), cells[held]

    def truth(
        self, users: npt.NDArray[np.int32], held_cells: npt.NDArray[np.int64]
    ) -> list[npt.NDArray[np.int64]]:
        """Each user's held-out items (catalogue indices)."""
        hu = (held_cells // self.n_items).astype(np.int64)
        hi = (held_cells % self.n_items).astype(np.int64)
        bounds = np.searchsorted(hu, users, side="left"), np.searchsorted(hu, users, side="right")
        return [hi[a:b] for a, b in zip(*bounds, strict=True)]


def carve_outs(
    window: InteractionLog,
    n_users: int,
    n_items: int,
    item_categories: list[list[str]],
    fit: FitModels,
    *,
    params: FusionParams,
    weights: BlendWeights,
    rng: np.random.Generator,
    progress: Callable[[str], None] | None = None,
) -> tuple[tuple[Pools, npt.NDArray[np.float32]], tuple[Pools, list[npt.NDArray[np.int64]]], dict[str, Any]]:
    """Training pools + labels and validation pools + relevant items from `params.folds`
    carve-outs of `window`: per fold, up to `params.users` users with at least 4 items lose a
    random `ratio` of their items, the models are refitted on the rest, and each such user's
    pool is labelled with the held-out items. Validation users are a share of all users drawn
    once: a validation user's lists are validation lists in every fold."""
    cuts = CarveOuts(window, n_users, n_items)
    if not len(cuts.eligible):
        width, n_f = params.depth + params.als_depth, len(FUSION_FEATURES)
        empty = Pools(
            np.zeros(0, np.int32),
            np.full((0, width), -1, np.int32),
            np.zeros((0, width, n_f), np.float32),
            np.zeros((0, width), np.float32),
        )
        return (empty, np.zeros((0, width), np.float32)), (empty, []), {"fusion_folds": 0}
    train_p: list[Pools] = []
    train_y: list[npt.NDArray[np.float32]] = []
    val_p: list[Pools] = []
    val_truth: list[npt.NDArray[np.int64]] = []
    covered = positives = 0
    # validation users are drawn once, not per fold: a user's lists in every fold share most of
    # their features and labels, so a user validated in one fold and trained on in another
    # would make the epoch choice (and the adoption) reward memorising users
    val_user = rng.random(n_users) < params.validation
    for fold in range(params.folds):
        fit_log, users, held_cells = cuts.fold(params.users, params.ratio, rng)
        models = fit(fit_log)
        ctx = Context.build(fit_log, n_users, n_items, item_categories)
        p = pools(models, ctx, users, params, weights=weights)
        truth = cuts.truth(users, held_cells)
        is_val = val_user[users]
        # label = the pool's (user, item) cell is held out
        pool_cells = users.astype(np.int64)[:, None] * n_items + np.maximum(p.items, 0)
        at = np.minimum(np.searchsorted(held_cells, pool_cells), max(len(held_cells) - 1, 0))
        labels = (
            (p.mask & (held_cells[at] == pool_cells)).astype(np.float32)
            if len(held_cells)
            else np.zeros(p.items.shape, np.float32)
        )
        covered += int(labels.sum())
        positives += int(sum(len(t) for t in truth))
        train_p.append(_rows(p, ~is_val))
        train_y.append(labels[~is_val])
        val_p.append(_rows(p, is_val))
        val_truth.extend(t for t, v in zip(truth, is_val.tolist(), strict=True) if v)
        if progress is not None:
            progress(f"fusion carve-out {fold + 1}/{params.folds}: {len(users)} users")
        if sum(len(t) for t in train_y) + len(val_truth) >= params.max_lists:
            break
    metrics = {
        "fusion_folds": len(train_p),
        "fusion_carve_out_recall": round(covered / max(positives, 1), 4),
    }
    return (_concat(train_p), np.concatenate(train_y)), (_concat(val_p), val_truth), metrics


def _rows(p: Pools, rows: npt.NDArray[np.bool_]) -> Pools:
    return Pools(p.users[rows], p.items[rows], p.features[rows], p.blend[rows])


def _concat(ps: list[Pools]) -> Pools:
    return Pools(
        np.concatenate([p.users for p in ps]),
        np.concatenate([p.items for p in ps]),
        np.concatenate([p.features for p in ps]),
        np.concatenate([p.blend for p in ps]),
    )


#: Users whose pools are held at once when publishing (pools are [users, depth + als_depth,
#: features] float32: 4,096 users x 300 x 14 is 69 MB).
PUBLISH_CHUNK = 4096


def fused_lists(
    models: CFModels,
    ctx: Context,
    users: npt.NDArray[np.int32],
    n: int,
    *,
    fusion: FusionModel,
    params: FusionParams,
    weights: BlendWeights,
) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.float32]]:
    """The published CF lists in the fused order: top `n` of each user's pool, -1 padded."""
    n_out = min(n, params.depth + params.als_depth)
    out_i = np.full((len(users), n_out), -1, np.int32)
    out_s = np.zeros((len(users), n_out), np.float32)
    for lo in range(0, len(users), PUBLISH_CHUNK):
        chunk = users[lo : lo + PUBLISH_CHUNK]
        p = pools(models, ctx, chunk, params, weights=weights)
        i, s = fusion.order(p, n_out)
        out_i[lo : lo + len(chunk), : i.shape[1]] = i
        out_s[lo : lo + len(chunk), : s.shape[1]] = s
    return out_i, out_s
