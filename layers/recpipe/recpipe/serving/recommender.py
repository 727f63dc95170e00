"""The Recommender: one request from validated input to a ranked, explained answer.

    reads (concurrent, each under a deadline)  ->  candidates (+ content index for cold start)
    ->  FeatureAssembler.assemble  ->  Ranker.score (one invoke)  ->  rules (MMR, top k)

Everything that can fail outside this process degrades the answer and is named in `degraded`;
nothing here raises for a dependency problem.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from recpipe.domain.candidates import user_view
from recpipe.domain.features import FEATURE_NAMES, CandidateSet, RequestContext, UserView
from recpipe.domain.items import ItemTable, daypart
from recpipe.domain.user import UserFeatures
from recpipe.ports import ContentIndex, SessionEntry
from recpipe.serving.candidates import CandidateInputs, CandidateRetriever, Eligibility, policy_of
from recpipe.serving.experiments import with_variant_rules
from recpipe.serving.model_provider import LoadedModel, ModelProvider
from recpipe.serving.ranker import RankerError
from recpipe.serving.reads import CONTENT_INDEX, DeadlineRunner, Reads, RequestReader
from recpipe.serving.reasons import SOURCE_NAMES, reason, source_names
from recpipe.serving.request import RecommendationRequest
from recpipe.serving.rules import mmr

MODEL = "model"
CONTENT_K = 100
#: Categories used to query the content index for a cold-start user.
MAX_QUERY_CATEGORIES = 5
STAGES = ("reads", "candidates", "assembly", "inference", "rules")
#: Who the init-time warm-up asks for (an id no real user has: the answer is a cold start).
WARM_USER = "recpipe-warmup"
#: How long the warm-up waits for each dependency's first call (connections, SDK set-up).
WARM_TIMEOUT_S = 0.5


@dataclass(slots=True)
class RecommendationResult:
    recommendation_id: str
    user_id: str
    model_version: str | None
    degraded: list[str]
    items: list[dict[str, Any]]
    took_ms: float
    #: Milliseconds per stage (reads, candidates, assembly, inference, rules).
    timings: dict[str, float] = field(default_factory=dict)
    n_candidates: int = 0
    #: Candidates per source in the ranked pool (metrics).
    source_counts: dict[str, int] = field(default_factory=dict)
    cold_start: bool = False
    #: Why each degraded dependency failed (logs only).
    failures: dict[str, str] = field(default_factory=dict)
    #: Experiment variant (and experiment) this user is in; None outside any experiment.
    variant: str | None = None
    experiment: str | None = None

    def to_response(self) -> dict[str, Any]:
        return {
            "recommendation_id": self.recommendation_id,
            "user_id": self.user_id,
            "model_version": self.model_version,
            "variant": self.variant,
            "experiment": self.experiment,
            "degraded": self.degraded,
            "items": self.items,
            "took_ms": round(self.took_ms, 3),
        }


def seen_items(user: UserFeatures | None, session: Sequence[SessionEntry]) -> set[str]:
    """Items the user already interacted with, as far as the stores remember: every live
    session entry and, from the stored features, the recent interactions, purchases and cart
    operations (any event type, as training's replay excludes every item of the user's history)."""
    seen = {e.item_id for e in session}
    if user is not None:
        seen.update(r.item_id for r in user.recent)
        seen.update(user.purchased)
        seen.update(user.cart_ops)
    return seen


def blocked_items(
    req: RecommendationRequest,
    user: UserFeatures | None,
    session: Sequence[SessionEntry],
    *,
    exclude_seen: bool = True,
) -> set[str]:
    """Never shown: bought, in the cart (request, stored features, live session), excluded by
    the request and, by default, already interacted with (training's replay never offers the
    user an item they have interacted with, so the ranker never learnt to score one)."""
    blocked = set(req.exclude) | set(req.context.cart)
    if user is not None:
        blocked |= set(user.purchased) | user.cart
    # The session may know about a cart change the durable features have not applied yet.
    in_cart: dict[str, bool] = {}
    for entry in sorted(session, key=lambda e: e.ts):
        if entry.type == "add_to_cart":
            in_cart[entry.item_id] = True
        elif entry.type in ("remove_from_cart", "purchase"):
            in_cart[entry.item_id] = False
        if entry.type == "purchase":
            blocked.add(entry.item_id)
    blocked |= {i for i, c in in_cart.items() if c}
    if exclude_seen:
        blocked |= seen_items(user, session)
    return blocked


def request_context(req: RecommendationRequest, now: float) -> RequestContext:
    """The ranking context of a request (UTC time of day, as training's examples use)."""
    return RequestContext(now=now, device=req.context.device)


def request_candidates(
    retriever: CandidateRetriever,
    items: ItemTable,
    *,
    popular: npt.NDArray[np.int32],
    req: RecommendationRequest,
    user: UserFeatures | None,
    session: Sequence[SessionEntry],
    cf: Sequence[tuple[str, float]],
    trending: Sequence[tuple[str, float]],
    content: Sequence[tuple[str, float]],
    blocked: set[str],
    now: float,
) -> tuple[CandidateSet, UserView, set[str]]:
    """The candidate pool and the user view of one request: what the online path ranks, and
    what training's example builder (recpipe.training.examples) calls for its examples."""
    eligibility = Eligibility.build(
        items, blocked, req.filters.include_categories, req.filters.exclude_categories
    )
    cands = retriever.retrieve(
        CandidateInputs(cf=cf, session=session, trending=trending, content=content, popular=popular),
        eligibility,
    )
    cart_ids = set(req.context.cart) | (user.cart if user is not None else set())
    cart_ids |= {e.item_id for e in session if e.type == "add_to_cart"}
    # The same view training builds (recpipe.domain.candidates.user_view); the cart also holds
    # what the request and the live session know the stored features do not yet.
    view = user_view(user, session, items, now)
    view.cart = items.indices(sorted(cart_ids))
    return cands, view, cart_ids


class Recommender:
    def __init__(
        self,
        models: ModelProvider,
        reader: RequestReader,
        runner: DeadlineRunner,
        *,
        content: ContentIndex | None = None,
        max_candidates: int = 500,
        budget_s: float = 0.035,
        read_timeout_s: float = 0.015,
        exclude_seen: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.models = models
        self.reader = reader
        self.runner = runner
        self.content = content
        self.max_candidates = max_candidates
        self.budget_s = budget_s
        self.read_timeout_s = read_timeout_s
        #: Leave out items the user already interacted with (as training's replay does).
        self.exclude_seen = exclude_seen
        self.clock = clock
        self._retrievers: dict[str, CandidateRetriever] = {}

    def _retriever(self, model: LoadedModel) -> CandidateRetriever:
        r = self._retrievers.get(model.version)
        if r is None:
            self._retrievers = {
                model.version: CandidateRetriever(
                    model.bundle.items,
                    model.bundle.neighbours,
                    self.max_candidates,
                    policy_of(model.bundle.manifest),
                )
            }
            r = self._retrievers[model.version]
        return r

    def recommend(self, req: RecommendationRequest) -> RecommendationResult:
        t0 = time.perf_counter()
        now = self.clock()
        timings: dict[str, float] = {}
        # Model and candidate version travel together (one variant, one published version).
        selection = self.models.select(req.user_id)
        model = selection.model
        req = with_variant_rules(req, selection.rules)
        reads = self.reader.read(
            req.user_id, now, budget_s=self.budget_s, candidate_version=selection.candidate_version
        )
        timings["reads"] = (time.perf_counter() - t0) * 1000.0
        if model is None:
            result = self._without_model(req, reads, now, t0)
        else:
            result = self._ranked(req=req, model=model, reads=reads, now=now, t0=t0, timings=timings)
        result.variant, result.experiment = selection.variant, selection.experiment
        result.took_ms = (time.perf_counter() - t0) * 1000.0
        return result

    def warm_up(self, timeout_s: float = WARM_TIMEOUT_S) -> dict[str, str]:
        """Run at init so the first request pays no first-call costs: every read once with a
        longer deadline (connections opened, the SDK's lazy set-up done), one content-index
        search, then one cold-start request end to end (candidates, assembly, ranker, rules).
        Returns what failed, by dependency (init goes on: requests will degrade as usual)."""
        reads = self.reader.read(WARM_USER, self.clock(), budget_s=timeout_s, timeout_s=timeout_s)
        failures = {n: why for n, why in reads.failures.items() if why != "not configured"}
        content = self.content
        if content is not None:
            _, failed = self.runner.gather(
                {CONTENT_INDEX: lambda: content.search(text=WARM_USER, categories=[], k=CONTENT_K)},
                timeout_s,
            )
            failures.update(failed)
        self.recommend(RecommendationRequest.model_validate({"user_id": WARM_USER}))
        return failures

    # ---- the normal path ------------------------------------------------------------------
    def _content_candidates(
        self,
        *,
        req: RecommendationRequest,
        model: LoadedModel,
        reads: Reads,
        session_anchors: npt.NDArray[np.int32],
        t0: float,
        blocked: set[str],
    ) -> tuple[list[tuple[str, float]], bool]:
        """Content-index candidates for a cold-start user, and whether the query came from context."""
        content = self.content
        if content is None:
            return [], False
        items = model.bundle.items
        cats: list[str] = list(req.filters.include_categories)
        for i in session_anchors.tolist():
            cats.extend(items.categories(i))
        for item_id in req.context.cart:
            cats.extend(items.categories_of(item_id))
        from_context = bool(cats) or bool(req.context.page)
        cats = [c for c in dict.fromkeys(cats) if c not in req.filters.exclude_categories][
            :MAX_QUERY_CATEGORIES
        ]
        text = req.context.page
        remaining = self.budget_s - (time.perf_counter() - t0)
        results, failures = self.runner.gather(
            {
                CONTENT_INDEX: lambda: content.search(
                    text=text, categories=cats, k=CONTENT_K, exclude=sorted(blocked)
                )
            },
            min(self.read_timeout_s, remaining),
        )
        if CONTENT_INDEX in failures:
            reads.degraded.append(CONTENT_INDEX)
            reads.failures[CONTENT_INDEX] = failures[CONTENT_INDEX]
            return [], from_context
        found: list[tuple[str, float]] = results[CONTENT_INDEX]
        return found, from_context

    def _ranked(
        self,
        *,
        req: RecommendationRequest,
        model: LoadedModel,
        reads: Reads,
        now: float,
        t0: float,
        timings: dict[str, float],
    ) -> RecommendationResult:
        t = time.perf_counter()
        items = model.bundle.items
        user = reads.user
        session = reads.session or []
        # One time-of-day convention, shared with training: UTC (the event log has no offsets,
        # so a ranker can only learn UTC hours; the request's utc_offset_minutes is not used).
        ctx = request_context(req, now)
        part = daypart(int(ctx.local_hour))
        retriever = self._retriever(model)
        anchors = retriever.session_anchors(session)
        blocked = blocked_items(req, user, session, exclude_seen=self.exclude_seen)
        history_known = user is not None and bool(user.recent)
        cold_start = not reads.candidates and not history_known
        content: list[tuple[str, float]] = []
        content_from_context = False
        if cold_start:
            content, content_from_context = self._content_candidates(
                req=req, model=model, reads=reads, session_anchors=anchors, t0=t0, blocked=blocked
            )
        cands, view, cart_ids = request_candidates(
            retriever,
            items,
            popular=model.popular[part],
            req=req,
            user=user,
            session=session,
            cf=reads.candidates or [],
            trending=reads.trending or [],
            content=content,
            blocked=blocked,
            now=now,
        )
        t1 = time.perf_counter()
        timings["candidates"] = (t1 - t) * 1000.0
        x = model.assembler.assemble(cands, view, ctx)
        t2 = time.perf_counter()
        timings["assembly"] = (t2 - t1) * 1000.0
        degraded = list(reads.degraded)
        try:
            scores = model.ranker.score(x)
        except (RankerError, ValueError, RuntimeError) as exc:
            # The bundle passed its smoke test; a failure now is a runtime fault: rank by
            # popularity in this daypart rather than fail the request.
            reads.failures[MODEL] = f"{type(exc).__name__}: {exc}"
            degraded.append(MODEL)
            scores = items.daypart_popularity[cands.items, part].astype(np.float32)
        t3 = time.perf_counter()
        timings["inference"] = (t3 - t2) * 1000.0
        picked = mmr(scores, items.embeddings[cands.items], req.k, req.diversity)
        cart_anchor = {i for i in items.indices(sorted(cart_ids)).tolist()}
        out: list[dict[str, Any]] = []
        for pos in picked.tolist():
            item = int(cands.items[pos])
            flags = int(cands.sources[pos])
            anchor = int(cands.anchor[pos])
            entry: dict[str, Any] = {
                "item_id": items.item_ids[item],
                "title": items.titles[item],
                "categories": items.categories(item),
                "score": round(float(scores[pos]), 6),
                "reason": reason(
                    flags,
                    anchor=anchor,
                    items=items,
                    item=item,
                    daypart=part,
                    anchor_in_cart=anchor in cart_anchor,
                    content_from_context=content_from_context,
                ),
                "sources": source_names(flags),
            }
            if req.explain:
                entry["features"] = {
                    name: round(float(v), 6) for name, v in zip(FEATURE_NAMES, x[pos], strict=True)
                }
            out.append(entry)
        timings["rules"] = (time.perf_counter() - t3) * 1000.0
        counts = {name: int(np.count_nonzero(cands.sources & bit)) for bit, name in SOURCE_NAMES}
        counts = {name: n for name, n in counts.items() if n}
        return RecommendationResult(
            recommendation_id=uuid.uuid4().hex,
            user_id=req.user_id,
            model_version=model.version,
            degraded=degraded,
            items=out,
            took_ms=0.0,
            timings=timings,
            n_candidates=len(cands),
            source_counts=counts,
            cold_start=cold_start,
            failures=reads.failures,
        )

    # ---- no model at all ------------------------------------------------------------------
    def _without_model(
        self, req: RecommendationRequest, reads: Reads, now: float, t0: float
    ) -> RecommendationResult:
        """Popularity from what is still reachable: trending, then the content index."""
        blocked = blocked_items(req, reads.user, reads.session or [], exclude_seen=self.exclude_seen)
        pool: dict[str, tuple[float, str]] = {}
        filters = req.filters
        # Without the item table categories are unknown: only the content index (which filters
        # on categories itself) may answer an include filter, and nothing an exclude filter.
        if not filters.include_categories and not filters.exclude_categories:
            for item_id, score in reads.trending or []:
                if item_id not in blocked:
                    pool.setdefault(item_id, (float(score), "trending"))
        degraded = [*reads.degraded, MODEL]
        content = self.content
        if len(pool) < req.k and content is not None and not filters.exclude_categories:
            remaining = self.budget_s - (time.perf_counter() - t0)
            results, failures = self.runner.gather(
                {
                    CONTENT_INDEX: lambda: content.search(
                        text=req.context.page,
                        categories=list(req.filters.include_categories),
                        k=req.k + len(pool),
                        exclude=sorted(blocked),
                    )
                },
                min(self.read_timeout_s, remaining),
            )
            if CONTENT_INDEX in failures:
                degraded.append(CONTENT_INDEX)
                reads.failures[CONTENT_INDEX] = failures[CONTENT_INDEX]
            for item_id, score in results.get(CONTENT_INDEX, []):
                if item_id not in blocked:
                    # Below every trending item: those are popular right now.
                    pool.setdefault(item_id, (float(score) * 1e-3, "content"))
        ranked = sorted(pool.items(), key=lambda kv: -kv[1][0])[: req.k]
        items = [
            {
                # Titles and categories travel with the model bundle, which is what is missing.
                "item_id": item_id,
                "title": "",
                "categories": [],
                "score": round(score, 6),
                "reason": "popular now",
                "sources": [source],
            }
            for item_id, (score, source) in ranked
        ]
        return RecommendationResult(
            recommendation_id=uuid.uuid4().hex,
            user_id=req.user_id,
            model_version=None,
            degraded=degraded,
            items=items,
            took_ms=0.0,
            timings={"reads": (time.perf_counter() - t0) * 1000.0},
            failures=reads.failures,
        )
