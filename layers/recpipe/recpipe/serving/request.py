"""The /recommendations request: one validated model for GET query strings and POST bodies.

Every problem becomes a RequestError with a precise, client-facing message (HTTP 400); nothing
the client sends can reach the domain code unvalidated.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from recpipe.domain.events import ID_PATTERN, Device, describe_validation_error
from recpipe.handler_kit import json_body
from recpipe.handler_kit.errors import ApiError

MAX_K = 100
MAX_LIST = 500
MAX_CART = 200
MAX_FILTER_CATEGORIES = 50
MAX_BODY_BYTES = 64 * 1024

ItemId = Annotated[str, Field(pattern=ID_PATTERN)]
Category = Annotated[str, Field(min_length=1, max_length=128)]


class RequestError(ApiError):
    """A request that can never succeed: answered with `status` and a precise message."""

    def __init__(self, message: str, *, status: int = 400, code: str = "invalid_request") -> None:
        super().__init__(status, code, message)


class RequestContextIn(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    device: Device | None = None
    #: Client's offset from UTC in minutes (UTC-12:00 .. UTC+14:00).
    utc_offset_minutes: int = Field(0, ge=-720, le=840)
    page: Annotated[str, Field(max_length=256)] | None = None
    cart: list[ItemId] = Field(default_factory=list, max_length=MAX_CART)


class Filters(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    include_categories: list[Category] = Field(default_factory=list, max_length=MAX_FILTER_CATEGORIES)
    exclude_categories: list[Category] = Field(default_factory=list, max_length=MAX_FILTER_CATEGORIES)


class RecommendationRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    user_id: Annotated[str, Field(pattern=ID_PATTERN)]
    k: int = Field(10, ge=1, le=MAX_K)
    context: RequestContextIn = RequestContextIn.model_validate({})  # frozen: sharing is safe
    filters: Filters = Filters()
    exclude: list[ItemId] = Field(default_factory=list, max_length=MAX_LIST)
    explain: bool = False
    #: 0 = pure relevance, 1 = strongest diversification (MMR trade-off).
    diversity: float = Field(0.0, ge=0.0, le=1.0)


def _request_error(status: int, code: str, message: str) -> RequestError:
    return RequestError(message, status=status, code=code)


def _validate(body: dict[str, Any], subject: str | None) -> RecommendationRequest:
    if subject is not None:
        # JWT mode: the token names the user; naming anyone else is refused, not ignored.
        named = body.get("user_id")
        if named is not None and named != subject:
            raise RequestError("user_id does not match the authenticated user", status=403, code="forbidden")
        body["user_id"] = subject
    try:
        # strict: "10" is not a number and "yes" is not a boolean in a JSON body.
        return RecommendationRequest.model_validate(body, strict=True)
    except ValidationError as exc:
        raise RequestError(describe_validation_error(exc)) from None


def parse_body(
    raw: str | bytes | None, *, is_base64: bool = False, subject: str | None = None
) -> RecommendationRequest:
    """A POST body (JSON object). `subject`: the authenticated user in JWT mode."""
    if not raw:
        raise RequestError("request body is required (a JSON object)")
    if is_base64:
        import base64
        import binascii

        try:
            raw = base64.b64decode(raw, validate=True)
        except (binascii.Error, ValueError):
            raise RequestError("body is not valid base64") from None
    size = len(raw.encode() if isinstance(raw, str) else raw)
    if size > MAX_BODY_BYTES:
        raise RequestError(
            f"body is {size} bytes; the limit is {MAX_BODY_BYTES}", status=413, code="payload_too_large"
        )
    body = json_body.loads(raw, invalid_code="malformed_json", error=_request_error)
    if not isinstance(body, dict):
        raise RequestError("body must be a JSON object")
    return _validate(body, subject)


#: The GET form's parameters (api/openapi.yaml); diversity, page and cart are POST-only.
_QUERY_FIELDS = frozenset(
    {
        "user_id",
        "k",
        "device",
        "utc_offset_minutes",
        "explain",
        "exclude",
        "include_categories",
        "exclude_categories",
    }
)


def _split(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


#: ASCII digits only: int() also takes "1_0", " 5", full-width and Arabic-Indic digits.
_INT = re.compile(r"[+-]?[0-9]{1,9}")


def _query_int(name: str, value: str) -> int:
    if not _INT.fullmatch(value):
        raise RequestError(f"{name}: must be an integer (ASCII digits), got {value[:32]!r}")
    return int(value)


def parse_query(params: Mapping[str, str] | None, *, subject: str | None = None) -> RecommendationRequest:
    """GET query-string parameters (comma-separated lists). `subject`: as for parse_body."""
    params = dict(params or {})
    unknown = sorted(set(params) - _QUERY_FIELDS)
    if unknown:
        raise RequestError(f"unknown query parameter(s): {', '.join(unknown)}")
    body: dict[str, Any] = {}
    if "user_id" in params:
        body["user_id"] = params["user_id"]
    if "k" in params:
        body["k"] = _query_int("k", params["k"])
    if "explain" in params:
        flag = params["explain"].lower()
        if flag not in ("true", "false"):
            raise RequestError(f"explain: must be true or false, got {params['explain']!r}")
        body["explain"] = flag == "true"
    if "exclude" in params:
        body["exclude"] = _split(params["exclude"])
    context: dict[str, Any] = {}
    if "device" in params:
        context["device"] = params["device"]
    if "utc_offset_minutes" in params:
        context["utc_offset_minutes"] = _query_int("utc_offset_minutes", params["utc_offset_minutes"])
    if context:
        body["context"] = context
    filters = {
        name: _split(params[name]) for name in ("include_categories", "exclude_categories") if name in params
    }
    if filters:
        body["filters"] = filters
    return _validate(body, subject)
