"""The feature spec and the one function that computes ranking features.

Training (history replay) and serving (the scoring Lambda) both call `FeatureAssembler.assemble`,
so there is no training/serving skew by construction. The spec (ordered names + version) is saved
in the bundle manifest and checked when a bundle is loaded: a model trained on another spec is
refused rather than fed misaligned columns.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import IntFlag

import numpy as np
import numpy.typing as npt

from recpipe.domain.items import ItemTable, daypart

FEATURE_SPEC_VERSION = "v3"
FEATURE_NAMES: tuple[str, ...] = (
    "cf_score",
    "cf_rank",
    "src_cf",
    "src_session",
    "src_trending",
    "src_content",
    "src_popular",
    "item_popularity",
    "item_daypart_popularity",
    "item_age",
    "trending_score",
    "user_category_affinity",
    "session_max_sim",
    "session_mean_sim",
    # session candidates: the strongest neighbour weight (relative to the anchor's best
    # neighbour) among the session items that proposed it, and how recent that item is
    "session_neighbour_score",
    "session_anchor_recency",
    "history_sim",
    "cart_max_sim",
    "in_cart_category",
    "hour_sin",
    "hour_cos",
    "dow_sin",
    "dow_cos",
    "device_web",
    "device_mobile",
    "device_other",
    "user_activity",
    # request-level: the pool holds CF candidates (a user the last retrain knew)
    "pool_has_cf",
)
N_FEATURES = len(FEATURE_NAMES)
_COL = {name: i for i, name in enumerate(FEATURE_NAMES)}


def feature_spec() -> dict[str, object]:
    """What the manifest records and the loader compares."""
    return {"version": FEATURE_SPEC_VERSION, "names": list(FEATURE_NAMES), "sha256": feature_spec_hash()}


def feature_spec_hash() -> str:
    payload = FEATURE_SPEC_VERSION + "\n" + "\n".join(FEATURE_NAMES)
    return hashlib.sha256(payload.encode()).hexdigest()


class Source(IntFlag):
    """Where a candidate came from; a candidate may have several."""

    CF = 1
    SESSION = 2
    TRENDING = 4
    CONTENT = 8
    POPULAR = 16


@dataclass(slots=True)
class CandidateSet:
    """Merged, de-duplicated candidates as parallel arrays over dense item indices."""

    items: npt.NDArray[np.int32]
    sources: npt.NDArray[np.uint8]
    cf_score: npt.NDArray[np.float32]
    #: 0-based rank in the CF list; -1 when not a CF candidate.
    cf_rank: npt.NDArray[np.float32]
    #: Trending score in [0, 1]; 0 when not trending.
    trending: npt.NDArray[np.float32]
    #: For session candidates, the session item (dense index) they neighbour; -1 otherwise.
    anchor: npt.NDArray[np.int32]
    #: For session candidates, the best neighbour weight relative to its anchor's first
    #: neighbour, over the anchors that proposed it; 0 otherwise.
    neighbour_score: npt.NDArray[np.float32]
    #: For session candidates, the recency rank (0 = newest) of the first anchor; -1 otherwise.
    anchor_rank: npt.NDArray[np.float32]

    def __len__(self) -> int:
        return len(self.items)

    @classmethod
    def empty(cls) -> CandidateSet:
        return cls(
            items=np.zeros(0, np.int32),
            sources=np.zeros(0, np.uint8),
            cf_score=np.zeros(0, np.float32),
            cf_rank=np.zeros(0, np.float32),
            trending=np.zeros(0, np.float32),
            anchor=np.zeros(0, np.int32),
            neighbour_score=np.zeros(0, np.float32),
            anchor_rank=np.zeros(0, np.float32),
        )


class CandidateBuilder:
    """Merges candidate sources, keeping every source a candidate came from."""

    def __init__(self) -> None:
        self._pos: dict[int, int] = {}
        self._items: list[int] = []
        self._sources: list[int] = []
        self._cf_score: list[float] = []
        self._cf_rank: list[float] = []
        self._trending: list[float] = []
        self._anchor: list[int] = []
        self._neighbour_score: list[float] = []
        self._anchor_rank: list[float] = []

    def add(
        self,
        item: int,
        source: Source,
        *,
        cf_score: float | None = None,
        cf_rank: int | None = None,
        trending: float | None = None,
        anchor: int | None = None,
        neighbour_score: float | None = None,
        anchor_rank: int | None = None,
    ) -> None:
        p = self._pos.get(item)
        if p is None:
            p = self._pos[item] = len(self._items)
            self._items.append(item)
            self._sources.append(0)
            self._cf_score.append(0.0)
            self._cf_rank.append(-1.0)
            self._trending.append(0.0)
            self._anchor.append(-1)
            self._neighbour_score.append(0.0)
            self._anchor_rank.append(-1.0)
        self._sources[p] |= int(source)
        if cf_score is not None:
            self._cf_score[p] = cf_score
        if cf_rank is not None:
            self._cf_rank[p] = float(cf_rank)
        if trending is not None:
            self._trending[p] = max(self._trending[p], trending)
        if anchor is not None and self._anchor[p] < 0:
            self._anchor[p] = anchor
            if anchor_rank is not None:
                self._anchor_rank[p] = float(anchor_rank)
        if neighbour_score is not None:
            self._neighbour_score[p] = max(self._neighbour_score[p], neighbour_score)

    def __contains__(self, item: int) -> bool:
        return item in self._pos

    def __len__(self) -> int:
        return len(self._items)

    def build(self) -> CandidateSet:
        return CandidateSet(
            items=np.asarray(self._items, np.int32),
            sources=np.asarray(self._sources, np.uint8),
            cf_score=np.asarray(self._cf_score, np.float32),
            cf_rank=np.asarray(self._cf_rank, np.float32),
            trending=np.asarray(self._trending, np.float32),
            anchor=np.asarray(self._anchor, np.int32),
            neighbour_score=np.asarray(self._neighbour_score, np.float32),
            anchor_rank=np.asarray(self._anchor_rank, np.float32),
        )


@dataclass(slots=True)
class RequestContext:
    now: float
    device: str | None = None
    #: Client's offset from UTC, so "time of day" is the user's local time.
    utc_offset_minutes: int = 0

    @property
    def local_hour(self) -> float:
        return ((self.now + self.utc_offset_minutes * 60) / 3600.0) % 24.0

    @property
    def local_dow(self) -> float:
        # 1970-01-01 was a Thursday; 0 = Monday.
        days = (self.now + self.utc_offset_minutes * 60) / 86400.0
        return (days + 3.0) % 7.0


@dataclass(slots=True)
class UserView:
    """What the ranker knows about the user at request time (all dense item indices)."""

    affinity: Mapping[str, float] = field(default_factory=dict)
    history: npt.NDArray[np.int32] = field(default_factory=lambda: np.zeros(0, np.int32))
    session: npt.NDArray[np.int32] = field(default_factory=lambda: np.zeros(0, np.int32))
    cart: npt.NDArray[np.int32] = field(default_factory=lambda: np.zeros(0, np.int32))
    total_events: int = 0


class FeatureAssembler:
    """Builds the [n_candidates, N_FEATURES] float32 matrix the ranker consumes."""

    def __init__(self, items: ItemTable) -> None:
        self.items = items
        self._n_categories = len(items.category_vocab)

    def _affinity_vector(self, affinity: Mapping[str, float]) -> npt.NDArray[np.float32]:
        vec = np.zeros(self._n_categories + 1, np.float32)  # last slot absorbs the -1 padding
        total = sum(v for v in affinity.values() if v > 0)
        if total > 0:
            idx = self.items.category_index
            for cat, v in affinity.items():
                i = idx.get(cat)
                if i is not None and v > 0:
                    vec[i] = v / total
        return vec

    def assemble(self, cands: CandidateSet, user: UserView, ctx: RequestContext) -> npt.NDArray[np.float32]:
        items = self.items
        n = len(cands)
        x = np.zeros((n, N_FEATURES), np.float32)
        if n == 0:
            return x
        c = cands.items
        col = _COL

        # The CF score relative to the best CF candidate in the pool: the published lists' scale
        # (item-linear scores) varies between fits and users; the relative score does not.
        is_cf = cands.cf_rank >= 0
        top = float(cands.cf_score[is_cf].max()) if is_cf.any() else 0.0
        if top > 0:
            x[:, col["cf_score"]] = np.where(is_cf, cands.cf_score / top, 0.0)
        x[:, col["cf_rank"]] = np.where(cands.cf_rank >= 0, 1.0 / (1.0 + np.maximum(cands.cf_rank, 0)), 0.0)
        src = cands.sources
        x[:, col["src_cf"]] = (src & Source.CF) > 0
        x[:, col["src_session"]] = (src & Source.SESSION) > 0
        x[:, col["src_trending"]] = (src & Source.TRENDING) > 0
        x[:, col["src_content"]] = (src & Source.CONTENT) > 0
        x[:, col["src_popular"]] = (src & Source.POPULAR) > 0

        x[:, col["item_popularity"]] = items.popularity[c]
        x[:, col["item_daypart_popularity"]] = items.daypart_popularity[c, daypart(int(ctx.local_hour))]
        age_days = np.maximum(ctx.now - items.first_seen[c], 0.0) / 86400.0
        x[:, col["item_age"]] = np.log1p(age_days) / 10.0
        x[:, col["trending_score"]] = cands.trending

        cat_ids = items.category_ids[c]  # [n, MAX_ITEM_CATEGORIES], -1 indexes the zero slot
        x[:, col["user_category_affinity"]] = self._affinity_vector(user.affinity)[cat_ids].sum(axis=1)

        emb = items.embeddings[c]
        if len(user.session):
            sims = emb @ items.embeddings[user.session].T
            x[:, col["session_max_sim"]] = sims.max(axis=1)
            x[:, col["session_mean_sim"]] = sims.mean(axis=1)
        x[:, col["session_neighbour_score"]] = cands.neighbour_score
        x[:, col["session_anchor_recency"]] = np.where(
            cands.anchor_rank >= 0, 1.0 / (1.0 + np.maximum(cands.anchor_rank, 0)), 0.0
        )
        if len(user.history):
            centre = items.embeddings[user.history].mean(axis=0)
            norm = float(np.linalg.norm(centre))
            if norm > 0:
                x[:, col["history_sim"]] = emb @ (centre / norm)
        if len(user.cart):
            x[:, col["cart_max_sim"]] = (emb @ items.embeddings[user.cart].T).max(axis=1)
            cart_cats = np.unique(items.category_ids[user.cart])
            cart_cats = cart_cats[cart_cats >= 0]
            x[:, col["in_cart_category"]] = np.isin(cat_ids, cart_cats).any(axis=1)

        hour = ctx.local_hour * (2 * math.pi / 24.0)
        dow = ctx.local_dow * (2 * math.pi / 7.0)
        x[:, col["hour_sin"]] = math.sin(hour)
        x[:, col["hour_cos"]] = math.cos(hour)
        x[:, col["dow_sin"]] = math.sin(dow)
        x[:, col["dow_cos"]] = math.cos(dow)
        device = ctx.device or "other"
        if device == "web":
            x[:, col["device_web"]] = 1.0
        elif device in ("mobile", "tablet"):
            x[:, col["device_mobile"]] = 1.0
        else:
            x[:, col["device_other"]] = 1.0
        x[:, col["user_activity"]] = math.log1p(user.total_events) / 10.0
        x[:, col["pool_has_cf"]] = float(is_cf.any())
        return x
