"""No training/serving skew: the candidates, seen-set and feature rows the ranker was trained
on are the ones the real online path computes from its stores for the same user and moment.

For training examples captured during the history replay (built by training's example
builder), the user's events are delivered to the stores the way production does it
(shuffled, as Kinesis may; user features folded by apply_event and round-tripped through
DynamoDB; the session list in a real Redis with its 30-minute expiry; trending counted by
RedisTrendingStore; the CF list in the Redis candidate cache), then the real `Recommender`
(RequestReader, CandidateRetriever, FeatureAssembler of a loaded bundle, ranker) answers a
request at the example's moment, and the pool and feature rows it ranked are compared with the
training example's. Time of day is UTC on both sides (the request says it is UTC+5 h: the
features must not move).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any

import boto3
import numpy as np
import pytest
import redis
from recpipe.adapters.dynamodb_users import DynamoDBUserFeatureStore
from recpipe.adapters.redis_candidates import RedisCandidateCache
from recpipe.adapters.redis_session import RedisSessionStore, RedisTrendingStore
from recpipe.bundle import write_bundle
from recpipe.domain.features import FEATURE_NAMES
from recpipe.domain.user import apply_event
from recpipe.ports import SessionEntry
from recpipe.redis_keys import SESSION_TTL_S, KeyLayout, trending_bucket_of
from recpipe.serving.model_provider import LocalBundleSource, ModelProvider
from recpipe.serving.reads import Bulkhead, DeadlineRunner, RequestReader, TrendingCache
from recpipe.serving.recommender import Recommender, blocked_items
from recpipe.serving.request import RecommendationRequest
from recpipe_dev.local.resources import dynamodb_create_args, load_template

TABLE = "parity-user-features"


@pytest.fixture()
def user_store(aws: None) -> DynamoDBUserFeatureStore:
    client = boto3.client("dynamodb")
    client.create_table(**dynamodb_create_args(load_template(), "UserFeaturesTable", TABLE))
    return DynamoDBUserFeatureStore(client, TABLE)


def _at(t: float) -> Callable[[], float]:
    return lambda: t


class _Spy:
    """Wraps the loaded model's FeatureAssembler: keeps the pool and rows the Recommender ranked."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.cands: Any = None
        self.x: Any = None

    def assemble(self, cands: Any, view: Any, ctx: Any) -> Any:
        self.cands, self.x = cands, self.inner.assemble(cands, view, ctx)
        return self.x


def _rows_by_item(items: np.ndarray, x: np.ndarray) -> dict[int, Any]:
    return {int(i): x[k] for k, i in enumerate(items.tolist())}


def test_training_vectors_equal_vectors_rebuilt_from_the_stores(
    trained_run: Any, user_store: DynamoDBUserFeatureStore, redis_url: str, tmp_path: Path
) -> None:
    assert trained_run.snapshots, "the replay produced no example with a session and trending items"
    log = trained_run.log.sorted_by_time()
    client = redis.Redis.from_url(redis_url)
    layout = KeyLayout("parity")
    rng = random.Random(5)
    ranker = (trained_run.result.bundle_dir / "ranker.tflite").read_bytes()
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
        trending = RedisTrendingStore(client, layout, clock=_at(snap.now))
        weights: dict[tuple[int, str], float] = {}
        for r in before[log.ts[before] >= snap.now - 3600].tolist():
            e = log.event(r)
            key = (trending_bucket_of(e.ts), e.item_id)
            weights[key] = weights.get(key, 0.0) + e.weight
        trending.add(weights)
        served_trending = trending.top(snap.now, snap.policy.trending)
        assert dict(served_trending) == pytest.approx(dict(snap.trending), abs=1e-6)

        # the CF list in the candidate cache, the example's item table in a bundle
        RedisCandidateCache(client, layout, pointer_ttl_s=0).publish(
            f"c{checked}", [(snap.user_id, list(snap.cf))], {}
        )
        root = tmp_path / f"models-{checked}"
        write_bundle(
            root / "v1",
            version="v1",
            items=table,
            neighbours=snap.neighbours,
            ranker_tflite=ranker,
            params={"policy": asdict(snap.policy)},
        )
        (root / "CURRENT").write_text("v1")
        provider = ModelProvider(LocalBundleSource(root), background=False, refresh_s=1e12)
        model = provider.current()
        assert model is not None, provider.last_error
        spy = _Spy(model.assembler)
        model.assembler = spy  # type: ignore[assignment]
        with ThreadPoolExecutor(max_workers=4) as pool:
            runner = DeadlineRunner(pool, Bulkhead(limit=8))
            reader = RequestReader(
                runner,
                candidates=RedisCandidateCache(client, layout, pointer_ttl_s=0),
                sessions=sessions,
                users=user_store,
                trending=TrendingCache(trending, ttl_s=0.0),
                timeout_s=5.0,
            )
            recommender = Recommender(
                provider, reader, runner, budget_s=5.0, read_timeout_s=5.0, clock=_at(snap.now)
            )
            req = RecommendationRequest.model_validate(
                {
                    "user_id": snap.user_id,
                    "k": 5,
                    "context": {"device": snap.device, "utc_offset_minutes": 300}
                    if snap.device
                    else {"utc_offset_minutes": 300},
                }
            )
            result = recommender.recommend(req)
        assert not result.degraded, result.failures
        cands, x = spy.cands, spy.x

        # the seen-set: what serving blocks is what training excluded
        blocked = {table.index[i] for i in blocked_items(req, stored, session) if i in table.index}
        assert blocked == set(snap.exclude)

        # the comparison covers the live parts of the state, not just zeros
        assert session and stored is not None and stored.affinity
        assert (x[:, FEATURE_NAMES.index("session_max_sim")] != 0).any()
        assert (x[:, FEATURE_NAMES.index("trending_score")] > 0).any()
        assert (x[:, FEATURE_NAMES.index("user_category_affinity")] > 0).any()
        trained, served = _rows_by_item(snap.candidates.items, snap.x), _rows_by_item(cands.items, x)
        # the same pool (sources and CF ranks included) and the same rows
        assert trained.keys() == served.keys()
        np.testing.assert_array_equal(np.sort(snap.candidates.items), np.sort(cands.items))
        order_t, order_s = np.argsort(snap.candidates.items), np.argsort(cands.items)
        np.testing.assert_array_equal(snap.candidates.sources[order_t], cands.sources[order_s])
        np.testing.assert_array_equal(snap.candidates.cf_rank[order_t], cands.cf_rank[order_s])
        for item, row in trained.items():
            np.testing.assert_allclose(served[item], row, rtol=0, atol=1e-6)
        checked += 1
    assert checked == len(trained_run.snapshots)
