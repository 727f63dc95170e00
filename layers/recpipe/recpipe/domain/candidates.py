"""What the online path and training's replay share: the user's view and the candidate policy.

Serving reads the policy from the bundle manifest; training's replay builds its examples with the
same `gather_candidates` and `user_view`, so a ranker is trained on the candidate sets and user
views it is later served.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from recpipe.bundle import Neighbours
from recpipe.domain.features import CandidateBuilder, CandidateSet, Source, UserView
from recpipe.domain.items import ItemTable
from recpipe.domain.user import UserFeatures
from recpipe.ports import SessionEntry

#: Session items read per request (the online path reads the 20 newest).
SESSION_LIMIT = 20


@dataclass(frozen=True, slots=True)
class CandidatePolicy:
    """How many candidates each source contributes (mirrors the online path's defaults)."""

    cf: int = 200
    session_items: int = 5
    neighbours_per_item: int = 20
    trending: int = 50
    popular: int = 50


def user_view(
    features: UserFeatures | None, session: Sequence[SessionEntry], items: ItemTable, now: float
) -> UserView:
    """The ranker's view of a user from the stored features and the session list (newest first)."""
    sess = items.indices([e.item_id for e in session[:SESSION_LIMIT]])
    if features is None:
        return UserView(session=sess)
    return UserView(
        affinity=features.affinity_at(now),
        history=items.indices([r.item_id for r in features.recent]),
        session=sess,
        cart=items.indices(sorted(features.cart)),
        total_events=features.total_events,
    )


def gather_candidates(
    policy: CandidatePolicy,
    items: ItemTable,
    neighbours: Neighbours,
    *,
    cf: Sequence[tuple[str, float]],
    session: npt.NDArray[np.int32],
    trending: Sequence[tuple[str, float]],
    popular: npt.NDArray[np.int32],
    exclude: set[int] | frozenset[int] = frozenset(),
) -> CandidateSet:
    """CF list + neighbours of the newest session items + trending + popular, minus `exclude`."""
    b = CandidateBuilder()
    index = items.index
    for rank, (item_id, score) in enumerate(cf[: policy.cf]):
        i = index.get(item_id)
        if i is not None and i not in exclude:
            b.add(i, Source.CF, cf_score=score, cf_rank=rank)
    for anchor in session[: policy.session_items].tolist():
        near, _ = neighbours.of(anchor)
        for i in near[: policy.neighbours_per_item].tolist():
            if i not in exclude:
                b.add(i, Source.SESSION, anchor=anchor)
    for item_id, score in trending[: policy.trending]:
        i = index.get(item_id)
        if i is not None and i not in exclude:
            b.add(i, Source.TRENDING, trending=score)
    for i in popular[: policy.popular].tolist():
        if i not in exclude:
            b.add(i, Source.POPULAR)
    return b.build()
