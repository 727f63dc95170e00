"""The promotion gate: publish a new model only when it is not worse than the live one."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

GATE_METRIC = "ndcg@10"
DEFAULT_MARGIN = 0.02


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
) -> GateDecision:
    """`margin` is absolute on `metric`: publish when new >= live - margin.

    `live_metrics` should be the live bundle measured on the new model's holdout (basis
    "same_holdout"); `basis_note` says why another basis had to be used."""
    new = _metric(new_metrics, metric)
    live = _metric(live_metrics, metric)
    if basis == "same_holdout":
        where = f"on the same holdout{f' ({basis_note})' if basis_note else ''}"
    else:
        where = f"({basis}{f': {basis_note}' if basis_note else ''})"

    def d(publish: bool, reason: str) -> GateDecision:
        return GateDecision(publish, reason, metric, new, live, live_version, margin, basis)

    if live_version is None:
        return d(True, "no live model: the first model is published")
    if live_version == new_version:
        return d(True, f"{new_version} is already live: re-publishing is a no-op")
    if new is None:
        return d(False, f"the new model has no holdout {metric} (no evaluable users); keeping {live_version}")
    if live is None:
        return d(
            True,
            f"live model {live_version} has no {metric} {where}; the new model ({new:.4f}) replaces it",
        )
    if new + margin < live:
        return d(
            False,
            f"{metric} {new:.4f} is worse than live {live_version} ({live:.4f}) by more than {margin} {where}",
        )
    return d(
        True, f"{metric} {new:.4f} vs live {live_version} {live:.4f} {where} (margin {margin}): not worse"
    )
