"""Kinesis -> FeatureUpdater: user features (DynamoDB), session and trending (Redis).

Records are grouped per user (one read and one conditional write per user per batch) instead of
Powertools' record-at-a-time BatchProcessor; the response is the same partial-batch contract:
`batchItemFailures` with the sequence numbers to redeliver.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext
from recpipe.config import UpdaterSettings, load_settings
from recpipe.handler_kit.observability import Observability
from recpipe.stream.updater import records_from_lambda_event
from recpipe.stream.wiring import build_updater, settle_gc

# Built at import (recpipe.handler_kit): once per environment, not per batch.
settings = load_settings(UpdaterSettings)
obs = Observability()
updater = build_updater(settings)
# What initialisation built (SDK service models, clients) lives as long as the environment:
# frozen out of the collector's full passes, and the collector runs less often.
settle_gc()


@obs.handler()
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    records = records_from_lambda_event(event)
    cache = getattr(updater.users, "stats", None)
    before = replace(cache) if cache is not None else None
    result = updater.process(records, remaining_ms=context.get_remaining_time_in_millis)
    for name in ("applied", "duplicates", "poison", "retryable", "unprocessed", "conflicts"):
        obs.metrics.add_metric(f"Events_{name}", MetricUnit.Count, getattr(result, name))
    if cache is not None and before is not None:
        delta = cache.since(before)
        # Misses are DynamoDB reads; a falling hit rate means more active users than the cache.
        obs.metrics.add_metric("UserStateCache_hits", MetricUnit.Count, delta.hits)
        obs.metrics.add_metric("UserStateCache_misses", MetricUnit.Count, delta.misses)
    if result.failed:
        obs.logger.warning(
            "records returned for redelivery", extra={"failed": len(result.failed), "of": len(records)}
        )
    return result.batch_response()
