"""The demo's HTTP server: the real API (through the handlers) plus the page and `/demo/*` JSON.

`/demo/users` offers sample users (with the categories they like most) for the page's picker;
`/demo/stats` feeds the live panel: latency per route, request/status counts, and what the
Kinesis poller delivered to the feature updater; `/demo/experiment` the experiment panel: the
live split and, from the archive (impressions + attributed clicks), CTR per variant.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from recpipe_dev.demo.data import DemoData
from recpipe_dev.local.api_server import ExtraRoute, LocalApi, LocalApiServer

STATIC_DIR = Path(__file__).resolve().parent / "static"


@dataclass(slots=True)
class DemoInfo:
    data: DemoData
    model_version: str | None
    #: Returns the poller's totals (delivered, checkpointed, ...) or None when not running.
    stream_totals: Callable[[], Mapping[str, int] | None]


def sample_users(data: DemoData, n: int = 12, seed: int = 0) -> list[dict[str, Any]]:
    """Active users with distinct favourite categories, so the picker shows different tastes."""
    log = data.log
    counts = np.bincount(log.users, minlength=len(log.user_vocab))
    active = np.flatnonzero(counts >= max(5, np.percentile(counts[counts > 0], 60)))
    rng = np.random.default_rng(seed)
    if len(active) > 400:
        active = rng.choice(active, 400, replace=False)
    first_cat = {m.item_id: (m.categories[0] if m.categories else "") for m in data.items}
    out: list[dict[str, Any]] = []
    seen_fav: set[str] = set()
    for code in sorted(active.tolist(), key=lambda u: -counts[u]):
        cats: dict[str, int] = {}
        for item in log.items[log.users == code]:
            c = first_cat.get(log.item_vocab[int(item)], "")
            if c:
                cats[c] = cats.get(c, 0) + 1
        top = [c for c, _ in sorted(cats.items(), key=lambda kv: -kv[1])[:3]]
        if not top or top[0] in seen_fav:
            continue
        seen_fav.add(top[0])
        out.append(
            {"user_id": log.user_vocab[code], "interactions": int(counts[code]), "top_categories": top}
        )
        if len(out) >= n:
            break
    return out


class ExperimentPanel:
    """The live split (beside the model pointer) and CTR per variant of the live experiment, or
    of the last one seen in the archive, recomputed at most every `ttl_s`."""

    def __init__(self, ttl_s: float = 3.0, window_s: float = 3600.0) -> None:
        self.ttl_s = ttl_s
        self.window_s = window_s
        self._value: dict[str, Any] | None = None
        self._at = float("-inf")
        self._lock = threading.Lock()

    def __call__(self) -> dict[str, Any]:
        with self._lock:
            if self._value is None or time.monotonic() - self._at > self.ttl_s:
                try:
                    self._value = self._compute()
                except Exception as exc:  # the page shows why, the demo goes on
                    self._value = {"error": f"{type(exc).__name__}: {exc}"[:300]}
                self._at = time.monotonic()
            return self._value

    def _compute(self) -> dict[str, Any]:
        from datetime import UTC, datetime, timedelta

        import boto3
        from recpipe.adapters.feedback_archive import S3Objects, read_events, read_impressions
        from recpipe.domain.attribution import attribute, report

        from recpipe_dev.commands.experiment import model_store

        live = model_store().current_experiment()
        end = datetime.now(UTC) + timedelta(minutes=1)
        start = end - timedelta(seconds=self.window_s)
        s3 = boto3.session.Session().client("s3", endpoint_url=os.environ.get("AWS_ENDPOINT_URL"))
        source = S3Objects(s3, os.environ["ARCHIVE_BUCKET"])
        impressions, _ = read_impressions(source, start, end)
        named = [i for i in impressions if i.experiment]
        name = live.name if live else (max(named, key=lambda i: i.ts).experiment if named else None)
        if name is None:
            return {"experiment": None, "live": False}
        events, _ = read_events(source, start, end)
        body = report(impressions, attribute(impressions, events), experiment=name)
        return {
            "experiment": name,
            "live": live is not None and live.name == name,
            "split": live.split() if live is not None and live.name == name else None,
            "variants": {
                v: {
                    "impressions": r["exposures"]["impressions"],
                    "users": r["exposures"]["users"],
                    "clicked": r["ctr"]["successes"],
                    "ctr": r["ctr"]["rate"],
                    "ci95": r["ctr"]["ci95"],
                    "models": r["models"],
                }
                for v, r in body["variants"].items()
            },
        }


def demo_routes(info: DemoInfo, api: LocalApi) -> dict[tuple[str, str], ExtraRoute]:
    users = sample_users(info.data)
    panel = ExperimentPanel()

    def stats(query: Mapping[str, list[str]], body: bytes | None) -> tuple[int, Any]:
        return 200, {
            "api": api.stats.snapshot(),
            "stream": dict(info.stream_totals() or {}),
            "model_version": info.model_version,
        }

    def users_route(query: Mapping[str, list[str]], body: bytes | None) -> tuple[int, Any]:
        return 200, {"users": users, "data": info.data.description, "model_version": info.model_version}

    def experiment(query: Mapping[str, list[str]], body: bytes | None) -> tuple[int, Any]:
        return 200, panel()

    return {
        ("GET", "/demo/stats"): stats,
        ("GET", "/demo/users"): users_route,
        ("GET", "/demo/experiment"): experiment,
    }


def demo_server(info: DemoInfo, api: LocalApi, host: str, port: int) -> LocalApiServer:
    return LocalApiServer(api, host, port, extra_routes=demo_routes(info, api), static_dir=STATIC_DIR)
