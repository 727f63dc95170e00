"""The caller's identity in an API Gateway event: one rule for every API handler (no heavy
imports, so the ingest function's cold start does not load the scoring stack)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from recpipe.handler_kit.errors import ApiError


def token_subject(event: Mapping[str, Any]) -> str | None:
    """The JWT subject: REST Cognito authorizer `claims` or HTTP API `jwt.claims`; None when
    the request carries no usable subject."""
    authorizer = (event.get("requestContext") or {}).get("authorizer") or {}
    claims = authorizer.get("claims") or (authorizer.get("jwt") or {}).get("claims") or {}
    sub = claims.get("sub") if isinstance(claims, Mapping) else None
    return sub if isinstance(sub, str) and sub else None


def jwt_subject(event: Mapping[str, Any], auth_mode: str) -> str | None:
    """In JWT mode the caller may act only as the token's subject (403 without one); None in
    the other modes."""
    if auth_mode != "JWT":
        return None
    sub = token_subject(event)
    if sub is None:
        raise ApiError(403, "forbidden", "no authenticated subject in the request")
    return sub
