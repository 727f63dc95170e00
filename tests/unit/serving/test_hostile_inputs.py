"""A hostile-input corpus through the real handlers (issue #15): every input gets a precise 4xx
that names the field or the limit, and nothing reaches the stream or the session store.

Covers defects 2 (unstorable values accepted), 3 (deep JSON -> RecursionError -> 502) and 5
(lenient integer parsing, 501 events -> 400), and the corpus: oversize and deeply nested
bodies, invalid UTF-8, key separators and glob characters in ids, 10 KB ids, odd k, unknown
fields, wrong types, oversize batches, duplicate ids in a batch, far-future and 1970
timestamps, 10,000-id exclusion lists.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import unquote

import aws_xray_sdk.core  # noqa: F401 - its recorder opens a UDP socket at import: before sockets are off
import pytest
from pytest_socket import disable_socket, enable_socket
from recpipe.bundle import write_bundle
from recpipe.config import RecommendSettings, load_settings
from recpipe.serving.model_provider import LocalBundleSource
from recpipe.serving.runtime import Dependencies, build_online_path
from recpipe.stream.ingest import EventIngestor
from recpipe_dev.local.functions import LambdaContext, load_function
from recpipe_dev.local.functions import sample_event as sample
from recpipe_dev.testing.fakes_candidates import InMemoryCandidateCache
from recpipe_dev.testing.fakes_stream import (
    InMemoryEventPublisher,
    InMemorySessionStore,
    InMemoryTrendingStore,
    InMemoryUserFeatureStore,
)
from recpipe_dev.testing.settings import FUNCTION_ENV, function_env
from serving_catalogue import make_items, make_neighbours

NOW = time.time()
TEST_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
    "POWERTOOLS_TRACE_DISABLED": "true",
    "POWERTOOLS_METRICS_NAMESPACE": "recpipe-test",
    "POWERTOOLS_SERVICE_NAME": "recpipe",
}
DEEP = "[" * 1000 + "]" * 1000  # 2 KB


def ev(event_id: str = "e1", **override: Any) -> dict[str, Any]:
    return {"event_id": event_id, "user_id": "u1", "item_id": "m1", "type": "view", "ts": NOW - 5, **override}


class Apis:
    def __init__(self, ingest: Any, recommend: Any) -> None:
        self.ingest, self.recommend = ingest, recommend
        self.publisher = InMemoryEventPublisher()
        self.sessions = InMemorySessionStore()
        ingest.ingestor = EventIngestor(self.publisher, self.sessions)

    def call(self, module: Any, event: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        resp = module.handler(event, LambdaContext())
        assert (resp.get("headers") or resp["multiValueHeaders"])["Content-Type"] in (
            "application/json",
            ["application/json"],
        )
        return resp["statusCode"], json.loads(resp["body"])

    def post_events(self, raw: str, *, b64: bool = False) -> tuple[int, dict[str, Any]]:
        event = sample("ingest_single.json")
        event["body"], event["isBase64Encoded"] = raw, b64
        return self.call(self.ingest, event)

    def get(self, params: dict[str, str]) -> tuple[int, dict[str, Any]]:
        event = sample("recommend_get.json")
        event["queryStringParameters"] = params
        event["multiValueQueryStringParameters"] = {k: [v] for k, v in params.items()}
        return self.call(self.recommend, event)

    def post(self, raw: str) -> tuple[int, dict[str, Any]]:
        event = sample("recommend_post.json")
        event["body"] = raw
        return self.call(self.recommend, event)


@pytest.fixture(scope="module")
def handlers(tmp_path_factory: pytest.TempPathFactory, tiny_ranker: bytes) -> Iterator[tuple[Any, Any]]:
    """Both handler modules, loaded once (the recommend handler's init is the slow part)."""
    bundle = tmp_path_factory.mktemp("bundles") / "v1"
    items = make_items()
    write_bundle(
        bundle, version="v1", items=items, neighbours=make_neighbours(items), ranker_tflite=tiny_ranker
    )
    with pytest.MonkeyPatch.context() as mp:
        # Module scope: what tests/conftest.py's autouse fixtures set per test, set here once.
        disable_socket(allow_unix_socket=True)
        for name, value in {**FUNCTION_ENV, **TEST_AWS_ENV}.items():
            mp.setenv(name, value)
        mp.setenv("RECPIPE_BUNDLE_DIR", str(bundle))
        mp.setenv("REDIS_URL", "redis://127.0.0.1:9/0")
        recommend = load_function("recommend")
        recommend.online = build_online_path(
            load_settings(RecommendSettings, function_env(READ_TIMEOUT_MS="500", REQUEST_BUDGET_MS="1000")),
            dependencies=Dependencies(
                candidates=InMemoryCandidateCache(),
                sessions=InMemorySessionStore(),
                users=InMemoryUserFeatureStore(),
                trending=InMemoryTrendingStore(),
            ),
            source=LocalBundleSource(bundle),
            warm=False,
        )
        yield load_function("ingest_events"), recommend
        enable_socket()


@pytest.fixture()
def apis(handlers: tuple[Any, Any]) -> Apis:
    return Apis(*handlers)


def _batch(*events: Any) -> str:
    return json.dumps({"events": list(events)})


#: (name, raw body, status, code, text the message must contain)
EVENT_CORPUS: list[tuple[str, str, int, str, str]] = [
    ("deep array", DEEP, 400, "too_deeply_nested", "nested"),
    ("deep field", '{"event_id": ' + DEEP + "}", 400, "too_deeply_nested", "nested"),
    ("oversize body", '{"events": ["' + "x" * (1024 * 1024) + '"]}', 413, "payload_too_large", "limit"),
    ("501 events", _batch(*[ev(f"e{i}") for i in range(501)]), 413, "too_many_events", "events: 501"),
    ("NaN literal", '{"event_id": "e1", "ts": NaN}', 400, "invalid_json", "NaN"),
    ("5,000-digit int", '{"ts": 1' + "0" * 5000 + "}", 400, "invalid_json", "not valid JSON"),
    ("invalid UTF-8 (replaced)", json.dumps(ev(user_id="u\ufffd")), 400, "no_valid_event", "user_id"),
    ("pipe in user_id", json.dumps(ev(user_id="u|1")), 400, "no_valid_event", "user_id"),
    ("slash in item_id", json.dumps(ev(item_id="a/b")), 400, "no_valid_event", "item_id"),
    ("glob in event_id", json.dumps(ev(event_id="e*")), 400, "no_valid_event", "event_id"),
    ("bracket glob", json.dumps(ev(user_id="u[12]")), 400, "no_valid_event", "user_id"),
    ("newline after id", json.dumps(ev(user_id="u1\n")), 400, "no_valid_event", "user_id"),
    ("10 KB id", json.dumps(ev(event_id="e" * 10_240)), 400, "no_valid_event", "event_id"),
    ("unknown field", json.dumps(ev(colour="red")), 400, "no_valid_event", "colour: unknown field"),
    ("int event_id", json.dumps(ev(event_id=5)), 400, "no_valid_event", "event_id"),
    ("string value", json.dumps(ev(type="rating", value="5")), 400, "no_valid_event", "value"),
    ("list context", json.dumps(ev(context=[])), 400, "no_valid_event", "context"),
    ("far-future ts", json.dumps(ev(ts=NOW + 86_400 * 365)), 400, "no_valid_event", "future"),
    ("1970 ts", json.dumps(ev(ts=1)), 400, "no_valid_event", "ts:"),
    ("1970 ISO ts", json.dumps(ev(ts="1970-01-01T00:00:01Z")), 400, "no_valid_event", "ts:"),
    ("ts 1e-200", json.dumps(ev(ts=1e-200)), 400, "no_valid_event", "ts:"),
    (
        "ts 1e400 (inf)",
        '{"event_id": "e1", "user_id": "u1", "item_id": "m1", "type": "view", "ts": 1e400}',
        400,
        "no_valid_event",
        "ts:",
    ),
    ("value -5", json.dumps(ev(value=-5)), 400, "no_valid_event", "value"),
    ("rating 11", json.dumps(ev(type="rating", value=11)), 400, "no_valid_event", "value"),
    ("schema_version true", json.dumps(ev(schema_version=True)), 400, "no_valid_event", "schema_version"),
    ("schema_version 1.0", json.dumps(ev(schema_version=1.0)), 400, "no_valid_event", "schema_version"),
    ("schema_version '1'", json.dumps(ev(schema_version="1")), 400, "no_valid_event", "schema_version"),
    ("events not a list", '{"events": {"a": 1}}', 400, "invalid_body", "events"),
]


@pytest.mark.parametrize(
    ("raw", "status", "code", "text"), [c[1:] for c in EVENT_CORPUS], ids=[c[0] for c in EVENT_CORPUS]
)
def test_hostile_event_bodies_are_refused_precisely_and_store_nothing(
    apis: Apis, raw: str, status: int, code: str, text: str
) -> None:
    got, body = apis.post_events(raw)
    assert (got, body["error"]["code"]) == (status, code)
    assert text in body["error"]["message"]
    assert apis.publisher.published == [] and apis.sessions.sessions == {}


def test_invalid_utf8_in_a_base64_body_is_a_400(apis: Apis) -> None:
    raw = base64.b64encode(b'{"event_id": "e1", "user_id": "u\xff"}').decode()
    got, body = apis.post_events(raw, b64=True)
    assert got == 400 and body["error"]["code"] == "invalid_json"
    assert apis.publisher.published == []


def test_a_duplicate_id_in_a_batch_is_rejected_by_index_and_stored_once(apis: Apis) -> None:
    got, body = apis.post_events(_batch(ev("e1"), ev("e1", item_id="m2")))
    assert got == 202 and body["accepted"] == 1
    assert body["rejected"] == [
        {"index": 1, "event_id": "e1", "reason": "duplicate event_id in this request"}
    ]
    assert [e.item_id for e in apis.publisher.published] == ["m1"]


def test_a_poison_event_in_a_batch_does_not_take_the_others_down(apis: Apis) -> None:
    got, body = apis.post_events(_batch(ev("e1"), ev("e2", ts=1e-200), ev("e3", user_id="u2")))
    assert got == 202 and body["accepted"] == 2
    assert [r["index"] for r in body["rejected"]] == [1] and "ts:" in body["rejected"][0]["reason"]
    assert sorted(e.event_id for e in apis.publisher.published) == ["e1", "e3"]


#: GET /recommendations query parameters (name, params, text the message must contain).
QUERY_CORPUS: list[tuple[str, dict[str, str], str]] = [
    ("k=1_0", {"k": "1_0"}, "k:"),
    ("k full-width 5", {"k": unquote("%EF%BC%95")}, "k:"),
    ("k Arabic-Indic 5", {"k": "\u0665"}, "k:"),
    ("k with spaces", {"k": " 5"}, "k:"),
    ("k=1e1", {"k": "1e1"}, "k:"),
    ("k=0", {"k": "0"}, "k:"),
    ("k=101", {"k": "101"}, "k:"),
    ("k=-1", {"k": "-1"}, "k:"),
    ("k empty", {"k": ""}, "k:"),
    ("k 10^30", {"k": "1" + "0" * 30}, "k:"),
    ("utc offset full-width", {"utc_offset_minutes": "\uff11"}, "utc_offset_minutes"),
    ("pipe in user_id", {"user_id": "u|1"}, "user_id"),
    ("glob in user_id", {"user_id": "u*"}, "user_id"),
    ("10 KB user_id", {"user_id": "u" * 10_240}, "user_id"),
    ("10,000-id exclusion", {"exclude": ",".join(f"i{n}" for n in range(10_000))}, "exclude"),
    ("glob in exclude", {"exclude": "i1,i*"}, "exclude"),
    ("unknown parameter", {"colour": "red"}, "colour"),
    ("explain=yes", {"explain": "yes"}, "explain"),
    ("device=toaster", {"device": "toaster"}, "device"),
]


@pytest.mark.parametrize(("params", "text"), [c[1:] for c in QUERY_CORPUS], ids=[c[0] for c in QUERY_CORPUS])
def test_hostile_query_strings_are_refused_precisely(apis: Apis, params: dict[str, str], text: str) -> None:
    got, body = apis.get({"user_id": "user-42", **params})
    assert got == 400, body
    assert text in body["error"]["message"]


RECOMMEND_BODIES: list[tuple[str, str, int, str, str]] = [
    ("deep array", DEEP, 400, "too_deeply_nested", "nested"),
    ("deep field", '{"user_id": "u1", "filters": ' + DEEP + "}", 400, "too_deeply_nested", "nested"),
    (
        "oversize body",
        json.dumps({"user_id": "u1", "exclude": ["x" * 100] * 700}),
        413,
        "payload_too_large",
        "limit",
    ),
    ("k as string", '{"user_id": "u1", "k": "10"}', 400, "invalid_request", "k:"),
    ("k as bool", '{"user_id": "u1", "k": true}', 400, "invalid_request", "k:"),
    ("k 1e400", '{"user_id": "u1", "k": 1e400}', 400, "invalid_request", "k:"),
    ("diversity NaN", '{"user_id": "u1", "diversity": NaN}', 400, "malformed_json", "NaN"),
    ("unknown field", '{"user_id": "u1", "colour": "red"}', 400, "invalid_request", "colour: unknown field"),
    (
        "10,000-id exclusion",
        json.dumps({"user_id": "u1", "exclude": [f"i{n}" for n in range(10_000)]}),
        413,
        "payload_too_large",
        "limit",
    ),
    (
        "1,000-id exclusion",
        json.dumps({"user_id": "u1", "exclude": [f"i{n}" for n in range(1_000)]}),
        400,
        "invalid_request",
        "exclude",
    ),
    (
        "glob in cart",
        json.dumps({"user_id": "u1", "context": {"cart": ["i?"]}}),
        400,
        "invalid_request",
        "cart",
    ),
    ("not an object", "[1]", 400, "invalid_request", "object"),
]


@pytest.mark.parametrize(
    ("raw", "status", "code", "text"), [c[1:] for c in RECOMMEND_BODIES], ids=[c[0] for c in RECOMMEND_BODIES]
)
def test_hostile_recommendation_bodies_are_refused_precisely(
    apis: Apis, raw: str, status: int, code: str, text: str
) -> None:
    got, body = apis.post(raw)
    assert (got, body["error"]["code"]) == (status, code)
    assert text in body["error"]["message"]


def test_deep_json_is_counted_by_a_metric(apis: Apis, capsys: pytest.CaptureFixture[str]) -> None:
    apis.post(DEEP)
    apis.post_events(DEEP)
    emitted = [
        json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith('{"_aws"')
    ]
    assert [m.get("Refused_too_deeply_nested") for m in emitted if "Refused_too_deeply_nested" in m] == [
        [1.0],
        [1.0],
    ]
