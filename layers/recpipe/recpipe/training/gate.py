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
) -> GateDecision:
    """`margin` is absolute on `metric`: publish when new >= live - margin."""
    new = _metric(new_metrics, metric)
    live = _metric(live_metrics, metric)

    def d(publish: bool, reason: str) -> GateDecision:
        return GateDecision(publish, reason, metric, new, live, live_version, margin)

    if live_version is None:
        return d(True, "no live model: the first model is published")
    if live_version == new_version:
        return d(True, f"{new_version} is already live: re-publishing is a no-op")
    if new is None:
        return d(False, f"the new model has no holdout {metric} (no evaluable users); keeping {live_version}")
    if live is None:
        return d(
            True, f"live model {live_version} recorded no {metric}; the new model ({new:.4f}) replaces it"
        )
    if new + margin < live:
        return d(
            False, f"{metric} {new:.4f} is worse than live {live_version} ({live:.4f}) by more than {margin}"
        )
    return d(True, f"{metric} {new:.4f} vs live {live_version} {live:.4f} (margin {margin}): not worse")
