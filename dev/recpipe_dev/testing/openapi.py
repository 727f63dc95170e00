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
