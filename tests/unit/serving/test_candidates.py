"""Candidate retrieval: sources merged and kept, hard rules applied, pool topped up."""

from __future__ import annotations

from typing import Any

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from recpipe.domain.features import CandidateBuilder, CandidateSet, Source
from recpipe.ports import SessionEntry
from recpipe.serving.candidates import CandidateInputs, CandidateRetriever, Eligibility, policy_of
from recpipe.training.history import CandidatePolicy
from serving_catalogue import CATEGORIES, N_ITEMS, make_items, make_neighbours

ITEMS = make_items()
NEIGHBOURS = make_neighbours(ITEMS)
POPULAR = np.argsort(-ITEMS.popularity).astype(np.int32)


def inputs(**kw: object) -> CandidateInputs:
    base: dict[str, object] = {"cf": [], "session": [], "trending": [], "content": [], "popular": POPULAR}
    base.update(kw)
    return CandidateInputs(**base)  # type: ignore[arg-type]


#: Only the 3 most popular items (i0..i2) are flagged popular by the training policy.
POLICY = CandidatePolicy(popular=3)


def retrieve(
    max_candidates: int = 30, blocked: tuple[str, ...] = (), policy: CandidatePolicy = POLICY, **kw: object
) -> dict[str, tuple[int, float, int]]:
    retriever = CandidateRetriever(ITEMS, NEIGHBOURS, max_candidates, policy)
    elig = Eligibility.build(
        ITEMS,
        blocked,
        kw.pop("include", ()),  # type: ignore[arg-type]
        kw.pop("exclude", ()),  # type: ignore[arg-type]
    )
    cands = retriever.retrieve(inputs(**kw), elig)
    return {
        ITEMS.item_ids[int(i)]: (int(s), float(c), int(a))
        for i, s, c, a in zip(cands.items, cands.sources, cands.cf_score, cands.anchor, strict=True)
    }


def test_an_item_from_several_sources_appears_once_with_every_source() -> None:
    pool = retrieve(cf=[("i40", 0.9), ("i41", 0.8)], trending=[("i40", 1.0), ("i42", 0.5)])
    assert pool["i40"][0] == Source.CF | Source.TRENDING
    assert pool["i40"][1] == np.float32(0.9)
    assert pool["i42"][0] == Source.TRENDING
    assert len(pool) == 30, "popularity tops the pool up to max_candidates"


def test_session_neighbours_carry_their_anchor() -> None:
    now = 1_700_000_000.0
    session = [
        SessionEntry("i3", "view", now),
        SessionEntry("i3", "click", now - 1),
        SessionEntry("nope", "view", now),
    ]
    pool = retrieve(session=session)
    session_items = {i: v for i, v in pool.items() if v[0] & Source.SESSION}
    expected = {ITEMS.item_ids[int(j)] for j in NEIGHBOURS.indices[3]}
    assert set(session_items) == expected
    assert all(v[2] == 3 for v in session_items.values())


def test_session_neighbours_carry_their_weight_relative_to_the_anchors_best_and_its_recency() -> None:
    now = 1_700_000_000.0
    retriever = CandidateRetriever(ITEMS, NEIGHBOURS, 60, POLICY)
    session = [SessionEntry("i3", "view", now), SessionEntry("i7", "view", now - 5)]
    cands = retriever.retrieve(inputs(session=session), Eligibility.build(ITEMS, []))
    pos = {int(i): k for k, i in enumerate(cands.items.tolist())}
    w3 = NEIGHBOURS.scores[3].astype(np.float32)
    w7 = NEIGHBOURS.scores[7].astype(np.float32)
    for j, item in enumerate(NEIGHBOURS.indices[3].tolist()):
        if item == 7:
            continue  # a session item itself may be another's neighbour
        k = pos[item]
        expect = w3[j] / w3[0]
        if item in NEIGHBOURS.indices[7].tolist():  # the best weight over both anchors
            expect = max(expect, w7[NEIGHBOURS.indices[7].tolist().index(item)] / w7[0])
        assert cands.neighbour_score[k] == np.float32(expect)
        assert cands.anchor_rank[k] == 0.0, "the newest session item proposed it first"
    only7 = [i for i in NEIGHBOURS.indices[7].tolist() if i not in NEIGHBOURS.indices[3].tolist() and i != 3]
    assert only7 and all(cands.anchor_rank[pos[i]] == 1.0 for i in only7)
    assert cands.neighbour_score[cands.anchor < 0].sum() == 0.0


def test_blocked_items_never_enter_the_pool() -> None:
    pool = retrieve(cf=[("i1", 0.9), ("i2", 0.8)], trending=[("i3", 1.0)], blocked=("i1", "i3", "i0"))
    assert not {"i0", "i1", "i3"} & set(pool)
    assert "i2" in pool and len(pool) == 30


def test_category_filters_apply_to_every_source() -> None:
    books = CATEGORIES.index("books")
    pool = retrieve(cf=[("i1", 0.9), ("i5", 0.8)], include=("books",))
    assert pool and all(books in ITEMS.category_ids[ITEMS.index[i]] for i in pool)
    assert "i5" in pool and "i1" not in pool
    pool = retrieve(exclude=("books", "kitchen"))
    banned = {books, CATEGORIES.index("kitchen")}
    assert pool and not any(banned & set(ITEMS.category_ids[ITEMS.index[i]].tolist()) for i in pool)


def test_include_filter_naming_unknown_categories_matches_nothing() -> None:
    assert retrieve(include=("no-such-category",)) == {}


def test_unknown_items_from_the_cache_are_dropped_and_ranks_kept() -> None:
    pool = retrieve(cf=[("ghost", 0.99), ("i7", 0.5)], max_candidates=5)
    assert "ghost" not in pool and pool["i7"][0] & Source.CF


def test_pool_size_is_capped_and_cf_fills_what_fresher_sources_leave() -> None:
    cf = [(f"i{i}", 1.0 - i / 100) for i in range(10, 60)]
    pool = retrieve(cf=cf, trending=[("i51", 1.0)], max_candidates=12)
    assert len(pool) == 12
    assert pool["i51"][0] == Source.TRENDING | Source.CF, "pooled first, and labelled by the CF list"
    assert sum(1 for v in pool.values() if v[0] & Source.CF) == 12
    assert not any(v[0] & Source.POPULAR for v in pool.values()), "the pool was full before popularity"


def test_content_candidates_are_marked() -> None:
    pool = retrieve(content=[("i20", 3.0), ("i21", 2.0)], max_candidates=10)
    assert pool["i20"][0] == Source.CONTENT and pool["i21"][0] == Source.CONTENT


def test_the_most_popular_items_are_flagged_like_in_training() -> None:
    pool = retrieve(cf=[("i1", 0.9), ("i40", 0.8)], max_candidates=10)
    assert pool["i1"][0] == Source.CF | Source.POPULAR, "a top-3 item is also POPULAR, as in replay"
    assert pool["i40"][0] == Source.CF
    assert pool["i0"][0] == Source.POPULAR
    # Top-up items (beyond the policy) are POPULAR but never re-label pooled candidates.
    assert all(v[0] == Source.POPULAR for i, v in pool.items() if i not in ("i1", "i40"))


def test_per_source_quotas_come_from_the_bundle_manifest() -> None:
    policy = policy_of(
        {"params": {"policy": {"session_items": 1, "neighbours_per_item": 2, "trending": 1, "cf": 7}}}
    )
    assert (policy.session_items, policy.neighbours_per_item, policy.trending) == (1, 2, 1)
    now = 1_700_000_000.0
    session = [SessionEntry("i3", "view", now), SessionEntry("i4", "view", now - 1)]
    pool = retrieve(session=session, trending=[("i50", 1.0), ("i51", 0.5)], policy=policy, max_candidates=20)
    assert sum(1 for v in pool.values() if v[0] & Source.SESSION) == 2
    assert {i for i, v in pool.items() if v[0] & Source.TRENDING} == {"i50"}
    assert policy_of({}) == CandidatePolicy()


# ---- the vectorised pool is CandidateBuilder's merge ---------------------------------------------
def reference_retrieve(
    retriever: CandidateRetriever, inputs: CandidateInputs, elig: Eligibility
) -> CandidateSet:
    """The retrieval rules written item by item on CandidateBuilder (the shared contract)."""
    items, policy, limit = retriever.items, retriever.policy, retriever.max_candidates
    builder = CandidateBuilder()
    pool: set[int] = set()

    def add_all(
        idx: Any, source: Source, *, cap: int | None = None, relabel: bool = True, **attrs: Any
    ) -> None:
        if len(idx) == 0:
            return
        ok = elig.allowed(items, idx)
        taken = 0
        for j in np.flatnonzero(ok).tolist():
            item = int(idx[j])
            new = item not in pool
            if new and (len(pool) >= limit or (cap is not None and taken >= cap)):
                if not relabel:
                    return
                continue
            if not new and not relabel:
                continue
            builder.add(item, source, **{k: v[j].item() for k, v in attrs.items()})
            if new:
                pool.add(item)
                taken += 1

    anchors = retriever.session_anchors(inputs.session)[: policy.session_items]
    if len(anchors):
        rows = retriever.neighbours[anchors, : policy.neighbours_per_item]
        flat, anchor_of = rows.reshape(-1), np.repeat(anchors, rows.shape[1])
        rank_of = np.repeat(np.arange(len(anchors)), rows.shape[1])
        w = retriever.neighbour_scores[anchors, : rows.shape[1]].astype(np.float32)
        rel = (w / w[:, :1]).reshape(-1).astype(np.float32)  # the test neighbours' best is > 0
        ok = flat >= 0
        add_all(
            flat[ok], Source.SESSION, anchor=anchor_of[ok], anchor_rank=rank_of[ok], neighbour_score=rel[ok]
        )
    t_idx, t_scores, _ = retriever._known(inputs.trending[: policy.trending])
    add_all(t_idx, Source.TRENDING, trending=t_scores)
    c_idx, _, _ = retriever._known(inputs.content)
    add_all(c_idx, Source.CONTENT, cap=100)
    cf_idx, cf_scores, cf_ranks = retriever._known(inputs.cf)
    add_all(cf_idx, Source.CF, cf_score=cf_scores, cf_rank=cf_ranks)
    add_all(retriever.global_popular, Source.POPULAR)
    if len(pool) < limit:
        add_all(inputs.popular, Source.POPULAR, relabel=False)
    return builder.build()


item_ids = st.integers(0, N_ITEMS + 3).map(lambda i: f"i{i}")  # a few unknown ids too
scored = st.lists(st.tuples(item_ids, st.floats(0, 1, width=32)), max_size=40)


@settings(max_examples=150, deadline=None)
@given(
    cf=scored,
    trending=scored,
    content=scored,
    session=st.lists(
        st.tuples(item_ids, st.sampled_from(["view", "click", "add_to_cart", "remove_from_cart"])), max_size=8
    ),
    blocked=st.lists(item_ids, max_size=6),
    include=st.lists(st.sampled_from(CATEGORIES), max_size=2),
    exclude=st.lists(st.sampled_from(CATEGORIES), max_size=1),
    limit=st.integers(1, 70),
    popular_n=st.integers(0, 10),
)
def test_vectorised_pool_equals_candidate_builder(  # noqa: PLR0917 - hypothesis arguments
    cf: list[tuple[str, float]], trending: list[tuple[str, float]], content: list[tuple[str, float]],
    session: list[tuple[str, str]], blocked: list[str], include: list[str], exclude: list[str], limit: int,
    popular_n: int,
) -> None:  # fmt: skip
    retriever = CandidateRetriever(ITEMS, NEIGHBOURS, limit, CandidatePolicy(popular=popular_n))
    elig = Eligibility.build(ITEMS, blocked, include, exclude)
    ins = inputs(
        cf=cf, trending=trending, content=content,
        session=[SessionEntry(i, t, 1_700_000_000.0 - n) for n, (i, t) in enumerate(session)],
    )  # fmt: skip
    got = retriever.retrieve(ins, elig)
    want = reference_retrieve(retriever, ins, elig)
    fields = (
        "items",
        "sources",
        "cf_score",
        "cf_rank",
        "trending",
        "anchor",
        "neighbour_score",
        "anchor_rank",
    )
    for name in fields:
        np.testing.assert_array_equal(getattr(got, name), getattr(want, name), err_msg=name)
    assert (retriever._positions == -1).all(), "the scratch is reset"


def test_cf_list_is_cut_to_the_training_policy_quota() -> None:
    # Replay offers the ranker only the first `policy.cf` CF items; serving does the same.
    cf = [(f"i{i}", 1.0 - i / 100) for i in range(10, 30)]
    pool = retrieve(cf=cf, policy=CandidatePolicy(cf=5, popular=3), max_candidates=40)
    assert {i for i, v in pool.items() if v[0] & Source.CF} == {f"i{i}" for i in range(10, 15)}


def test_a_blocked_item_is_free_again_for_the_next_request() -> None:
    retriever = CandidateRetriever(ITEMS, NEIGHBOURS, 10, POLICY)
    blocked = Eligibility.build(ITEMS, ["i0", "i1"])
    first = retriever.retrieve(inputs(), blocked)
    assert not {0, 1} & set(first.items.tolist())
    again = retriever.retrieve(inputs(), Eligibility.build(ITEMS, []))
    assert again.items[:2].tolist() == [0, 1], "the per-request blocked scratch was cleared"
