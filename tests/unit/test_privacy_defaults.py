"""Privacy by default: traces never capture what a handler returns (user ids, lists, reasons)."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import aws_xray_sdk.core  # noqa: F401 - its recorder opens a UDP socket at import: before sockets are off
from aws_lambda_powertools import Tracer
from recpipe.handler_kit.observability import Observability

ROOT = Path(__file__).resolve().parents[2]
SOURCES = [
    *sorted((ROOT / "functions").glob("*/app.py")),
    *sorted((ROOT / "layers" / "recpipe").rglob("*.py")),
]


def test_the_handler_decorator_never_captures_the_response(monkeypatch: Any) -> None:
    seen: dict[str, Any] = {}

    def capture(self: Tracer, lambda_handler: Any = None, capture_response: Any = None, **kw: Any) -> Any:
        seen["capture_response"] = capture_response
        return lambda_handler

    monkeypatch.setattr(Tracer, "capture_lambda_handler", capture)
    Observability().handler()(lambda event, context: {"user_id": "u-42"})
    assert seen == {"capture_response": False}


def test_no_source_traces_a_response() -> None:
    # Every capture_lambda_handler/capture_method call in shipped code says capture_response=False.
    offenders = []
    for path in SOURCES:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", "") in (
                "capture_lambda_handler",
                "capture_method",
            ):
                flag = {k.arg: k.value for k in node.keywords}.get("capture_response")
                if not (isinstance(flag, ast.Constant) and flag.value is False):
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
            # A bare decorator (`@tracer.capture_method`) captures the response by default.
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                for deco in node.decorator_list:
                    if isinstance(deco, ast.Attribute) and deco.attr in (
                        "capture_method",
                        "capture_lambda_handler",
                    ):
                        offenders.append(f"{path.relative_to(ROOT)}:{deco.lineno}")
    assert offenders == []
    # The stack is used by every API handler.
    for name in ("recommend", "ingest_events", "update_features"):
        assert "@obs.handler(" in (ROOT / "functions" / name / "app.py").read_text()
