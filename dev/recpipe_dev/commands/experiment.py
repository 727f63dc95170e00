"""`recpipe experiment start|stop|show|report`: traffic splits between model bundles.

The definition goes where the model pointer lives (EXPERIMENT_PARAM in SSM beside
MODEL_POINTER_PARAM, or the EXPERIMENT file in RECPIPE_BUNDLE_DIR); scoring containers pick it up
at their next pointer check (MODEL_REFRESH_S). The report reads impressions and events back from
the archive (ARCHIVE_BUCKET, or --archive-dir for a directory with the same layout).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any


def register(sub: Any) -> None:
    p = sub.add_parser("experiment", help="start/stop a traffic split between bundles; per-variant report")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)

    s = actions.add_parser("start", help="start (or replace) the live experiment")
    s.add_argument("name", help="experiment name ([A-Za-z0-9_-], up to 32)")
    s.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME=BUNDLE:WEIGHT",
        help="a variant, e.g. control=20261204-a:50 (repeat; optional [@CANDIDATES] after BUNDLE)",
    )
    s.add_argument("--canary", metavar="BUNDLE", help="shorthand: control = the live bundle, canary = BUNDLE")
    s.add_argument("--percent", type=float, default=5.0, help="canary share in percent (default 5)")
    s.add_argument("--diversity", type=float, help="rule setting for the last variant (MMR diversity)")
    s.add_argument("--salt", help="assignment salt (default: random; a new salt reshuffles users)")
    s.set_defaults(func=start)

    t = actions.add_parser("stop", help="end the live experiment (everyone gets the pointer's bundle)")
    t.set_defaults(func=stop)

    w = actions.add_parser("show", help="print the live experiment")
    w.set_defaults(func=show)

    r = actions.add_parser("report", help="per-variant exposures, CTR and conversion from the archive")
    r.add_argument("--experiment", help="only this experiment (default: the live one, else all)")
    r.add_argument("--days", type=float, default=7.0, help="archive window in days (default 7)")
    r.add_argument("--archive-dir", type=Path, help="read a directory with the archive layout instead of S3")
    r.add_argument(
        "--bucket", default=os.environ.get("ARCHIVE_BUCKET"), help="archive bucket ($ARCHIVE_BUCKET)"
    )
    r.add_argument("--window-h", type=float, default=24.0, help="attribution window in hours (default 24)")
    r.add_argument("--touch", choices=("last", "first"), default="last", help="conversions without an id")
    r.add_argument("--json", type=Path, help="write the report here")
    r.set_defaults(func=report_command)


# ---- the store beside the model pointer -------------------------------------------------------------
def model_store(environ: dict[str, str] | None = None) -> Any:
    """DirectoryModelStore (RECPIPE_BUNDLE_DIR) or S3ModelStore (MODEL_BUCKET + SSM params)."""
    from recpipe.adapters.s3_models import DirectoryModelStore, S3ModelStore
    from recpipe.clients import batch_aws_client
    from recpipe.config import ModelSettings, load_settings

    settings = load_settings(ModelSettings, environ)
    if settings.bundle_dir:
        return DirectoryModelStore(Path(settings.bundle_dir))
    bucket, pointer = settings.s3_pointer()
    return S3ModelStore(
        batch_aws_client("s3", settings),
        batch_aws_client("ssm", settings),
        bucket,
        pointer,
        experiment_param=settings.experiment_param,
    )


def parse_variant(spec: str) -> dict[str, Any]:
    try:
        name, rest = spec.split("=", 1)
        bundle, weight = rest.rsplit(":", 1)
        out: dict[str, Any] = {"name": name, "weight": float(weight)}
    except ValueError:
        raise SystemExit(f"error: --variant {spec!r}: expected NAME=BUNDLE[@CANDIDATES]:WEIGHT") from None
    if "@" in bundle:
        bundle, candidates = bundle.split("@", 1)
        out["candidates"] = candidates
    out["bundle"] = bundle
    return out


def definition(args: argparse.Namespace, live: str | None) -> dict[str, Any]:
    variants = [parse_variant(v) for v in args.variant]
    if args.canary:
        if live is None:
            raise SystemExit("error: --canary needs a live bundle for the control")
        variants = [
            {"name": "control", "bundle": live, "weight": 100.0 - args.percent},
            {"name": "canary", "bundle": args.canary, "weight": args.percent},
        ]
    if not variants:
        raise SystemExit("error: give --variant (twice or more) or --canary BUNDLE")
    if args.diversity is not None:
        variants[-1]["rules"] = {"diversity": args.diversity}
    return {
        "name": args.name,
        "salt": args.salt or secrets.token_hex(4),
        "variants": variants,
        "started_at": time.time(),
    }


def start(args: argparse.Namespace) -> int:
    from recpipe.bundle import BundleError
    from recpipe.config import ConfigError
    from recpipe.domain.experiments import ExperimentError, parse_experiment
    from recpipe.ports import DependencyError

    try:
        store = model_store()
        experiment = parse_experiment(definition(args, store.current_version()))
        store.set_experiment(experiment)
    except (ConfigError, ExperimentError, BundleError, DependencyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    split = ", ".join(
        f"{v.name}={v.bundle} {w:.0%}"
        for v, w in zip(experiment.variants, experiment.split().values(), strict=True)
    )
    print(f"experiment {experiment.name} live (salt {experiment.salt}): {split}")
    print("serving picks it up at its next pointer check (MODEL_REFRESH_S)")
    return 0


def stop(args: argparse.Namespace) -> int:
    from recpipe.bundle import BundleError
    from recpipe.config import ConfigError
    from recpipe.ports import DependencyError

    try:
        store = model_store()
        current = store.current_experiment()
        store.set_experiment(None)
    except (ConfigError, BundleError, DependencyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(
        f"experiment {current.name if current else '(none)'} stopped; everyone gets {store.current_version()}"
    )
    return 0


def show(args: argparse.Namespace) -> int:
    store = model_store()
    experiment = store.current_experiment()
    print(
        json.dumps(
            {
                "model_version": store.current_version(),
                "experiment": experiment.model_dump() if experiment else None,
            },
            indent=2,
        )
    )
    return 0


# ---- report ---------------------------------------------------------------------------------
def build_report(
    source: Any,
    *,
    start: datetime,
    end: datetime,
    experiment: str | None,
    window_s: float,
    touch: str,
) -> dict[str, Any]:
    from recpipe.adapters.feedback_archive import read_events, read_impressions
    from recpipe.domain.attribution import attribute, report

    impressions, imp_report = read_impressions(source, start, end + timedelta(seconds=window_s))
    events, ev_report = read_events(source, start, end + timedelta(seconds=window_s))
    attribution = attribute(impressions, events, window_s=window_s, touch=touch)
    body = report(
        [i for i in impressions if i.ts < end.timestamp()],
        attribution,
        experiment=experiment,
        window_s=window_s,
        touch=touch,
    )
    body["window"] = {"start": start.isoformat(), "end": end.isoformat()}
    body["archive"] = {"impressions": imp_report.to_dict(), "events": ev_report.to_dict()}
    return body


def print_report(body: dict[str, Any]) -> None:
    print(f"experiment {body['experiment'] or '(all)'}  {body['window']['start']} .. {body['window']['end']}")
    print(f"{'variant':<12} {'impr.':>7} {'users':>6} {'CTR':>7} {'95% CI':>17} {'conv.':>7} {'95% CI':>17}")
    for name, v in body["variants"].items():
        ctr, conv = v["ctr"], v["conversion"]
        print(
            f"{name:<12} {v['exposures']['impressions']:>7} {v['exposures']['users']:>6} "
            f"{_pct(ctr['rate']):>7} {_ci(ctr['ci95']):>17} {_pct(conv['rate']):>7} {_ci(conv['ci95']):>17}"
        )
    for name, d in body["differences"].items():
        for metric, x in d.items():
            flag = "significant" if x["significant"] else "not significant"
            print(
                f"  {name} {metric}: {x['difference'] * 100:+.2f} pts {_ci(x['ci95'], signed=True)} ({flag})"
            )
    a = body["attribution"]
    print(
        f"attributed events {a['attributed_events']} (by touch {a['attributed_by_touch']}); unmatched {a['unmatched'] or 0}"
    )


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x * 100:.2f}%"


def _ci(ci: list[float], *, signed: bool = False) -> str:
    fmt = "{:+.2f}" if signed else "{:.2f}"
    return "[" + fmt.format(ci[0] * 100) + ", " + fmt.format(ci[1] * 100) + "]"


def archive_source(args: argparse.Namespace) -> Any:
    from recpipe.adapters.feedback_archive import DirectoryObjects, S3Objects

    if args.archive_dir:
        return DirectoryObjects(args.archive_dir)
    if not args.bucket:
        raise SystemExit("error: give --archive-dir or --bucket (or set ARCHIVE_BUCKET)")
    import boto3

    s3 = boto3.session.Session().client("s3", endpoint_url=os.environ.get("AWS_ENDPOINT_URL"))
    return S3Objects(s3, args.bucket)


def report_command(args: argparse.Namespace) -> int:
    from recpipe.ports import DependencyError

    name = args.experiment
    if name is None and not args.archive_dir:
        try:
            live = model_store().current_experiment()
            name = live.name if live else None
        except Exception:  # no pointer configured: report every experiment in the archive
            name = None
    end = datetime.now(UTC)
    try:
        body = build_report(
            archive_source(args),
            start=end - timedelta(days=args.days),
            end=end,
            experiment=name,
            window_s=args.window_h * 3600.0,
            touch=args.touch,
        )
    except DependencyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print_report(body)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(body, indent=2))
        print(f"wrote {args.json}")
    return 0
