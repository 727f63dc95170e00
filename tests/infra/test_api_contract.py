"""The OpenAPI document is the API contract: valid OpenAPI 3.0 in every AuthMode, wired to the
functions' live aliases, authenticated on every route but /health, validated by API Gateway,
and its schemas mirror the domain's event model."""

from __future__ import annotations

import json
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from infra_contract import AUTH_MODES, OPENAPI_PATH, ROOT, operations
from openapi_spec_validator import validate
from recpipe.domain.events import ID_PATTERN, MAX_BATCH_EVENTS, Device, Event, EventContext, EventType

CONTRACT_SCHEMAS = {
    "RecommendationRequest",
    "RecommendationResponse",
    "RecommendedItem",
    "EventBatch",
    "Event",
    "EventContext",
    "IngestResponse",
    "Error",
    "Health",
}
ROUTES = {
    ("/recommendations", "get"),
    ("/recommendations", "post"),
    ("/events", "post"),
    ("/health", "get"),
}


@pytest.mark.parametrize("auth_mode", AUTH_MODES)
def test_document_is_valid_openapi_30_in_every_auth_mode(
    openapi_for: Callable[[str], dict[str, Any]], auth_mode: str
) -> None:
    doc = openapi_for(auth_mode)
    assert doc["openapi"].startswith("3.0")
    validate(doc)


def test_document_uses_only_long_form_intrinsics() -> None:
    # AWS::Include does not understand the YAML short forms (!Sub, !If): plain YAML must load it.
    yaml.safe_load(OPENAPI_PATH.read_text())


def test_the_api_is_built_from_this_document(resources: dict[str, Any]) -> None:
    body = resources["RecommendationsApi"]["Properties"]["DefinitionBody"]
    assert body == {"Fn::Transform": {"Name": "AWS::Include", "Parameters": {"Location": "api/openapi.yaml"}}}


def test_routes_are_exactly_the_contract_plus_cors_preflight(openapi: dict[str, Any]) -> None:
    found = {(path, method) for path, method, _ in operations(openapi)}
    assert {r for r in found if r[1] != "options"} == ROUTES
    assert {r for r in found if r[1] == "options"} == {
        ("/recommendations", "options"),
        ("/events", "options"),
    }


def test_every_route_but_health_requires_the_configured_auth(openapi: dict[str, Any]) -> None:
    for path, method, op in operations(openapi):
        if method == "options" or (path, method) == ("/health", "get"):
            assert op["security"] == [], f"{method} {path} should be open"
        else:
            assert op["security"] == [{"recpipe_auth": []}], f"{method} {path} is not authenticated"


@pytest.mark.parametrize(
    ("auth_mode", "expected"),
    [
        ("API_KEY", {"type": "apiKey", "name": "x-api-key", "in": "header"}),
        (
            "COGNITO",
            {"type": "apiKey", "name": "Authorization", "x-amazon-apigateway-authtype": "cognito_user_pools"},
        ),
        ("IAM", {"type": "apiKey", "name": "Authorization", "x-amazon-apigateway-authtype": "awsSigv4"}),
    ],
)
def test_auth_scheme_follows_the_auth_mode(
    openapi_for: Callable[[str], dict[str, Any]], auth_mode: str, expected: dict[str, str]
) -> None:
    doc = openapi_for(auth_mode)
    scheme = doc["components"]["securitySchemes"]["recpipe_auth"]
    assert expected.items() <= scheme.items()
    if auth_mode == "API_KEY":
        assert "x-amazon-apigateway-authtype" not in scheme
        assert doc["x-amazon-apigateway-api-key-source"] == "HEADER"
    if auth_mode == "COGNITO":
        assert scheme["x-amazon-apigateway-authorizer"]["providerARNs"][0].startswith("arn:aws:cognito-idp:")


def test_template_declares_the_conditions_and_names_the_document_uses(
    template: dict[str, Any], openapi_raw: dict[str, Any]
) -> None:
    text = json.dumps(openapi_raw)
    for condition in ("UseCognito", "UseIam", "CreateUserPool"):
        assert f'"{condition}"' in text and condition in template["Conditions"]
    for name in ("CorsAllowOrigin", "CognitoUserPoolArn"):
        assert name in template["Parameters"]
    for name in ("RecommendFunction", "IngestEventsFunction", "UserPool"):
        assert name in template["Resources"]
    assert template["Parameters"]["AuthMode"]["AllowedValues"] == list(AUTH_MODES)


def test_api_gateway_validates_bodies_and_parameters(openapi: dict[str, Any]) -> None:
    validators = openapi["x-amazon-apigateway-request-validators"]
    default = validators[openapi["x-amazon-apigateway-request-validator"]]
    assert default == {"validateRequestBody": True, "validateRequestParameters": True}
    for path, method, op in operations(openapi):
        chosen = validators[
            op.get("x-amazon-apigateway-request-validator", openapi["x-amazon-apigateway-request-validator"])
        ]
        assert chosen["validateRequestParameters"] is True, f"{method} {path}"
        if method == "post":
            assert chosen["validateRequestBody"] is True
            schema_ref = op["requestBody"]["content"]["application/json"]["schema"]["$ref"]
            assert schema_ref.startswith("#/components/schemas/")


@pytest.mark.parametrize(
    ("path", "method", "function"),
    [
        ("/recommendations", "get", "RecommendFunction"),
        ("/recommendations", "post", "RecommendFunction"),
        ("/health", "get", "RecommendFunction"),
        ("/events", "post", "IngestEventsFunction"),
    ],
)
def test_routes_proxy_to_the_live_alias_of_their_function(
    openapi_raw: dict[str, Any], resources: dict[str, Any], path: str, method: str, function: str
) -> None:
    integration = openapi_raw["paths"][path][method]["x-amazon-apigateway-integration"]
    assert integration["type"] == "aws_proxy"
    assert integration["httpMethod"] == "POST"
    assert f"/functions/${{{function}.Arn}}:live/invocations" in integration["uri"]["Fn::Sub"]
    permissions = [
        r["Properties"]
        for r in resources.values()
        if r["Type"] == "AWS::Lambda::Permission"
        and r["Properties"]["FunctionName"] == {"Ref": f"{function}.Alias"}
    ]
    assert permissions and permissions[0]["Principal"] == "apigateway.amazonaws.com"
    assert "${RecommendationsApi}" in permissions[0]["SourceArn"]["Fn::Sub"]


def test_gateway_errors_use_the_contract_error_shape(openapi: dict[str, Any]) -> None:
    responses = openapi["x-amazon-apigateway-gateway-responses"]
    for kind in ("BAD_REQUEST_BODY", "BAD_REQUEST_PARAMETERS", "THROTTLED", "DEFAULT_4XX", "DEFAULT_5XX"):
        template = responses[kind]["responseTemplates"]["application/json"]
        assert template.startswith('{"error": {"code": "') and "$context.error.messageString" in template
        assert "gatewayresponse.header.Access-Control-Allow-Origin" in responses[kind]["responseParameters"]
    assert responses["THROTTLED"]["statusCode"] == "429"
    assert responses["REQUEST_TOO_LARGE"]["statusCode"] == "413"


def test_contract_schemas_are_present_and_closed(openapi: dict[str, Any]) -> None:
    schemas = openapi["components"]["schemas"]
    assert set(schemas) >= CONTRACT_SCHEMAS
    for name in CONTRACT_SCHEMAS - {"Health"}:
        assert schemas[name]["additionalProperties"] is False, name


def test_event_schema_mirrors_the_domain_event(openapi: dict[str, Any]) -> None:
    schemas = openapi["components"]["schemas"]
    event = schemas["Event"]
    assert set(event["properties"]) == set(Event.model_fields) | {"schema_version"}
    assert set(event["required"]) == {n for n, f in Event.model_fields.items() if f.is_required()}
    assert event["properties"]["type"]["enum"] == [t.value for t in EventType]
    assert set(schemas["EventContext"]["properties"]) == set(EventContext.model_fields)
    assert schemas["Identifier"]["pattern"] == ID_PATTERN
    assert schemas["Device"]["enum"] == list(typing.get_args(Device))
    assert schemas["EventBatch"]["properties"]["events"]["maxItems"] == MAX_BATCH_EVENTS


def _body(sample: str) -> Any:
    return json.loads(json.loads((ROOT / "events" / sample).read_text())["body"])


@pytest.mark.parametrize(
    ("schema", "sample"),
    [
        ("EventsRequest", "ingest_single.json"),
        ("EventsRequest", "ingest_batch.json"),
        ("RecommendationRequest", "recommend_post.json"),
    ],
)
def test_sample_requests_pass_gateway_validation(
    schema_validator: Callable[[str], Any], schema: str, sample: str
) -> None:
    schema_validator(schema).validate(_body(sample))


@pytest.mark.parametrize(
    "body",
    [
        {"user_id": "u-1", "k": 0},
        {"user_id": "u-1", "k": 101},
        {"user_id": "u-1", "diversity": 1.5},
        {"user_id": "u-1", "surprise": True},
        {"user_id": "u-1", "context": {"device": "fridge"}},
        {"user_id": "u-1", "context": {"cart": ["ok"], "color": "red"}},
        {"user_id": "u-1", "filters": {"include_categories": "Drama"}},
        {"user_id": "not valid!"},
    ],
)
def test_malformed_recommendation_bodies_are_refused_by_the_gateway(
    schema_validator: Callable[[str], Any], body: dict[str, Any]
) -> None:
    assert not schema_validator("RecommendationRequest").is_valid(body)


def test_event_bodies_single_strict_batch_checked_per_event(schema_validator: Callable[[str], Any]) -> None:
    validator = schema_validator("EventsRequest")
    good = {"event_id": "e1", "user_id": "u1", "item_id": "i1", "type": "view", "ts": 1764000000}
    assert validator.is_valid(good)
    assert validator.is_valid({**good, "ts": "2025-11-24T18:30:00Z", "context": {"device": "web"}})
    assert not validator.is_valid({**good, "type": "like"})
    assert not validator.is_valid({**good, "extra": 1})
    assert not validator.is_valid({k: v for k, v in good.items() if k != "event_id"})
    # In a batch a bad event is the function's to report (by index), not a gateway 400.
    assert validator.is_valid({"events": [good, {"type": "like"}]})
    assert not validator.is_valid({"events": []})
    assert not validator.is_valid({"events": [good] * (MAX_BATCH_EVENTS + 1)})


def test_response_schemas_accept_a_real_answer_shape_and_refuse_drift(
    schema_validator: Callable[[str], Any],
) -> None:
    answer = {
        "recommendation_id": "r-1",
        "user_id": "u-1",
        "model_version": None,
        "variant": None,
        "experiment": None,
        "degraded": ["model"],
        "items": [
            {
                "item_id": "i-1",
                "title": "Toy Story (1995)",
                "categories": ["Animation"],
                "score": 0.9,
                "reason": "popular now",
                "sources": ["popular"],
            }
        ],
        "took_ms": 3.2,
    }
    validator = schema_validator("RecommendationResponse")
    validator.validate(answer)
    assert not validator.is_valid({**answer, "debug": True})
    assert not validator.is_valid({k: v for k, v in answer.items() if k != "took_ms"})
    validator.validate({**answer, "variant": "treatment", "experiment": "ranker-dec"})
    assert not validator.is_valid({k: v for k, v in answer.items() if k != "variant"})
    assert not validator.is_valid({**answer, "variant": "no spaces"})
    schema_validator("Error").validate({"error": {"code": "invalid_request", "message": "k: must be <= 100"}})
    schema_validator("IngestResponse").validate(
        {"accepted": 1, "rejected": [{"index": 1, "event_id": None, "reason": "x"}]}
    )


def test_sample_events_exist_for_every_route(openapi: dict[str, Any]) -> None:
    samples = [json.loads(p.read_text()) for p in sorted((ROOT / "events").glob("*.json"))]
    covered = {(s.get("path"), str(s.get("httpMethod", "")).lower()) for s in samples if isinstance(s, dict)}
    assert covered >= ROUTES, f"no sample for {sorted(ROUTES - covered)}"
    assert Path(ROOT / "events").is_dir()


def test_recommendation_request_schema_mirrors_the_handler_model(openapi: dict[str, Any]) -> None:
    # The gateway and the function must refuse the same bodies: same fields, same limits.
    from recpipe.serving import request as handler_model

    schemas = openapi["components"]["schemas"]
    body = schemas["RecommendationRequest"]
    assert set(body["properties"]) == set(handler_model.RecommendationRequest.model_fields)
    assert set(schemas["RecommendationContext"]["properties"]) == set(
        handler_model.RequestContextIn.model_fields
    )
    assert set(schemas["RecommendationFilters"]["properties"]) == set(handler_model.Filters.model_fields)
    assert body["properties"]["k"]["maximum"] == handler_model.MAX_K
    assert body["properties"]["exclude"]["maxItems"] == handler_model.MAX_LIST
    assert schemas["RecommendationContext"]["properties"]["cart"]["maxItems"] == handler_model.MAX_CART
    filters = schemas["RecommendationFilters"]["properties"]
    assert filters["include_categories"]["maxItems"] == handler_model.MAX_FILTER_CATEGORIES
    assert filters["exclude_categories"]["maxItems"] == handler_model.MAX_FILTER_CATEGORIES


#: Schema keywords API Gateway's OpenAPI import does not support (its "important notes" list).
GATEWAY_UNSUPPORTED = {
    "discriminator",
    "example",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "readOnly",
    "allOf",
}


def _keys(node: Any) -> set[str]:
    if isinstance(node, dict):
        return set(node) | {k for v in node.values() for k in _keys(v)}
    if isinstance(node, list):
        return {k for v in node for k in _keys(v)}
    return set()


def test_document_avoids_what_api_gateway_cannot_import(openapi: dict[str, Any]) -> None:
    # cfn-lint never sees the included document, so these are checked here.
    used = _keys(openapi["components"]) | _keys(openapi["paths"])
    assert not used & GATEWAY_UNSUPPORTED, sorted(used & GATEWAY_UNSUPPORTED)
    assert all(name.isalnum() for name in openapi["components"]["schemas"]), (
        "model names must be alphanumeric"
    )
    formats = {f for f in json.dumps(openapi).split('"format": "')[1:]}
    assert not any(f.startswith(("int32", "int64", "decimal")) for f in formats)
    for path, method, op in operations(openapi):
        for response in op["responses"].values():
            ref = response.get("$ref", "")
            body = openapi["components"]["responses"][ref.rsplit("/", 1)[-1]] if ref else response
            for media in body.get("content", {}).values():
                target = media["schema"]["$ref"].rsplit("/", 1)[-1]
                assert openapi["components"]["schemas"][target]["type"] == "object", f"{method} {path}"
