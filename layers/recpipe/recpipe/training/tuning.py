"""Choices a retrain makes on its own data: the item-linear (EASE) model's regularisation and
the weights of the fixed blend (EASE, the time-local EASE, ALS) that orders the CF lists.

Both move with the data. On ml-latest-small's validation splits the time-local EASE and ALS,
equally weighted, are best (EASE + 2 x the time-local model before ALS joined the blend); on a
generated shop in MovieLens format with 6,000 users and 920,000 ratings EASE wanted lambda 1,000
and no time-local term (docs/training.md). Fixed defaults are tuned to whatever data they were
chosen on. So every retrain carves a random quarter of some users' items out of the window
before its holdout, fits EASE at each regularisation of a small grid on the rest (one Gram
matrix, one inverse per value), the time-local model and ALS once, orders each carved user's
catalogue by the blend at each weight triple (each score relative to the user's best, as
`cf.fused_top_n` orders the published lists) and keeps the key whose lists find the held-out
items best. It moves off the defaults only when the gain is more than two standard errors of
the paired per-user difference (the best of twenty noisy keys beats the default by one
standard error easily): a noisy carve-out keeps the defaults.

ALS's ridge moves with the data too (ml-latest-small's carve-out wants 100, a generated
ml-1m-sized shop's 200, where 100 scores 0.019 nDCG@10 lower alone): each ridge of a small grid
is fitted on the carve-out and tried with every weight triple that weighs ALS, at the default
EASE regularisation (one ALS model beside the default's at a time: the retrain's memory peak
at 100,000 items leaves no room for a model per ridge across the EASE grid).

EASE's regularisation matters even when the chosen blend weighs EASE 0: the learned fusion's
EASE features come from that fit. So it is also chosen on EASE's own lists (the key
(lambda, 1, 0, 0) at every lambda, by the same two-standard-error rule), and that choice is the
one kept when the blend leaves EASE out (a generated ml-1m-sized shop had kept lambda 200
where EASE alone wants 1,000; docs/training.md).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from recpipe.domain.catalogue import InteractionLog
from recpipe.training.cf import (
    BlendWeights,
    CFModel,
    ItemLinearModel,
    SequentialModel,
    _relative_rows,
    _rows_per_block,
    fit_item_linear_grid,
    relative_als,
    top_columns,
)
from recpipe.training.fusion import CHOICE_MARGIN_SE, CarveOuts, adopt, ndcg_lists

FitSequential = Callable[[InteractionLog, npt.NDArray[np.int32]], SequentialModel]
#: the factor model fitted on a log with the given ALS ridge
FitALS = Callable[[InteractionLog, float], CFModel]
#: (item-linear regularisation, ALS ridge, EASE weight, time-local weight, ALS weight)
Key = tuple[float, float, float, float, float]
#: the weights whose lists choose EASE's regularisation on its own
LINEAR_ALONE = BlendWeights(1.0, 0.0, 0.0)


def key_of(regularization: float, ridge: float, weights: BlendWeights) -> Key:
    return (
        float(regularization),
        float(ridge),
        float(weights.linear),
        float(weights.sequential),
        float(weights.als),
    )


@dataclass(frozen=True, slots=True)
class BlendChoice:
    """The chosen (regularisation, ALS ridge, blend weights) and the figures behind the choice."""

    linear_regularization: float
    als_regularization: float
    weights: BlendWeights
    default: Key
    #: mean nDCG@k of the carve-out users' blend lists, per key
    ndcg: dict[Key, float]
    #: paired gain of the best key over the default key, and its standard error
    gain: float
    gain_se: float
    users: int
    #: EASE's own choice (LINEAR_ALONE's keys): the best regularisation's paired gain over the
    #: default's and its standard error (0, 0 with one regularisation)
    linear_gain: float = 0.0
    linear_gain_se: float = 0.0

    def metrics(self, k: int) -> dict[str, float]:
        out = {
            "linear_regularization": self.linear_regularization,
            "als_regularization": self.als_regularization,
            "linear_weight": self.weights.linear,
            "sequential_weight": self.weights.sequential,
            "als_weight": self.weights.als,
            "blend_tuning_users": float(self.users),
            f"blend_tuning_gain_ndcg@{k}": round(self.gain, 5),
            "blend_tuning_gain_se": round(self.gain_se, 5),
            f"linear_tuning_gain_ndcg@{k}": round(self.linear_gain, 5),
            "linear_tuning_gain_se": round(self.linear_gain_se, 5),
        }
        for (reg, ridge, we, wq, wa), v in self.ndcg.items():
            out[f"blend_tuning_l{reg:g}_r{ridge:g}_e{we:g}_q{wq:g}_a{wa:g}_ndcg@{k}"] = round(v, 5)
        return out


def choose_blend(
    window: InteractionLog,
    n_users: int,
    n_items: int,
    *,
    regularizations: tuple[float, ...],
    weights: tuple[BlendWeights, ...],
    default: tuple[float, BlendWeights],
    head: int,
    fit_sequential: FitSequential | None,
    fit_als: FitALS | None = None,
    als_default: float = 0.0,
    als_regularizations: tuple[float, ...] = (),
    users: int,
    ratio: float,
    rng: np.random.Generator,
    k: int = 10,
) -> BlendChoice | None:
    """The item-linear regularisation, ALS ridge and blend weights for data like `window`
    (None: no user has enough items to carve). Every regularisation is tried with every weight
    triple that gives EASE a weight (with none, the regularisation changes nothing: only the
    default's is scored); every ALS ridge (`als_default` and `als_regularizations`, passed to
    `fit_als`) with every triple that gives ALS a weight, the other ridges at the default
    regularisation only. A model whose fit is not given (None) contributes nothing, so triples
    that differ only in its weight are scored once. EASE alone (LINEAR_ALONE) is scored at every
    regularisation too, to choose the regularisation when the chosen blend weighs EASE 0."""
    regs = tuple(dict.fromkeys((float(default[0]), *(float(g) for g in regularizations))))
    ridges = tuple(dict.fromkeys((float(als_default), *(float(g) for g in als_regularizations))))
    ws = tuple(dict.fromkeys((default[1], *weights)))
    alone = (LINEAR_ALONE.linear, LINEAR_ALONE.sequential, LINEAR_ALONE.als)

    def effective(w: BlendWeights) -> tuple[float, float, float]:
        return (w.linear, w.sequential if fit_sequential else 0.0, w.als if fit_als else 0.0)

    # plan[lambda][ridge]: the triples scored with that EASE fit and that ALS fit
    plan: dict[float, dict[float, list[BlendWeights]]] = {}
    scored: dict[tuple[float, float, tuple[float, float, float]], Key] = {}
    probe = (LINEAR_ALONE,) if len(regs) > 1 else ()
    for reg in regs:
        for w in (*ws, *probe):
            eff = effective(w)
            at = reg if w.linear > 0 else regs[0]
            for ridge in ridges if eff[2] > 0 and at == regs[0] else ridges[:1]:
                if (at, ridge, eff) in scored or (w != default[1] and sum(eff) <= 0):
                    continue
                scored[(at, ridge, eff)] = key_of(at, ridge, w)
                plan.setdefault(at, {}).setdefault(ridge, []).append(w)
    cuts = CarveOuts(window, n_users, n_items)
    if not len(cuts.eligible):
        return None
    fit_log, carved, held_cells = cuts.fold(users, ratio, rng)
    truth = cuts.truth(carved, held_cells)
    per_key: dict[Key, npt.NDArray[np.float64]] = {}
    sequential: SequentialModel | None = None
    als = fit_als(fit_log, ridges[0]) if fit_als is not None and any(w.als > 0 for w in ws) else None
    fits = fit_item_linear_grid(fit_log, n_users, n_items, head=head, regularizations=tuple(plan))
    for reg, linear in zip(plan, fits, strict=True):
        if sequential is None and fit_sequential is not None:
            sequential = fit_sequential(fit_log, linear.head)  # the head does not depend on lambda
        for ridge, triples in plan[reg].items():
            # another ridge's model lives only while its triples are scored
            model = als if ridge == ridges[0] or fit_als is None else fit_als(fit_log, ridge)
            for w, ndcg in zip(
                triples,
                _blend_ndcg(linear, sequential, model, weights=triples, users=carved, truth=truth, k=k),
                strict=True,
            ):
                per_key[key_of(reg, ridge, w)] = ndcg
            del model
    base_key = key_of(regs[0], ridges[0], default[1])
    blends = {key: v for key, v in per_key.items() if BlendWeights(*key[2:]) in ws}
    chosen, gain, se = pick(blends, base_key)
    reg, linear_gain, linear_se = chosen[0], 0.0, 0.0
    if len(regs) > 1:
        own = {scored[(r, ridges[0], alone)]: per_key[scored[(r, ridges[0], alone)]] for r in regs}
        by_itself, linear_gain, linear_se = pick(own, scored[(regs[0], ridges[0], alone)])
        if chosen[2] <= 0:  # the blend leaves EASE out: only the fusion's features use the fit
            reg = by_itself[0]
    return BlendChoice(
        linear_regularization=reg,
        # a blend without ALS is keyed at the default ridge: it does not move the ridge
        als_regularization=chosen[1],
        weights=BlendWeights(*chosen[2:]),
        default=base_key,
        ndcg={key: float(v.mean()) for key, v in per_key.items()},
        gain=gain,
        gain_se=se,
        users=len(carved),
        linear_gain=linear_gain,
        linear_gain_se=linear_se,
    )


def pick(per_key: dict[Key, npt.NDArray[np.float64]], default: Key) -> tuple[Key, float, float]:
    """(chosen key, gain of the best key over `default`, its standard error): the best mean of
    per-user figures, taken only when its paired gain over the default's is more than two
    standard errors; else the default."""
    best = max(per_key, key=lambda key: float(per_key[key].mean()))
    diff = per_key[best] - per_key[default]
    se = float(diff.std(ddof=1) / np.sqrt(len(diff))) if len(diff) > 1 else 0.0
    gain = float(diff.mean())
    return (best if adopt(gain, se, CHOICE_MARGIN_SE) else default), gain, se


def _blend_ndcg(
    linear: ItemLinearModel,
    sequential: SequentialModel | None,
    als: CFModel | None,
    *,
    weights: list[BlendWeights],
    users: npt.NDArray[np.int32],
    truth: list[npt.NDArray[np.int64]],
    k: int,
) -> list[npt.NDArray[np.float64]]:
    """Per-user nDCG@k of the blend's order at each weight triple, over the catalogue (seen items
    never listed), as `cf.fused_top_n` orders the published lists."""
    out = [np.zeros(len(users), np.float64) for _ in weights]
    batch = _rows_per_block(linear.n_items)
    for lo in range(0, len(users), batch):
        block = users[lo : lo + batch]
        r, c = linear.user_items[block].nonzero()
        s = linear.scores(block)
        s[r, c] = -np.inf
        rel_e = _relative_rows(s)
        del s
        rel_q = rel_a = None
        if sequential is not None and any(w.sequential > 0 for w in weights):
            q = sequential.scores(linear.user_items, block)
            q[r, c] = -np.inf
            rel_q = _relative_rows(q)
            del q
        if als is not None and any(w.als > 0 for w in weights):
            a = (als.user_factors[block] @ als.item_factors.T).astype(np.float32)
            a[r, c] = -np.inf
            rel_a = relative_als(a)
            del a
        for j, w in enumerate(weights):
            blend = w.combine(rel_e, rel_q, rel_a)
            top = top_columns(blend, k)
            ok = np.take_along_axis(blend, top, axis=1) > 0
            lists = np.where(ok, top, -1).astype(np.int32)
            out[j][lo : lo + len(block)] = ndcg_lists(lists, truth[lo : lo + len(block)], k)
    return out
