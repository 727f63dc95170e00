"""Schema fuzzing (issue #15): schemathesis generates requests for every operation of
api/openapi.yaml and sends them over HTTP to the local API, which runs the real handlers (a
trained bundle, a real redis-server). Checks: no server error, response schema, documented status
code, documented content type. A short bounded run; `recpipe bench resilience` can run longer.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from recpipe.adapters.redis_candidates import RedisCandidateCache
from recpipe.adapters.redis_session import RedisSessionStore, RedisTrendingStore
from recpipe.config import RecommendSettings, load_settings
from recpipe.redis_keys import KeyLayout
from recpipe.serving.model_provider import LocalBundleSource
from recpipe.serving.runtime import Dependencies, build_online_path
from recpipe.stream.ingest import EventIngestor
from recpipe_dev.local.api_server import HTTP_METHODS, LocalApi, LocalApiServer
from recpipe_dev.local.functions import load_function
from recpipe_dev.local.redis_server import free_port
from recpipe_dev.testing.fakes_stream import InMemoryEventPublisher, InMemoryUserFeatureStore
from recpipe_dev.testing.openapi import resolved_document
from recpipe_dev.testing.settings import function_env
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

CHECKS = (not_a_server_error, response_schema_conformance, status_code_conformance, content_type_conformance)
ENV = "fuzz"


@pytest.fixture(scope="module")
def local_api(tmp_path_factory: pytest.TempPathFactory, redis_server: str) -> Iterator[str]:
    import redis
    from recpipe_dev.testing.trained import trained_bundle

    result = trained_bundle(tmp_path_factory.mktemp("fuzz"), version="fuzz-v1")
    client = redis.Redis.from_url(redis_server)
    layout = KeyLayout(ENV)
    cache = RedisCandidateCache(client, layout)
    cache.publish("fuzz-v1", result.candidates.items(), {"source": "fuzz"})
    with pytest.MonkeyPatch.context() as mp:
        # Module scope: tests/conftest.py's per-test environment, set here once.
        aws = {
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_REGION": "us-east-1",
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "POWERTOOLS_TRACE_DISABLED": "true",
            "POWERTOOLS_METRICS_DISABLED": "true",
            "POWERTOOLS_SERVICE_NAME": "recpipe",
            # The handler's own import-time build (replaced below) must not look for real AWS.
            "AWS_ENDPOINT_URL": "http://127.0.0.1:9",
        }
        for name, value in {**function_env(ENV_NAME=ENV, REDIS_URL=redis_server), **aws}.items():
            mp.setenv(name, value)
        mp.setenv("RECPIPE_BUNDLE_DIR", str(result.bundle_dir))
        recommend = load_function("recommend")
        recommend.online = build_online_path(
            load_settings(RecommendSettings, function_env(ENV_NAME=ENV, REDIS_URL=redis_server)),
            dependencies=Dependencies(
                candidates=cache,
                sessions=RedisSessionStore(client, layout),
                users=InMemoryUserFeatureStore(),
                trending=RedisTrendingStore(client, layout),
                probes={"redis": client.ping, "candidate_cache": cache.require_version},
            ),
            source=LocalBundleSource(Path(result.bundle_dir)),
            background_refresh=False,
        )
        ingest = load_function("ingest_events")
        ingest.ingestor = EventIngestor(InMemoryEventPublisher(), RedisSessionStore(client, layout))
        api = LocalApi(handlers={"recommend": recommend.handler, "ingest_events": ingest.handler})
        server = LocalApiServer(api, port=free_port())
        server.start()
        yield server.url
        server.stop()
        status = api.stats.snapshot()
        # What the fuzzer sent, for the record (visible with -s).
        print(json.dumps({k: v["status_counts"] for k, v in status.items()}))


@pytest.fixture(scope="module")
def api_schema() -> Any:
    return schemathesis.openapi.from_dict(resolved_document())


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(
    max_examples=30,
    deadline=None,
    derandomize=True,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
        HealthCheck.function_scoped_fixture,
    ],
)
def test_every_operation_keeps_the_contract(case: Any, local_api: str) -> None:
    case.call_and_validate(base_url=local_api, checks=list(CHECKS), timeout=10)


def _call(url: str, method: str) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(
        url, method=method, data=b"{}" if method in ("POST", "PUT", "PATCH") else None
    )
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


@pytest.mark.parametrize("path", ["/recommendations", "/events", "/health"])
@pytest.mark.parametrize("method", HTTP_METHODS)
def test_every_method_gets_a_json_answer_like_api_gateway(local_api: str, path: str, method: str) -> None:
    documented = {"/recommendations": {"GET", "POST"}, "/events": {"POST"}, "/health": {"GET"}}[path]
    status, headers, body = _call(local_api + path, method)
    assert headers["Content-Type"] == "application/json"
    if method == "OPTIONS" and path != "/health":
        assert status == 200 and json.loads(body) == {}
        assert headers["Access-Control-Allow-Origin"] and "OPTIONS" in headers["Access-Control-Allow-Methods"]
    elif method in documented:
        assert status < 500
    else:
        assert status == 405
        if method != "HEAD":
            assert json.loads(body)["error"]["code"] == "method_not_allowed"
