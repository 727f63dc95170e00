"""`recpipe replay --queue-url URL [--max N]`: re-drive on-failure batches through the updater."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "replay",
        help="re-read the Kinesis ranges named by on-failure messages and re-apply them",
        description=(
            "Reads on-failure messages (KinesisBatchInfo) from the feature updater's failure queue, "
            "re-reads those records from Kinesis and runs them through the updater again. "
            "Messages whose whole range succeeds are deleted. Uses the same environment as the "
            "functions (USER_FEATURES_TABLE, REDIS_URL, AWS_ENDPOINT_URL, ...)."
        ),
    )
    parser.add_argument(
        "--queue-url", required=True, help="the failure queue (FeatureUpdaterFailureQueue) URL"
    )
    parser.add_argument("--max", type=int, default=100, help="messages to handle at most (default 100)")
    parser.add_argument("--json", dest="json_out", help="also write the report to this file")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from recpipe.clients import aws_client
    from recpipe.config import UpdaterSettings, load_settings
    from recpipe.stream.redrive import Redriver
    from recpipe.stream.wiring import build_updater

    s = load_settings(UpdaterSettings)
    updater = build_updater(s)
    replayer = Redriver(
        aws_client("sqs", s), aws_client("kinesis", s, read_timeout_s=10.0), args.queue_url, updater.redrive
    )
    report = replayer.run(max_messages=args.max)
    print(
        f"messages {report.messages}: replayed {report.batches_replayed} batches "
        f"({report.records_read} records, {report.events_applied} events applied, "
        f"{report.duplicates} already applied), deleted {report.deleted}, "
        f"failed {report.failed_batches}, poison reports left {report.poison_reports_left}, "
        f"unrecognised left {report.unrecognised_left}"
    )
    for problem in report.problems:
        print(f"  ! {problem}", file=sys.stderr)
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(report.to_json(), f, indent=2)
    return 1 if report.failed_batches else 0
