"""The demo's HTTP server: the real API (through the handlers) plus the page and `/demo/*` JSON.

`/demo/users` offers sample users (with the categories they like most) for the page's picker;
`/demo/stats` feeds the live panel: latency per route, request/status counts, and what the
Kinesis poller delivered to the feature updater.
"""

from __future__ import annotations

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


def demo_routes(info: DemoInfo, api: LocalApi) -> dict[tuple[str, str], ExtraRoute]:
    users = sample_users(info.data)

    def stats(query: Mapping[str, list[str]], body: bytes | None) -> tuple[int, Any]:
        return 200, {
            "api": api.stats.snapshot(),
            "stream": dict(info.stream_totals() or {}),
            "model_version": info.model_version,
        }

    def users_route(query: Mapping[str, list[str]], body: bytes | None) -> tuple[int, Any]:
        return 200, {"users": users, "data": info.data.description, "model_version": info.model_version}

    return {("GET", "/demo/stats"): stats, ("GET", "/demo/users"): users_route}


def demo_server(info: DemoInfo, api: LocalApi, host: str, port: int) -> LocalApiServer:
    return LocalApiServer(api, host, port, extra_routes=demo_routes(info, api), static_dir=STATIC_DIR)
