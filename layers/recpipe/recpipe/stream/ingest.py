"""POST /events: validate, publish to the event stream, write the session list.

Order matters for the "nothing accepted is dropped" promise: events are put on Kinesis first
and only the ones Kinesis took are reported accepted; their session entries are then written
to Redis before answering, so the client's next recommendation request sees them
(read-your-writes). If that Redis write fails the events are still accepted: they are durable
on the stream and the feature updater writes the same (idempotent) session entries.
"""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from recpipe.domain.events import MAX_BATCH_EVENTS, Event, EventRejected, parse_event
from recpipe.handler_kit import json_body
from recpipe.handler_kit.errors import ApiError
from recpipe.ports import DependencyError, EventPublisher, SessionEntry, SessionWriter
from recpipe.redis_keys import SESSION_TTL_S

#: Request bodies larger than this are refused before parsing (500 events of ~1 KiB fit).
MAX_BODY_BYTES = 1024 * 1024


class IngestError(ApiError):
    """A request refused as a whole: maps to an HTTP error with a precise message."""


@dataclass(frozen=True, slots=True)
class Rejection:
    index: int
    event_id: str | None
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {"index": self.index, "event_id": self.event_id, "reason": self.reason}


@dataclass(slots=True)
class IngestResult:
    accepted: list[Event] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)
    #: The session write failed (events are still durable on the stream).
    session_degraded: bool = False

    def body(self) -> dict[str, Any]:
        return {"accepted": len(self.accepted), "rejected": [r.to_json() for r in self.rejected]}


def request_body(body: str | None, *, is_base64: bool) -> str | bytes | None:
    """The body as sent: API Gateway base64-encodes binary bodies. Left as bytes, so invalid
    UTF-8 is refused by the JSON parser as a 400 rather than failing to decode (a 502)."""
    if not is_base64 or body is None:
        return body
    try:
        return base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError):
        raise IngestError(400, "invalid_body", "request body is not valid base64") from None


def parse_body(body: str | bytes | None) -> list[Any]:
    """The raw events of a request body: one event object or {"events": [...]}."""
    if body is None or not body.strip():
        raise IngestError(400, "empty_body", 'request body is empty: send an event or {"events": [...]}')
    size = len(body.encode() if isinstance(body, str) else body)
    if size > MAX_BODY_BYTES:
        raise IngestError(
            413, "payload_too_large", f"request body is {size} bytes; the limit is {MAX_BODY_BYTES}"
        )
    doc = json_body.loads(body, invalid_code="invalid_json", error=IngestError)
    if not isinstance(doc, dict):
        raise IngestError(400, "invalid_body", 'request body must be an event object or {"events": [...]}')
    if "events" not in doc:
        return [doc]
    if set(doc) != {"events"}:
        extra = ", ".join(sorted(set(doc) - {"events"}))
        raise IngestError(400, "invalid_body", f"unknown field(s) next to 'events': {extra}")
    events = doc["events"]
    if not isinstance(events, list):
        raise IngestError(400, "invalid_body", "'events' must be a list of event objects")
    if not events:
        raise IngestError(400, "no_valid_event", "'events' is empty")
    if len(events) > MAX_BATCH_EVENTS:
        # 413 as the contract documents (PayloadTooLarge: "more than 500 events").
        raise IngestError(
            413, "too_many_events", f"events: {len(events)} in one request; the limit is {MAX_BATCH_EVENTS}"
        )
    return events


class EventIngestor:
    def __init__(
        self,
        publisher: EventPublisher,
        sessions: SessionWriter,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._publisher = publisher
        self._sessions = sessions
        self._clock = clock

    def handle(self, body: str | bytes | None, *, subject: str | None = None) -> IngestResult:
        return self.ingest(parse_body(body), subject=subject)

    def ingest(self, raws: Sequence[Any], *, subject: str | None = None) -> IngestResult:
        """Validate every event; publish and record the valid ones. `subject` is the JWT user:
        when set, events for anyone else are rejected."""
        result = IngestResult()
        valid: list[tuple[int, Event]] = []
        seen: set[str] = set()
        now = self._clock()
        for index, raw in enumerate(raws):
            raw_id = raw.get("event_id") if isinstance(raw, dict) else None
            event_id = raw_id if isinstance(raw_id, str) else None
            try:
                event = parse_event(raw, now=now)
            except EventRejected as exc:
                result.rejected.append(Rejection(index, event_id, str(exc)))
                continue
            if subject is not None and event.user_id != subject:
                result.rejected.append(
                    Rejection(index, event.event_id, "user_id does not match the authenticated user")
                )
            elif event.event_id in seen:
                result.rejected.append(Rejection(index, event.event_id, "duplicate event_id in this request"))
            else:
                seen.add(event.event_id)
                valid.append((index, event))
        if not valid:
            reasons = "; ".join(f"[{r.index}] {r.reason}" for r in result.rejected[:5])
            more = f" (+{len(result.rejected) - 5} more)" if len(result.rejected) > 5 else ""
            raise IngestError(400, "no_valid_event", f"no valid event: {reasons}{more}")

        failed = {e.event_id: reason for e, reason in self._publisher.publish([e for _, e in valid])}
        for index, event in valid:
            if event.event_id in failed:
                result.rejected.append(Rejection(index, event.event_id, failed[event.event_id]))
            else:
                result.accepted.append(event)
        result.rejected.sort(key=lambda r: r.index)
        if result.accepted:
            try:
                self._sessions.append_many(session_entries(result.accepted, now=now))
            except DependencyError:
                result.session_degraded = True
        return result


def session_entries(events: Sequence[Event], *, now: float) -> dict[str, list[SessionEntry]]:
    """Session entries per user. Only events of the last SESSION_TTL_S belong to the live
    session: a backfill, a late producer or a replay of an old range must not show days-old
    views as "what the user is doing now" (they still reach the durable features)."""
    oldest = now - SESSION_TTL_S
    by_user: dict[str, list[SessionEntry]] = {}
    for e in events:
        if e.ts >= oldest:
            by_user.setdefault(e.user_id, []).append(SessionEntry(e.item_id, e.type.value, e.ts))
    return by_user
