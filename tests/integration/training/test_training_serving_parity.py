"""No training/serving skew: the feature vectors the ranker was trained on are the ones the
online path computes from its stores for the same moment.

For training examples captured during the history replay, the user's events are delivered
to the stores the way production does it (shuffled, as Kinesis may; user features folded by
apply_event and round-tripped through DynamoDB; the session list in a real Redis with its
30-minute expiry; trending counted by RedisTrendingStore), then the view, candidates and
features are rebuilt from what the stores return and compared with the training vectors.
"""

from __future__ import annotations

import random
from typing import Any

import boto3
import numpy as np
import pytest
import redis
from recpipe.adapters.dynamodb_users import DynamoDBUserFeatureStore
from recpipe.adapters.redis_session import RedisSessionStore, RedisTrendingStore
from recpipe.domain.features import FEATURE_NAMES, FeatureAssembler, RequestContext
from recpipe.domain.user import apply_event
from recpipe.ports import SessionEntry
from recpipe.redis_keys import SESSION_TTL_S, KeyLayout, trending_bucket_of
from recpipe.training.history import gather_candidates, user_view
from recpipe_dev.local.resources import dynamodb_create_args, load_template

TABLE = "parity-user-features"


@pytest.fixture()
def user_store(aws: None) -> DynamoDBUserFeatureStore:
    client = boto3.client("dynamodb")
    client.create_table(**dynamodb_create_args(load_template(), "UserFeaturesTable", TABLE))
    return DynamoDBUserFeatureStore(client, TABLE)


def _rows_by_item(items: np.ndarray, x: np.ndarray) -> dict[int, Any]:
    return {int(i): x[k] for k, i in enumerate(items.tolist())}


def test_training_vectors_equal_vectors_rebuilt_from_the_stores(
    trained_run: Any, user_store: DynamoDBUserFeatureStore, redis_url: str
) -> None:
    assert trained_run.snapshots, "the replay produced no example with a session and trending items"
    log = trained_run.log.sorted_by_time()
    client = redis.Redis.from_url(redis_url)
    layout = KeyLayout("parity")
    rng = random.Random(5)
    checked = 0
    for snap in trained_run.snapshots:
        client.flushdb()
        table = snap.items
        user = log.user_index[snap.user_id]
        before = np.arange(snap.row)  # rows the replay had folded in when it built the example
        mine = before[log.users[before] == user]

        # user features: shuffled delivery, folded by the updater's function, stored in DynamoDB
        events = [log.event(int(r)) for r in mine]
        shuffled = events[:]
        rng.shuffle(shuffled)
        state = None
        for e in shuffled:
            state = apply_event(state, e, table.categories_of(e.item_id))
        assert state is not None
        previous = user_store.get(snap.user_id)
        user_store.put(state, expected_version=previous.version if previous else 0)
        stored = user_store.get(snap.user_id)

        # session: Redis list in arrival order; the key expires 30 minutes after the last write
        sessions = RedisSessionStore(client, layout)
        last = None
        for e in events:
            if last is not None and e.ts - last >= SESSION_TTL_S:
                client.delete(layout.session(snap.user_id))
            sessions.append(snap.user_id, [SessionEntry(e.item_id, e.type.value, e.ts)])
            last = e.ts
        if last is not None and snap.now - last >= SESSION_TTL_S:
            client.delete(layout.session(snap.user_id))
        session = sessions.recent(snap.user_id)

        # trending: every user's events of the last hour, counted by the stream path's store
        trending = RedisTrendingStore(client, layout, clock=lambda s=snap: s.now)
        weights: dict[tuple[int, str], float] = {}
        for r in before[log.ts[before] >= snap.now - 3600].tolist():
            e = log.event(r)
            key = (trending_bucket_of(e.ts), e.item_id)
            weights[key] = weights.get(key, 0.0) + e.weight
        trending.add(weights)
        served_trending = trending.top(snap.now, snap.policy.trending)
        assert dict(served_trending) == pytest.approx(dict(snap.trending), abs=1e-6)

        view = user_view(stored, session, table, snap.now)
        popular = np.argsort(-table.popularity, kind="stable")[: snap.policy.popular].astype(np.int32)
        cands = gather_candidates(
            snap.policy,
            table,
            snap.neighbours,
            cf=snap.cf,
            session=view.session,
            trending=served_trending,
            popular=popular,
            exclude={table.index[e.item_id] for e in events},
        )
        x = FeatureAssembler(table).assemble(cands, view, RequestContext(now=snap.now, device=snap.device))

        # the comparison covers the live parts of the state, not just zeros
        assert session and view.session.size and stored is not None and stored.affinity
        assert (x[:, FEATURE_NAMES.index("session_max_sim")] != 0).any()
        assert (x[:, FEATURE_NAMES.index("trending_score")] > 0).any()
        assert (x[:, FEATURE_NAMES.index("user_category_affinity")] > 0).any()
        trained, served = _rows_by_item(snap.candidates.items, snap.x), _rows_by_item(cands.items, x)
        assert trained.keys() == served.keys()
        for item, row in trained.items():
            np.testing.assert_allclose(served[item], row, rtol=0, atol=1e-6)
        checked += 1
    assert checked == len(trained_run.snapshots)
