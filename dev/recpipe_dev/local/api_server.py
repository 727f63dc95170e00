"""The Recommendations API on 127.0.0.1: HTTP -> API Gateway REST proxy events -> the real handlers.

Each request becomes the event API Gateway would send (`resource`, `httpMethod`,
`queryStringParameters` + multi-value, headers, `requestContext`, body) and is passed to
`handler(event, context)` of `functions/<name>/app.py`, the same file SAM deploys. Invocations
of one function are serialised, as in a single Lambda container (Powertools' metrics buffer and
the handlers' module state assume one invocation at a time).

Extra routes (the demo's `/demo/*`) and a static directory can be mounted next to the API.
"""

from __future__ import annotations

import contextlib
import json
import logging
import mimetypes
import os
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from aws_lambda_powertools import Metrics
from aws_lambda_powertools.metrics.functions import is_metrics_disabled

from recpipe_dev.local.functions import (
    FUNCTIONS_DIR,
    STAGE,
    Handler,
    HandlerMissing,
    LambdaContext,
    load_handler,
    load_module,
)

__all__ = [
    "API_ROUTES",
    "HandlerMissing",
    "LambdaContext",
    "LocalApi",
    "apigw_event",
    "load_handler",
    "load_module",
]

log = logging.getLogger("recpipe_dev.local.api")

#: API Gateway's payload limit; larger bodies never reach the function.
MAX_BODY_BYTES = 10 * 1024 * 1024
#: Methods a client commonly sends (any other gets the same JSON 405, not http.server's HTML 501).
HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE")
#: The CORS preflight of api/openapi.yaml (a mock integration in API Gateway): path -> methods.
PREFLIGHT = {"/recommendations": "GET,POST,OPTIONS", "/events": "POST,OPTIONS"}
PREFLIGHT_HEADERS = "Content-Type,Authorization,X-Api-Key,X-Amz-Date,X-Amz-Security-Token"


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    resource: str
    #: Directory name under functions/ (the handler is `<dir>/app.py:handler`).
    function: str


#: The RecommendationsApi routes of template.yaml / api/openapi.yaml.
API_ROUTES: tuple[Route, ...] = (
    Route("GET", "/recommendations", "recommend"),
    Route("POST", "/recommendations", "recommend"),
    Route("GET", "/health", "recommend"),
    Route("POST", "/events", "ingest_events"),
)


def apigw_event(
    method: str,
    resource: str,
    query: Mapping[str, list[str]],
    headers: Mapping[str, str],
    body: bytes | None,
    *,
    source_ip: str = "127.0.0.1",
) -> dict[str, Any]:
    """A REST API (v1) Lambda proxy integration event, as API Gateway builds it."""
    text = body.decode("utf-8", errors="replace") if body else None
    single_q = {k: v[-1] for k, v in query.items()} or None
    multi_q = {k: list(v) for k, v in query.items()} or None
    return {
        "resource": resource,
        "path": resource,
        "httpMethod": method,
        "headers": dict(headers) or None,
        "multiValueHeaders": {k: [v] for k, v in headers.items()} or None,
        "queryStringParameters": single_q,
        "multiValueQueryStringParameters": multi_q,
        "pathParameters": None,
        "stageVariables": None,
        "requestContext": {
            "resourcePath": resource,
            "httpMethod": method,
            "path": f"/{STAGE}{resource}",
            "stage": STAGE,
            "requestId": str(uuid.uuid4()),
            "requestTimeEpoch": int(time.time() * 1000),
            "accountId": "123456789012",
            "apiId": "local",
            "protocol": "HTTP/1.1",
            "domainName": headers.get("Host", "127.0.0.1"),
            "identity": {"sourceIp": source_ip, "userAgent": headers.get("User-Agent", "")},
        },
        "body": text,
        "isBase64Encoded": False,
    }


@dataclass(slots=True)
class RequestStats:
    """Latency and counts of everything the server answered (the demo's live panel)."""

    latencies_ms: dict[str, list[float]] = field(default_factory=dict)
    statuses: dict[str, dict[int, int]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, route: str, status: int, ms: float) -> None:
        with self._lock:
            self.latencies_ms.setdefault(route, []).append(ms)
            by_status = self.statuses.setdefault(route, {})
            by_status[status] = by_status.get(status, 0) + 1

    def snapshot(self) -> dict[str, Any]:
        import numpy as np

        with self._lock:
            routes = {k: list(v) for k, v in self.latencies_ms.items()}
            statuses = {k: dict(v) for k, v in self.statuses.items()}
        out: dict[str, Any] = {}
        for route, values in routes.items():
            arr = np.asarray(values)
            out[route] = {
                "requests": len(values),
                "p50_ms": round(float(np.percentile(arr, 50)), 2),
                "p95_ms": round(float(np.percentile(arr, 95)), 2),
                "p99_ms": round(float(np.percentile(arr, 99)), 2),
                "max_ms": round(float(arr.max()), 2),
                "status_counts": {str(k): v for k, v in sorted(statuses[route].items())},
            }
        return out


#: An extra route: (query, body) -> (status, JSON-able body).
ExtraRoute = Callable[[Mapping[str, list[str]], bytes | None], tuple[int, Any]]


class LocalApi:
    """Routes API requests to handlers (loaded on first use) and keeps request statistics."""

    def __init__(
        self,
        routes: tuple[Route, ...] = API_ROUTES,
        *,
        handlers: Mapping[str, Handler] | None = None,
        functions_dir: Path = FUNCTIONS_DIR,
    ) -> None:
        self.routes = {(r.method, r.resource): r for r in routes}
        self.functions_dir = functions_dir
        self._handlers: dict[str, Handler] = dict(handlers or {})
        self._locks: dict[str, threading.Lock] = {}
        self._load_lock = threading.Lock()
        self.stats = RequestStats()

    def handler(self, function: str) -> Handler:
        with self._load_lock:
            if function not in self._handlers:
                self._handlers[function] = load_handler(function, functions_dir=self.functions_dir)
                self._locks[function] = threading.Lock()
            self._locks.setdefault(function, threading.Lock())
            return self._handlers[function]

    def missing(self) -> list[str]:
        """Handler files that do not exist yet (the demo reports them instead of failing)."""
        return sorted(
            {
                f"functions/{r.function}/app.py"
                for r in self.routes.values()
                if r.function not in self._handlers
                and not (self.functions_dir / r.function / "app.py").is_file()
            }
        )

    def known_path(self, resource: str) -> bool:
        return any(path == resource for _, path in self.routes)

    def invoke(
        self,
        method: str,
        resource: str,
        query: Mapping[str, list[str]],
        headers: Mapping[str, str],
        body: bytes | None,
    ) -> tuple[int, dict[str, str], bytes]:
        """Returns (status, headers, body) exactly as API Gateway would relay the proxy response."""
        route = self.routes.get((method, resource))
        if route is None:
            return _json_error(405, "method_not_allowed", f"{method} is not allowed on {resource}")
        try:
            handler = self.handler(route.function)
        except HandlerMissing as exc:
            return _json_error(503, "handler_missing", str(exc))
        event = apigw_event(method, resource, query, headers, body)
        with self._locks[route.function]:
            try:
                response = handler(event, LambdaContext(route.function))
            except Exception:
                # API Gateway turns a function error into 502; keep the traceback for the developer.
                log.error("handler %s failed:\n%s", route.function, traceback.format_exc())
                return _json_error(502, "internal_error", "Internal server error")
            finally:
                discard_disabled_metrics()
        return _proxy_response(response)


def discard_disabled_metrics() -> None:
    """With POWERTOOLS_METRICS_DISABLED, Powertools (3.x) skips the per-invocation flush but never
    clears its (process-wide) metric set, and prints the set anyway once a metric holds 100
    values. A long-lived local process therefore drops the values after each invocation."""
    if is_metrics_disabled():
        Metrics().clear_metrics()


def _json_error(status: int, code: str, message: str) -> tuple[int, dict[str, str], bytes]:
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    return status, {"Content-Type": "application/json"}, body


def _proxy_response(response: Any) -> tuple[int, dict[str, str], bytes]:
    if not isinstance(response, dict) or not isinstance(response.get("statusCode"), int):
        return _json_error(502, "malformed_lambda_response", "Malformed Lambda proxy response")
    headers = {k: str(v) for k, v in (response.get("headers") or {}).items()}
    for k, values in (response.get("multiValueHeaders") or {}).items():
        if values:
            headers[k] = ", ".join(str(v) for v in values)
    body = response.get("body") or ""
    if response.get("isBase64Encoded"):
        import base64

        raw = base64.b64decode(body)
    else:
        raw = str(body).encode()
    return int(response["statusCode"]), headers, raw


class LocalApiServer:
    """ThreadingHTTPServer on host:port serving the API, extra JSON routes and static files."""

    def __init__(
        self,
        api: LocalApi,
        host: str = "127.0.0.1",
        port: int = 3000,
        *,
        extra_routes: Mapping[tuple[str, str], ExtraRoute] | None = None,
        static_dir: Path | None = None,
    ) -> None:
        self.api = api
        self.extra_routes = dict(extra_routes or {})
        self.static_dir = static_dir
        self._httpd = ThreadingHTTPServer((host, port), self._request_handler_class())
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> None:
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="local-api", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(5)

    def _request_handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class _Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            server_version = "recpipe-local"

            def log_message(self, format: str, *args: Any) -> None:  # quiet: stats keep the record
                log.debug("%s " + format, self.address_string(), *args)

            def do_GET(self) -> None:
                self._dispatch("GET")

            def do_POST(self) -> None:
                self._dispatch("POST")

            def do_HEAD(self) -> None:
                self._dispatch("HEAD")

            def do_PUT(self) -> None:
                self._dispatch("PUT")

            def do_PATCH(self) -> None:
                self._dispatch("PATCH")

            def do_DELETE(self) -> None:
                self._dispatch("DELETE")

            def __getattr__(self, name: str) -> Any:
                # Any other method (TRACE, CONNECT, made-up ones): a JSON 405/404 like the rest,
                # not http.server's HTML 501.
                if name.startswith("do_") and name[3:].isalpha():
                    return lambda: self._dispatch(name[3:])
                raise AttributeError(name)

            def do_OPTIONS(self) -> None:
                resource = urlsplit(self.path).path.rstrip("/") or "/"
                methods = PREFLIGHT.get(resource)
                self._drain_body()
                if methods is None:  # no preflight route in the contract (e.g. /health)
                    self._send(
                        *_json_error(405, "method_not_allowed", f"OPTIONS is not allowed on {resource}")
                    )
                    return
                origin = os.environ.get("CORS_ALLOW_ORIGIN", "*")
                headers = {
                    "Content-Type": "application/json",
                    "Access-Control-Allow-Origin": origin,
                    "Access-Control-Allow-Methods": methods,
                    "Access-Control-Allow-Headers": PREFLIGHT_HEADERS,
                    "Access-Control-Max-Age": "600",
                }
                self._send(200, headers, b"{}")

            def _drain_body(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if 0 < length <= MAX_BODY_BYTES:
                    self.rfile.read(length)

            def _dispatch(self, method: str) -> None:
                started = time.perf_counter()
                parts = urlsplit(self.path)
                resource = parts.path.rstrip("/") or "/"
                query = parse_qs(parts.query, keep_blank_values=True)
                length = int(self.headers.get("Content-Length") or 0)
                if length > MAX_BODY_BYTES:
                    self.close_connection = True
                    self._send(*_json_error(413, "payload_too_large", "request body is over 10 MB"))
                    return
                body = self.rfile.read(length) if length else None
                route_name = f"{method} {resource}"
                if method == "HEAD":  # API Gateway has no HEAD route here; no body on a HEAD answer
                    self._send(405, {"Content-Type": "application/json"}, b"")
                    return
                if server.api.known_path(resource):
                    hdrs = {k: v for k, v in self.headers.items()}
                    status, headers, payload = server.api.invoke(method, resource, query, hdrs, body)
                    self._send(status, headers, payload)
                    server.api.stats.record(route_name, status, (time.perf_counter() - started) * 1000)
                    return
                extra = server.extra_routes.get((method, resource))
                if extra is not None:
                    status, data = extra(query, body)
                    self._send(status, {"Content-Type": "application/json"}, json.dumps(data).encode())
                    return
                if method == "GET" and server.static_dir is not None and self._static(resource):
                    return
                self._send(*_json_error(404, "not_found", f"no route for {method} {resource}"))

            def _static(self, resource: str) -> bool:
                assert server.static_dir is not None
                root = server.static_dir.resolve()
                target = (root / (resource.lstrip("/") or "index.html")).resolve()
                if not target.is_relative_to(root) or not target.is_file():
                    return False
                ctype = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
                self._send(200, {"Content-Type": ctype, "Cache-Control": "no-store"}, target.read_bytes())
                return True

            def _send(self, status: int, headers: Mapping[str, str], body: bytes) -> None:
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self.send_response(status)
                    for k, v in headers.items():
                        if k.lower() not in {"content-length", "connection"}:
                            self.send_header(k, v)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)

        return _Handler
