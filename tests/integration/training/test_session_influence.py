"""A visitor's live session shapes the next list: the trained ranker must not bury it under
popularity (the regression that made `make demo`'s session check fail).

A visitor without CF history clicks the three most popular items of one category (as the demo
does); the request after the clicks is built by training's example builder, which the parity
test proves equal to what the real Recommender computes from its stores, and scored by the
serving runtime's ranker on the bundle `train_bundle` wrote.
"""

from __future__ import annotations

import numpy as np
import pytest
from recpipe.bundle import load_bundle
from recpipe.domain.events import Event
from recpipe.domain.features import Source
from recpipe.domain.user import UserFeatures, apply_event
from recpipe.ports import SessionEntry
from recpipe.serving.candidates import policy_of
from recpipe.serving.ranker import Ranker
from recpipe.training.examples import ExampleBuilder

pytestmark = pytest.mark.integration

K = 10


def test_a_fresh_session_outranks_popularity_for_a_visitor_without_cf_history(trained_run) -> None:  # type: ignore[no-untyped-def]
    bundle = load_bundle(trained_run.result.bundle_dir)
    ranker = Ranker.from_file(bundle.ranker_path)
    builder = ExampleBuilder(bundle.items, bundle.neighbours, policy_of(bundle.manifest))
    log = trained_run.log
    first_cat = {m.item_id: m.categories[0] for m in trained_run.items if m.categories}
    counts = np.bincount(log.items, minlength=len(log.item_vocab))
    by_cat: dict[str, list[tuple[int, str]]] = {}
    for code, item_id in enumerate(log.item_vocab):
        if item_id in first_cat and item_id in bundle.items.index:
            by_cat.setdefault(first_cat[item_id], []).append((int(counts[code]), item_id))
    categories = sorted(c for c, members in by_cat.items() if len(members) >= 8)
    assert len(categories) >= 4
    now = float(log.ts.max()) + 600.0
    categories_of = {m.item_id: list(m.categories) for m in trained_run.items}

    gains: list[float] = []
    session_share: list[float] = []
    for n, cat in enumerate(categories):
        picks = [i for _, i in sorted(by_cat[cat], reverse=True)[:3]]
        features: UserFeatures | None = None
        session: list[SessionEntry] = []
        for j, item in enumerate(picks):
            for kind in ("view", "click"):
                ts = now - 30.0 + j
                event = Event(
                    event_id=f"v{n}-{j}-{kind}", user_id=f"visitor-{n}", item_id=item, type=kind, ts=ts
                )
                features = apply_event(features, event, categories_of[item])
                session.insert(0, SessionEntry(item, kind, ts))

        def top(user: UserFeatures | None, sess: list[SessionEntry], cat: str = cat) -> tuple[float, float]:
            cands, x, _ = builder.build(user=user, session=sess, cf=[], trending=[], now=now, device="mobile")
            scores = ranker.score(x)
            best = np.argsort(-scores, kind="stable")[:K]
            ids = bundle.items.item_ids
            share = float(np.mean([cat in categories_of[ids[cands.items[i]]] for i in best]))
            # how much of the top 10 the session's own candidates (its neighbours) make up
            lead = float(((cands.sources[best] & Source.SESSION) > 0).mean())
            return share, lead

        before, _ = top(None, [])
        after, lead = top(features, session)
        gains.append(after - before)
        session_share.append(lead)

    # Every category's clicks raise its share of the list, and on average by a lot.
    # Nearly every category's clicks raise its share of the list (a category whose popular
    # items neighbour other categories' may not), and on average by a lot.
    assert sum(g > 0 for g in gains) >= 0.9 * len(gains), gains
    assert float(np.mean(gains)) >= 0.3, gains
    # the session's candidates reach the top 10 of nearly every list, and hold a good part of it
    assert sum(v > 0 for v in session_share) >= 0.9 * len(session_share), session_share
    assert float(np.mean(session_share)) >= 0.2, session_share
