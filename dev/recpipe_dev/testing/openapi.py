"""Validate handler responses against the schemas of api/openapi.yaml (tests only)."""

from __future__ import annotations

from typing import Any

import yaml

from recpipe_dev.local.resources import ROOT

OPENAPI = ROOT / "api" / "openapi.yaml"


def _to_json_schema(node: Any) -> Any:
    """OpenAPI 3.0 schema -> draft-4 JSON schema (nullable -> type list, components -> definitions)."""
    if isinstance(node, dict):
        out = {k: _to_json_schema(v) for k, v in node.items() if k not in ("nullable", "description")}
        if node.get("nullable"):
            out["type"] = [node["type"], "null"]
        if "$ref" in out:
            out["$ref"] = out["$ref"].replace("#/components/schemas/", "#/definitions/")
        return out
    if isinstance(node, list):
        return [_to_json_schema(v) for v in node]
    return node


def response_validator(schema_name: str = "RecommendationResponse") -> Any:
    """A jsonschema Draft4Validator for components/schemas/<schema_name>."""
    import jsonschema

    doc = yaml.safe_load(OPENAPI.read_text())
    schema = {
        "definitions": _to_json_schema(doc["components"]["schemas"]),
        "$ref": f"#/definitions/{schema_name}",
    }
    return jsonschema.Draft4Validator(schema)


#: CloudFormation conditions of the API key deployment (the default AuthMode).
API_KEY_CONDITIONS = {"UseCognito": False, "UseIam": False, "CreateUserPool": False}


def _resolve(node: Any, conditions: dict[str, bool]) -> Any:
    """Fn::If by `conditions`; API Gateway extensions (which hold the other intrinsics) dropped."""
    if isinstance(node, dict):
        if set(node) == {"Fn::If"}:
            cond, yes, no = node["Fn::If"]
            return _resolve(yes if conditions[cond] else no, conditions)
        return {
            k: _resolve(v, conditions)
            for k, v in node.items()
            if not (isinstance(k, str) and k.startswith("x-amazon-apigateway"))
        }
    if isinstance(node, list):
        return [_resolve(v, conditions) for v in node]
    return node


def resolved_document(conditions: dict[str, bool] | None = None) -> dict[str, Any]:
    """api/openapi.yaml as a client sees it (API key mode by default): what schemathesis reads."""
    doc = yaml.safe_load(OPENAPI.read_text())
    return dict(_resolve(doc, conditions or API_KEY_CONDITIONS))
