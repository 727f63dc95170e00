"""`recpipe validate`: the product's retrain scored on the random protocol's validation
carve-outs, never its test part (how defaults are chosen; docs/evaluation.md)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def register(sub: Any) -> None:
    p = sub.add_parser(
        "validate",
        help="score a retrain setting on the random protocol's validation carve-outs (not its test split)",
    )
    p.add_argument("--data", required=True, help="dataset, e.g. movielens:../shared/datasets/ml-latest-small")
    p.add_argument(
        "--seeds", default="42,44,46", help="random-protocol seeds, comma-separated (default 42,44,46)"
    )
    p.add_argument(
        "--params",
        default=None,
        help="a retrain request's params as JSON, or @FILE (default: the shipped defaults), "
        'e.g. \'{"fusion": {"members": 3}}\'',
    )
    p.add_argument("--k", type=int, default=10, help="list length (default 10)")
    p.add_argument(
        "--stage",
        # validation.STAGES (imported only when the command runs; a unit test keeps them in step)
        choices=("retrain", "candidates"),
        default="retrain",
        help="retrain (default): the whole retrain, fusion and all, beside the same retrain with the "
        "fusion off; candidates: only its CF stages (its own lambda / weight choice, then the fixed "
        "blend's lists, exactly what a retrain with the fusion off publishes): deterministic, "
        "seconds per seed",
    )
    p.add_argument("--json", type=Path, default=None, help="write the report here")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=run)


def _params(text: str | None) -> Any:
    from recpipe.training.pipeline import TrainParams

    if text is None:
        return TrainParams()
    raw = Path(text[1:]).read_text() if text.startswith("@") else text
    body = json.loads(raw)
    if not isinstance(body, dict):
        raise ValueError("--params must be a JSON object")
    return TrainParams.from_dict(body)


def run(args: argparse.Namespace) -> int:
    from recpipe_dev.evaluation.data import DatasetError, load_dataset
    from recpipe_dev.evaluation.report import write_json
    from recpipe_dev.evaluation.validation import run_validation

    if not 1 <= args.k <= 100:
        print("--k must be between 1 and 100", file=sys.stderr)
        return 2
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        print(f"--seeds must be integers separated by commas, got {args.seeds!r}", file=sys.stderr)
        return 2
    if not seeds:
        print("--seeds names no seed", file=sys.stderr)
        return 2
    try:
        params = _params(args.params)
    except (OSError, ValueError, TypeError) as exc:
        # json.JSONDecodeError is a ValueError; an unknown field is a TypeError from the dataclass
        print(f"error: bad --params: {exc}", file=sys.stderr)
        return 2
    try:
        dataset = load_dataset(args.data)
    except DatasetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    def progress(msg: str) -> None:
        if not args.quiet:
            print(msg, file=sys.stderr, flush=True)

    try:
        result = run_validation(
            dataset, seeds=seeds, params=params, k=args.k, stage=args.stage, progress=progress
        )
    except ValueError as exc:
        # train_bundle refuses what it cannot train on (an empty or too small carve-out)
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json is not None:
        write_json(result, args.json)
    k = args.k
    print(_table(result, k))
    return 0


def _table(result: dict[str, Any], k: int) -> str:
    def cell(e: dict[str, Any], key: str, signed: bool = False) -> str:
        value = e.get(f"{key}_ndcg@{k}")
        if value is None:
            return "-"
        text = f"{value:+.4f}" if signed else f"{value:.4f}"
        se = e.get(f"{key}_ndcg@{k}_se")
        return text if se is None else f"{text} ± {se:.4f}"

    if result.get("stage") == "candidates":
        cols: tuple[str, ...] = ("blend", "ease", "blend_minus_ease")
        head = f"| seed | users | blend ndcg@{k} | best EASE ndcg@{k} | blend - EASE |"
    else:
        cols = ("published", "blend", "ease", "published_minus_blend", "published_minus_ease")
        head = (
            f"| seed | users | published ndcg@{k} | blend ndcg@{k} | best EASE ndcg@{k} "
            "| published - blend | published - EASE |"
        )
    lines = [head, "|---|---:|" + "---:|" * len(cols)]
    rows = [(seed, e, str(e["users"])) for seed, e in result["seeds"].items()]
    rows.append(("mean", result["mean"], ""))
    for name, e, users in rows:
        cells = [cell(e, c, signed="_minus_" in c) for c in cols]
        lines.append(f"| {name} | {users} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
