"""The events/ payloads through the real handler (in-memory stores, a real TFLite ranker)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import aws_xray_sdk.core  # noqa: F401 - its recorder opens a UDP socket at import: before sockets are off
import pytest
from recpipe.config import RecommendSettings, load_settings
from recpipe.domain.features import N_FEATURES
from recpipe.ports import SessionEntry
from recpipe.serving.model_provider import LocalBundleSource
from recpipe.serving.runtime import Dependencies, build_online_path
from recpipe_dev.local.functions import LambdaContext, load_function
from recpipe_dev.local.functions import sample_event as sample
from recpipe_dev.testing.fakes_candidates import InMemoryCandidateCache
from recpipe_dev.testing.fakes_stream import (
    InMemorySessionStore,
    InMemoryTrendingStore,
    InMemoryUserFeatureStore,
)
from recpipe_dev.testing.openapi import response_validator
from recpipe_dev.testing.settings import function_env

ROOT = Path(__file__).resolve().parents[3]


class Api:
    def __init__(self, module: ModuleType, sessions: InMemorySessionStore) -> None:
        self.module = module
        self.sessions = sessions

    def call(self, event: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        resp = self.module.handler(event, LambdaContext())
        return resp["statusCode"], json.loads(resp["body"])


def check_schema(body: dict[str, Any]) -> None:
    response_validator().validate(body)


@pytest.fixture()
def api(monkeypatch: pytest.MonkeyPatch, make_bundle: Any, tmp_path: Path) -> Iterator[Api]:
    bundle = make_bundle("v1", root=tmp_path / "bundles")
    monkeypatch.setenv("RECPIPE_BUNDLE_DIR", str(bundle))
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:9/0")
    module = load_function("recommend")
    cache = InMemoryCandidateCache()
    cache.publish("c1", [("user-42", [("i30", 0.9), ("i31", 0.8), ("i3", 0.7)])], {})
    sessions = InMemorySessionStore()
    deps = Dependencies(
        candidates=cache,
        sessions=sessions,
        users=InMemoryUserFeatureStore(),
        trending=InMemoryTrendingStore(),
        probes={"redis": lambda: True},
    )
    module.online = build_online_path(
        load_settings(
            RecommendSettings,
            function_env(MAX_CANDIDATES="40", READ_TIMEOUT_MS="500", REQUEST_BUDGET_MS="1000"),
        ),
        dependencies=deps,
        source=LocalBundleSource(bundle),
    )
    yield Api(module, sessions)


def test_get_sample(api: Api) -> None:
    status, body = api.call(sample("recommend_get.json"))
    assert status == 200
    check_schema(body)
    assert body["user_id"] == "user-42" and body["model_version"] == "v1" and body["degraded"] == []
    assert len(body["items"]) == 10
    # The CF list (i30, i31, i3) outranks popularity with this ranker.
    top = body["items"][:3]
    assert {i["item_id"] for i in top} == {"i30", "i31", "i3"}
    assert {i["reason"] for i in top} == {"similar to your interests"}


def test_post_sample_with_explain_and_exclusions(api: Api) -> None:
    event = sample("recommend_post.json")
    request = json.loads(event["body"])
    request["exclude"] = ["i30"]
    request["context"]["cart"] = ["i31"]
    event["body"] = json.dumps(request)
    status, body = api.call(event)
    assert status == 200
    check_schema(body)
    shown = [i["item_id"] for i in body["items"]]
    assert len(shown) == 5 and not {"i30", "i31"} & set(shown)
    assert all(len(i["features"]) == N_FEATURES for i in body["items"])


def test_session_written_a_moment_ago_shapes_the_next_answer(api: Api) -> None:
    import time

    api.sessions.append("user-42", [SessionEntry("i12", "view", time.time())])
    _, body = api.call(sample("recommend_get.json"))
    assert any(i["reason"] == "because you viewed Item 12" for i in body["items"])


def test_cold_start_sample(api: Api) -> None:
    status, body = api.call(sample("recommend_cold_start.json"))
    assert status == 200
    check_schema(body)
    assert body["user_id"] == "brand-new-user" and len(body["items"]) == 10


def test_bad_k_sample(api: Api) -> None:
    status, body = api.call(sample("recommend_bad_k.json"))
    assert (status, body["error"]["code"]) == (400, "invalid_request")
    assert body["error"]["message"] == "k: Input should be less than or equal to 100"


def test_malformed_json_sample(api: Api) -> None:
    status, body = api.call(sample("recommend_malformed.json"))
    assert (status, body["error"]["code"]) == (400, "malformed_json")


def test_missing_user_is_400(api: Api) -> None:
    event = sample("recommend_get.json")
    event["queryStringParameters"] = {"k": "3"}
    status, body = api.call(event)
    assert status == 400 and body["error"]["message"] == "user_id: field required"


def test_jwt_mode_refuses_another_user_and_serves_the_subject(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        api.module, "settings", load_settings(RecommendSettings, function_env(AUTH_MODE="JWT"))
    )
    status, body = api.call(sample("recommend_jwt_other_user.json"))
    assert (status, body["error"]["code"]) == (403, "forbidden")
    event = sample("recommend_jwt_other_user.json")
    event["queryStringParameters"] = {"k": "2"}
    status, body = api.call(event)
    assert status == 200 and body["user_id"] == "user-42"
    # The HTTP API JWT authorizer shape works too; no subject at all is refused.
    event["requestContext"]["authorizer"] = {"jwt": {"claims": {"sub": "user-7"}}}
    assert api.call(event)[1]["user_id"] == "user-7"
    event["requestContext"].pop("authorizer")
    assert api.call(event)[0] == 403


def test_api_key_mode_lets_the_caller_name_the_user(api: Api) -> None:
    status, body = api.call(sample("recommend_jwt_other_user.json"))
    assert status == 200 and body["user_id"] == "someone-else"


def test_health_sample(api: Api) -> None:
    status, body = api.call(sample("health.json"))
    assert status == 200
    assert body == {
        "status": "ok",
        "model_version": "v1",
        "model_error": None,
        "dependencies": {"redis": "ok"},
    }


def test_unknown_route_is_404(api: Api) -> None:
    event = sample("health.json")
    event["path"] = event["resource"] = "/nope"
    assert api.call(event)[0] == 404
