"""The demo's catalogue and history: the synthetic shop by default, or MovieLens-format data.

Either way the history is moved to end just before now (by whole days, so time-of-day patterns
survive): trending, recency and the events the scenario posts then live on one clock.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from recpipe.domain.catalogue import InteractionLog, ItemMeta

DAY_S = 86_400.0


@dataclass(frozen=True, slots=True)
class DemoData:
    log: InteractionLog
    items: list[ItemMeta]
    #: One line for the terminal: where the data came from.
    description: str


def shift_to_now(
    log: InteractionLog, items: list[ItemMeta], now: float
) -> tuple[InteractionLog, list[ItemMeta]]:
    """Move every timestamp by the same whole number of days so the newest is within a day of now."""
    if len(log) == 0:
        return log, items
    days = math.floor((now - 60.0 - float(log.ts.max())) / DAY_S)
    if days == 0:
        return log, items
    shift = days * DAY_S
    moved = InteractionLog(
        users=log.users,
        items=log.items,
        ts=log.ts + shift,
        types=log.types,
        values=log.values,
        user_vocab=log.user_vocab,
        item_vocab=log.item_vocab,
        devices=log.devices,
    )
    shifted = [replace(m, created_ts=None if m.created_ts is None else m.created_ts + shift) for m in items]
    return moved, shifted


def synthetic(
    n_users: int, n_items: int, n_events: int, *, seed: int = 0, now: float | None = None
) -> DemoData:
    from recpipe_dev.synthetic import generate

    now = time.time() if now is None else now
    span_days = 28.0
    # The log ends a minute before now: nothing the scenario posts is older than the history.
    log, items = generate(n_users, n_items, n_events, seed=seed, start_ts=now - 60.0 - span_days * DAY_S)
    return DemoData(
        log,
        items,
        f"synthetic shop: {n_users:,} users, {n_items:,} items, {len(log):,} interactions over {span_days:.0f} days",
    )


def movielens(directory: Path, *, now: float | None = None) -> DemoData:
    from recpipe.training.movielens import load_movielens

    log, items, report = load_movielens(directory)
    log, items = shift_to_now(log, items, time.time() if now is None else now)
    extra = f", {report.error_count} malformed rows skipped" if report.error_count else ""
    return DemoData(
        log,
        items,
        f"MovieLens at {directory}: {len(log.user_vocab):,} users, {len(items):,} movies, {len(log):,} ratings{extra}",
    )


def category_shares(item_ids: list[str], categories_of: dict[str, tuple[str, ...]]) -> dict[str, float]:
    """Share of a result list whose first category is each category."""
    if not item_ids:
        return {}
    counts: dict[str, int] = {}
    for item_id in item_ids:
        cats = categories_of.get(item_id, ())
        if cats:
            counts[cats[0]] = counts.get(cats[0], 0) + 1
    return {c: n / len(item_ids) for c, n in sorted(counts.items(), key=lambda kv: -kv[1])}


def popular_items(log: InteractionLog, n: int) -> list[str]:
    counts = np.bincount(log.items, minlength=len(log.item_vocab))
    return [log.item_vocab[i] for i in np.argsort(-counts, kind="stable")[:n]]
