"""`recpipe evaluate`: offline quality of the pipeline and its baselines (see docs/evaluation.md)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def register(sub: Any) -> None:
    p = sub.add_parser("evaluate", help="offline evaluation on MovieLens (stream or random protocol)")
    p.add_argument("--data", required=True, help="dataset, e.g. movielens:../shared/datasets/ml-latest-small")
    p.add_argument("--protocol", choices=("stream", "random"), required=True)
    p.add_argument("--k", type=int, default=10, help="list length (default 10)")
    p.add_argument("--json", type=Path, default=None, help="write the full report here")
    p.add_argument("--out-dir", type=Path, default=Path("bench/results"), help="Markdown table and plots")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--max-events", type=int, default=5000, help="stream: evaluated events (seeded sample)")
    p.add_argument("--max-users", type=int, default=None, help="evaluate a seeded subset of users")
    p.add_argument(
        "--serving-json",
        type=Path,
        default=None,
        help="serving benchmark report for the latency plot (default OUT_DIR/serving.json)",
    )
    p.add_argument("--quiet", action="store_true")
    p.add_argument(
        "--replot",
        action="store_true",
        help="do not evaluate: redraw the table and plots from the --json report (and serving.json)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from recpipe_dev.evaluation.data import DatasetError, load_dataset

    if not 1 <= args.k <= 100:
        print("--k must be between 1 and 100", file=sys.stderr)
        return 2

    def progress(msg: str) -> None:
        if not args.quiet:
            print(msg, file=sys.stderr, flush=True)

    if args.replot:
        if args.json is None or not args.json.is_file():
            print("--replot needs an existing --json report", file=sys.stderr)
            return 2
        return _outputs(json.loads(args.json.read_text()), args, write_report=False)
    try:
        dataset = load_dataset(args.data)
    except DatasetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.protocol == "random":
        from recpipe_dev.evaluation.random_protocol import RandomProtocolConfig, run_random

        result = run_random(
            dataset, RandomProtocolConfig(k=args.k, seed=args.seed, max_users=args.max_users), progress
        )
    else:
        from recpipe_dev.evaluation.stream_protocol import StreamProtocolConfig, run_stream

        result = run_stream(
            dataset,
            StreamProtocolConfig(
                k=args.k,
                seed=args.seed,
                max_events=args.max_events,
                show_progress=not args.quiet,
                max_users=args.max_users,
            ),
            progress,
        )
    return _outputs(result, args, write_report=True)


def _outputs(result: dict[str, Any], args: argparse.Namespace, *, write_report: bool) -> int:
    from recpipe_dev.evaluation import report as out

    out_dir: Path = args.out_dir
    if write_report and args.json is not None:
        out.write_json(result, args.json)
    out.write_markdown(result, out_dir / f"eval-{result['protocol']}.md")
    out.plot_quality(result, out_dir / f"quality-{result['protocol']}.png")
    serving = args.serving_json or out_dir / "serving.json"
    if serving.is_file() and out.plot_latency(json.loads(serving.read_text()), out_dir / "latency.png"):
        print(f"latency plot from {serving} -> {out_dir / 'latency.png'}", file=sys.stderr)
    print(out.markdown_table(result))
    return 0
