"""`recpipe sizing --users N --items M --events-per-s E --candidates K`: the capacity a load needs."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "sizing",
        help="shards, Redis node, DynamoDB capacity and Lambda memory/concurrency for a load",
        description=(
            "Computes the template parameters a load needs from the figures the benchmarks "
            "measured (recpipe_dev.sizing names each figure and the command that measured it). "
            "samconfig.toml's dev and prod profiles state their load; tests/infra/test_sizing.py "
            "checks their parameters against this."
        ),
    )
    parser.add_argument("--users", type=int, required=True, help="users with a stored state and a CF list")
    parser.add_argument("--items", type=int, required=True, help="catalogue items (in the model bundle)")
    parser.add_argument("--events-per-s", type=float, required=True, help="peak events per second")
    parser.add_argument("--candidates", type=int, default=200, help="CF candidates per user list (top_n)")
    parser.add_argument(
        "--requests-per-s",
        type=float,
        default=None,
        help="peak recommendation requests per second (default: one per event)",
    )
    parser.add_argument(
        "--retention-days",
        type=float,
        default=None,
        help="PUBLISHED_RETENTION_DAYS: superseded candidate versions kept in Redis (default 7)",
    )
    parser.add_argument(
        "--retrains-per-day",
        type=float,
        default=1.0,
        help="candidate publishes per day (the template's RetrainSchedule: daily)",
    )
    parser.add_argument("--json", dest="json_out", help="also write the report to this file")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from recpipe_dev.sizing import Load, format_table, size

    for name in ("users", "items", "events_per_s", "candidates"):
        if getattr(args, name) <= 0:
            raise SystemExit(f"--{name.replace('_', '-')} must be positive")
    load = Load(args.users, args.items, args.events_per_s, args.candidates, args.requests_per_s)
    if args.retention_days is not None:
        load = replace(load, retention_days=args.retention_days)
    if (args.retention_days is not None and args.retention_days <= 0) or args.retrains_per_day <= 0:
        raise SystemExit("--retention-days and --retrains-per-day must be positive")
    report = size(replace(load, retrains_per_day=args.retrains_per_day))
    print(format_table(report))
    if args.json_out:
        Path(args.json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json_out).write_text(json.dumps(report, indent=2))
    return 0
