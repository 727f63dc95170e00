"""Recommendations API: GET/POST /recommendations and GET /health (scoring Lambda)."""

from __future__ import annotations

import os
from typing import Any

# Before numpy loads: a request's matrix products are tiny (500 x 32), and waking a second
# OpenBLAS thread for them costs more than the product itself on a busy CPU.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from aws_lambda_powertools.utilities.typing import LambdaContext
from recpipe.config import RecommendSettings, load_settings
from recpipe.handler_kit.api import api_resolver
from recpipe.handler_kit.identity import jwt_subject
from recpipe.handler_kit.observability import API_GATEWAY, Observability
from recpipe.serving.http import model_event_recorder, record_result
from recpipe.serving.impressions import flush_on_shutdown
from recpipe.serving.request import RecommendationRequest, parse_body, parse_query
from recpipe.serving.runtime import build_online_path

# Built at import (recpipe.handler_kit): provisioned concurrency pays this before traffic.
settings = load_settings(RecommendSettings)
obs = Observability()
app = api_resolver(settings, obs.logger, obs.metrics)
online = build_online_path(settings, on_model_event=model_event_recorder(obs.metrics, obs.logger))
if online.impressions is not None:
    # Impressions still buffered when Lambda shuts the container down are written on SIGTERM.
    flush_on_shutdown(online.impressions)


@app.get("/recommendations")
def get_recommendations() -> dict[str, Any]:
    subject = jwt_subject(app.current_event.raw_event, settings.auth_mode)
    return recommend(parse_query(app.current_event.query_string_parameters, subject=subject))


@app.post("/recommendations")
def post_recommendations() -> dict[str, Any]:
    event = app.current_event
    subject = jwt_subject(event.raw_event, settings.auth_mode)
    return recommend(parse_body(event.body, is_base64=bool(event.is_base64_encoded), subject=subject))


def recommend(request: RecommendationRequest) -> dict[str, Any]:
    obs.logger.append_keys(user_id=request.user_id)
    result = online.recommender.recommend(request)
    online.log_impression(result)
    record_result(obs.metrics, obs.logger, result)
    return result.to_response()


@app.get("/health")
def health() -> dict[str, Any]:
    return online.health()


@obs.handler(correlation_id_path=API_GATEWAY)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
