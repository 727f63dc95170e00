"""`recpipe generate movielens DIR [--users N --items N --interactions N --seed S]`: the
generated shop as a MovieLens-format data set (ratings.csv, movies.csv), so `recpipe evaluate
--data movielens:DIR` can score the product on data with another structure than MovieLens's
(docs/evaluation.md)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def register(sub: Any) -> None:
    parser = sub.add_parser("generate", help="write the generated shop as a data set")
    gsub = parser.add_subparsers(dest="format", metavar="FORMAT", required=True)
    ml = gsub.add_parser("movielens", help="ratings.csv + movies.csv in DIR")
    ml.add_argument("directory", type=Path)
    ml.add_argument("--users", type=int, default=3000)
    ml.add_argument("--items", type=int, default=4000)
    ml.add_argument(
        "--interactions", type=int, default=300_000, help="shop events before folding into ratings"
    )
    ml.add_argument("--seed", type=int, default=11)
    ml.set_defaults(func=run_movielens)


def run_movielens(args: argparse.Namespace) -> int:
    from recpipe_dev.synthetic import generate, write_movielens

    log, items = generate(
        n_users=args.users, n_items=args.items, n_interactions=args.interactions, seed=args.seed
    )
    rows = write_movielens(log, items, args.directory)
    print(f"{rows} ratings on {len(items)} items written to {args.directory}")
    return 0
