"""The online path against a real redis-server, moto DynamoDB/S3/SSM and a bundle trained by
recpipe.training (ALS + Keras ranker -> TFLite): every fallback and every rule, through the
real handler and the real adapters."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import boto3
import pytest
import redis
from recpipe.adapters.content_index import InProcessContentIndexWriter
from recpipe.adapters.dynamodb_users import DynamoDBUserFeatureStore
from recpipe.adapters.redis_candidates import RedisCandidateCache
from recpipe.adapters.redis_session import RedisSessionStore, RedisTrendingStore
from recpipe.adapters.s3_models import S3ModelStore
from recpipe.bundle import MANIFEST, load_bundle
from recpipe.config import RecommendSettings, load_settings
from recpipe.domain.events import Event
from recpipe.domain.user import UserFeatures, apply_events
from recpipe.ports import ContentDoc, SessionEntry
from recpipe.redis_keys import KeyLayout, trending_bucket_of
from recpipe.serving.model_provider import StoreBundleSource
from recpipe.serving.recommender import RecommendationResult
from recpipe.serving.request import parse_body
from recpipe.serving.runtime import OnlinePath, aws_dependencies, build_online_path
from recpipe.training.pipeline import TrainResult
from recpipe_dev.local.functions import LambdaContext, load_function
from recpipe_dev.local.redis_server import free_port
from recpipe_dev.local.resources import USER_FEATURES_TABLE, dynamodb_create_args, load_template
from recpipe_dev.testing.openapi import response_validator

ROOT = Path(__file__).resolve().parents[3]
ENV = "it"
TABLE = "recpipe-it-users"
BUCKET = "recpipe-it-models"
POINTER = "/recpipe/it/model/current"
NOW = time.time()


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory) -> TrainResult:
    from recpipe_dev.testing.trained import trained_bundle

    return trained_bundle(tmp_path_factory.mktemp("trained"), version="it-v1")


@dataclass
class Stack:
    trained: TrainResult
    env: dict[str, str]
    redis: redis.Redis
    users: DynamoDBUserFeatureStore
    models: S3ModelStore
    content_dir: Path

    @property
    def items(self) -> Any:
        return load_bundle(self.trained.bundle_dir).items

    def settings(self, **overrides: str) -> Any:
        return load_settings(RecommendSettings, {**self.env, **overrides})

    def online(self, **overrides: str) -> OnlinePath:
        s = self.settings(**overrides)
        # Bundles cached per test: the default cache (the temp dir) is shared by every run here.
        source = StoreBundleSource(self.models, self.content_dir.parent / "bundle-cache")
        return build_online_path(s, dependencies=aws_dependencies(s), source=source, background_refresh=False)

    def ask(self, body: dict[str, Any], online: OnlinePath | None = None) -> RecommendationResult:
        return (online or self.online()).recommender.recommend(parse_body(json.dumps(body)))

    def known_user(self) -> tuple[str, UserFeatures]:
        """A user from the training data with a CF list, stored features and a live session."""
        user_id, cands = next(iter(self.trained.candidates.items()))
        items = self.items
        bought, carted, viewed = cands[0][0], cands[1][0], items.item_ids[7]

        def ev(n: int, item: str, type_: str) -> Event:
            return Event(event_id=f"it-{n}", user_id=user_id, item_id=item, type=type_, ts=NOW - 600 + n)  # type: ignore[arg-type]

        state = apply_events(
            None,
            [ev(1, bought, "purchase"), ev(2, carted, "add_to_cart"), ev(3, viewed, "view")],
            {i: items.categories_of(i) for i in (bought, carted, viewed)},
        )
        assert state is not None
        stored = self.users.put(state, expected_version=0)
        RedisSessionStore(self.redis, KeyLayout(ENV)).append(user_id, [SessionEntry(viewed, "view", NOW - 5)])
        return user_id, stored


@pytest.fixture()
def stack(aws: None, redis_url: str, trained: TrainResult, tmp_path: Path) -> Iterator[Stack]:
    ddb = boto3.client("dynamodb")
    ddb.create_table(**dynamodb_create_args(load_template(), USER_FEATURES_TABLE, TABLE))
    s3, ssm = boto3.client("s3"), boto3.client("ssm")
    s3.create_bucket(Bucket=BUCKET)
    ssm.put_parameter(Name=POINTER, Value="none", Type="String")
    models = S3ModelStore(s3, ssm, bucket=BUCKET, pointer_param=POINTER)
    models.upload(trained.bundle_dir, "it-v1")
    models.set_current("it-v1")
    client = redis.Redis.from_url(redis_url)
    RedisCandidateCache(client, KeyLayout(ENV)).publish("c1", trained.candidates.items(), {"source": "it"})
    items = load_bundle(trained.bundle_dir).items
    content_dir = tmp_path / "content"
    InProcessContentIndexWriter(content_dir).publish(
        "it-v1",
        (
            ContentDoc(i, items.titles[n], tuple(items.categories(n)), popularity=float(items.popularity[n]))
            for n, i in enumerate(items.item_ids)
        ),
    )
    env = {
        "ENV_NAME": ENV,
        "AUTH_MODE": "API_KEY",
        "CORS_ALLOW_ORIGIN": "*",
        "REDIS_URL": redis_url,
        "USER_FEATURES_TABLE": TABLE,
        "MODEL_BUCKET": BUCKET,
        "MODEL_POINTER_PARAM": POINTER,
        "CONTENT_INDEX_DIR": str(content_dir),
        # Generous for a shared CI machine; the budget tests below set tight ones.
        "READ_TIMEOUT_MS": "500",
        "REQUEST_BUDGET_MS": "1000",
        "MAX_CANDIDATES": "300",
    }
    yield Stack(trained, env, client, DynamoDBUserFeatureStore(ddb, TABLE), models, content_dir)
    client.close()


def ids(result: RecommendationResult) -> list[str]:
    return [i["item_id"] for i in result.items]


# ---- the normal path ---------------------------------------------------------------------------
def test_known_user_gets_cf_session_and_rules_applied(stack: Stack) -> None:
    user_id, features = stack.known_user()
    # A pool of exactly k: every candidate is shown, so every source's reason can be checked.
    online = stack.online(MAX_CANDIDATES="100")
    result = stack.ask({"user_id": user_id, "k": 100, "explain": True}, online)
    assert result.degraded == [] and result.model_version == "it-v1"
    assert len(result.items) == 100 and len(set(ids(result))) == 100
    assert not (set(features.purchased) | features.cart) & set(ids(result))
    assert result.source_counts["cf"] > 0 and result.source_counts["session"] > 0
    viewed = stack.items.titles[7]
    assert any(i["reason"] == f"because you viewed {viewed}" for i in result.items)
    cf_items = [i for i in result.items if "cf" in i["sources"] and "session" not in i["sources"]]
    assert cf_items and cf_items[0]["reason"] == "similar to your interests"
    assert all(i["features"]["session_max_sim"] != 0 for i in result.items), "the live session is a feature"
    assert result.n_candidates == 100


def test_request_exclusions_cart_and_category_filters(stack: Stack) -> None:
    user_id, _ = stack.known_user()
    first = stack.ask({"user_id": user_id, "k": 10})
    top3 = ids(first)[:3]
    again = stack.ask({"user_id": user_id, "k": 10, "exclude": top3[:2], "context": {"cart": [top3[2]]}})
    assert not set(top3) & set(ids(again))
    cats = stack.items.category_vocab[:2]
    only = stack.ask({"user_id": user_id, "k": 20, "filters": {"include_categories": cats}})
    assert only.items and all(set(cats) & set(i["categories"]) for i in only.items)
    without = stack.ask({"user_id": user_id, "k": 50, "filters": {"exclude_categories": cats}})
    assert without.items and not any(set(cats) & set(i["categories"]) for i in without.items)


def test_items_the_user_interacted_with_are_not_recommended(stack: Stack) -> None:
    user_id, features = stack.known_user()
    online = stack.online(EXCLUDE_SEEN="false")
    assert not online.recommender.exclude_seen
    before = ids(stack.ask({"user_id": user_id, "k": 20}, online))
    # The user now looks at the top three (the live session; the stored history knows item 7).
    RedisSessionStore(stack.redis, KeyLayout(ENV)).append(
        user_id, [SessionEntry(item, "view", NOW - 3 + n) for n, item in enumerate(before[:3])]
    )
    seen = {r.item_id for r in features.recent} | set(before[:3])
    assert stack.items.item_ids[7] in seen
    online = stack.online()  # the default, as training's replay excludes them
    result = stack.ask({"user_id": user_id, "k": 20}, online)
    assert result.degraded == [] and len(result.items) == 20
    assert not seen & set(ids(result))
    assert set(before[3:]) & set(ids(result)), "the rest of the list stays"
    assert result.source_counts["session"] > 0, "what was seen still brings its neighbours"
    assert online.recommender.exclude_seen, "on by default"


def test_diversity_spreads_categories(stack: Stack) -> None:
    user_id, _ = stack.known_user()

    def spread(d: float) -> int:
        return len(
            {i["categories"][0] for i in stack.ask({"user_id": user_id, "k": 10, "diversity": d}).items}
        )

    assert spread(1.0) >= spread(0.0)
    assert spread(1.0) >= 5


def test_unknown_user_gets_cold_start_from_content_and_popularity(stack: Stack) -> None:
    cat = stack.items.category_vocab[3]
    result = stack.ask({"user_id": "never-seen", "k": 10, "context": {"device": "mobile", "page": cat}})
    assert result.degraded == [] and result.cold_start
    assert len(result.items) == 10
    assert result.source_counts.get("content", 0) > 0


def test_first_cold_start_request_of_a_fresh_container_is_not_degraded(stack: Stack) -> None:
    # The production deadlines (Settings defaults): init has opened the connections, built and
    # searched the content index and run one request, so the first real one pays none of it.
    s = stack.settings(READ_TIMEOUT_MS="15", REQUEST_BUDGET_MS="35")
    online = build_online_path(s, dependencies=aws_dependencies(s), background_refresh=False)
    content = online.recommender.content
    assert content is not None and getattr(content, "version", None) == "it-v1", "built at init"
    result = stack.ask({"user_id": "first-visitor", "k": 10, "context": {"device": "web"}}, online)
    assert result.cold_start and result.degraded == [], result.failures
    assert result.source_counts.get("content", 0) > 0 and len(result.items) == 10


# ---- fallbacks --------------------------------------------------------------------------------
def test_redis_down_degrades_within_the_budget(stack: Stack) -> None:
    user_id, _ = stack.known_user()
    online = stack.online(
        REDIS_URL=f"redis://127.0.0.1:{free_port()}/0", READ_TIMEOUT_MS="50", REQUEST_BUDGET_MS="100"
    )
    result = stack.ask({"user_id": user_id, "k": 10}, online)
    assert set(result.degraded) == {"candidate_cache", "session", "trending"}
    assert len(result.items) == 10 and result.model_version == "it-v1"
    assert result.took_ms < 400
    assert (
        "redis" in online.health()["dependencies"]["redis"]
        or online.health()["dependencies"]["redis"] != "ok"
    )


def test_slow_dynamodb_degrades_user_features_and_keeps_the_deadline(stack: Stack) -> None:
    user_id, _ = stack.known_user()
    s = stack.settings(READ_TIMEOUT_MS="60", REQUEST_BUDGET_MS="120")
    deps = aws_dependencies(s)
    real = deps.users
    assert real is not None

    class SlowUsers:
        def get(self, uid: str) -> UserFeatures | None:
            time.sleep(0.5)  # DynamoDB throttled / a slow network path
            return real.get(uid)

    deps.users = SlowUsers()  # type: ignore[assignment]
    online = build_online_path(s, dependencies=deps, background_refresh=False)
    t0 = time.perf_counter()
    result = stack.ask({"user_id": user_id, "k": 10}, online)
    assert (time.perf_counter() - t0) < 0.4
    assert result.degraded == ["user_features"]
    assert "timed out after 60 ms" in result.failures["user_features"]
    # The bought item is unknown without the features... unless the session knows; the CF
    # list and the session still personalise the answer.
    assert result.source_counts["cf"] > 0 and result.source_counts["session"] > 0


def test_content_index_down_degrades_cold_start(stack: Stack, tmp_path: Path) -> None:
    empty = tmp_path / "no-index"
    empty.mkdir()
    result = stack.ask({"user_id": "never-seen", "k": 5}, stack.online(CONTENT_INDEX_DIR=str(empty)))
    assert result.degraded == ["content_index"]
    assert len(result.items) == 5


def test_no_model_answers_from_trending_flagged_degraded(stack: Stack) -> None:
    boto3.client("ssm").put_parameter(Name=POINTER, Value="none", Type="String", Overwrite=True)
    hot = stack.items.item_ids[:3]
    bucket = trending_bucket_of(time.time())
    RedisTrendingStore(stack.redis, KeyLayout(ENV)).add(
        {(bucket, hot[0]): 9.0, (bucket, hot[1]): 5.0, (bucket, hot[2]): 1.0}
    )
    online = stack.online()
    assert online.health()["status"] == "degraded"
    result = stack.ask({"user_id": "anyone", "k": 5}, online)
    assert result.model_version is None and "model" in result.degraded
    assert ids(result)[:3] == hot
    assert len(result.items) == 5, "topped up from the content index"


def test_hot_swap_through_s3_and_ssm_and_last_good_kept(stack: Stack, tmp_path: Path) -> None:
    online = stack.online(MODEL_REFRESH_S="0")
    assert online.models.current() is not None and online.models.current().version == "it-v1"  # type: ignore[union-attr]
    # v2: the same trained files under a new version.
    v2 = tmp_path / "it-v2"
    shutil.copytree(stack.trained.bundle_dir, v2)
    manifest = json.loads((v2 / MANIFEST).read_text())
    manifest["version"] = "it-v2"
    (v2 / MANIFEST).write_text(json.dumps(manifest))
    stack.models.upload(v2, "it-v2")
    stack.models.set_current("it-v2")
    assert stack.ask({"user_id": "u", "k": 1}, online).model_version == "it-v2"
    # v3 is corrupted in the bucket after upload: refused, v2 keeps serving.
    v3 = tmp_path / "it-v3"
    shutil.copytree(v2, v3)
    manifest["version"] = "it-v3"
    (v3 / MANIFEST).write_text(json.dumps(manifest))
    stack.models.upload(v3, "it-v3")
    boto3.client("s3").put_object(Bucket=BUCKET, Key="bundles/it-v3/ranker.tflite", Body=b"truncated")
    stack.models.set_current("it-v3")
    result = stack.ask({"user_id": "u", "k": 1}, online)
    assert result.model_version == "it-v2" and result.degraded == []
    assert "it-v3" in online.models.failed_versions
    assert "checksum mismatch for ranker.tflite" in online.models.failed_versions["it-v3"]


# ---- the handler with the events/ payloads ------------------------------------------------------


def load_app(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    for k, v in stack.env.items():
        monkeypatch.setenv(k, v)
    return load_function("recommend")


@pytest.mark.parametrize(
    ("payload", "status"),
    [
        ("recommend_get.json", 200),
        ("recommend_post.json", 200),
        ("recommend_cold_start.json", 200),
        ("recommend_bad_k.json", 400),
        ("recommend_malformed.json", 400),
        ("recommend_jwt_other_user.json", 200),
        ("health.json", 200),
    ],
)
def test_event_payloads_through_the_handler(
    stack: Stack, monkeypatch: pytest.MonkeyPatch, payload: str, status: int
) -> None:
    app = load_app(stack, monkeypatch)
    event = json.loads((ROOT / "events" / payload).read_text())
    resp = app.handler(event, LambdaContext())
    body = json.loads(resp["body"])
    assert resp["statusCode"] == status, body
    if payload == "health.json":
        assert body["model_version"] == "it-v1" and body["dependencies"] == {
            "redis": "ok",
            "candidate_cache": "ok",
            "user_features": "ok",
        }
    elif status == 200:
        response_validator().validate(body)
        assert body["model_version"] == "it-v1" and body["degraded"] == [] and body["items"]
    else:
        assert set(body) == {"error"} and body["error"]["message"]


def test_jwt_mode_through_the_handler(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    stack.env["AUTH_MODE"] = "JWT"
    app = load_app(stack, monkeypatch)
    event = json.loads((ROOT / "events" / "recommend_jwt_other_user.json").read_text())
    resp = app.handler(event, LambdaContext())
    assert resp["statusCode"] == 403
    event["queryStringParameters"] = {"k": "3"}
    resp = app.handler(event, LambdaContext())
    assert resp["statusCode"] == 200 and json.loads(resp["body"])["user_id"] == "user-42"


# ---- a Redis that restarts empty -----------------------------------------------------------------
def cf_candidates(result: RecommendationResult) -> int:
    return result.source_counts.get("cf", 0)


def test_an_emptied_candidate_cache_is_flagged_and_restored_from_the_bundle(stack: Stack) -> None:
    # GIVEN a known user served CF candidates, and a Redis that then restarts without its data
    online = stack.online()
    user_id, _ = stack.known_user()
    before = stack.ask({"user_id": user_id, "k": 10}, online)
    assert cf_candidates(before) > 0 and before.degraded == []
    assert online.health(0.5)["status"] == "ok"
    stack.redis.flushall()
    time.sleep(1.05)  # the reader's in-process pointer TTL

    # WHEN requests keep coming
    first = stack.ask({"user_id": user_id, "k": 10}, online)
    # THEN the loss is visible (not a silent 0 % CF) ...
    assert "candidate_cache" in first.degraded and cf_candidates(first) == 0
    # ... and the served bundle's lists are back within 2 s, with CF candidates in the answers
    t0 = time.monotonic()
    while True:
        again = stack.ask({"user_id": user_id, "k": 10}, online)
        if "candidate_cache" not in again.degraded or time.monotonic() - t0 > 3.0:
            break
        time.sleep(0.05)
    assert again.degraded == [] and cf_candidates(again) == cf_candidates(before)
    assert time.monotonic() - t0 <= 2.0 + 1.05  # restore + the pointer TTL
    version = stack.redis.get(KeyLayout(ENV).candidate_pointer())
    assert version == b"it-v1" and stack.redis.get(KeyLayout(ENV).candidate_restore_lock()) is None
    assert online.health(0.5)["status"] == "ok"


def test_health_names_every_dependency_without_internal_details(stack: Stack) -> None:
    online = stack.online()
    assert online.health(0.5) == {
        "status": "ok",
        "model_version": "it-v1",
        "model_error": None,
        "dependencies": {"redis": "ok", "candidate_cache": "ok", "user_features": "ok"},
    }
    stack.redis.flushall()
    time.sleep(1.05)
    health = online.health(0.5)
    assert health["status"] == "degraded" and health["dependencies"]["candidate_cache"] == "empty"
    # Redis and DynamoDB unreachable: which ones, not where they are or what they said.
    down = stack.online(REDIS_URL="redis://127.0.0.1:1/0", USER_FEATURES_TABLE="no-such-table")
    health = down.health(0.5)
    assert health["status"] == "degraded"
    assert set(health["dependencies"].values()) <= {"unavailable", "timeout"}
    assert "127.0.0.1" not in json.dumps(health) and "no-such-table" not in json.dumps(health)
