"""Start a throw-away moto server (the local AWS) on a free port: local stack, benchmarks, tests.

The app is recpipe_dev.local.moto_app (moto plus a touched-items transaction rollback). It is
served by granian when that is installed (the dev extra): a multi-threaded HTTP server with
keep-alive, so the stack's clients (handlers, poller, bench workers) are answered side by side
and each request costs less of the shared CPU than under moto's werkzeug dev server (the demo,
the local stack and its tests share one machine with moto; docs/local-stack.md). Without granian,
werkzeug serves the same app.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from types import TracebackType

from recpipe_dev.local.redis_server import free_port

FRONT_ENDS = ("auto", "granian", "werkzeug")
#: Request threads of the granian worker: the stack's clients (handlers, poller, bench
#: workers) each hold a keep-alive connection, and moto itself is one GIL.
GRANIAN_THREADS = 8


class MotoUnavailable(RuntimeError):
    pass


def granian_installed() -> bool:
    return importlib.util.find_spec("granian") is not None


def moto_command(host: str, port: int, front: str = "auto") -> tuple[list[str], str]:
    """argv of the server process and the front end it uses."""
    if front not in FRONT_ENDS:
        raise ValueError(f"unknown moto front end {front!r} (expected one of {FRONT_ENDS})")
    if front == "granian" or (front == "auto" and granian_installed()):
        argv = [
            sys.executable,
            "-m",
            "granian",
            "--interface",
            "wsgi",
            "--host",
            host,
            "--port",
            str(port),
            "--workers",
            "1",
            "--blocking-threads",
            str(GRANIAN_THREADS),
            "--log-level",
            "warning",
            "recpipe_dev.local.moto_app:app",
        ]
        return argv, "granian"
    return [sys.executable, "-m", "recpipe_dev.local.moto_app", "-H", host, "-p", str(port)], "werkzeug"


def child_pids(pid: int) -> list[int]:
    """Direct children (granian's worker process); [] where /proc is missing."""
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except (OSError, ValueError):
        return []


def kill_leftovers(pids: list[int]) -> None:
    """SIGKILL processes that outlived their parent (moto's state is throw-away)."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


class MotoServer:
    def __init__(
        self,
        log: Path,
        port: int | None = None,
        host: str = "127.0.0.1",
        *,
        front: str = "auto",
        detach: bool = False,
        env: dict[str, str] | None = None,
    ) -> None:
        self.log = log
        self.host = host
        self.port = port or free_port(host)
        self.argv, self.front = moto_command(host, self.port, front)
        # detach: own session, so the server outlives the starting command (`recpipe local up`).
        self.detach = detach
        self.env = env
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 30.0) -> str:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        # Some moto services put the port into the URLs they return (e.g. SQS queue URLs).
        env = {**os.environ, **(self.env or {}), "MOTO_PORT": str(self.port)}
        with self.log.open("wb") as out:
            self._proc = subprocess.Popen(
                self.argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=self.detach,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise MotoUnavailable(f"moto server exited with {self._proc.returncode}; see {self.log}")
            try:
                with urllib.request.urlopen(f"{self.url}/moto-api/", timeout=0.5):
                    return self.url
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise MotoUnavailable(
            f"moto server did not answer at {self.url} within {timeout:.0f}s; see {self.log}"
        )

    def stop(self, timeout: float = 10.0) -> None:
        if self._proc is not None and self._proc.poll() is None:
            workers = child_pids(self._proc.pid)
            self._proc.terminate()
            try:
                self._proc.wait(timeout)
            except subprocess.TimeoutExpired:  # still busy with a backlog of requests
                self._proc.kill()
                self._proc.wait(timeout)
            kill_leftovers(workers)
        self._proc = None

    def __enter__(self) -> MotoServer:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
