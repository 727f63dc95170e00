"""The local API turns HTTP requests into API Gateway proxy events and relays proxy responses."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from recpipe_dev.local.api_server import LambdaContext, LocalApi, apigw_event


def _echo(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return {
        "statusCode": 200,
        "headers": {"Content-Type": "application/json"},
        "body": json.dumps({"event": event, "fn": context.function_name}),
    }


def test_event_has_the_rest_proxy_shape_with_single_and_multi_value_query() -> None:
    event = apigw_event(
        "GET", "/recommendations", {"user_id": ["u1"], "exclude": ["a", "b"]}, {"Host": "x"}, None
    )
    assert event["httpMethod"] == "GET" and event["resource"] == "/recommendations"
    assert event["queryStringParameters"] == {"user_id": "u1", "exclude": "b"}
    assert event["multiValueQueryStringParameters"]["exclude"] == ["a", "b"]
    assert event["requestContext"]["stage"] == "local" and event["requestContext"]["requestId"]
    assert event["body"] is None and event["isBase64Encoded"] is False


def test_no_query_means_null_parameters_as_in_api_gateway() -> None:
    event = apigw_event("POST", "/events", {}, {}, b'{"a": 1}')
    assert event["queryStringParameters"] is None and event["multiValueQueryStringParameters"] is None
    assert event["body"] == '{"a": 1}'


def test_invoke_routes_to_the_function_and_relays_the_response() -> None:
    api = LocalApi(handlers={"recommend": _echo, "ingest_events": _echo})
    status, headers, body = api.invoke("POST", "/events", {}, {}, b"{}")
    assert status == 200 and headers["Content-Type"] == "application/json"
    assert json.loads(body)["fn"] == "recpipe-local-ingest_events"


def test_unknown_method_is_405_and_missing_handler_file_is_503(tmp_path: Path) -> None:
    api = LocalApi(functions_dir=tmp_path)
    assert api.invoke("DELETE", "/events", {}, {}, None)[0] == 405
    status, _, body = api.invoke("GET", "/health", {}, {}, None)
    assert status == 503 and "recommend/app.py does not exist" in json.loads(body)["error"]["message"]
    assert api.missing() == ["functions/ingest_events/app.py", "functions/recommend/app.py"]


def test_a_crashing_handler_is_a_502_like_api_gateway() -> None:
    def boom(event: dict[str, Any], context: Any) -> dict[str, Any]:
        raise RuntimeError("bug")

    api = LocalApi(handlers={"recommend": boom})
    status, _, body = api.invoke("GET", "/health", {}, {}, None)
    assert status == 502 and json.loads(body)["error"]["code"] == "internal_error"


def test_a_malformed_proxy_response_is_a_502() -> None:
    api = LocalApi(handlers={"recommend": lambda e, c: {"body": "no status"}})
    assert api.invoke("GET", "/health", {}, {}, None)[0] == 502


def test_context_reports_remaining_time() -> None:
    ctx = LambdaContext("recommend", timeout_s=3)
    assert 2000 < ctx.get_remaining_time_in_millis() <= 3000
    assert ctx.invoked_function_arn.endswith(":function:recpipe-local-recommend")


def test_stats_give_percentiles_and_status_counts() -> None:
    api = LocalApi(handlers={"recommend": _echo})
    for ms in range(1, 101):
        api.stats.record("GET /recommendations", 200 if ms % 10 else 400, float(ms))
    snap = api.stats.snapshot()["GET /recommendations"]
    assert snap["requests"] == 100 and snap["p50_ms"] == 50.5 and snap["p99_ms"] > 98
    assert snap["status_counts"] == {"200": 90, "400": 10}


def test_disabled_metrics_do_not_pile_up_and_spill_into_the_terminal(monkeypatch: Any, capsys: Any) -> None:
    from aws_lambda_powertools import Metrics
    from aws_lambda_powertools.metrics import MetricUnit

    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "true")
    metrics = Metrics(namespace="recpipe-test", service="recpipe")

    @metrics.log_metrics
    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        metrics.add_metric(name="Latency", unit=MetricUnit.Milliseconds, value=1.0)
        return {"statusCode": 200, "body": "{}"}

    api = LocalApi(handlers={"recommend": handler})
    for _ in range(150):  # Powertools prints a metric set once a metric holds 100 values
        assert api.invoke("GET", "/health", {}, {}, None)[0] == 200
    assert metrics.metric_set == {}
    assert '"_aws"' not in capsys.readouterr().out
