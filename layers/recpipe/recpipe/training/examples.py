"""Training's example builder: one request's candidate pool and feature rows, built by the
online path's own functions.

`ExampleBuilder.build` makes the request the Recommender would make for a user at a moment
(no filters, no exclusions, the request's device) and calls what `Recommender._ranked` calls:
`blocked_items` (the seen-set the stores remember), `request_candidates` (the serving
`CandidateRetriever` with the bundle's policy and the serving pool size, topped up with popular
items of the UTC daypart), `request_context` and `FeatureAssembler.assemble`. The parity test
(tests/integration/training/test_training_serving_parity.py) compares its output with what the
real Recommender computes from the real stores.

Two kinds of examples are built with it (see docs/training.md):

- next-event lists (`history.replay`): at a replayed event, the pool before the event, labelled
  with the item the user chose;
- carve-out lists (`carve_out_lists`): part of each sampled user's items is held out, CF is
  refitted without them, and the pool of a request a day after the user's last kept event (a
  returning user: the session has expired) is labelled with the held-out items: long-term taste.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

import numpy as np
import numpy.typing as npt

from recpipe.bundle import Neighbours
from recpipe.domain.candidates import CandidatePolicy
from recpipe.domain.catalogue import InteractionLog
from recpipe.domain.features import CandidateSet, FeatureAssembler, RequestContext, UserView
from recpipe.domain.items import ItemTable, daypart
from recpipe.domain.user import UserFeatures
from recpipe.ports import SessionEntry
from recpipe.serving.candidates import CandidateRetriever
from recpipe.serving.model_provider import popular_by_daypart
from recpipe.serving.recommender import blocked_items, request_candidates, request_context
from recpipe.serving.request import RecommendationRequest, RequestContextIn

#: The Recommender's default pool size (Recommender(max_candidates=...)).
SERVING_POOL = 500

_F = TypeVar("_F", bound=Callable[..., Any])


def one_blas_thread(fn: _F) -> _F:
    """Run `fn` with BLAS on one thread: the per-example products of the example builders are
    small, and two OpenBLAS threads fighting over two busy cores made them ~6x slower.
    (threadpoolctl is imported on call: the Evaluate Lambda imports this module without it.)"""

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        from threadpoolctl import threadpool_limits

        with threadpool_limits(1, "blas"):
            return fn(*args, **kwargs)

    return cast(_F, run)


@dataclass(slots=True)
class ExampleBuilder:
    items: ItemTable
    neighbours: Neighbours
    policy: CandidatePolicy
    max_candidates: int = SERVING_POOL
    retriever: CandidateRetriever = field(init=False)
    assembler: FeatureAssembler = field(init=False)
    popular: list[npt.NDArray[np.int32]] = field(init=False)
    #: one plain request per device (frozen models; building one resolves every default, which
    #: cost pydantic more than the pool itself over a replay's thousands of requests)
    requests: dict[str | None, RecommendationRequest] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        self.retriever = CandidateRetriever(self.items, self.neighbours, self.max_candidates, self.policy)
        self.assembler = FeatureAssembler(self.items)
        self.popular = popular_by_daypart(self.items)

    def pool(
        self,
        *,
        user: UserFeatures | None,
        session: Sequence[SessionEntry],
        cf: Sequence[tuple[str, float]],
        trending: Sequence[tuple[str, float]],
        now: float,
        device: str | None = None,
    ) -> tuple[CandidateSet, UserView, RequestContext, set[str]]:
        """(candidates, user view, context, blocked item ids) of a plain request at `now`:
        everything but the feature rows (the replay assembles those only for examples whose
        chosen item was retrieved: the others are never used)."""
        req = self.requests.get(device)
        if req is None:
            req = RecommendationRequest.model_construct(
                user_id="example", context=RequestContextIn.model_construct(device=device)
            )
            self.requests[device] = req
        blocked = blocked_items(req, user, session)
        ctx = request_context(req, now)
        cands, view, _ = request_candidates(
            self.retriever,
            self.items,
            popular=self.popular[daypart(int(ctx.local_hour))],
            req=req,
            user=user,
            session=session,
            cf=cf,
            trending=trending,
            content=[],
            blocked=blocked,
            now=now,
        )
        return cands, view, ctx, blocked

    def build(
        self,
        *,
        user: UserFeatures | None,
        session: Sequence[SessionEntry],
        cf: Sequence[tuple[str, float]],
        trending: Sequence[tuple[str, float]],
        now: float,
        device: str | None = None,
    ) -> tuple[CandidateSet, npt.NDArray[np.float32], set[str]]:
        """(candidates, feature rows, blocked item ids) of a plain request at `now`."""
        cands, view, ctx, blocked = self.pool(
            user=user, session=session, cf=cf, trending=trending, now=now, device=device
        )
        return cands, self.assembler.assemble(cands, view, ctx), blocked


@dataclass(slots=True)
class ExampleLists:
    """Ranker training lists: feature rows and labels per list, and what kind each list is."""

    x: list[npt.NDArray[np.float32]] = field(default_factory=list)
    y: list[npt.NDArray[np.float32]] = field(default_factory=list)
    kind: list[str] = field(default_factory=list)
    #: held out for the ranker's validation (whole pools, as serving ranks them)
    held_out: list[bool] = field(default_factory=list)

    def add(
        self, x: npt.NDArray[np.float32], y: npt.NDArray[np.float32], kind: str, *, held_out: bool = False
    ) -> None:
        self.x.append(x)
        self.y.append(y)
        self.kind.append(kind)
        self.held_out.append(held_out)

    def extend(self, other: ExampleLists) -> None:
        self.x.extend(other.x)
        self.y.extend(other.y)
        self.kind.extend(other.kind)
        self.held_out.extend(other.held_out)

    def __len__(self) -> int:
        return len(self.x)

    def count(self, kind: str) -> int:
        return sum(1 for k in self.kind if k == kind)


def head_list(cands: CandidateSet, head: int, others: int, rng: np.random.Generator) -> npt.NDArray[np.int64]:
    """Rows kept for a carve-out list: the CF head (CF rank < `head`), where the order of a
    returning user's list is decided, and `others` random rows from the rest of the pool (so
    the ranker also learns where session, trending and popular items stand against it)."""
    in_head = (cands.cf_rank >= 0) & (cands.cf_rank < head)
    rest = np.flatnonzero(~in_head)
    if len(rest) > others:
        rest = rng.choice(rest, others, replace=False)
    return np.concatenate([np.flatnonzero(in_head), np.sort(rest)]).astype(np.int64)


def carve_out_mask(
    log: InteractionLog, users: npt.NDArray[np.int64], ratio: float, seed: int
) -> npt.NDArray[np.bool_]:
    """Rows held out: for each of `users`, about `ratio` of their distinct items (all rows of
    those items), never all of them."""
    rng = np.random.default_rng(seed)
    n_items = max(len(log.item_vocab), 1)
    chosen = np.zeros(len(log.user_vocab), np.bool_)
    chosen[users] = True
    rows = np.flatnonzero(chosen[log.users])
    cell = log.users[rows].astype(np.int64) * n_items + log.items[rows]
    uniq, inv = np.unique(cell, return_inverse=True)
    held_cell = rng.random(len(uniq)) < ratio
    # keep at least one item per user: the first cell of each user is never held out
    owner = uniq // n_items
    first = np.r_[True, owner[1:] != owner[:-1]]
    held_cell &= ~first
    held = np.zeros(len(log), np.bool_)
    held[rows[held_cell[inv]]] = True
    return held


@one_blas_thread
def carve_out_lists(
    log: InteractionLog,
    held: npt.NDArray[np.bool_],
    users: npt.NDArray[np.int64],
    *,
    builder: ExampleBuilder,
    state_of: Callable[[int], tuple[UserFeatures | None, list[SessionEntry], float]],
    cf_of: Callable[[int], Sequence[tuple[str, float]]],
    trending_at: Callable[[float], list[tuple[str, float]]],
    head: int,
    others: int,
    seed: int,
    held_out: float = 0.0,
) -> tuple[ExampleLists, dict[str, float]]:
    """One list per user: the pool of a request right after the user's last kept event,
    labelled with the user's held-out items. `state_of(u)` gives the stores' view then
    (features, session, now)."""
    rng = np.random.default_rng(seed)
    out = ExampleLists()
    held_items: dict[int, set[int]] = {}
    for r in np.flatnonzero(held).tolist():
        held_items.setdefault(int(log.users[r]), set()).add(int(log.items[r]))
    ids = log.item_vocab
    index = builder.items.index
    considered = covered = 0
    for u in users.tolist():
        targets = {index[ids[i]] for i in held_items.get(u, ()) if ids[i] in index}
        if not targets:
            continue
        features, session, now = state_of(u)
        cands, x, _ = builder.build(
            user=features, session=session, cf=cf_of(u), trending=trending_at(now), now=now
        )
        y = np.isin(cands.items, list(targets)).astype(np.float32)
        considered += len(targets)
        covered += int(y.sum())
        # a held-out list keeps the whole pool: validation ranks what serving ranks
        whole = held_out > 0 and bool(rng.random() < held_out)
        keep = np.arange(len(y)) if whole else head_list(cands, head, others, rng)
        if not y[keep].any():
            continue
        out.add(x[keep], y[keep], "carve_out", held_out=whole)
    return out, {"carve_out_positives": float(considered), "carve_out_covered": float(covered)}
