"""Recommendations API: GET/POST /recommendations and GET /health (scoring Lambda)."""

from __future__ import annotations

import os
from typing import Any

# Before numpy loads: a request's matrix products are tiny (500 x 32), and waking a second
# OpenBLAS thread for them cost up to ~5 ms on a busy CPU (measured: assembly p95 5.1 -> 0.8 ms).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.event_handler import APIGatewayRestResolver, CORSConfig, Response
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext
from recpipe.config import settings
from recpipe.serving.http import JSON_HEADERS, auth_subject, error_body, model_event_recorder, record_result
from recpipe.serving.request import RequestError, parse_body, parse_query
from recpipe.serving.runtime import build_online_path

logger = Logger()
tracer = Tracer()
metrics = Metrics()
app = APIGatewayRestResolver(cors=CORSConfig(allow_origin=os.environ.get("CORS_ALLOW_ORIGIN", "*")))
online = build_online_path(settings(), on_model_event=model_event_recorder(metrics, logger))


@app.get("/recommendations")
def get_recommendations() -> dict[str, Any]:
    subject = auth_subject(app.current_event.raw_event, online.settings.auth_mode)
    return recommend(parse_query(app.current_event.query_string_parameters, subject=subject))


@app.post("/recommendations")
def post_recommendations() -> dict[str, Any]:
    event = app.current_event
    subject = auth_subject(event.raw_event, online.settings.auth_mode)
    return recommend(parse_body(event.body, is_base64=bool(event.is_base64_encoded), subject=subject))


def recommend(request: Any) -> dict[str, Any]:
    logger.append_keys(user_id=request.user_id)
    result = online.recommender.recommend(request)
    record_result(metrics, logger, result)
    return result.to_response()


@app.get("/health")
def health() -> dict[str, Any]:
    return online.health()


@app.exception_handler(RequestError)
def bad_request(exc: RequestError) -> Response[str]:
    metrics.add_metric(name=f"Refused_{exc.code}", unit=MetricUnit.Count, value=1)
    logger.info("request refused", extra={"status": exc.status, "reason": exc.message})
    return Response(status_code=exc.status, content_type=JSON_HEADERS["Content-Type"], body=error_body(exc))


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST, clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics(capture_cold_start_metric=True)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
