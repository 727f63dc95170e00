"""`recpipe bench serving|stream|retrain|resilience|live-memory`: the benchmarks in bench/ (not timed tests)."""

from __future__ import annotations

import argparse
import importlib
from typing import Any

BENCHMARKS = {
    "serving": ("recpipe_dev.bench.serving", "online path: handler latency per candidate count and stage"),
    "stream": ("recpipe_dev.bench.stream", "stream path: updater throughput and event freshness"),
    "retrain": ("recpipe_dev.bench.retrain", "batch path: wall time and peak memory per stage, publish rate"),
    "resilience": (
        "recpipe_dev.bench.resilience",
        "online path under faults: 5xx, p99, degraded share, recovery",
    ),
    "live-memory": (
        "recpipe_dev.bench.live_memory",
        "Redis bytes per session entry, trending item and trending marker (for recpipe sizing)",
    ),
}


def register(sub: Any) -> None:
    parser = sub.add_parser("bench", help="run a benchmark (prints p50/p95/p99 and throughput)")
    bsub = parser.add_subparsers(dest="benchmark", metavar="BENCHMARK", required=True)
    for name, (module, help_text) in BENCHMARKS.items():
        p = bsub.add_parser(name, help=help_text)
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name == module:
                continue
            raise
        mod.add_arguments(p)
        p.set_defaults(func=_runner(mod))


def _runner(mod: Any) -> Any:
    def run(args: argparse.Namespace) -> int:
        return int(mod.run(args) or 0)

    return run
