"""`recpipe` console script. Each subcommand lives in recpipe/commands/<name>.py and exposes
`register(subparsers)`; modules are imported lazily so `recpipe local status` does not pay for
TensorFlow."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

COMMANDS: dict[str, str] = {
    "local": "recpipe_dev.commands.local",
    "import": "recpipe_dev.commands.import_data",
    "generate": "recpipe_dev.commands.generate",
    "fetch": "recpipe_dev.commands.fetch",
    "retrain": "recpipe_dev.commands.retrain",
    "replay": "recpipe_dev.commands.replay",
    "evaluate": "recpipe_dev.commands.evaluate",
    "validate": "recpipe_dev.commands.validate",
    "bench": "recpipe_dev.commands.bench",
    "demo": "recpipe_dev.commands.demo",
    "sizing": "recpipe_dev.commands.sizing",
    "experiment": "recpipe_dev.commands.experiment",
    "versions": "recpipe_dev.commands.versions",
    "rollback": "recpipe_dev.commands.rollback",
}


def build_parser(argv: Sequence[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="recpipe", description="Real-time recommendation pipeline")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    wanted = next((a for a in argv if not a.startswith("-")), None)
    for name, module in COMMANDS.items():
        if wanted is not None and wanted != name:
            # Register a placeholder so `--help` lists every command without importing it.
            sub.add_parser(name, help=f"see `recpipe {name} --help`")
            continue
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.startswith("recpipe_dev.commands"):
                continue  # command not built yet
            raise
        mod.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(args_list)
    args = parser.parse_args(args_list)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    try:
        return int(func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
