"""POST /events through the real handler with in-memory stores: every acceptance and rejection."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from recpipe.config import IngestSettings, load_settings
from recpipe.domain.events import MAX_BATCH_EVENTS
from recpipe.ports import DependencyError
from recpipe.stream.ingest import MAX_BODY_BYTES, EventIngestor
from recpipe_dev.local.functions import LambdaContext
from recpipe_dev.local.functions import load_function as load_handler
from recpipe_dev.local.functions import sample_event as sample
from recpipe_dev.testing.fakes_stream import InMemoryEventPublisher, InMemorySessionStore
from recpipe_dev.testing.settings import function_env

ROOT = Path(__file__).resolve().parents[3]
NOW = 1_764_009_100.0  # a few minutes after the events/ samples


class Api:
    def __init__(self, module: ModuleType) -> None:
        self.module = module
        self.publisher = InMemoryEventPublisher()
        self.sessions = InMemorySessionStore()
        self.ingestor = EventIngestor(self.publisher, self.sessions, clock=lambda: NOW)

    def post(
        self, body: Any, *, raw: str | None = None, claims: dict[str, Any] | None = None
    ) -> tuple[int, Any]:
        event = sample("ingest_single.json")
        event["body"] = raw if raw is not None else json.dumps(body)
        if claims is not None:
            event["requestContext"]["authorizer"] = claims
        resp = self.module.handler(event, LambdaContext())
        return resp["statusCode"], json.loads(resp["body"])


@pytest.fixture()
def api(monkeypatch: pytest.MonkeyPatch) -> Iterator[Api]:
    module = load_handler("ingest_events")
    a = Api(module)
    monkeypatch.setattr(module, "ingestor", a.ingestor)
    yield a


def ev(
    event_id: str, user: str = "u1", item: str = "m1", type_: str = "view", **extra: Any
) -> dict[str, Any]:
    return {"event_id": event_id, "user_id": user, "item_id": item, "type": type_, "ts": NOW - 5, **extra}


def test_sample_single_event_is_accepted_and_visible_in_the_session(api: Api) -> None:
    resp = api.module.handler(sample("ingest_single.json"), LambdaContext())
    assert resp["statusCode"] == 202
    assert json.loads(resp["body"]) == {"accepted": 1, "rejected": []}
    assert [e.event_id for e in api.publisher.published] == ["evt-0001"]
    assert [(e.item_id, e.type) for e in api.sessions.recent("u-42")] == [("1", "click")]


def test_sample_batch_reports_the_invalid_event_by_index(api: Api) -> None:
    resp = api.module.handler(sample("ingest_batch.json"), LambdaContext())
    body = json.loads(resp["body"])
    assert resp["statusCode"] == 202 and body["accepted"] == 4
    assert [(r["index"], r["event_id"]) for r in body["rejected"]] == [(3, "evt-0104")]
    assert "type" in body["rejected"][0]["reason"]
    assert [e.item_id for e in api.sessions.recent("u-7")] == ["1210", "1196"]


@pytest.mark.parametrize(
    ("raw", "status", "code"),
    [
        ("", 400, "empty_body"),
        ("{not json", 400, "invalid_json"),
        ("[1, 2]", 400, "invalid_body"),
        ('{"events": {"a": 1}}', 400, "invalid_body"),
        ('{"events": [], "extra": 1}', 400, "invalid_body"),
        ('{"events": []}', 400, "no_valid_event"),
        (json.dumps({"events": [ev(f"e{i}") for i in range(MAX_BATCH_EVENTS + 1)]}), 413, "too_many_events"),
        ('{"events": ["' + "x" * MAX_BODY_BYTES + '"]}', 413, "payload_too_large"),
        (json.dumps({"events": [{"event_id": "e1"}, ev("e2", type_="teleport")]}), 400, "no_valid_event"),
    ],
)
def test_requests_refused_as_a_whole(api: Api, raw: str, status: int, code: str) -> None:
    got_status, body = api.post(None, raw=raw)
    assert (got_status, body["error"]["code"]) == (status, code)
    assert body["error"]["message"]
    assert api.publisher.published == [] and api.sessions.sessions == {}


def test_each_rejection_reason_is_reported_per_event(api: Api) -> None:
    events: list[Any] = [
        ev("ok-1"),
        "not an object",
        {"event_id": "bad-1", "user_id": "u1", "item_id": "m1", "type": "view"},  # no ts
        ev("bad-2", type_="rating"),  # rating without value
        ev("bad-3", ts=NOW + 3600),  # future
        ev("bad-4", colour="red"),  # unknown field
        ev("bad 5"),  # invalid id
        {**ev("bad-6"), "schema_version": 7},
        ev("ok-1"),  # duplicate in request
        ev("ok-2", type_="rating", value=4.5),
    ]
    status, body = api.post({"events": events})
    assert status == 202 and body["accepted"] == 2
    reasons = {r["index"]: r["reason"] for r in body["rejected"]}
    assert sorted(reasons) == [1, 2, 3, 4, 5, 6, 7, 8]
    assert reasons[1] == "event must be a JSON object"
    assert "ts: field required" in reasons[2]
    assert "value" in reasons[3]
    assert "future" in reasons[4]
    assert "colour: unknown field" in reasons[5]
    assert reasons[6].startswith("event_id:")
    assert "schema_version" in reasons[7]
    assert reasons[8] == "duplicate event_id in this request"
    assert {r["event_id"] for r in body["rejected"] if r["index"] == 8} == {"ok-1"}


def test_events_the_stream_does_not_take_are_not_reported_accepted(api: Api) -> None:
    api.publisher.fail_event_ids = {"e2"}
    status, body = api.post({"events": [ev("e1"), ev("e2", item="m2")]})
    assert status == 202 and body["accepted"] == 1
    assert body["rejected"] == [
        {"index": 1, "event_id": "e2", "reason": "stream unavailable, retry (throttled)"}
    ]
    assert [e.item_id for e in api.sessions.recent("u1")] == ["m1"]  # no session entry for a lost event


def test_old_events_are_accepted_but_not_shown_as_the_live_session(api: Api) -> None:
    status, body = api.post({"events": [ev("old", item="m-old", ts=NOW - 3 * 3600), ev("new", item="m-new")]})
    assert (status, body["accepted"]) == (202, 2)
    assert [e.event_id for e in api.publisher.published] == ["old", "new"]
    assert [e.item_id for e in api.sessions.recent("u1")] == ["m-new"]


def test_a_session_write_failure_still_accepts_the_durable_events(api: Api) -> None:
    api.sessions.fail_with = DependencyError("redis timeout")
    status, body = api.post(ev("e1"))
    assert status == 202 and body == {"accepted": 1, "rejected": []}
    assert [e.event_id for e in api.publisher.published] == ["e1"]


def test_jwt_mode_rejects_events_for_other_users(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(api.module, "settings", load_settings(IngestSettings, function_env(AUTH_MODE="JWT")))
    status, body = api.post(
        {"events": [ev("e1", user="alice"), ev("e2", user="bob")]}, claims={"claims": {"sub": "alice"}}
    )
    assert status == 202 and body["accepted"] == 1
    assert body["rejected"] == [
        {"index": 1, "event_id": "e2", "reason": "user_id does not match the authenticated user"}
    ]
    status, body = api.post(ev("e3", user="alice"), claims={"jwt": {"claims": {"sub": "alice"}}})
    assert (status, body["accepted"]) == (202, 1)
    status, body = api.post(ev("e4", user="bob"), claims={"claims": {"sub": "alice"}})
    assert status == 400 and "does not match" in body["error"]["message"]
    status, body = api.post(ev("e5", user="alice"), claims={})
    assert status == 403 and body["error"]["code"] == "forbidden"
