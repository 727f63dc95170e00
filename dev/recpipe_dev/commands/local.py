"""`recpipe local up|down|status|env`: the local stack (redis-server + moto server + template resources)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

#: Exit codes: 0 ok, 1 not running / unhealthy, 2 cannot start (missing binary, already running).
EXIT_UNHEALTHY = 1
EXIT_CANNOT_START = 2


def register(sub: Any) -> None:
    parser = sub.add_parser("local", help="start/stop/inspect the local stack (redis-server + moto server)")
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        help="where the state file, logs and data live (default: .recpipe, or $RECPIPE_STATE_DIR)",
    )
    lsub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    up = lsub.add_parser("up", help="start redis-server and moto server, create the template's resources")
    up.add_argument("--env-name", default="local", help="physical names are recpipe-<env>-<logical id>")
    up.add_argument(
        "--redis-url",
        default=os.environ.get("REDIS_URL"),
        help="use this Redis instead of starting one (default: $REDIS_URL)",
    )
    up.set_defaults(func=_up)
    lsub.add_parser("down", help="stop what `up` started").set_defaults(func=_down)
    lsub.add_parser(
        "status", help="health of each component (exit 1 when not running or unhealthy)"
    ).set_defaults(func=_status)
    lsub.add_parser("env", help='print `export` lines: eval "$(recpipe local env)"').set_defaults(func=_env)


def _stack(args: argparse.Namespace, **kwargs: Any) -> Any:
    from recpipe_dev.local.stack import LocalStack

    return LocalStack(args.state_dir, **kwargs)


def _up(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from recpipe_dev.local.stack import LocalStackError, export_lines

    stack = _stack(args, env_name=args.env_name, redis_url=args.redis_url, detach=True)
    try:
        with tqdm(total=3, desc="local stack", unit="step", file=sys.stderr) as bar:
            state = stack.start(progress=bar)
    except LocalStackError as exc:
        print(f"recpipe local up: {exc}", file=sys.stderr)
        return EXIT_CANNOT_START
    print(f"redis        {state.redis_url}" + ("" if state.redis_pid else " (external, not managed)"))
    print(f"moto server  {state.moto_url}")
    for logical_id, name in sorted(state.resources.items()):
        print(f"{logical_id:<28} {name}")
    print(f"state        {stack.state_path}")
    print("\n# point the handlers and tools at this stack:")
    print(export_lines(state.environment))
    return 0


def _down(args: argparse.Namespace) -> int:
    stack = _stack(args)
    state = stack.read_state()
    if state is None:
        print("no local stack recorded; nothing to stop")
        return 0
    stack.stop()
    print(
        f"stopped moto server (pid {state.moto_pid})"
        + (f" and redis (pid {state.redis_pid})" if state.redis_pid else "")
    )
    return 0


def _status(args: argparse.Namespace) -> int:
    stack = _stack(args)
    state = stack.read_state()
    if state is None:
        print(f"not running (no {stack.state_path}); start it with `recpipe local up`")
        return EXIT_UNHEALTHY
    health = stack.health(state)
    for name, (ok, detail) in health.items():
        print(f"{'ok ' if ok else 'BAD'}  {name:<28} {detail}")
    return 0 if all(ok for ok, _ in health.values()) else EXIT_UNHEALTHY


def _env(args: argparse.Namespace) -> int:
    from recpipe_dev.local.stack import export_lines

    state = _stack(args).read_state()
    if state is None:
        print("no local stack running; start it with `recpipe local up`", file=sys.stderr)
        return EXIT_UNHEALTHY
    print(export_lines(state.environment))
    return 0
