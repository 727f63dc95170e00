"""History replay: rebuild, in time order, what the online path would have seen at each moment.

Events are folded with the same `domain.user.apply_event` the stream updater runs; the session
is what the Redis session list would hold (interactions since the last 30-minute gap, newest
first); trending is the same 5-minute-bucket hour window the TrendingStore keeps; candidates and
features come from the online path's own functions (`training.examples.ExampleBuilder`). A ranker
trained on these vectors is trained on exactly what it is later served.

The user view and the candidate policy it shares with the online path live in
`recpipe.domain.candidates`, so both sides build views and candidate sets one way.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from recpipe.bundle import Neighbours
from recpipe.domain.candidates import SESSION_LIMIT, CandidatePolicy
from recpipe.domain.catalogue import InteractionLog
from recpipe.domain.features import CandidateSet
from recpipe.domain.items import ItemTable
from recpipe.domain.user import UserFeatures, apply_event
from recpipe.ports import SessionEntry
from recpipe.redis_keys import (
    SESSION_TTL_S,
    TRENDING_BUCKET_S,
    TRENDING_BUCKETS,
    TRENDING_HALF_LIFE_BUCKETS,
    trending_bucket_of,
)
from recpipe.training.examples import ExampleBuilder, one_blas_thread


class TrendingWindow:
    """Trending at any past moment from the log, computed as RedisTrendingStore.top does: event
    weight per item in the TRENDING_BUCKETS five-minute buckets ending at `now`, each bucket
    decayed by its age (half-life TRENDING_HALF_LIFE_BUCKETS), net-positive items only,
    normalised by the top item."""

    def __init__(
        self,
        ts: npt.NDArray[np.float64],
        items: npt.NDArray[np.int32],
        weights: npt.NDArray[np.float32],
        item_ids: list[str],
    ) -> None:
        order = np.argsort(ts, kind="stable")
        self._ts = ts[order]
        self._items = items[order]
        self._w = weights[order]
        self._ids = item_ids

    def top(self, now: float, n: int) -> list[tuple[str, float]]:
        current = trending_bucket_of(now)
        start = (current - TRENDING_BUCKETS + 1) * TRENDING_BUCKET_S
        lo, hi = np.searchsorted(self._ts, [start, now], side="left")
        if hi <= lo:
            return []
        age = current - np.floor(self._ts[lo:hi] / TRENDING_BUCKET_S)
        w = self._w[lo:hi] * np.power(0.5, age / TRENDING_HALF_LIFE_BUCKETS)
        uniq, inv = np.unique(self._items[lo:hi], return_inverse=True)
        sums = np.bincount(inv, weights=w)
        keep = sums > 0
        uniq, sums = uniq[keep], sums[keep]
        if not len(uniq):
            return []
        order = np.argsort(-sums, kind="stable")[:n]
        top = float(sums[order[0]])
        return [(self._ids[int(uniq[j])], float(sums[j] / top)) for j in order]


@dataclass(slots=True)
class ReplayState:
    """Per-user state after folding every replayed event so far."""

    features: dict[int, UserFeatures] = field(default_factory=dict)
    #: newest first, what the Redis session list holds
    sessions: dict[int, list[SessionEntry]] = field(default_factory=dict)
    seen: dict[int, set[int]] = field(default_factory=dict)

    def session_at(self, user: int, now: float) -> list[SessionEntry]:
        entries = self.sessions.get(user, [])
        if not entries or now - entries[0].ts >= SESSION_TTL_S:
            return []
        return entries


@dataclass(slots=True)
class Examples:
    x: npt.NDArray[np.float32]
    y: npt.NDArray[np.float32]
    group: npt.NDArray[np.int32]
    #: per group: held out for validation (the whole pool, not a negative sample)
    held_out: npt.NDArray[np.bool_] = field(default_factory=lambda: np.zeros(0, np.bool_))
    #: positives considered / positives found among the candidates (candidate recall)
    considered: int = 0
    covered: int = 0


@dataclass(slots=True)
class Snapshot:
    """Everything one training example was built from (tests rebuild it through the stores)."""

    row: int
    user_id: str
    now: float
    features: UserFeatures | None
    session: list[SessionEntry]
    device: str | None
    cf: Sequence[tuple[str, float]]
    trending: list[tuple[str, float]]
    exclude: frozenset[int]
    items: ItemTable
    neighbours: Neighbours
    policy: CandidatePolicy
    candidates: CandidateSet
    x: npt.NDArray[np.float32]


@one_blas_thread
def replay(
    log: InteractionLog,
    rows: npt.NDArray[np.int64],
    sample: npt.NDArray[np.bool_],
    *,
    items: ItemTable,
    neighbours: Neighbours,
    categories_of: Callable[[int], list[str]],
    cf_of: Callable[[int], Sequence[tuple[str, float]]],
    trending: TrendingWindow,
    policy: CandidatePolicy,
    negatives: int,
    seed: int,
    state: ReplayState | None = None,
    on_snapshot: Callable[[Snapshot], None] | None = None,
    progress: Callable[[int], None] | None = None,
    max_candidates: int = 500,
    held_out: float = 0.0,
) -> tuple[Examples, ReplayState]:
    """Fold `rows` of `log` (time-sorted row numbers) in order; at rows where `sample` is set,
    build the candidate set *before* the event and label the item the user chose next.

    Examples whose chosen item is not among the candidates are counted but not used: the ranker
    can only reorder what candidate generation offers. The pool and the feature rows come from
    `training.examples.ExampleBuilder`, i.e. the online path's own functions (`max_candidates`
    is the serving pool size). A share `held_out` of the examples keeps the whole pool instead
    of `negatives` sampled rows: the ranker's validation lists, ranked as serving ranks them.
    BLAS runs on one thread here (`one_blas_thread`).
    """
    builder = ExampleBuilder(items, neighbours, policy, max_candidates)
    rng = np.random.default_rng(seed)
    st = state or ReplayState()
    xs: list[npt.NDArray[np.float32]] = []
    ys: list[npt.NDArray[np.float32]] = []
    gs: list[npt.NDArray[np.int32]] = []
    vs: list[bool] = []
    considered = covered = 0
    for k, r in enumerate(rows.tolist()):
        u = int(log.users[r])
        item = int(log.items[r])
        event = log.event(r)
        feats = st.features.get(u)
        seen = st.seen.setdefault(u, set())
        if sample[k]:
            considered += 1
            now = event.ts
            session = st.session_at(u, now)
            cf = cf_of(u)
            trend = trending.top(now, policy.trending)
            cands, view, ctx, blocked = builder.pool(
                user=feats, session=session, cf=cf, trending=trend, now=now, device=event.device
            )
            hit = np.flatnonzero(cands.items == item)
            if len(hit):
                x = builder.assembler.assemble(cands, view, ctx)
                covered += 1
                if on_snapshot is not None:
                    on_snapshot(
                        Snapshot(
                            r,
                            event.user_id,
                            now,
                            feats,
                            list(session),
                            event.device,
                            cf,
                            trend,
                            frozenset(int(i) for i in items.indices(sorted(blocked)).tolist()),
                            items,
                            neighbours,
                            policy,
                            cands,
                            x,
                        )
                    )
                others = np.flatnonzero(cands.items != item)
                whole = held_out > 0 and bool(rng.random() < held_out)
                vs.append(whole)
                if len(others) > negatives and not whole:
                    others = rng.choice(others, negatives, replace=False)
                take = np.concatenate([hit[:1], others])
                xs.append(x[take])
                y = np.zeros(len(take), np.float32)
                y[0] = 1.0
                ys.append(y)
                gs.append(np.full(len(take), covered - 1, np.int32))
        st.features[u] = apply_event(feats, event, categories_of(item))
        entries = st.session_at(u, event.ts)
        st.sessions[u] = [SessionEntry(event.item_id, event.type.value, event.ts), *entries][:SESSION_LIMIT]
        seen.add(item)
        if progress is not None and k % 10000 == 0:
            progress(k)
    from recpipe.domain.features import N_FEATURES

    ex = Examples(
        x=np.concatenate(xs) if xs else np.zeros((0, N_FEATURES), np.float32),
        y=np.concatenate(ys) if ys else np.zeros(0, np.float32),
        group=np.concatenate(gs) if gs else np.zeros(0, np.int32),
        held_out=np.asarray(vs, np.bool_),
        considered=considered,
        covered=covered,
    )
    return ex, st
