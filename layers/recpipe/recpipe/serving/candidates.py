"""Candidate retrieval: CF list, session neighbours, trending, content and popularity, merged.

Hard rules (bought, in the cart, excluded by the request, category filters) are applied while
the pool is filled, so no model time is spent on items that can never be shown and the pool is
topped up with popular items to `max_candidates` whatever the filters removed.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import numpy.typing as npt

from recpipe.bundle import Neighbours
from recpipe.domain.candidates import CandidatePolicy
from recpipe.domain.features import CandidateSet, Source
from recpipe.domain.items import ItemTable
from recpipe.ports import SessionEntry

#: Content-index candidates for a cold-start user (a serving-only source).
CONTENT_CANDIDATES = 100


@dataclass(slots=True)
class Eligibility:
    """Which items may be recommended at all for this request."""

    #: Sorted dense indices never to return (purchased, cart, request exclusions).
    blocked: npt.NDArray[np.int32]
    #: Category indices of which an item must have one (None = no include filter).
    include: npt.NDArray[np.int32] | None = None
    #: Category indices an item must have none of.
    exclude: npt.NDArray[np.int32] | None = None

    @classmethod
    def build(
        cls,
        items: ItemTable,
        blocked_ids: Iterable[str],
        include_categories: Sequence[str] = (),
        exclude_categories: Sequence[str] = (),
    ) -> Eligibility:
        blocked = np.unique(items.indices(list(set(blocked_ids))))
        cidx = items.category_index
        include = None
        if include_categories:
            # An include filter naming only unknown categories matches nothing, on purpose.
            include = np.asarray([cidx[c] for c in include_categories if c in cidx], np.int32)
        exclude = None
        if exclude_categories:
            exclude = np.asarray([cidx[c] for c in exclude_categories if c in cidx], np.int32)
        return cls(blocked=blocked.astype(np.int32), include=include, exclude=exclude)

    def allowed(
        self,
        items: ItemTable,
        idx: npt.NDArray[np.int32],
        blocked_mask: npt.NDArray[np.bool_] | None = None,
    ) -> npt.NDArray[np.bool_]:
        """Which of `idx` may be pooled. `blocked_mask` (item -> blocked, already marked with
        `blocked`) makes the blocked check a lookup instead of a sort per call."""
        ok = np.ones(len(idx), np.bool_)
        if len(idx) == 0:
            return ok
        if blocked_mask is not None:
            ok &= ~blocked_mask[idx]
        elif len(self.blocked):
            ok &= ~np.isin(idx, self.blocked, assume_unique=False)
        if self.include is not None or (self.exclude is not None and len(self.exclude)):
            cats = items.category_ids[idx]
            if self.include is not None:
                ok &= np.isin(cats, self.include).any(axis=1)
            if self.exclude is not None and len(self.exclude):
                ok &= ~np.isin(cats, self.exclude).any(axis=1)
        return ok


@dataclass(slots=True)
class CandidateInputs:
    cf: Sequence[tuple[str, float]]
    session: Sequence[SessionEntry]
    trending: Sequence[tuple[str, float]]
    content: Sequence[tuple[str, float]]
    #: Daypart-ordered popular item indices (best first), for topping the pool up.
    popular: npt.NDArray[np.int32]


def policy_of(manifest: Mapping[str, Any]) -> CandidatePolicy:
    """The candidate policy the bundle's ranker was trained with (defaults when not recorded)."""
    raw = (manifest.get("params") or {}).get("policy") or {}
    known = {f.name for f in fields(CandidatePolicy)}
    return CandidatePolicy(**{k: int(v) for k, v in raw.items() if k in known})


class CandidateRetriever:
    """Sources with the per-source quotas of the bundle's manifest and their source flags (the
    merge rules of `CandidateBuilder`; training builds its pools with this class too), then
    topped up or capped to
    `max_candidates`. The pool is filled freshest signal first so a small pool keeps the
    session's neighbours."""

    def __init__(
        self,
        items: ItemTable,
        neighbours: Neighbours,
        max_candidates: int,
        policy: CandidatePolicy | None = None,
    ) -> None:
        self.items = items
        # Indices and weights travel together (the bundle's Neighbours): a retriever without
        # the weights would serve session candidates a neighbour score training never saw.
        self.neighbours = neighbours.indices
        #: The neighbours' weights, best first per item.
        self.neighbour_scores = neighbours.scores
        self.max_candidates = max_candidates
        self.policy = policy or CandidatePolicy()
        # Item -> pool position and item -> blocked scratch, reset after each request (one
        # request at a time): lookups instead of a sort per source and request.
        self._positions = np.full(len(items), -1, np.int32)
        self._blocked = np.zeros(len(items), np.bool_)
        self._lock = threading.Lock()
        # Training flags the globally most popular items (not per daypart) as POPULAR.
        self.global_popular = np.argsort(-items.popularity, kind="stable")[: self.policy.popular].astype(
            np.int32
        )

    def _known(
        self, pairs: Sequence[tuple[str, float]]
    ) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.float32], npt.NDArray[np.int32]]:
        """Dense indices, scores and original list positions of the items the bundle knows."""
        get = self.items.index.get
        found = np.fromiter((get(item_id, -1) for item_id, _ in pairs), np.int32, len(pairs))
        scores = np.fromiter((score for _, score in pairs), np.float32, len(pairs))
        ranks = np.flatnonzero(found >= 0).astype(np.int32)
        return found[ranks], scores[ranks], ranks

    def session_anchors(self, session: Sequence[SessionEntry]) -> npt.NDArray[np.int32]:
        """Distinct known session items, most recent first (removals are not interest)."""
        idx = self.items.index
        seen: list[int] = []
        for entry in session:
            if entry.type == "remove_from_cart":
                continue
            i = idx.get(entry.item_id)
            if i is not None and i not in seen:
                seen.append(i)
        return np.asarray(seen, np.int32)

    def retrieve(self, inputs: CandidateInputs, eligibility: Eligibility) -> CandidateSet:
        with self._lock:  # the position scratch serves one request at a time
            return self._retrieve(inputs, eligibility)

    def _retrieve(self, inputs: CandidateInputs, eligibility: Eligibility) -> CandidateSet:
        items = self.items
        policy = self.policy
        pool = _Pool(self._positions, self._blocked, eligibility, items, self.max_candidates)
        try:
            # Freshest signal first: what the user is doing right now.
            anchors = self.session_anchors(inputs.session)[: policy.session_items]
            if len(anchors):
                rows = self.neighbours[anchors, : policy.neighbours_per_item]
                flat = rows.reshape(-1)
                width = rows.shape[1]
                anchor_of = np.repeat(anchors, width).astype(np.int32)
                rank_of = np.repeat(np.arange(len(anchors), dtype=np.float32), width)
                # relative to each anchor's best neighbour (cosine rows are not, head rows are)
                w = self.neighbour_scores[anchors, :width].astype(np.float32)
                best = w[:, :1]
                weight = np.where(best > 0, w / np.where(best > 0, best, 1.0), np.float32(0.0))
                keep = flat >= 0
                pool.add(
                    flat[keep],
                    Source.SESSION,
                    anchor=anchor_of[keep],
                    anchor_rank=rank_of[keep],
                    neighbour_score=weight.reshape(-1)[keep],
                )
            t_idx, t_scores, _ = self._known(inputs.trending[: policy.trending])
            pool.add(t_idx, Source.TRENDING, trending=t_scores)
            c_idx, _, _ = self._known(inputs.content)
            pool.add(c_idx, Source.CONTENT, cap=CONTENT_CANDIDATES)
            cf_idx, cf_scores, cf_ranks = self._known(inputs.cf[: policy.cf])
            pool.add(cf_idx, Source.CF, cf_score=cf_scores, cf_rank=cf_ranks)
            pool.add(self.global_popular, Source.POPULAR, distinct=True)
            if pool.size < pool.limit:
                popular = inputs.popular
                if eligibility.include is None and eligibility.exclude is None:
                    # Without category filters, this many popular items always fill the pool.
                    popular = popular[: pool.limit + len(eligibility.blocked)]
                # Serving-only top-up (the training policy has no pool size): new items only.
                pool.add(popular, Source.POPULAR, relabel=False, distinct=True)
            return pool.build()
        finally:
            pool.release()


class _Pool:
    """CandidateBuilder's merge, vectorised: per source, new items are admitted in order while
    there is room (and under the source's cap); every pooled item proposed by the source gets
    its flag, and attribute values follow CandidateBuilder.add.
    tests/unit/serving/test_candidates.py checks it against CandidateBuilder itself."""

    def __init__(
        self,
        positions: npt.NDArray[np.int32],
        blocked_mask: npt.NDArray[np.bool_],
        eligibility: Eligibility,
        items: ItemTable,
        limit: int,
    ) -> None:
        self.positions = positions  # item -> pool position, -1 = not pooled (shared scratch)
        self.blocked_mask = blocked_mask  # item -> never pooled (shared scratch)
        self.eligibility = eligibility
        self.item_table = items
        self.limit = limit
        self.size = 0
        self.items = np.empty(limit, np.int32)
        self.sources = np.zeros(limit, np.uint8)
        self.cf_score = np.zeros(limit, np.float32)
        self.cf_rank = np.full(limit, -1.0, np.float32)
        self.trending = np.zeros(limit, np.float32)
        self.anchor = np.full(limit, -1, np.int32)
        self.neighbour_score = np.zeros(limit, np.float32)
        self.anchor_rank = np.full(limit, -1.0, np.float32)
        blocked_mask[eligibility.blocked] = True  # cleared by release()

    def add(
        self,
        idx: npt.NDArray[np.int32],
        source: Source,
        *,
        cap: int | None = None,
        relabel: bool = True,
        distinct: bool = False,
        **attrs: npt.NDArray[Any],
    ) -> None:
        """`distinct`: the source proposes each item once (a popularity ranking), so the
        first-occurrence and repeated-proposal bookkeeping can be skipped."""
        if len(idx) == 0:
            return
        ok = self.eligibility.allowed(self.item_table, idx, self.blocked_mask)
        if not ok.all():
            idx = idx[ok]
            attrs = {k: v[ok] for k, v in attrs.items()}
        if len(idx) == 0:
            return
        pos = self.positions[idx]
        fresh = np.flatnonzero(pos < 0)
        room = self.limit - self.size if cap is None else min(cap, self.limit - self.size)
        admitted = np.zeros(0, np.int64)
        if len(fresh) and room > 0:
            if distinct:
                admitted = fresh[:room]
            else:
                # First occurrence of each new item, in proposal order.
                _, first = np.unique(idx[fresh], return_index=True)
                admitted = fresh[np.sort(first)][:room]
            new_items = idx[admitted]
            slots = np.arange(self.size, self.size + len(new_items), dtype=np.int32)
            self.positions[new_items] = slots
            self.items[slots] = new_items
            self.size += len(new_items)
        if relabel:
            pos = self.positions[idx]
            take = np.flatnonzero(pos >= 0)
        else:
            # Only the items this source brought in (and its repeated proposals of them).
            if len(admitted) == 0:
                return
            take = admitted if distinct else np.flatnonzero(np.isin(idx, idx[admitted]))
            pos = self.positions[idx]
        if len(take) == 0:
            return
        at = pos[take]
        self.sources[at] |= np.uint8(source)
        # Value rules of CandidateBuilder.add: CF score and rank from the last proposal, the
        # highest trending and neighbour score, the first anchor (the most recent session item)
        # with its rank.
        for name, values in attrs.items():
            column = getattr(self, name)
            if name in ("trending", "neighbour_score"):
                np.maximum.at(column, at, values[take])
            elif name in ("anchor", "anchor_rank"):
                _, first = np.unique(at, return_index=True)
                unset = column[at[first]] < 0
                column[at[first][unset]] = values[take[first][unset]]
            else:
                rev = take[::-1]
                _, last = np.unique(pos[rev], return_index=True)
                column[pos[rev[last]]] = values[rev[last]]

    def build(self) -> CandidateSet:
        n = self.size
        return CandidateSet(
            items=self.items[:n].copy(),
            sources=self.sources[:n].copy(),
            cf_score=self.cf_score[:n].copy(),
            cf_rank=self.cf_rank[:n].copy(),
            trending=self.trending[:n].copy(),
            anchor=self.anchor[:n].copy(),
            neighbour_score=self.neighbour_score[:n].copy(),
            anchor_rank=self.anchor_rank[:n].copy(),
        )

    def release(self) -> None:
        self.positions[self.items[: self.size]] = -1
        self.blocked_mask[self.eligibility.blocked] = False
