"""The feature spec and FeatureAssembler: one function, used by training and serving."""

from __future__ import annotations

import math

import numpy as np
import pytest
from recpipe.domain.features import (
    FEATURE_NAMES,
    N_FEATURES,
    CandidateBuilder,
    FeatureAssembler,
    RequestContext,
    Source,
    UserView,
    feature_spec,
)
from recpipe.domain.items import ItemTable

COL = {n: i for i, n in enumerate(FEATURE_NAMES)}
NOW = 1_700_000_000.0  # a Tuesday, 22:13 UTC


def items() -> ItemTable:
    emb = np.array([[1, 0], [0.8, 0.6], [0, 1], [-1, 0]], np.float32)
    return ItemTable(
        item_ids=["a", "b", "c", "d"],
        titles=["A", "B", "C", "D"],
        category_vocab=["jazz", "rock", "pop"],
        category_ids=np.array([[0, -1], [0, 1], [1, -1], [2, -1]], np.int32),
        popularity=np.array([1.0, 0.5, 0.25, 0.0], np.float32),
        daypart_popularity=np.tile(np.array([[0.1, 0.2, 0.3, 0.4]], np.float32), (4, 1)),
        first_seen=np.full(4, NOW - 10 * 86400, np.float64),
        embeddings=emb,
    )


def test_builder_merges_sources_and_keeps_first_scores() -> None:
    b = CandidateBuilder()
    b.add(0, Source.CF, cf_score=0.9, cf_rank=0)
    b.add(1, Source.SESSION, anchor=2)
    b.add(0, Source.TRENDING, trending=0.5)
    cands = b.build()
    assert cands.items.tolist() == [0, 1]
    assert cands.sources[0] == Source.CF | Source.TRENDING
    assert cands.cf_score.tolist() == pytest.approx([0.9, 0.0])
    assert cands.cf_rank.tolist() == [0.0, -1.0]
    assert cands.anchor.tolist() == [-1, 2]
    assert cands.trending.tolist() == [0.5, 0.0]


def test_assemble_computes_each_feature_from_its_inputs() -> None:
    b = CandidateBuilder()
    b.add(1, Source.CF, cf_score=0.7, cf_rank=1)
    b.add(2, Source.SESSION, anchor=0)
    b.add(0, Source.CF, cf_score=1.4, cf_rank=0)
    user = UserView(
        affinity={"jazz": 3.0, "rock": 1.0},
        history=np.array([0], np.int32),
        session=np.array([0], np.int32),
        cart=np.array([3], np.int32),
        total_events=9,
    )
    x = FeatureAssembler(items()).assemble(
        b.build(), user, RequestContext(now=NOW, device="mobile", utc_offset_minutes=60)
    )
    assert x.shape == (3, N_FEATURES) and x.dtype == np.float32
    # relative to the best CF candidate of the pool (item 0, 1.4); 0 for a non-CF candidate
    assert x[:, COL["cf_score"]].tolist() == pytest.approx([0.5, 0.0, 1.0])
    assert x[0, COL["cf_rank"]] == pytest.approx(0.5)
    assert x[:, COL["src_cf"]].tolist() == [1, 0, 1]
    assert x[:, COL["src_session"]].tolist() == [0, 1, 0]
    x = x[:2]
    assert x[:, COL["item_popularity"]].tolist() == pytest.approx([0.5, 0.25])
    # 22:13 UTC + 1 h = 23:13 local -> evening daypart
    assert x[0, COL["item_daypart_popularity"]] == pytest.approx(0.4)
    assert x[0, COL["item_age"]] == pytest.approx(math.log1p(10) / 10)
    # b is jazz+rock: 0.75 + 0.25; c is rock: 0.25
    assert x[:, COL["user_category_affinity"]].tolist() == pytest.approx([1.0, 0.25])
    assert x[:, COL["session_max_sim"]].tolist() == pytest.approx([0.8, 0.0])
    assert x[:, COL["history_sim"]].tolist() == pytest.approx([0.8, 0.0])
    assert x[:, COL["cart_max_sim"]].tolist() == pytest.approx([-0.8, 0.0])
    assert x[:, COL["in_cart_category"]].tolist() == [0, 0]
    hour = (NOW / 3600 + 1) % 24
    assert x[0, COL["hour_sin"]] == pytest.approx(math.sin(hour * 2 * math.pi / 24), abs=1e-6)
    assert x[0, COL["device_mobile"]] == 1 and x[0, COL["device_web"]] == 0
    assert x[0, COL["user_activity"]] == pytest.approx(math.log1p(9) / 10)


def test_assemble_for_an_unknown_user_and_no_candidates() -> None:
    fa = FeatureAssembler(items())
    assert fa.assemble(CandidateBuilder().build(), UserView(), RequestContext(now=NOW)).shape == (
        0,
        N_FEATURES,
    )
    b = CandidateBuilder()
    b.add(3, Source.POPULAR)
    x = fa.assemble(b.build(), UserView(), RequestContext(now=NOW))
    assert np.isfinite(x).all()
    assert x[0, COL["device_other"]] == 1
    assert x[0, COL["user_category_affinity"]] == 0


def test_the_spec_hash_changes_when_the_feature_list_changes() -> None:
    spec = feature_spec()
    assert spec["names"] == list(FEATURE_NAMES)
    assert len(str(spec["sha256"])) == 64


def test_session_candidates_carry_their_strongest_neighbour_weight_and_the_newest_anchors_recency() -> None:
    b = CandidateBuilder()
    b.add(2, Source.SESSION, anchor=0, anchor_rank=0, neighbour_score=0.4)
    b.add(2, Source.SESSION, anchor=1, anchor_rank=1, neighbour_score=0.9)  # another anchor's
    b.add(3, Source.SESSION, anchor=1, anchor_rank=1, neighbour_score=0.2)
    b.add(1, Source.CF, cf_score=1.0, cf_rank=0)
    cands = b.build()
    assert cands.anchor.tolist() == [0, 1, -1], "the first (newest) anchor stays"
    assert cands.anchor_rank.tolist() == [0.0, 1.0, -1.0]
    assert cands.neighbour_score.tolist() == pytest.approx([0.9, 0.2, 0.0]), "the best weight"
    x = FeatureAssembler(items()).assemble(
        cands, UserView(session=np.array([0, 1], np.int32)), RequestContext(NOW)
    )
    assert x[:, COL["session_neighbour_score"]].tolist() == pytest.approx([0.9, 0.2, 0.0])
    assert x[:, COL["session_anchor_recency"]].tolist() == pytest.approx([1.0, 0.5, 0.0])
