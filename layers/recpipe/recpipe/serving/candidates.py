"""Candidate retrieval: CF list, session neighbours, trending, content and popularity, merged.

Hard rules (bought, in the cart, excluded by the request, category filters) are applied while
the pool is filled, so no model time is spent on items that can never be shown and the pool is
topped up with popular items to `max_candidates` whatever the filters removed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import numpy.typing as npt

from recpipe.domain.features import CandidateBuilder, CandidateSet, Source
from recpipe.domain.items import ItemTable
from recpipe.ports import SessionEntry
from recpipe.training.replay import CandidatePolicy

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

    def allowed(self, items: ItemTable, idx: npt.NDArray[np.int32]) -> npt.NDArray[np.bool_]:
        ok = np.ones(len(idx), np.bool_)
        if len(idx) == 0:
            return ok
        if len(self.blocked):
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
    """Sources as in training (recpipe.training.replay.gather_candidates, same per-source
    quotas from the bundle's manifest, the same source flags), then topped up or capped to
    `max_candidates`. The pool is filled freshest signal first so a small pool keeps the
    session's neighbours."""

    def __init__(
        self,
        items: ItemTable,
        neighbours_indices: npt.NDArray[np.int32],
        max_candidates: int,
        policy: CandidatePolicy | None = None,
    ) -> None:
        self.items = items
        self.neighbours = neighbours_indices
        self.max_candidates = max_candidates
        self.policy = policy or CandidatePolicy()
        # Training flags the globally most popular items (not per daypart) as POPULAR.
        self.global_popular = np.argsort(-items.popularity, kind="stable")[: self.policy.popular].astype(
            np.int32
        )

    def _known(
        self, pairs: Sequence[tuple[str, float]]
    ) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.float32], npt.NDArray[np.int32]]:
        """Dense indices, scores and original list positions of the items the bundle knows."""
        idx = self.items.index
        pos: list[int] = []
        scores: list[float] = []
        ranks: list[int] = []
        for rank, (item_id, score) in enumerate(pairs):
            i = idx.get(item_id)
            if i is not None:
                pos.append(i)
                scores.append(score)
                ranks.append(rank)
        return np.asarray(pos, np.int32), np.asarray(scores, np.float32), np.asarray(ranks, np.int32)

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
        items = self.items
        policy = self.policy
        limit = self.max_candidates
        builder = CandidateBuilder()
        pool: set[int] = set()

        def add_all(
            idx: npt.NDArray[np.int32],
            source: Source,
            *,
            scores: npt.NDArray[np.float32] | None = None,
            ranks: npt.NDArray[np.int32] | None = None,
            anchors: npt.NDArray[np.int32] | None = None,
            cap: int | None = None,
            relabel: bool = True,
        ) -> None:
            if len(idx) == 0:
                return
            ok = eligibility.allowed(items, idx)
            taken = 0
            for j in np.flatnonzero(ok).tolist():
                item = int(idx[j])
                new = item not in pool
                if new and (len(pool) >= limit or (cap is not None and taken >= cap)):
                    if not relabel:
                        return
                    continue  # still add this source's flag to candidates already pooled
                if not new and not relabel:
                    continue
                if source is Source.CF:
                    builder.add(
                        item,
                        source,
                        cf_score=float(scores[j]) if scores is not None else None,
                        cf_rank=int(ranks[j]) if ranks is not None else j,
                    )
                elif source is Source.TRENDING:
                    builder.add(item, source, trending=float(scores[j]) if scores is not None else None)
                elif source is Source.SESSION:
                    builder.add(item, source, anchor=int(anchors[j]) if anchors is not None else None)
                else:
                    builder.add(item, source)
                if new:
                    pool.add(item)
                    taken += 1

        # Freshest signal first: what the user is doing right now.
        anchors = self.session_anchors(inputs.session)[: policy.session_items]
        if len(anchors):
            rows = self.neighbours[anchors, : policy.neighbours_per_item]
            flat = rows.reshape(-1)
            anchor_of = np.repeat(anchors, rows.shape[1])
            keep = flat >= 0
            add_all(flat[keep], Source.SESSION, anchors=anchor_of[keep])
        t_idx, t_scores, _ = self._known(inputs.trending[: policy.trending])
        add_all(t_idx, Source.TRENDING, scores=t_scores)
        c_idx, _, _ = self._known(inputs.content)
        add_all(c_idx, Source.CONTENT, cap=CONTENT_CANDIDATES)
        cf_idx, cf_scores, cf_ranks = self._known(inputs.cf)
        add_all(cf_idx, Source.CF, scores=cf_scores, ranks=cf_ranks)
        add_all(self.global_popular, Source.POPULAR)
        if len(pool) < limit:
            popular = inputs.popular
            if eligibility.include is None and eligibility.exclude is None:
                # Without category filters, this many popular items always fill the pool.
                popular = popular[: limit + len(eligibility.blocked)]
            # Serving-only top-up (the training policy has no pool size): new items only.
            add_all(popular, Source.POPULAR, relabel=False)
        return builder.build()
