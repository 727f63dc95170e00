"""`recpipe fetch ml-100k DIR [--wheel FILE]`: a real MovieLens data set that is not in the
repository, for `recpipe evaluate --data movielens:DIR` (recpipe_dev.datasets, docs/evaluation.md)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def register(sub: Any) -> None:
    parser = sub.add_parser("fetch", help="fetch a real MovieLens data set from a package registry")
    fsub = parser.add_subparsers(dest="dataset", metavar="DATASET", required=True)
    ml = fsub.add_parser("ml-100k", help="MovieLens 100K in its own layout (u.data, u.item, u.genre)")
    ml.add_argument("directory", type=Path)
    ml.add_argument(
        "--wheel", type=Path, default=None, help="an already downloaded recbole wheel (checked by sha256)"
    )
    ml.set_defaults(func=run_ml100k)


def run_ml100k(args: argparse.Namespace) -> int:
    from recpipe_dev.datasets import DatasetError, fetch_ml100k

    try:
        report = fetch_ml100k(args.directory, wheel=args.wheel)
    except DatasetError as exc:
        print(f"error: {exc}")
        return 1
    print(
        f"ml-100k: {report.ratings} ratings by {report.users} users of {report.movies} movies "
        f"written to {report.directory} (GroupLens's licence: see SOURCE.txt)"
    )
    return 0
