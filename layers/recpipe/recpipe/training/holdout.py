"""The time-based holdout as data, and the one function that scores a model on it.

`train_bundle` freezes, for each evaluated user, what the online path would know at T2 (stored
features, session, items already seen, the CF list) and what the user did after T2. The new
model's `ndcg@10` and the live bundle's, measured by the Evaluate step on the same file with
`evaluate_model`, are therefore the same computation on the same users and the same moment.
numpy + tflite-runtime only: it runs in the Evaluate Lambda, which has no TensorFlow.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from recpipe.bundle import Neighbours
from recpipe.domain.candidates import SESSION_LIMIT, CandidatePolicy
from recpipe.domain.features import FeatureAssembler, RequestContext, UserView
from recpipe.domain.items import ItemTable, daypart
from recpipe.ports import SessionEntry
from recpipe.ranking_metrics import hit_rate_at_k, ndcg_at_k
from recpipe.serving.candidates import CandidateInputs, CandidateRetriever, Eligibility
from recpipe.serving.model_provider import popular_by_daypart
from recpipe.training.ranker import tflite_scores

#: Metrics key of the per-user nDCG@k list (what the gate's standard errors come from).
PER_USER = "per_user_ndcg"


@dataclass(frozen=True, slots=True)
class HoldoutUser:
    user_id: str
    #: category -> affinity at T2 (UserFeatures.affinity_at)
    affinity: dict[str, float]
    #: item ids, as the stores hold them at T2 (recent: newest first; session: newest first)
    recent: list[str]
    session: list[str]
    cart: list[str]
    total_events: int
    seen: list[str]
    cf: list[tuple[str, float]]
    #: what the user interacted with after T2
    relevant: list[str]
    #: (item, first time after T2): lets the gate keep only what a live model never saw
    relevant_after: list[tuple[str, float]] = field(default_factory=list)
    #: the new model's top-k for this user (rankings do not depend on what is relevant)
    ranked: list[str] = field(default_factory=list)
    #: the session entries' event types, as the Redis session list holds them (the retriever
    #: skips removals as anchors); empty in files written before they were kept: all views
    session_types: list[str] = field(default_factory=list)


@dataclass(slots=True)
class Holdout:
    t2: float
    k: int
    policy: CandidatePolicy
    trending: list[tuple[str, float]]
    users: list[HoldoutUser] = field(default_factory=list)

    def to_bytes(self) -> bytes:
        body = {
            "t2": self.t2,
            "k": self.k,
            "policy": asdict(self.policy),
            "trending": self.trending,
            "users": [asdict(u) for u in self.users],
        }
        return gzip.compress(json.dumps(body, separators=(",", ":")).encode(), mtime=0)

    @classmethod
    def from_bytes(cls, data: bytes) -> Holdout:
        d = json.loads(gzip.decompress(data))
        users = [
            HoldoutUser(
                **{
                    **u,
                    "cf": [(str(i), float(s)) for i, s in u["cf"]],
                    "relevant_after": [(str(i), float(t)) for i, t in u.get("relevant_after", [])],
                }
            )
            for u in d["users"]
        ]
        return cls(
            float(d["t2"]),
            int(d["k"]),
            CandidatePolicy(**d["policy"]),
            [(str(i), float(s)) for i, s in d["trending"]],
            users,
        )


def view_of(user: HoldoutUser, items: ItemTable) -> UserView:
    """Same construction as replay.user_view, from stored ids (unknown items are dropped)."""
    return UserView(
        affinity=dict(user.affinity),
        history=items.indices(user.recent),
        session=items.indices(user.session[:SESSION_LIMIT]),
        cart=items.indices(sorted(user.cart)),
        total_events=user.total_events,
    )


def relevant_of(user: HoldoutUser, since: float | None = None) -> set[str]:
    """What the user did after T2, or only after `since` (e.g. the end of a live model's window)."""
    if since is None:
        return set(user.relevant)
    return {i for i, t in user.relevant_after if t > since}


def rank(
    holdout: Holdout, items: ItemTable, neighbours: Neighbours, ranker_tflite: bytes
) -> tuple[list[list[str]], list[set[str]]]:
    """Per user: the model's top-k item ids, and its candidate set (ids).

    The pool is the online path's: the serving retriever with the holdout's policy, the serving
    pool size, topped up with the popular items of T2's (UTC) daypart."""
    from recpipe.training.examples import SERVING_POOL

    k = holdout.k
    assembler = FeatureAssembler(items)
    retriever = CandidateRetriever(items, neighbours, SERVING_POOL, holdout.policy)
    ctx = RequestContext(now=holdout.t2)
    popular = popular_by_daypart(items)[daypart(int(ctx.local_hour))]
    blocks: list[npt.NDArray[np.float32]] = []
    cand_items: list[npt.NDArray[np.int32]] = []
    for u in holdout.users:
        view = view_of(u, items)
        # ids and types as the Redis session list holds them (times do not change the pool)
        types = u.session_types or ["view"] * len(u.session)
        session = [SessionEntry(i, t, holdout.t2) for i, t in zip(u.session, types, strict=True)][
            :SESSION_LIMIT
        ]
        cands = retriever.retrieve(
            CandidateInputs(cf=u.cf, session=session, trending=holdout.trending, content=[], popular=popular),
            Eligibility.build(items, u.seen),
        )
        blocks.append(assembler.assemble(cands, view, ctx))
        cand_items.append(cands.items)
    scores = tflite_scores(ranker_tflite, np.concatenate(blocks)) if blocks else np.zeros(0, np.float32)
    rankings: list[list[str]] = []
    offset = 0
    ids = items.item_ids
    for c in cand_items:
        s = scores[offset : offset + len(c)]
        offset += len(c)
        rankings.append([ids[i] for i in c[np.argsort(-s, kind="stable")[:k]].tolist()])
    return rankings, [{ids[i] for i in c.tolist()} for c in cand_items]


def score(
    holdout: Holdout,
    rankings: Sequence[Sequence[str]],
    candidates: Sequence[set[str]] | None = None,
    *,
    since: float | None = None,
) -> dict[str, Any]:
    """HitRate/NDCG@k of `rankings` over the users with something relevant (after `since`)."""
    k = holdout.k
    hr = ndcg = recall = 0.0
    n = size = 0
    per_user: list[float] = []
    for i, u in enumerate(holdout.users):
        rel = relevant_of(u, since)
        if not rel:
            continue
        n += 1
        hr += hit_rate_at_k(list(rankings[i]), rel, k)
        per_user.append(ndcg_at_k(list(rankings[i]), rel, k))
        ndcg += per_user[-1]
        if candidates is not None:
            recall += len(rel & candidates[i]) / len(rel)
            size += len(candidates[i])
    if not n:
        return {"eval_users": 0}
    out: dict[str, Any] = {
        "eval_users": n,
        f"hit_rate@{k}": round(hr / n, 5),
        f"ndcg@{k}": round(ndcg / n, 5),
        f"ndcg@{k}_se": round(float(np.std(per_user, ddof=1) / np.sqrt(n)), 5) if n > 1 else None,
        # in holdout user order (users with something relevant): paired comparisons in the gate
        PER_USER: [round(v, 5) for v in per_user],
    }
    if candidates is not None:
        out["candidate_recall"] = round(recall / n, 5)
        # candidates ranked per request: what a bigger candidate policy costs online
        out["mean_candidates"] = round(size / n, 1)
    return out


def evaluate_model(
    holdout: Holdout,
    items: ItemTable,
    neighbours: Neighbours,
    ranker_tflite: bytes,
    *,
    since: float | None = None,
) -> dict[str, Any]:
    """HitRate/NDCG@k of a model (item table + neighbours + TFLite ranker) on the holdout.

    Candidates come from the same sources the online path merges; the CF list is the holdout's
    (the live model's own CF lists live in the Candidate Cache, not in its bundle)."""
    if not holdout.users:
        return {"eval_users": 0}
    rankings, candidates = rank(holdout, items, neighbours, ranker_tflite)
    return score(holdout, rankings, candidates, since=since)


def holdout_user(
    user_id: str,
    *,
    affinity: Mapping[str, float],
    recent: Sequence[str],
    session: Sequence[str],
    cart: Sequence[str],
    total_events: int,
    seen: Iterable[str],
    cf: Sequence[tuple[str, float]],
    relevant: Mapping[str, float],
    session_types: Sequence[str] = (),
) -> HoldoutUser:
    """`relevant`: item -> first time the user interacted with it after T2."""
    return HoldoutUser(
        user_id,
        {str(c): float(v) for c, v in affinity.items()},
        list(recent),
        list(session),
        list(cart),
        int(total_events),
        sorted(seen),
        [(str(i), float(s)) for i, s in cf],
        sorted(relevant),
        sorted((str(i), float(t)) for i, t in relevant.items()),
        session_types=list(session_types),
    )
