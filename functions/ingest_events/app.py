"""POST /events: validate, put on Kinesis, write the session list (read-your-writes). 202/400/413."""

from __future__ import annotations

import os
from functools import lru_cache
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.event_handler import APIGatewayRestResolver, CORSConfig, Response
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext
from recpipe.config import settings
from recpipe.stream.ingest import EventIngestor, IngestError, jwt_subject
from recpipe.stream.wiring import build_ingestor

logger, tracer, metrics = Logger(), Tracer(), Metrics()
app = APIGatewayRestResolver(cors=CORSConfig(allow_origin=os.environ.get("CORS_ALLOW_ORIGIN", "*")))


@lru_cache(maxsize=1)
def ingestor() -> EventIngestor:
    return build_ingestor(settings())


@app.post("/events")
def post_events() -> Response[dict[str, Any]]:
    subject = jwt_subject(app.current_event.raw_event, settings().auth_mode)
    result = ingestor().handle(app.current_event.decoded_body, subject=subject)
    metrics.add_metric("EventsAccepted", MetricUnit.Count, len(result.accepted))
    metrics.add_metric("EventsRejected", MetricUnit.Count, len(result.rejected))
    if result.session_degraded:
        metrics.add_metric("SessionWriteFailed", MetricUnit.Count, 1)
        logger.warning("session write failed; events are on the stream", extra={"n": len(result.accepted)})
    return Response(202, "application/json", result.body())


@app.exception_handler(IngestError)
def refused(exc: IngestError) -> Response[dict[str, Any]]:
    metrics.add_metric(f"Refused_{exc.code}", MetricUnit.Count, 1)
    return Response(exc.status, "application/json", exc.body())


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
@tracer.capture_lambda_handler
@metrics.log_metrics(capture_cold_start_metric=True)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
