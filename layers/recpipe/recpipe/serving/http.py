"""The recommend handler's metrics and logs for served lists and model events.

Kept out of the handler so the handler reads like a table of contents and these rules are
unit-tested without Lambda.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit

from recpipe.serving.recommender import STAGES, RecommendationResult


def record_result(metrics: Metrics, logger: Logger, result: RecommendationResult) -> None:
    """One metric per candidate source and per fallback, the latency, and one log line."""
    metrics.add_metric(name="Latency", unit=MetricUnit.Milliseconds, value=result.took_ms)
    metrics.add_metric(name="Candidates", unit=MetricUnit.Count, value=result.n_candidates)
    for source, n in result.source_counts.items():
        metrics.add_metric(name=f"CandidatesFrom_{source}", unit=MetricUnit.Count, value=n)
    for name in result.degraded:
        metrics.add_metric(name=f"Degraded_{name}", unit=MetricUnit.Count, value=1)
    if result.cold_start:
        metrics.add_metric(name="ColdStartUser", unit=MetricUnit.Count, value=1)
    log = logger.warning if result.degraded else logger.info
    log(
        "recommendations served",
        extra={
            "user_id": result.user_id,
            "recommendation_id": result.recommendation_id,
            "model_version": result.model_version,
            "degraded": result.degraded,
            "failures": result.failures if result.degraded else None,
            "n_candidates": result.n_candidates,
            "n_items": len(result.items),
            "took_ms": round(result.took_ms, 3),
            "stages_ms": {s: round(result.timings[s], 3) for s in STAGES if s in result.timings},
        },
    )


def model_event_recorder(metrics: Metrics, logger: Logger) -> Any:
    """ModelProvider events -> a metric and a log line (a refused model is an error)."""
    names = {
        "model_loaded": "ModelLoaded",
        "model_load_failed": "ModelLoadFailed",
        "model_fetch_failed": "ModelFetchFailed",
        "model_pointer_failed": "ModelPointerFailed",
        "model_missing": "ModelMissing",
        "experiment_live": "ExperimentLive",
        "experiment_ended": "ExperimentEnded",
        "experiment_not_applied": "ExperimentNotApplied",
        "experiment_refused": "ExperimentRefused",
        "experiment_unreadable": "ExperimentUnreadable",
    }
    informational = {"model_loaded", "experiment_live", "experiment_ended"}

    def record(event: str, detail: dict[str, Any]) -> None:
        metrics.add_metric(name=names.get(event, event), unit=MetricUnit.Count, value=1)
        log = logger.info if event in informational else logger.error
        log(event, extra=detail)

    return record
