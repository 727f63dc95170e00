"""Run `functions/<name>/app.py` outside Lambda: the local API, the demo, benchmarks and tests
import handlers and build contexts here, so they all invoke exactly the files SAM deploys."""

from __future__ import annotations

import importlib.util
import json
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from recpipe_dev.local.resources import ROOT

FUNCTIONS_DIR = ROOT / "functions"
EVENTS_DIR = ROOT / "events"
STAGE = "local"

Handler = Callable[[dict[str, Any], Any], dict[str, Any]]


class HandlerMissing(RuntimeError):
    pass


class LambdaContext:
    """The attributes Powertools and the handlers read from a Lambda context."""

    def __init__(self, function: str = "test", timeout_s: float = 10.0) -> None:
        self.function_name = f"recpipe-{STAGE}-{function}"
        self.function_version = "$LATEST"
        self.invoked_function_arn = f"arn:aws:lambda:us-east-1:123456789012:function:{self.function_name}"
        self.memory_limit_in_mb = 1024
        self.aws_request_id = str(uuid.uuid4())
        self.log_group_name = f"/aws/lambda/{self.function_name}"
        self.log_stream_name = "local"
        self._deadline = time.monotonic() + timeout_s

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def load_module(path: Path, name: str) -> ModuleType:
    """Import a handler file under a unique module name (every function's file is `app.py`).
    Each call executes the file again, so a test can load it under a new environment."""
    if not path.is_file():
        raise HandlerMissing(
            f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path} does not exist"
        )
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise HandlerMissing(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module


def load_function(function: str, functions_dir: Path = FUNCTIONS_DIR) -> ModuleType:
    """The module of `functions/<function>/app.py`, freshly imported."""
    return load_module(functions_dir / function / "app.py", f"recpipe_fn_{function}")


def load_handler(function: str, attribute: str = "handler", functions_dir: Path = FUNCTIONS_DIR) -> Handler:
    handler = getattr(load_function(function, functions_dir), attribute, None)
    if not callable(handler):
        raise HandlerMissing(f"functions/{function}/app.py has no callable `{attribute}`")
    return handler


def sample_event(name: str) -> dict[str, Any]:
    """A payload from events/ (what `sam local invoke -e` takes)."""
    return json.loads((EVENTS_DIR / name).read_text())
