"""`recpipe versions`: published versions and whether each can be restored (see rollback.py)."""

from __future__ import annotations

from typing import Any

from recpipe_dev.commands.rollback import run_versions


def register(sub: Any) -> None:
    p = sub.add_parser("versions", help="list published versions and what `recpipe rollback` can restore")
    p.add_argument("--json", action="store_true", help="print as JSON")
    p.set_defaults(func=run_versions)
