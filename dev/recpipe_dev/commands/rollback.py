"""`recpipe rollback [--to VERSION]`: model, candidate lists and content index back to the
previous (or named) published version; `recpipe versions` lists what can be restored.

Uses the retrain workflow's settings (`eval "$(recpipe local env)"` locally; in AWS the same
variables as the retrain functions: MODEL_BUCKET, MODEL_POINTER_PARAM, EXPERIMENT_PARAM,
REDIS_URL (+ REDIS_AUTH_SECRET_ARN), OPENSEARCH_URL + CONTENT_INDEX_ALIAS). The order and the
guarantees are recpipe.training.release's.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def register(sub: Any) -> None:
    p = sub.add_parser("rollback", help="restore the previous (or --to) published version, atomically")
    p.add_argument("--to", metavar="VERSION", help="version to restore (default: the previous one)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=run_rollback)


def release_deps() -> tuple[Any, Any, Any]:
    """(models, candidates, content) of the published versions, from the environment."""
    from recpipe.config import RetrainSettings, load_settings
    from recpipe.training.wiring import build_deps

    settings = load_settings(RetrainSettings)
    deps = build_deps(settings)
    return deps.models, deps.candidates, deps.content


def run_versions(args: argparse.Namespace) -> int:
    from recpipe.config import ConfigError
    from recpipe.ports import DependencyError
    from recpipe.training.release import published_versions

    try:
        versions = published_versions(*release_deps())
    except (ConfigError, DependencyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps([v.to_dict() for v in versions], indent=2))
        return 0
    print(f"{'version':<36} {'created':<26} {'live':<5} {'candidates':<20} {'content':<10} restorable")
    for v in versions:
        print(
            f"{v.version:<36} {v.created or '-':<26} {'*' if v.live else '':<5} {v.candidates:<20} "
            f"{v.content:<10} {'yes' if v.restorable else 'no'}"
        )
    return 0


def run_rollback(args: argparse.Namespace) -> int:
    from recpipe.bundle import BundleError
    from recpipe.config import ConfigError
    from recpipe.ports import DependencyError
    from recpipe.training.release import RollbackError, rollback

    try:
        result = rollback(*release_deps(), to=args.to, log=lambda line: print(f"  {line}"))
    except (ConfigError, DependencyError, RollbackError, BundleError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"rolled back {result['from']} -> {result['to']} in {result['took_ms']} ms")
        print("serving follows at its next pointer check (MODEL_REFRESH_S)")
    return 0
