"""POST /events: validate, put on Kinesis, write the session list (read-your-writes). 202/400/413."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext
from recpipe.config import IngestSettings, load_settings
from recpipe.handler_kit.api import JSON, api_resolver
from recpipe.handler_kit.identity import jwt_subject
from recpipe.handler_kit.observability import API_GATEWAY, Observability
from recpipe.stream.ingest import request_body
from recpipe.stream.wiring import build_ingestor

# Built at import (recpipe.handler_kit).
settings = load_settings(IngestSettings)
obs = Observability()
app = api_resolver(settings, obs.logger, obs.metrics)
ingestor = build_ingestor(settings)


@app.post("/events")
def post_events() -> Response[dict[str, Any]]:
    subject = jwt_subject(app.current_event.raw_event, settings.auth_mode)
    event = app.current_event
    result = ingestor.handle(
        request_body(event.body, is_base64=bool(event.is_base64_encoded)), subject=subject
    )
    obs.metrics.add_metric("EventsAccepted", MetricUnit.Count, len(result.accepted))
    obs.metrics.add_metric("EventsRejected", MetricUnit.Count, len(result.rejected))
    if result.session_degraded:
        obs.metrics.add_metric("SessionWriteFailed", MetricUnit.Count, 1)
        obs.logger.warning(
            "session write failed; events are on the stream", extra={"n": len(result.accepted)}
        )
    return Response(202, JSON, result.body())


@obs.handler(correlation_id_path=API_GATEWAY)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
