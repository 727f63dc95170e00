"""The scripted demo scenario, played over HTTP against the local API like any client would.

Every step prints what happened and states a check; `run()` returns whether all checks held
(`recpipe demo --once` exits non-zero otherwise).
"""

from __future__ import annotations

import json
import random
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import numpy as np

from recpipe_dev.demo.data import DemoData

Printer = Callable[[str], None]


@dataclass(slots=True)
class Call:
    route: str
    status: int
    client_ms: float
    #: The handler's own `took_ms`, when the response has one.
    took_ms: float | None = None


@dataclass(slots=True)
class StepResult:
    name: str
    ok: bool
    detail: str


class ApiClient:
    """A tiny JSON client that records the latency of every call."""

    def __init__(self, base_url: str, timeout_s: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self.calls: list[Call] = []

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            f"{self.base_url}{path}",
            data=data,
            method=method,
            headers={"Content-Type": "application/json"} if data else {},
        )
        t0 = time.perf_counter()
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                status, raw = resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            status, raw = exc.code, exc.read()
        ms = (time.perf_counter() - t0) * 1000
        try:
            payload = json.loads(raw) if raw else None
        except ValueError:
            payload = raw.decode(errors="replace")
        took = payload.get("took_ms") if isinstance(payload, dict) else None
        route = f"{method} {path.split('?', 1)[0]}"
        self.calls.append(Call(route, status, ms, float(took) if isinstance(took, int | float) else None))
        return status, payload

    def recommend(self, user_id: str, k: int = 10, **params: Any) -> tuple[int, Any]:
        query = {"user_id": user_id, "k": k, "explain": "true", **params}
        return self.request("GET", f"/recommendations?{urlencode(query)}")

    def post_events(self, events: Sequence[dict[str, Any]]) -> tuple[int, Any]:
        return self.request("POST", "/events", {"events": list(events)})


def event(
    user_id: str, item_id: str, type_: str, *, device: str = "mobile", offset: float = 0.0
) -> dict[str, Any]:
    ts = time.time() + offset
    return {
        "event_id": f"demo-{user_id}-{item_id}-{type_}-{int(ts * 1000)}",
        "user_id": user_id,
        "item_id": item_id,
        "type": type_,
        "ts": ts,
        "context": {"device": device, "page": "demo"},
    }


def share(items: Sequence[dict[str, Any]], category: str) -> float:
    """Fraction of result items that carry `category`."""
    if not items:
        return 0.0
    return sum(1 for it in items if category in (it.get("categories") or [])) / len(items)


def latency_summary(calls: Sequence[Call]) -> dict[str, dict[str, float]]:
    """p50/p95/p99 per route, client-side (HTTP round trip) and handler-side (took_ms)."""
    out: dict[str, dict[str, float]] = {}
    for route in sorted({c.route for c in calls}):
        mine = [c for c in calls if c.route == route]
        client = np.asarray([c.client_ms for c in mine])
        row = {
            "requests": float(len(mine)),
            "client_p50_ms": float(np.percentile(client, 50)),
            "client_p95_ms": float(np.percentile(client, 95)),
            "client_p99_ms": float(np.percentile(client, 99)),
        }
        took = np.asarray([c.took_ms for c in mine if c.took_ms is not None])
        if len(took):
            row.update(
                took_p50_ms=float(np.percentile(took, 50)),
                took_p95_ms=float(np.percentile(took, 95)),
                took_p99_ms=float(np.percentile(took, 99)),
            )
        out[route] = row
    return out


@dataclass(slots=True)
class Scenario:
    client: ApiClient
    data: DemoData
    model_version: str | None
    #: user_id -> a description of the user's stored features once the stream path wrote them.
    stream_check: Callable[[str], str | None] | None = None
    load_requests: int = 200
    k: int = 10
    out: Printer = print
    seed: int = 0
    results: list[StepResult] = field(default_factory=list)
    meta_cache: dict[str, tuple[str, tuple[str, ...]]] | None = None

    # ---- helpers --------------------------------------------------------------------------------
    def _check(self, name: str, ok: bool, detail: str) -> bool:
        self.results.append(StepResult(name, ok, detail))
        self.out(f"  {'✔' if ok else '✘'} {detail}")
        return ok

    def _table(self, items: Sequence[dict[str, Any]], highlight: str | None = None) -> None:
        for i, it in enumerate(items, 1):
            cats = ", ".join(it.get("categories") or [])
            mark = "*" if highlight and highlight in (it.get("categories") or []) else " "
            self.out(
                f"   {i:>2}.{mark}{(it.get('title') or it['item_id'])[:44]:<44} {cats[:30]:<30} "
                f"{it.get('score', 0):>7.3f}  {','.join(it.get('sources') or []):<16} {it.get('reason', '')[:60]}"
            )

    def _recommend(self, user_id: str, **params: Any) -> list[dict[str, Any]] | None:
        status, body = self.client.recommend(user_id, self.k, **params)
        if status != 200 or not isinstance(body, dict):
            self._check("recommend", False, f"GET /recommendations for {user_id} -> {status}: {body}")
            return None
        degraded = body.get("degraded") or []
        if degraded:
            self.out(f"   (degraded: {', '.join(degraded)})")
        return list(body.get("items") or [])

    # ---- the story ---------------------------------------------------------------------------
    def run(self) -> bool:
        rng = random.Random(self.seed)
        user = f"demo-visitor-{int(time.time())}"
        self.out("\n== 0. health")
        status, body = self.client.request("GET", "/health")
        version = body.get("model_version") if isinstance(body, dict) else None
        self._check(
            "health",
            status == 200
            and version is not None
            and (self.model_version is None or version == self.model_version),
            f"GET /health -> {status}, model {version} (trained {self.model_version})",
        )

        self.out(f"\n== 1. a cold-start visitor ({user}) gets content-based and popular items")
        before = self._recommend(user, device="mobile")
        if before is None:
            return False
        self._table(before)
        personal = {"cf", "session"} & {s for it in before for s in it.get("sources") or []}
        self._check(
            "cold_start",
            len(before) == self.k and not personal,
            f"{len(before)} items for a user with no history, none from cf/session sources",
        )

        self.out("\n== 2. the visitor clicks a few items in one category; the next request reflects it")
        category, picks = self._pick_category(before, rng)
        self.out(
            f"   clicking {len(picks)} items in '{category}': " + "; ".join(self._title(i) for i in picks)
        )
        events = [event(user, i, t, offset=n * 0.001) for n, i in enumerate(picks) for t in ("view", "click")]
        status, body = self.client.post_events(events)
        accepted = body.get("accepted") if isinstance(body, dict) else None
        self._check(
            "events",
            status == 202 and accepted == len(events),
            f"POST /events -> {status}, accepted {accepted}/{len(events)}",
        )
        after = self._recommend(user, device="mobile")
        if after is None:
            return False
        self._table(after, highlight=category)
        s0, s1 = share(before, category), share(after, category)
        self._check(
            "session_reflected", s1 > s0, f"share of '{category}' in the top {self.k}: {s0:.0%} -> {s1:.0%}"
        )

        self.out("\n== 3. an item added to the cart disappears from the results")
        carted = after[0]["item_id"]
        self.out(f"   adding to cart: {self._title(carted)}")
        status, body = self.client.post_events([event(user, carted, "add_to_cart")])
        self._check("cart_event", status == 202, f"POST /events (add_to_cart) -> {status}")
        after_cart = self._recommend(user, device="mobile")
        if after_cart is None:
            return False
        self._table(after_cart, highlight=category)
        ids = [it["item_id"] for it in after_cart]
        self._check(
            "cart_excluded",
            carted not in ids,
            f"{carted} {'absent from' if carted not in ids else 'STILL IN'} the new list",
        )

        self.out("\n== 4. the stream path: Kinesis -> feature updater -> user features in DynamoDB")
        if self.stream_check is None:
            self._check("stream", False, "no Kinesis poller running (stream path not available)")
        else:
            deadline = time.monotonic() + 30.0
            stored = None
            while stored is None and time.monotonic() < deadline:
                stored = self.stream_check(user)
                if stored is None:
                    time.sleep(0.25)
            self._check("stream", stored is not None, stored or "user features not written within 30 s")

        self.out("\n== 5. a known user: recommendations match the history")
        self._known_user(rng)

        self.out(f"\n== 6. {self.load_requests} more requests for random known users")
        self._load(rng)

        self.out("\n== 7. latency of every request made")
        for route, row in latency_summary(self.client.calls).items():
            line = (
                f"   {route:<22} n={int(row['requests']):>4}  HTTP p50 {row['client_p50_ms']:6.1f} ms"
                f"  p95 {row['client_p95_ms']:6.1f}  p99 {row['client_p99_ms']:6.1f}"
            )
            if "took_p50_ms" in row:
                line += f"  | handler took_ms p50 {row['took_p50_ms']:5.1f}  p95 {row['took_p95_ms']:5.1f}  p99 {row['took_p99_ms']:5.1f}"
            self.out(line)
        failed = [r for r in self.results if not r.ok]
        self.out(
            f"\n{len(self.results) - len(failed)}/{len(self.results)} checks held"
            + (": FAILED " + ", ".join(r.name for r in failed) if failed else "")
        )
        return not failed

    # ---- steps' details ----------------------------------------------------------------------
    def _title(self, item_id: str) -> str:
        meta = self._meta().get(item_id)
        return meta[0] if meta else item_id

    def _meta(self) -> dict[str, tuple[str, tuple[str, ...]]]:
        if self.meta_cache is None:
            self.meta_cache = {m.item_id: (m.title, m.categories) for m in self.data.items}
        return self.meta_cache

    def _pick_category(self, shown: Sequence[dict[str, Any]], rng: random.Random) -> tuple[str, list[str]]:
        """A large category barely present in the list, and three of its popular items not shown."""
        log = self.data.log
        counts = np.bincount(log.items, minlength=len(log.item_vocab))
        by_cat: dict[str, list[tuple[int, str]]] = {}
        meta = {m.item_id: m.categories for m in self.data.items}
        shown_ids = {it["item_id"] for it in shown}
        for code, item_id in enumerate(log.item_vocab):
            for c in meta.get(item_id, ())[:1]:
                by_cat.setdefault(c, []).append((int(counts[code]), item_id))
        # Large categories only: a niche one (a handful of westerns) has neighbours elsewhere.
        sizes = sorted(len(m) for m in by_cat.values())
        floor = max(8, sizes[len(sizes) // 2] if sizes else 8)
        candidates = [c for c, members in by_cat.items() if len(members) >= floor] or list(by_cat)
        least = min(share(shown, c) for c in candidates)
        pool = sorted(c for c in candidates if share(shown, c) == least)
        category = rng.choice(pool)
        ranked = [i for _, i in sorted(by_cat[category], reverse=True) if i not in shown_ids]
        return category, ranked[:3]

    def _known_user(self, rng: random.Random) -> None:
        log = self.data.log
        counts = np.bincount(log.users, minlength=len(log.user_vocab))
        meta = {m.item_id: m.categories for m in self.data.items}
        first_cat = np.asarray([(meta.get(i) or ("",))[0] for i in log.item_vocab])
        # A user with a clear taste and a moderate history (a heavy user may have seen every
        # item of their favourite categories in a small catalogue, leaving CF nothing there).
        lo, hi = np.percentile(counts[counts > 0], [50, 90])
        pool = np.flatnonzero((counts >= max(lo, 10)) & (counts <= hi)).tolist()
        rng.shuffle(pool)
        code, hist = -1, {}
        for cand in pool[:200]:
            cats, n = np.unique(first_cat[log.items[log.users == cand]], return_counts=True)
            h = {str(c): int(k) for c, k in zip(cats, n, strict=True) if c}
            if h and max(h.values()) >= 0.5 * sum(h.values()):
                code, hist = cand, h
                break
        if code < 0 and pool:
            code = pool[0]
            cats, n = np.unique(first_cat[log.items[log.users == code]], return_counts=True)
            hist = {str(c): int(k) for c, k in zip(cats, n, strict=True) if c}
        if code < 0:
            self._check("known_user", False, "no user with history in the data")
            return
        user = log.user_vocab[code]
        top = [c for c, _ in sorted(hist.items(), key=lambda kv: -kv[1])[:3]]
        total = sum(hist.values()) or 1
        self.out(
            f"   {user}: {int(counts[code])} past interactions, mostly "
            + ", ".join(f"{c} ({hist[c] / total:.0%})" for c in top)
        )
        items = self._recommend(user)
        if items is None:
            return
        self._table(items)
        in_top = sum(1 for it in items if set(it.get("categories") or []) & set(top)) / max(len(items), 1)
        sources = {s for it in items for s in it.get("sources") or []}
        self._check(
            "known_user",
            "cf" in sources,
            f"collaborative-filtering candidates used (sources: {', '.join(sorted(sources))}); "
            f"{in_top:.0%} of the list is in the user's top categories",
        )

    def _load(self, rng: random.Random) -> None:
        from tqdm import tqdm

        users = self.data.log.user_vocab
        active = np.unique(self.data.log.users)
        errors = 0
        for _ in tqdm(range(self.load_requests), desc="requests", unit="req"):
            user = users[int(active[rng.randrange(len(active))])]
            status, _ = self.client.recommend(user, self.k, device=rng.choice(["web", "mobile", "tablet"]))
            errors += status != 200
        self._check("load", errors == 0, f"{self.load_requests - errors}/{self.load_requests} answered 200")
