"""`recpipe demo` refuses clearly, before starting anything, when it cannot run."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from recpipe_dev.local.redis_server import free_port


def _demo(tmp_path: Path, *args: str, path: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ}
    env.pop("REDIS_URL", None)
    if path is not None:
        env["PATH"] = path
    return subprocess.run(
        [sys.executable, "-m", "recpipe_dev.cli", "demo", "--once", *args, "--state-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def test_a_busy_port_says_what_to_do(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = _demo(tmp_path, "--port", str(port))
    assert result.returncode == 2
    assert f"port {port}" in result.stderr and "is busy" in result.stderr and "--port" in result.stderr
    assert not (tmp_path / "demo.lock").exists()


def test_missing_redis_server_says_how_to_install_it(tmp_path: Path) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    result = _demo(tmp_path, "--port", str(free_port()), path=str(empty))
    assert result.returncode == 2
    assert "redis-server was not found" in result.stderr and "apt-get install redis-server" in result.stderr


def test_a_second_demo_while_one_runs_is_refused(tmp_path: Path) -> None:
    # A live process holding the lock stands in for a running demo.
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)  # recpipe demo"])
    try:
        (tmp_path / "demo.lock").write_text(str(holder.pid))
        result = _demo(tmp_path, "--port", str(free_port()))
    finally:
        holder.kill()
        holder.wait()
    assert result.returncode == 2
    assert f"a demo is already running (pid {holder.pid}" in result.stderr
    assert (tmp_path / "demo.lock").read_text() == str(holder.pid)
