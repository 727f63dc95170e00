"""What the infrastructure tests share: file locations, the intrinsic resolver for the
AWS::Include'd OpenAPI document, and small accessors over templates and policies."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE_PATH = ROOT / "template.yaml"
OPENAPI_PATH = ROOT / "api" / "openapi.yaml"
ASL_PATH = ROOT / "statemachines" / "retrain.asl.json"

AUTH_MODES = ("API_KEY", "COGNITO", "IAM")


def conditions_for(auth_mode: str, *, user_pool_given: bool = False) -> dict[str, bool]:
    """Truth values of the template conditions the OpenAPI document refers to."""
    return {
        "UseApiKey": auth_mode == "API_KEY",
        "UseCognito": auth_mode == "COGNITO",
        "UseIam": auth_mode == "IAM",
        "CreateUserPool": auth_mode == "COGNITO" and not user_pool_given,
    }


def resolve_intrinsics(node: Any, conditions: dict[str, bool]) -> Any:
    """Evaluate the long-form intrinsics an AWS::Include'd document may use. Fn::If picks a
    branch; Sub/Ref/GetAtt become representative strings (placeholders replaced by `X`)."""
    if isinstance(node, list):
        return [resolve_intrinsics(v, conditions) for v in node]
    if not isinstance(node, dict):
        return node
    if len(node) == 1:
        ((key, arg),) = node.items()
        if key == "Fn::If":
            name, when_true, when_false = arg
            if name not in conditions:
                raise KeyError(f"openapi.yaml uses condition {name!r} that the test does not model")
            return resolve_intrinsics(when_true if conditions[name] else when_false, conditions)
        if key == "Fn::Sub":
            text = arg if isinstance(arg, str) else arg[0]
            return re.sub(r"\$\{[^}]+\}", "X", text)
        if key == "Ref":
            return f"ref-{arg}"
        if key == "Fn::GetAtt":
            return "arn:aws:cognito-idp:us-east-1:123456789012:userpool/us-east-1_example"
    return {k: resolve_intrinsics(v, conditions) for k, v in node.items()}


def operations(doc: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in doc["paths"].items():
        for method, op in item.items():
            if method in {"get", "post", "put", "patch", "delete", "options", "head"}:
                yield path, method, op


def statements(policy: Any) -> list[dict[str, Any]]:
    """Inline policy statements of a SAM `Policies` entry or an IAM policy document."""
    if isinstance(policy, dict) and "Statement" in policy:
        body = policy["Statement"]
        return body if isinstance(body, list) else [body]
    return []


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


#: Actions AWS does not scope to a resource, so "*" is their only possible resource.
RESOURCELESS_ACTIONS = {
    "ecr:GetAuthorizationToken",
    "cloudwatch:PutMetricData",
    "logs:CreateLogDelivery",
    "logs:GetLogDelivery",
    "logs:UpdateLogDelivery",
    "logs:DeleteLogDelivery",
    "logs:ListLogDeliveries",
    "logs:PutResourcePolicy",
    "logs:DescribeResourcePolicies",
    "logs:DescribeLogGroups",
}
