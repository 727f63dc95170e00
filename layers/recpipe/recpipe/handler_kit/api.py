"""API Gateway routing shared by the HTTP handlers: CORS from settings and `ApiError` ->
response (with a metric and a log line) in one place."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.event_handler import APIGatewayRestResolver, CORSConfig, Response
from aws_lambda_powertools.metrics import MetricUnit

from recpipe.config import ApiSettings
from recpipe.handler_kit.errors import ApiError

JSON = "application/json"


def error_response(exc: ApiError) -> Response[dict[str, Any]]:
    return Response(status_code=exc.status, content_type=JSON, body=exc.body())


def api_resolver(settings: ApiSettings, logger: Logger, metrics: Metrics) -> APIGatewayRestResolver:
    """A REST resolver whose CORS origin comes from settings and whose `ApiError`s become the
    one error body, a `Refused_<code>` metric and an info log line."""
    app = APIGatewayRestResolver(cors=CORSConfig(allow_origin=settings.cors_allow_origin))

    @app.exception_handler(ApiError)
    def refused(exc: ApiError) -> Response[dict[str, Any]]:
        metrics.add_metric(name=f"Refused_{exc.code}", unit=MetricUnit.Count, value=1)
        logger.info("request refused", extra={"status": exc.status, "code": exc.code, "reason": exc.message})
        return error_response(exc)

    return app
