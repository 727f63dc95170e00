"""`recpipe demo [--once] [--movielens DIR] [--port 3000]`: the whole pipeline on this machine."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "demo",
        help="local stack + retraining + API on http://127.0.0.1:3000 + a scripted scenario and a web page",
    )
    parser.add_argument(
        "--once", action="store_true", help="run the scenario and exit (0 when every check held)"
    )
    parser.add_argument(
        "--movielens",
        type=Path,
        default=None,
        metavar="DIR",
        help="MovieLens-format data instead of the generated shop",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=3000)
    parser.add_argument("--users", type=int, default=3000, help="generated shop: users")
    parser.add_argument("--items", type=int, default=2000, help="generated shop: items")
    parser.add_argument("--events", type=int, default=200_000, help="generated shop: interactions")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--quick",
        action="store_true",
        help="tiny training parameters (seconds); the ranker is then too weak for the click check",
    )
    parser.add_argument("--requests", type=int, default=200, help="extra requests in the latency step")
    parser.add_argument(
        "--state-dir", type=Path, default=None, help="default .recpipe (or $RECPIPE_STATE_DIR)"
    )
    parser.add_argument(
        "--no-archive",
        action="store_true",
        help="hand the generated history to the retrain workflow in memory instead of via the S3 event archive",
    )
    parser.add_argument("--verbose", action="store_true", help="show the handlers' logs and metrics")
    parser.add_argument(
        "--no-experiment",
        action="store_true",
        help="skip the feedback-loop step (second model, 50/50 experiment, report, rollback)",
    )
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    import os
    import sys

    from recpipe_dev.demo.runner import DemoOptions, run_demo

    code = run_demo(
        DemoOptions(
            once=args.once,
            movielens=args.movielens,
            host=args.host,
            port=args.port,
            users=args.users,
            items=args.items,
            events=args.events,
            seed=args.seed,
            quick=args.quick,
            requests=args.requests,
            state_dir=args.state_dir,
            verbose=args.verbose,
            no_archive=args.no_archive,
            no_experiment=args.no_experiment,
        )
    )
    # Everything started is stopped and the lock released by now; skip the interpreter's
    # teardown of native extensions, which takes seconds after a demo and does nothing useful.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
