"""Attribution: events joined to the impressions that led to them, and the per-variant report.

Rules (also in docs/experiments.md):

* **Exact join.** An event that carries `context.recommendation_id` is attributed to that
  impression when the impression exists, belongs to the same user, showed the event's item and
  the event happened within `window_s` after it (default 24 h). Otherwise it is counted as
  unmatched, by reason (unknown id, other user, item not shown, outside the window).
* **Conversions without an id** (a purchase on a product page long after the click) are given
  to the last (default) or first impression of the same user that showed the item within the
  window before the purchase: `touch="last" | "first"`. Clicks are only ever joined exactly.
* **Units.** The unit of the split is the impression (one served list). An impression counts as
  clicked when at least one of its items was clicked, converted when at least one was bought
  (`purchase`). Per position and per source the unit is the shown item: clicks on items at
  position p / items shown at position p. Repeated clicks on the same shown item count once.
* **Intervals.** 95 % Wilson intervals for each rate; the difference of each variant from the
  first (control) with Newcombe's hybrid score interval. Impressions of one user are not
  independent, so with heavy users the intervals are somewhat too narrow (stated in the report).
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from recpipe.domain.impressions import Impression

CLICK = "click"
CONVERSION = "purchase"
DEFAULT_WINDOW_S = 24 * 3600.0
Z95 = 1.959963984540054


@dataclass(frozen=True, slots=True)
class FeedbackEvent:
    """What attribution needs of an archived event."""

    event_id: str
    user_id: str
    item_id: str
    type: str
    ts: float
    recommendation_id: str | None = None


@dataclass(slots=True)
class Attribution:
    #: (recommendation_id, item_id) -> event types attributed to that shown item
    touches: dict[tuple[str, str], set[str]] = field(default_factory=lambda: defaultdict(set))
    #: why events with a recommendation_id were not joined
    unmatched: Counter[str] = field(default_factory=Counter)
    attributed: int = 0
    by_touch: int = 0


def attribute(
    impressions: Iterable[Impression],
    events: Iterable[FeedbackEvent],
    *,
    window_s: float = DEFAULT_WINDOW_S,
    touch: str = "last",
) -> Attribution:
    if touch not in ("first", "last"):
        raise ValueError(f"touch must be 'first' or 'last', got {touch!r}")
    by_id: dict[str, Impression] = {}
    shown: dict[str, set[str]] = {}
    by_user_item: dict[tuple[str, str], list[Impression]] = defaultdict(list)
    for imp in impressions:
        by_id[imp.recommendation_id] = imp  # at-least-once delivery: a duplicate is the same list
        shown[imp.recommendation_id] = {i.item_id for i in imp.items}
    for imp in by_id.values():
        for i in imp.items:
            by_user_item[(imp.user_id, i.item_id)].append(imp)
    for lists in by_user_item.values():
        lists.sort(key=lambda imp: imp.ts)
    out = Attribution()
    seen_events: set[str] = set()
    for ev in events:
        if ev.type not in (CLICK, CONVERSION) or ev.event_id in seen_events:
            continue
        seen_events.add(ev.event_id)
        if ev.recommendation_id is not None:
            target = by_id.get(ev.recommendation_id)
            reason = None
            if target is None:
                reason = "unknown_recommendation_id"
            elif target.user_id != ev.user_id:
                reason = "other_user"
            elif ev.item_id not in shown[target.recommendation_id]:
                reason = "item_not_shown"
            elif not 0.0 <= ev.ts - target.ts <= window_s:
                reason = "outside_window"
            if reason is not None or target is None:
                out.unmatched[reason or "unknown_recommendation_id"] += 1
                continue
            out.touches[(target.recommendation_id, ev.item_id)].add(ev.type)
            out.attributed += 1
        elif ev.type == CONVERSION:
            candidates = [
                imp
                for imp in by_user_item.get((ev.user_id, ev.item_id), [])
                if 0.0 <= ev.ts - imp.ts <= window_s
            ]
            if candidates:
                touched = candidates[-1] if touch == "last" else candidates[0]
                out.touches[(touched.recommendation_id, ev.item_id)].add(ev.type)
                out.attributed += 1
                out.by_touch += 1
    return out


# ---- statistics ------------------------------------------------------------------------------
def wilson(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    if n == 0:
        return (0.0, 1.0)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def newcombe_difference(s1: int, n1: int, s2: int, n2: int) -> tuple[float, float, float]:
    """p2 - p1 with its 95 % interval (Newcombe 1998, method 10)."""
    p1 = s1 / n1 if n1 else 0.0
    p2 = s2 / n2 if n2 else 0.0
    l1, u1 = wilson(s1, n1)
    l2, u2 = wilson(s2, n2)
    d = p2 - p1
    lo = d - math.sqrt((p2 - l2) ** 2 + (u1 - p1) ** 2)
    hi = d + math.sqrt((u2 - p2) ** 2 + (p1 - l1) ** 2)
    return d, lo, hi


def _rate(successes: int, n: int) -> dict[str, Any]:
    lo, hi = wilson(successes, n)
    return {"n": n, "successes": successes, "rate": successes / n if n else None, "ci95": [lo, hi]}


def report(
    impressions: Sequence[Impression],
    attribution: Attribution,
    *,
    experiment: str | None = None,
    window_s: float = DEFAULT_WINDOW_S,
    touch: str = "last",
) -> dict[str, Any]:
    """Per variant: exposures, CTR and conversion with intervals; per position and per source
    CTR; the difference of each variant from the first one seen (control) with its interval."""
    unique = {imp.recommendation_id: imp for imp in impressions}.values()
    chosen = [imp for imp in unique if experiment is None or imp.experiment == experiment]
    variants: dict[str, dict[str, Any]] = {}
    order: list[str] = []
    for imp in sorted(chosen, key=lambda i: i.ts):
        name = imp.variant or "(none)"
        v = variants.get(name)
        if v is None:
            order.append(name)
            v = variants[name] = {
                "users": set(),
                "impressions": 0,
                "clicked": 0,
                "converted": 0,
                "models": Counter(),
                "pos": defaultdict(lambda: [0, 0, 0]),
                "src": defaultdict(lambda: [0, 0, 0]),
            }
        v["users"].add(imp.user_id)
        v["impressions"] += 1
        v["models"][imp.model_version] += 1
        clicked = converted = False
        for item in imp.items:
            types = attribution.touches.get((imp.recommendation_id, item.item_id), set())
            c, b = CLICK in types, CONVERSION in types
            clicked |= c
            converted |= b
            for bucket in [v["pos"][item.position], *(v["src"][s] for s in item.sources)]:
                bucket[0] += 1
                bucket[1] += int(c)
                bucket[2] += int(b)
        v["clicked"] += int(clicked)
        v["converted"] += int(converted)
    # The control is the variant named "control" when there is one, else the first seen.
    if "control" in variants:
        order.remove("control")
        order.insert(0, "control")
    out: dict[str, Any] = {
        "experiment": experiment,
        "rules": {
            "unit": "impression (one served list); per position/source: shown item",
            "click": CLICK,
            "conversion": CONVERSION,
            "window_s": window_s,
            "join": "exact on context.recommendation_id (+ same user, item shown, within window)",
            "conversions_without_id": f"{touch} touch within the window",
            "interval": "95 % Wilson; difference: Newcombe hybrid score",
            "caveat": "impressions of one user are correlated: intervals are optimistic for heavy users",
        },
        "attribution": {
            "attributed_events": attribution.attributed,
            "attributed_by_touch": attribution.by_touch,
            "unmatched": dict(attribution.unmatched),
        },
        "variants": {},
        "differences": {},
    }
    for name in order:
        v = variants[name]
        out["variants"][name] = {
            "exposures": {"impressions": v["impressions"], "users": len(v["users"])},
            "models": {str(k): n for k, n in v["models"].items()},
            "ctr": _rate(v["clicked"], v["impressions"]),
            "conversion": _rate(v["converted"], v["impressions"]),
            "by_position": {
                str(p): {"shown": s, "ctr": _rate(c, s)["rate"], "conversion": _rate(b, s)["rate"]}
                for p, (s, c, b) in sorted(v["pos"].items())
            },
            "by_source": {
                src: {"shown": s, "ctr": _rate(c, s)["rate"], "conversion": _rate(b, s)["rate"]}
                for src, (s, c, b) in sorted(v["src"].items())
            },
        }
    if order:
        base = variants[order[0]]
        for name in order[1:]:
            v = variants[name]
            diffs = {}
            for metric, key in (("ctr", "clicked"), ("conversion", "converted")):
                d, lo, hi = newcombe_difference(base[key], base["impressions"], v[key], v["impressions"])
                diffs[metric] = {"difference": d, "ci95": [lo, hi], "significant": not lo <= 0.0 <= hi}
            out["differences"][f"{name} - {order[0]}"] = diffs
    return out
