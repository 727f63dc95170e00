"""Choices a retrain makes on its own data: the item-linear (EASE) model's regularisation and
the time-local model's weight in the blend.

Both move with the data. On ml-latest-small's validation splits lambda 200 and weight 2 are
best (weight 1 with the earlier co-occurrence counts); on a generated shop in MovieLens format
with 6,000 users and 920,000 ratings the counts' blend found the held-out items worse than
EASE alone at lambda 1,000 (docs/training.md). Fixed
defaults are tuned to whatever data they were chosen on. So every retrain carves a random
quarter of some users' items out of the window before its holdout, fits EASE at each
regularisation of a small grid on the rest (one Gram matrix, one inverse per value), orders
each user's head by the blend at each weight (EASE and the time-local scores, each relative
to the user's best, as `cf.fused_top_n` orders the published lists) and keeps the pair whose
lists find the held-out items best. It moves off the defaults only when the gain is more than
two standard errors of the paired per-user difference (the best of twenty noisy pairs beats the
default by one standard error easily): a noisy carve-out keeps the defaults.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from recpipe.domain.catalogue import InteractionLog
from recpipe.training.cf import (
    ItemLinearModel,
    SequentialModel,
    _relative_rows,
    _rows_per_block,
    fit_item_linear_grid,
)
from recpipe.training.fusion import CHOICE_MARGIN_SE, CarveOuts, _top, adopt, ndcg_lists

FitSequential = Callable[[InteractionLog, npt.NDArray[np.int32]], SequentialModel]
#: (item-linear regularisation, time-local weight)
Key = tuple[float, float]


@dataclass(frozen=True, slots=True)
class BlendChoice:
    """The chosen (regularisation, time-local weight) and the figures behind the choice."""

    linear_regularization: float
    sequential_weight: float
    default: Key
    #: mean nDCG@k of the carve-out users' blend lists, per (regularisation, weight)
    ndcg: dict[Key, float]
    #: paired gain of the best pair over the default pair, and its standard error
    gain: float
    gain_se: float
    users: int

    def metrics(self, k: int) -> dict[str, float]:
        out = {
            "linear_regularization": self.linear_regularization,
            "sequential_weight": self.sequential_weight,
            "blend_tuning_users": float(self.users),
            f"blend_tuning_gain_ndcg@{k}": round(self.gain, 5),
            "blend_tuning_gain_se": round(self.gain_se, 5),
        }
        for (reg, w), v in self.ndcg.items():
            out[f"blend_tuning_l{reg:g}_w{w:g}_ndcg@{k}"] = round(v, 5)
        return out


def choose_blend(
    window: InteractionLog,
    n_users: int,
    n_items: int,
    *,
    regularizations: tuple[float, ...],
    weights: tuple[float, ...],
    default: Key,
    head: int,
    fit_sequential: FitSequential | None,
    users: int,
    ratio: float,
    rng: np.random.Generator,
    k: int = 10,
) -> BlendChoice | None:
    """The item-linear regularisation and time-local weight for data like `window` (None:
    no user has enough items to carve)."""
    regs = tuple(dict.fromkeys((float(default[0]), *(float(g) for g in regularizations))))
    ws = tuple(dict.fromkeys((float(default[1]), *(float(w) for w in weights))))
    if fit_sequential is None:  # no time-local scores: the weight changes nothing
        ws = (float(default[1]),)
    cuts = CarveOuts(window, n_users, n_items)
    if not len(cuts.eligible):
        return None
    fit_log, carved, held_cells = cuts.fold(users, ratio, rng)
    truth = cuts.truth(carved, held_cells)
    per_pair: dict[Key, npt.NDArray[np.float64]] = {}
    sequential: SequentialModel | None = None
    fits = fit_item_linear_grid(fit_log, n_users, n_items, head=head, regularizations=regs)
    for reg, linear in zip(regs, fits, strict=True):
        if sequential is None and fit_sequential is not None:
            sequential = fit_sequential(fit_log, linear.head)  # the head does not depend on lambda
        for w, ndcg in zip(
            ws, _blend_ndcg(linear, sequential, weights=ws, users=carved, truth=truth, k=k), strict=True
        ):
            per_pair[(reg, w)] = ndcg
    base_key = (regs[0], ws[0])
    chosen, gain, se = pick(per_pair, base_key)
    return BlendChoice(
        linear_regularization=chosen[0],
        sequential_weight=chosen[1],
        default=base_key,
        ndcg={key: float(v.mean()) for key, v in per_pair.items()},
        gain=gain,
        gain_se=se,
        users=len(carved),
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
    *,
    weights: tuple[float, ...],
    users: npt.NDArray[np.int32],
    truth: list[npt.NDArray[np.int64]],
    k: int,
) -> list[npt.NDArray[np.float64]]:
    """Per-user nDCG@k of the head's blend order at each time-local weight (seen items never
    listed), as `cf.fused_top_n` orders the head."""
    head = linear.head.astype(np.int64)
    out = [np.zeros(len(users), np.float64) for _ in weights]
    if not len(head):
        return out
    batch = _rows_per_block(linear.n_items)
    for lo in range(0, len(users), batch):
        block = users[lo : lo + batch]
        seen = linear.user_items[block][:, head]
        r, c = seen.nonzero()
        s = linear.head_scores(block)
        s[r, c] = -np.inf
        rel_e = _relative_rows(s)
        rel_q = np.zeros_like(rel_e)
        if sequential is not None:
            q = sequential.head_scores(linear.user_items, block)
            q[r, c] = -np.inf
            rel_q = _relative_rows(q)
        for j, w in enumerate(weights):
            blend = rel_e + np.float32(w) * rel_q if w > 0 else rel_e
            top = _top(blend, k)
            ok = np.take_along_axis(blend, top, axis=1) > 0
            lists = np.where(ok, head[top], -1).astype(np.int32)
            out[j][lo : lo + len(block)] = ndcg_lists(lists, truth[lo : lo + len(block)], k)
    return out
