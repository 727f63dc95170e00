"""`recpipe retrain`: the retrain workflow's steps in-process, against the local stack.

The same steps as statemachines/retrain.asl.json (prepare, train, evaluate + gate, publish
candidate shards, index content, promote), with progress bars. Where things go comes from the
usual environment (`eval "$(recpipe local env)"`): REDIS_URL, MODEL_BUCKET + AWS_ENDPOINT_URL
(moto) or RECPIPE_BUNDLE_DIR, CONTENT_INDEX_DIR / OPENSEARCH_URL.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

DEFAULT_DATA = "../shared/datasets/ml-latest-small"


def register(sub: Any) -> None:
    p = sub.add_parser("retrain", help="train, evaluate, gate and publish a model (in-process)")
    p.add_argument("--source", choices=("movielens", "archive", "synthetic"), default="movielens")
    p.add_argument("--data", default=DEFAULT_DATA, help="MovieLens-format directory (--source movielens)")
    p.add_argument("--days", type=float, default=90, help="archive window in days (--source archive)")
    p.add_argument(
        "--archive-bucket",
        default=os.environ.get("ARCHIVE_BUCKET"),
        help="Firehose archive bucket (--source archive; default $ARCHIVE_BUCKET, else MODEL_BUCKET)",
    )
    p.add_argument(
        "--synthetic", default="2000,1000,100000", help="users,items,interactions (--source synthetic)"
    )
    p.add_argument("--version", help="bundle/candidate version (default: UTC time + hash)")
    p.add_argument("--gate-margin", type=float, default=0.02, help="allowed ndcg@10 drop vs the live model")
    p.add_argument("--shard-size", type=int, default=20_000, help="candidate lists per publish shard")
    p.add_argument("--params", choices=("default", "tiny"), default="default", help="training size preset")
    p.add_argument("--work-dir", type=Path, help="keep run artefacts here instead of s3://MODEL_BUCKET/runs/")
    p.add_argument("--bundle-dir", type=Path, help="directory of bundle versions (sets RECPIPE_BUNDLE_DIR)")
    p.add_argument("--json", type=Path, help="write the run's result (metrics, gate decision) here")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument(
        "--sagemaker-tarball",
        type=Path,
        metavar="FILE",
        help="only write the SageMaker script-mode source tarball (${TrainingCodeUri}) and exit",
    )
    p.set_defaults(func=run)


def build_request(args: argparse.Namespace) -> dict[str, Any]:
    from recpipe.training.pipeline import TrainParams

    source: dict[str, Any] = {"kind": args.source}
    if args.source == "movielens":
        source["path"] = str(args.data)
    elif args.source == "archive":
        source["days"] = args.days
    else:
        users, items, n = (int(v) for v in args.synthetic.split(","))
        source.update(n_users=users, n_items=items, n_interactions=n)
    request: dict[str, Any] = {
        "source": source,
        "gate_margin": args.gate_margin,
        "shard_size": args.shard_size,
    }
    if args.version:
        request["version"] = args.version
    if args.params == "tiny":
        request["params"] = TrainParams.tiny().to_dict()
    return request


def run(args: argparse.Namespace) -> int:
    from recpipe.config import ConfigError, RetrainSettings, load_settings
    from recpipe.ports import DependencyError
    from recpipe.training.movielens import DataImportError
    from recpipe.training.wiring import build_deps
    from recpipe.training.workflow import RetrainError, run_local

    from recpipe_dev.synthetic import DEV_LOADERS

    if args.sagemaker_tarball:
        from recpipe.training.sagemaker_entry import build_source_tarball

        print(f"wrote {build_source_tarball(args.sagemaker_tarball)}")
        return 0
    environ = dict(os.environ)
    if args.bundle_dir:
        environ["RECPIPE_BUNDLE_DIR"] = str(args.bundle_dir)
    try:
        settings = load_settings(RetrainSettings, environ)
        deps = build_deps(settings, work_dir=args.work_dir, extra_loaders=DEV_LOADERS)
        result = run_local(
            deps, build_request(args), progress=not args.quiet, archive_bucket=args.archive_bucket
        )
    except (ConfigError, DataImportError, RetrainError, DependencyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    ev = result["evaluation"]
    metrics = result["training"]["metrics"]
    print(f"version {result['run']['version']}: {result['run']['interactions']} interactions")
    keys = [
        k for k in ("ndcg@10", "cf_ndcg@10", "hit_rate@10", "cf_hit_rate@10", "eval_users") if k in metrics
    ]
    print("  " + ", ".join(f"{k}={metrics[k]}" for k in keys))
    print(f"  gate: {'PUBLISH' if ev['publish'] else 'KEEP LIVE'} - {ev['reason']}")
    if ev["publish"]:
        written = sum(s["written"] for s in result["published"])
        print(f"  published {written} candidate lists, indexed {result['indexed'].get('indexed', 0)} items")
        print(f"  live model: {result['promoted']['version']}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2, default=str))
    return 0
