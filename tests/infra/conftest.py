"""Fixtures for the infrastructure checks: the parsed SAM template, the OpenAPI contract with its
CloudFormation intrinsics resolved for a given AuthMode, and JSON-schema validators for the
contract's component schemas."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
import yaml
from infra_contract import OPENAPI_PATH, TEMPLATE_PATH, conditions_for, resolve_intrinsics
from recpipe_dev.local.resources import load_template


@pytest.fixture(scope="session")
def template() -> dict[str, Any]:
    return load_template(TEMPLATE_PATH)


@pytest.fixture(scope="session")
def resources(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return template["Resources"]


@pytest.fixture(scope="session")
def openapi_raw() -> dict[str, Any]:
    """The document as stored: intrinsics (Fn::Sub, Fn::If, ...) still in place."""
    with OPENAPI_PATH.open() as f:
        doc: dict[str, Any] = yaml.safe_load(f)
    return doc


@pytest.fixture(scope="session")
def openapi_for() -> Callable[[str], dict[str, Any]]:
    with OPENAPI_PATH.open() as f:
        raw = yaml.safe_load(f)

    def resolve(auth_mode: str) -> dict[str, Any]:
        resolved: dict[str, Any] = resolve_intrinsics(copy.deepcopy(raw), conditions_for(auth_mode))
        return resolved

    return resolve


@pytest.fixture(scope="session")
def openapi(openapi_for: Callable[[str], dict[str, Any]]) -> dict[str, Any]:
    """The document as deployed with the default AuthMode (API_KEY)."""
    return openapi_for("API_KEY")


@pytest.fixture(scope="session")
def schema_validator(openapi: dict[str, Any]) -> Callable[[str], Any]:
    """`schema_validator("Event")` -> an OpenAPI 3.0 validator for that component schema."""
    from openapi_schema_validator import OAS30Validator

    def make(name: str) -> Any:
        assert name in openapi["components"]["schemas"], f"no component schema {name}"
        root = {"$ref": f"#/components/schemas/{name}", "components": openapi["components"]}
        return OAS30Validator(root)

    return make
