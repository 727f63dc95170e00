"""The no-op Lambda extension (layers/shutdown-extension/) against a stand-in Extensions API:
it registers for SHUTDOWN only, under its file name, and exits when the SHUTDOWN event comes."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[3]
EXTENSION = ROOT / "layers" / "shutdown-extension" / "extensions" / "recpipe-shutdown"


def test_the_extension_registers_for_shutdown_only_and_exits_on_it() -> None:
    seen: list[tuple[str, str, dict[str, str], Any]] = []

    class Api(BaseHTTPRequestHandler):
        def _reply(self, body: dict[str, Any], headers: dict[str, str]) -> None:
            data = json.dumps(body).encode()
            self.send_response(200)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            seen.append(("POST", self.path, dict(self.headers), body))
            self._reply({"functionName": "f"}, {"Lambda-Extension-Identifier": "ext-1"})

        def do_GET(self) -> None:
            seen.append(("GET", self.path, dict(self.headers), None))
            self._reply({"eventType": "SHUTDOWN", "shutdownReason": "spindown", "deadlineMs": 0}, {})

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Api)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        env = {"AWS_LAMBDA_RUNTIME_API": f"127.0.0.1:{server.server_address[1]}", "PATH": "/usr/bin:/bin"}
        done = subprocess.run(
            [sys.executable, str(EXTENSION)], check=False, env=env, timeout=20, capture_output=True
        )
    finally:
        server.shutdown()
    assert done.returncode == 0, done.stderr
    method, path, headers, body = seen[0]
    assert (method, path, body) == ("POST", "/2020-01-01/extension/register", {"events": ["SHUTDOWN"]})
    assert headers["Lambda-Extension-Name"] == "recpipe-shutdown"
    assert seen[1][:2] == ("GET", "/2020-01-01/extension/event/next")
    assert seen[1][2]["Lambda-Extension-Identifier"] == "ext-1"
