"""The local API over real HTTP: routes, static files, extra JSON routes, payload limit."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from recpipe_dev.local.api_server import LocalApi, LocalApiServer
from recpipe_dev.local.redis_server import free_port


def _recommend(event: dict[str, Any], context: Any) -> dict[str, Any]:
    q = event["queryStringParameters"] or {}
    return {
        "statusCode": 200,
        "headers": {"Content-Type": "application/json"},
        "body": json.dumps({"user": q.get("user_id")}),
    }


@pytest.fixture()
def server(tmp_path: Path) -> Iterator[LocalApiServer]:
    (tmp_path / "index.html").write_text("<h1>demo</h1>")
    api = LocalApi(handlers={"recommend": _recommend}, functions_dir=tmp_path / "none")
    srv = LocalApiServer(
        api,
        port=free_port(),
        static_dir=tmp_path,
        extra_routes={("GET", "/demo/stats"): lambda q, b: (200, api.stats.snapshot())},
    )
    srv.start()
    yield srv
    srv.stop()


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def test_api_request_reaches_the_handler_and_is_counted(server: LocalApiServer) -> None:
    status, body = _get(f"{server.url}/recommendations?user_id=u42&k=5")
    assert status == 200 and json.loads(body) == {"user": "u42"}
    status, body = _get(f"{server.url}/demo/stats")
    stats = json.loads(body)
    assert stats["GET /recommendations"]["requests"] == 1
    assert stats["GET /recommendations"]["status_counts"] == {"200": 1}


def test_static_page_and_path_escape(server: LocalApiServer) -> None:
    assert _get(f"{server.url}/") == (200, b"<h1>demo</h1>")
    assert _get(f"{server.url}/../../etc/passwd")[0] == 404


def test_missing_handler_is_reported_not_crashed(server: LocalApiServer) -> None:
    req = urllib.request.Request(f"{server.url}/events", data=b"{}", method="POST")
    try:
        urllib.request.urlopen(req, timeout=5)
        raise AssertionError("expected 503")
    except urllib.error.HTTPError as e:
        assert e.code == 503
        assert json.loads(e.read())["error"]["code"] == "handler_missing"


def test_oversized_body_is_413_before_the_handler(server: LocalApiServer) -> None:
    req = urllib.request.Request(
        f"{server.url}/events", data=b"x", method="POST", headers={"Content-Length": str(11 * 1024 * 1024)}
    )
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=5)
    assert err.value.code == 413
