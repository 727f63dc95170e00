"""`recpipe import movielens DIR [--out FILE] [--catalogue FILE]`: check and convert history.

Prints the import report (rows, users, items, malformed rows with file:line). --out writes the
interactions as event JSON lines (the archive's format: upload them under events/ or POST them);
--catalogue writes the catalogue JSON lines the retrain workflow reads (catalogue/items.jsonl).
Exit code 1 when the data cannot be read, or with --strict when any row was malformed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

EXIT_UNREADABLE = 1


def register(sub: Any) -> None:
    parser = sub.add_parser("import", help="import history (MovieLens format) and report malformed rows")
    isub = parser.add_subparsers(dest="format", metavar="FORMAT", required=True)
    ml = isub.add_parser(
        "movielens",
        help="ratings.csv + movies.csv (+ tags.csv), ratings.dat + movies.dat (ml-1m, ml-10m) or u.data + u.item (ml-100k) from DIR",
    )
    ml.add_argument("directory", type=Path)
    ml.add_argument("--out", type=Path, help="write the interactions as event JSON lines")
    ml.add_argument("--catalogue", type=Path, help="write the catalogue as JSON lines")
    ml.add_argument("--json", action="store_true", help="print the report as JSON")
    ml.add_argument("--max-errors", type=int, default=20, help="malformed rows to print (all are counted)")
    ml.add_argument("--strict", action="store_true", help="exit 1 if any row was malformed")
    ml.set_defaults(func=run_movielens)


def run_movielens(args: argparse.Namespace) -> int:
    from recpipe.adapters.archive import catalogue_lines
    from recpipe.training.movielens import DataImportError, load_movielens

    try:
        log, items, report = load_movielens(args.directory)
    except DataImportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_UNREADABLE
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with args.out.open("w") as f:
            for event in log.sorted_by_time().events():
                f.write(json.dumps(event.to_record(), separators=(",", ":")) + "\n")
    if args.catalogue:
        args.catalogue.parent.mkdir(parents=True, exist_ok=True)
        args.catalogue.write_bytes(catalogue_lines(items))
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(
            f"{report.interactions} interactions from {report.users} users on {report.items} items "
            f"({report.ratings_rows} rating rows, {report.movies_rows} movies, {report.tags_rows} tags)"
        )
        if report.unknown_items:
            print(f"{report.unknown_items} rated movies are missing from movies.csv (kept, without metadata)")
        print(f"{report.error_count} malformed rows skipped")
        for file, line, reason in report.errors[: args.max_errors]:
            print(f"  {file}:{line}: {reason}")
        if report.error_count > args.max_errors:
            print(f"  ... and {report.error_count - args.max_errors} more (--json lists up to 1000)")
        if args.out:
            print(f"events written to {args.out}")
        if args.catalogue:
            print(f"catalogue written to {args.catalogue}")
    return 1 if args.strict and report.error_count else 0
