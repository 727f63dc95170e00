"""What the online path and training's replay share: the user's view and the candidate policy.

Serving reads the policy from the bundle manifest; training builds its examples with the serving
`CandidateRetriever` under the same policy and the same `user_view` (training.examples), so a
ranker is trained on the candidate sets and user views it is later served.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from recpipe.domain.features import UserView
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
