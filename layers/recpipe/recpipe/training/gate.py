"""The promotion gate: publish a new model only when it is not worse than the live one, and
never a ranker that orders lists worse than its own candidates' CF order.

Both comparisons are paired, user by user, on the same holdout (at least 500 users, all when
fewer: `TrainParams.max_eval_users`), and the margin is derived from the standard error of the
per-user difference: worse means worse by more than SE_MULTIPLIER standard errors. The fixed
`margin` is only the fallback when per-user figures are missing (e.g. the live manifest basis)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

GATE_METRIC = "ndcg@10"
DEFAULT_MARGIN = 0.02
#: "Worse" = worse by more than this many standard errors of the paired per-user difference.
SE_MULTIPLIER = 2.0
#: Metrics keys (see training.holdout.score and pipeline._evaluate).
PER_USER = "per_user_ndcg"
CF_PER_USER = "cf_per_user_ndcg"


def paired_margin(new: Sequence[float], other: Sequence[float]) -> float | None:
    """SE_MULTIPLIER standard errors of the mean per-user difference (None: not comparable)."""
    if len(new) != len(other) or len(new) < 2:
        return None
    diff = [float(a) - float(b) for a, b in zip(new, other, strict=True)]
    mean = sum(diff) / len(diff)
    var = sum((d - mean) ** 2 for d in diff) / (len(diff) - 1)
    return SE_MULTIPLIER * math.sqrt(var / len(diff))


def _mean(values: Sequence[float]) -> float:
    return sum(float(v) for v in values) / len(values)


def worse_than_cf_order(ranked: Sequence[float], cf_order: Sequence[float]) -> bool:
    """The gate's ranker rule on per-user figures of the same users: the ranked lists are worse
    than the candidates' own CF order by more than SE_MULTIPLIER paired standard errors."""
    margin = paired_margin(ranked, cf_order)
    return margin is not None and _mean(ranked) + margin < _mean(cf_order)


@dataclass(frozen=True, slots=True)
class GateDecision:
    publish: bool
    reason: str
    metric: str
    new: float | None
    live: float | None
    live_version: str | None
    margin: float
    #: where `live` comes from: "same_holdout" (the live bundle scored on this run's holdout),
    #: "live_manifest" (fallback: the number the live bundle recorded on its own, older window)
    basis: str = "same_holdout"
    #: the candidates' own CF order on the same users, and the margin used against it
    cf_order: float | None = None
    cf_margin: float | None = None
    eval_users: int | None = None
    #: how the live margin was set: "2 SE" (paired per-user) or "fixed" (fallback)
    margin_basis: str = "fixed"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _metric(metrics: Mapping[str, Any] | None, name: str) -> float | None:
    if not metrics:
        return None
    value = metrics.get(name)
    return float(value) if isinstance(value, int | float) else None


def decide(
    new_metrics: Mapping[str, Any],
    live_metrics: Mapping[str, Any] | None,
    *,
    live_version: str | None,
    new_version: str,
    margin: float = DEFAULT_MARGIN,
    metric: str = GATE_METRIC,
    basis: str = "same_holdout",
    basis_note: str = "",
    candidates_metrics: Mapping[str, Any] | None = None,
) -> GateDecision:
    """Publish when the new model is not worse than its candidates' CF order (per-user figures
    of `candidates_metrics`, default `new_metrics`: the whole holdout) and not worse than live
    by more than the margin: SE_MULTIPLIER paired standard errors when both sides have per-user
    figures on the same holdout, else the fixed `margin` (absolute on `metric`).

    `live_metrics` should be the live bundle measured on the new model's holdout (basis
    "same_holdout"); `basis_note` says why another basis had to be used."""
    new = _metric(new_metrics, metric)
    live = _metric(live_metrics, metric)
    if basis == "same_holdout":
        where = f"on the same holdout{f' ({basis_note})' if basis_note else ''}"
    else:
        where = f"({basis}{f': {basis_note}' if basis_note else ''})"
    new_users = list((new_metrics or {}).get(PER_USER) or [])
    own = candidates_metrics if candidates_metrics is not None else new_metrics
    own_users = list((own or {}).get(PER_USER) or [])
    cf_users = list((own or {}).get(CF_PER_USER) or [])
    live_users = list((live_metrics or {}).get(PER_USER) or [])
    cf_order = _mean(cf_users) if cf_users else None
    cf_margin = paired_margin(own_users, cf_users)
    live_margin = paired_margin(new_users, live_users) if basis == "same_holdout" else None
    used_margin = live_margin if live_margin is not None else margin
    eval_users = len(own_users) or len(new_users) or None

    def d(publish: bool, reason: str) -> GateDecision:
        return GateDecision(
            publish,
            reason,
            metric,
            new,
            live,
            live_version,
            used_margin,
            basis,
            cf_order,
            cf_margin,
            eval_users,
            "2 SE" if live_margin is not None else "fixed",
        )

    if live_version is not None and live_version == new_version:
        return d(True, f"{new_version} is already live: re-publishing is a no-op")
    if new is None:
        keep = f"keeping {live_version}" if live_version else "nothing is published"
        return d(False, f"the new model has no holdout {metric} (no evaluable users); {keep}")
    if cf_order is not None and cf_margin is not None:
        ranked = _mean(own_users)
        if worse_than_cf_order(own_users, cf_users):
            return d(
                False,
                f"{metric} {ranked:.4f} is worse than its own candidates in CF order ({cf_order:.4f}) "
                f"by more than {SE_MULTIPLIER:g} SE ({cf_margin:.4f}) on {len(own_users)} users: "
                "the ranker makes lists worse",
            )
    if live_version is None:
        return d(True, "no live model: the first model is published")
    if live is None:
        return d(
            True,
            f"live model {live_version} has no {metric} {where}; the new model ({new:.4f}) replaces it",
        )
    how = f"{SE_MULTIPLIER:g} SE" if live_margin is not None else "fixed margin"
    if new + used_margin < live:
        return d(
            False,
            f"{metric} {new:.4f} is worse than live {live_version} ({live:.4f}) by more than "
            f"{used_margin:.4f} ({how}) {where}",
        )
    return d(
        True,
        f"{metric} {new:.4f} vs live {live_version} {live:.4f} {where} (margin {used_margin:.4f}, {how}): "
        "not worse",
    )
