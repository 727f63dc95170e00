"""The event schema: the one contract between producers, the events API, Kinesis and the updater.

Version 1. `event_id` is chosen by the producer and is the idempotency key everywhere: a retried
POST, a Kinesis redelivery or a replay of the same event must have exactly one effect.
"""

from __future__ import annotations

import math
import time
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

EVENT_SCHEMA_VERSION = 1
MAX_BATCH_EVENTS = 500
#: Events further in the future than this (clock skew allowance) are rejected.
MAX_FUTURE_SKEW_S = 300.0
ID_PATTERN = r"^[A-Za-z0-9_.:@\-]{1,128}$"
#: Earliest accepted event time (1990-01-01T00:00:00Z): older is a unit or clock error, and
#: every accepted ts must be a number DynamoDB stores and the decay fold handles.
MIN_EVENT_TS = 631_152_000.0
#: The contract's range for `value` (api/openapi.yaml, Event.value).
MIN_VALUE, MAX_VALUE = 0.0, 10.0

Identifier = Annotated[str, Field(pattern=ID_PATTERN)]


class EventType(StrEnum):
    VIEW = "view"
    CLICK = "click"
    ADD_TO_CART = "add_to_cart"
    REMOVE_FROM_CART = "remove_from_cart"
    PURCHASE = "purchase"
    RATING = "rating"


#: How strongly each event type signals interest. Used by category affinity and by training
#: (implicit-feedback confidence). remove_from_cart is a weak negative.
EVENT_WEIGHTS: dict[EventType, float] = {
    EventType.VIEW: 1.0,
    EventType.CLICK: 2.0,
    EventType.ADD_TO_CART: 4.0,
    EventType.REMOVE_FROM_CART: -1.0,
    EventType.PURCHASE: 8.0,
    EventType.RATING: 3.0,
}

Device = Literal["web", "mobile", "tablet", "tv", "other"]


class EventContext(BaseModel):
    """Optional client context. Unknown keys are refused so typos surface at the API."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    device: Device | None = None
    page: Annotated[str, Field(max_length=256)] | None = None
    #: The recommendation id from a /recommendations response, for click attribution.
    recommendation_id: Annotated[str, Field(max_length=128)] | None = None
    session_id: Identifier | None = None


class Event(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    event_id: Identifier
    user_id: Identifier
    item_id: Identifier
    type: EventType
    #: Epoch seconds (int/float) or an ISO 8601 timestamp with a zone; stored as epoch seconds.
    ts: float
    #: Required for `rating` (0.5..5 stars or any 0..10 scale), ignored otherwise. Strict: a
    #: JSON string is not a number.
    value: Annotated[float, Field(ge=MIN_VALUE, le=MAX_VALUE, allow_inf_nan=False, strict=True)] | None = None
    context: EventContext | None = None

    @field_validator("ts", mode="before")
    @classmethod
    def _parse_ts(cls, v: Any) -> float:
        if isinstance(v, bool):
            raise ValueError("ts must be epoch seconds or an ISO 8601 string")
        if isinstance(v, int | float):
            try:
                ts = float(v)
            except OverflowError:  # an int beyond any float
                raise ValueError("ts must be a finite epoch time") from None
            if ts > 1e11:  # clearly epoch milliseconds
                ts /= 1000.0
        elif isinstance(v, str):
            try:
                dt = datetime.fromisoformat(v.replace("Z", "+00:00"))
            except ValueError as exc:
                raise ValueError("ts must be epoch seconds or an ISO 8601 string") from exc
            if dt.tzinfo is None:
                raise ValueError("ISO 8601 ts needs a time zone (e.g. 'Z')")
            ts = dt.timestamp()
        else:
            raise ValueError("ts must be epoch seconds or an ISO 8601 string")
        if not math.isfinite(ts) or ts < MIN_EVENT_TS:
            raise ValueError("ts must be a finite epoch time from 1990-01-01T00:00:00Z on")
        return ts

    @model_validator(mode="after")
    def _check_value(self) -> Event:
        if self.type is EventType.RATING and self.value is None:
            raise ValueError("a rating event needs a numeric 'value'")
        return self

    @property
    def weight(self) -> float:
        if self.type is EventType.RATING and self.value is not None:
            # A low rating is still an interaction but a weak signal of taste.
            return EVENT_WEIGHTS[EventType.RATING] * (self.value / 5.0)
        return EVENT_WEIGHTS[self.type]

    @property
    def device(self) -> str | None:
        return self.context.device if self.context else None

    def to_record(self) -> dict[str, Any]:
        """JSON-ready dict carrying the schema version (what goes on Kinesis and into S3)."""
        body = self.model_dump(mode="json", exclude_none=True)
        body["schema_version"] = EVENT_SCHEMA_VERSION
        return body


class EventRejected(ValueError):
    """An event that can never be valid (bad schema, too far in the future)."""


def parse_event(raw: Any, *, now: float | None = None) -> Event:
    """Validate one raw event; raise EventRejected with a precise, client-facing reason."""
    if not isinstance(raw, dict):
        raise EventRejected("event must be a JSON object")
    body = dict(raw)
    version = body.pop("schema_version", EVENT_SCHEMA_VERSION)
    # `type(...) is int`: True == 1 and 1.0 == 1 in Python, neither is the integer 1 in JSON.
    if type(version) is not int or version != EVENT_SCHEMA_VERSION:
        raise EventRejected(
            f"schema_version: unsupported value {str(version)[:32]!r} (expected {EVENT_SCHEMA_VERSION})"
        )
    try:
        event = Event.model_validate(body)
    except ValidationError as exc:
        raise EventRejected(describe_validation_error(exc)) from None
    limit = (time.time() if now is None else now) + MAX_FUTURE_SKEW_S
    if event.ts > limit:
        raise EventRejected("ts is in the future beyond the allowed clock skew")
    return event


def describe_validation_error(exc: ValidationError) -> str:
    """One line per problem, `field.path: message`, stable enough to show to API clients."""
    parts = []
    for err in exc.errors(include_url=False):
        loc = ".".join(str(p) for p in err["loc"]) or "(body)"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown field"
        elif err["type"] == "missing":
            msg = "field required"
        parts.append(f"{loc}: {msg}")
    return "; ".join(parts)
