"""`make demo ARGS=--once`: the whole pipeline on the local stack, scenario checks, clean shutdown."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from recpipe_dev.local.redis_server import free_port

SMALL = ["--users", "600", "--items", "500", "--events", "20000", "--requests", "30"]


def _demo(tmp_path: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    env.pop("REDIS_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "recpipe_dev.cli", "demo", *args, "--state-dir", str(tmp_path / "state")],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        check=False,
    )


def test_demo_once_runs_the_scenario_and_every_check_holds(tmp_path: Path) -> None:
    result = _demo(tmp_path, "--once", "--port", str(free_port()), *SMALL)
    out = result.stdout
    assert result.returncode == 0, out[-4000:] + result.stderr[-4000:]
    # The story the terminal tells, step by step, with each check held.
    for step in (
        "== 0. health",
        "cold-start visitor",
        "clicks a few items",
        "added to the cart",
        "the stream path",
        "latency",
        "an experiment: a second model against the first, 50/50",
        "each variant served by its own bundle",
        "per-variant exposures and clicks in the report equal",
        "rolling back to the first version",
        "experiment checks held",
    ):
        assert step in out
    assert "✘" not in out
    assert "checks held" in out and "FAILED" not in out
    assert "GET /recommendations" in out and "p99" in out
    # Everything started was stopped: no state file, no lock, nothing listening.
    assert not (tmp_path / "state" / "demo" / "local.json").exists()
    assert not (tmp_path / "state" / "demo.lock").exists()
