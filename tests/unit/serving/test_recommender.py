"""The Recommender with in-memory stores and a real TFLite ranker: rules, cold start, fallbacks."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
from recpipe.adapters.content_index import InProcessContentIndex
from recpipe.config import RecommendSettings, load_settings
from recpipe.domain.events import Event
from recpipe.domain.features import FEATURE_NAMES
from recpipe.domain.user import UserFeatures, apply_events
from recpipe.ports import ContentDoc, DependencyError, SessionEntry
from recpipe.serving.model_provider import LocalBundleSource
from recpipe.serving.recommender import RecommendationResult
from recpipe.serving.request import parse_body
from recpipe.serving.runtime import Dependencies, OnlinePath, build_online_path
from recpipe_dev.testing.fakes_candidates import InMemoryCandidateCache
from recpipe_dev.testing.fakes_stream import (
    InMemorySessionStore,
    InMemoryTrendingStore,
    InMemoryUserFeatureStore,
)
from recpipe_dev.testing.settings import function_env
from serving_catalogue import CATEGORIES, make_items

NOW = time.time()
ITEMS = make_items()


class Failing:
    """Any store whose every call raises (a dependency that is down)."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    def __getattr__(self, name: str) -> Any:
        def fail(*args: Any, **kwargs: Any) -> Any:
            raise self.error

        return fail


class SlowFirstCall:
    """A dependency whose first call pays a one-off cost (connection set-up, the SDK's lazy
    loading, an index built on first use), as in a fresh container."""

    def __init__(self, inner: Any, first_s: float) -> None:
        self.inner = inner
        self.first_s = first_s
        self.calls = 0
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        fn = getattr(self.inner, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                self.calls += 1
                first = self.calls == 1
            if first:
                time.sleep(self.first_s)
            return fn(*args, **kwargs)

        return call


def user_with_history(user_id: str = "u1") -> UserFeatures:
    def ev(n: int, item: str, type_: str) -> Event:
        return Event(event_id=f"e{n}", user_id=user_id, item_id=item, type=type_, ts=NOW - 3600 + n)  # type: ignore[arg-type]

    events = [ev(1, "i1", "purchase"), ev(2, "i2", "add_to_cart"), ev(3, "i6", "view"), ev(4, "i11", "click")]
    state = apply_events(None, events, {i: ITEMS.categories_of(i) for i in ("i1", "i2", "i6", "i11")})
    assert state is not None
    return state


class World:
    def __init__(self, bundle_root: Path) -> None:
        self.bundle_root = bundle_root
        self.cache = InMemoryCandidateCache()
        self.sessions = InMemorySessionStore()
        self.users = InMemoryUserFeatureStore()
        self.trending = InMemoryTrendingStore()
        self.content: Any = InProcessContentIndex(
            docs=[
                ContentDoc(
                    f"i{i}",
                    f"Item {i}",
                    tuple(ITEMS.categories(i)),
                    popularity=float(ITEMS.popularity[i]),
                )
                for i in range(len(ITEMS))
            ]
        )
        self.settings: dict[str, str] = {
            "MAX_CANDIDATES": "60",
            "READ_TIMEOUT_MS": "200",
            "REQUEST_BUDGET_MS": "400",
        }

    def online(self, **overrides: Any) -> OnlinePath:
        deps = Dependencies(
            candidates=overrides.get("candidates", self.cache),
            sessions=overrides.get("sessions", self.sessions),
            users=overrides.get("users", self.users),
            trending=overrides.get("trending", self.trending),
            content=overrides.get("content", self.content),
        )
        return build_online_path(
            load_settings(RecommendSettings, function_env(**self.settings)), dependencies=deps, source=LocalBundleSource(self.bundle_root),
            background_refresh=False, warm=overrides.get("warm", True),
        )  # fmt: skip

    def ask(
        self, body: dict[str, Any], *, exclude_seen: bool = True, **overrides: Any
    ) -> RecommendationResult:
        import json

        recommender = self.online(**overrides).recommender
        recommender.exclude_seen = exclude_seen
        return recommender.recommend(parse_body(json.dumps(body)))


@pytest.fixture()
def world(make_bundle: Any, tmp_path: Path) -> World:
    return World(make_bundle("v1", root=tmp_path / "bundles"))


def ids(result: RecommendationResult) -> list[str]:
    return [i["item_id"] for i in result.items]


def test_never_returns_bought_carted_or_excluded_items(world: World) -> None:
    world.users.items["u1"] = user_with_history()
    world.cache.publish(
        "c1", [("u1", [("i1", 0.99), ("i2", 0.98), ("i3", 0.97), ("i4", 0.96), ("i5", 0.95)])], {}
    )
    world.sessions.append("u1", [SessionEntry("i7", "add_to_cart", NOW - 10), SessionEntry("i8", "add_to_cart", NOW - 9),
                                 SessionEntry("i8", "remove_from_cart", NOW - 5)])  # fmt: skip
    body = {"user_id": "u1", "k": 100, "exclude": ["i3"], "context": {"cart": ["i4"]}}
    # The hard rules alone (the seen-items rule off): what is bought/carted/excluded never shows.
    result = world.ask(body, exclude_seen=False)
    shown = set(ids(result))
    assert result.degraded == []
    assert not {"i1", "i2", "i3", "i4", "i7"} & shown, (
        "bought, stored cart, excluded, request cart, session cart"
    )
    assert "i8" in shown, "removed from the cart again: may be shown"
    assert "i5" in shown and len(shown) == len(ids(result)) == len(ITEMS) - 5


def test_items_the_user_interacted_with_are_left_out_by_default(world: World) -> None:
    # Stored history: i1 purchase, i2 add_to_cart, i6 view, i11 click; live session below.
    world.users.items["u1"] = user_with_history()
    world.cache.publish("c1", [("u1", [("i6", 0.99), ("i11", 0.98), ("i12", 0.97), ("i5", 0.95)])], {})
    world.sessions.append("u1", [SessionEntry("i8", "add_to_cart", NOW - 9), SessionEntry("i8", "remove_from_cart", NOW - 5),
                                 SessionEntry("i12", "view", NOW - 2)])  # fmt: skip
    seen = {"i1", "i2", "i6", "i11", "i8", "i12"}
    everything = world.ask({"user_id": "u1", "k": 100}, exclude_seen=False)
    assert {"i6", "i11", "i8", "i12"} <= set(ids(everything)), "rankable when the rule is off"
    result = world.ask({"user_id": "u1", "k": 100})
    assert result.degraded == []
    assert not seen & set(ids(result)), "seen in the stored history or the live session"
    assert len(result.items) == len(ITEMS) - len(seen) and "i5" in ids(result)
    # What was seen still drives the answer: neighbours of the session item, session features.
    assert result.source_counts["session"] > 0
    # No model: the trending fallback leaves them out too.
    world.trending.add({(int(NOW // 300), "i6"): 5.0, (int(NOW // 300), "i9"): 3.0})
    world.bundle_root = world.bundle_root.parent / "none"
    world.bundle_root.mkdir()
    fallback = world.ask({"user_id": "u1", "k": 5})
    assert fallback.degraded == ["model"] and ids(fallback)[0] == "i9"
    assert not seen & set(ids(fallback))


def test_category_filters(world: World) -> None:
    result = world.ask({"user_id": "u1", "k": 20, "filters": {"include_categories": ["music", "games"]}})
    assert result.items and all({"music", "games"} & set(i["categories"]) for i in result.items)
    result = world.ask({"user_id": "u1", "k": 100, "filters": {"exclude_categories": ["books"]}})
    assert result.items and all("books" not in i["categories"] for i in result.items)


@pytest.mark.parametrize("k", [1, 7, 100])
def test_k_items_unique_and_best_first(world: World, k: int) -> None:
    result = world.ask({"user_id": "u1", "k": k})
    assert len(result.items) == min(k, len(ITEMS))
    assert len(set(ids(result))) == len(result.items)
    scores = [i["score"] for i in result.items]
    assert scores == sorted(scores, reverse=True)
    assert result.model_version == "v1" and len(result.recommendation_id) == 32


def test_explain_adds_every_feature_by_name(world: World) -> None:
    world.cache.publish("c1", [("u1", [("i30", 0.9)])], {})
    result = world.ask({"user_id": "u1", "k": 3, "explain": True})
    for item in result.items:
        assert list(item["features"]) == list(FEATURE_NAMES)
    top = next(i for i in result.items if i["item_id"] == "i30")
    # the CF score relative to the pool's best CF candidate
    assert top["features"]["cf_score"] == pytest.approx(1.0) and top["features"]["src_cf"] == 1.0
    second = next((i for i in result.items if i["item_id"] == "i31"), None)
    assert second is None or second["features"]["cf_score"] == pytest.approx(0.5)
    assert "features" not in world.ask({"user_id": "u1", "k": 3}).items[0]


def test_session_neighbours_explain_themselves(world: World) -> None:
    world.users.items["u1"] = user_with_history()
    world.sessions.append("u1", [SessionEntry("i12", "view", NOW - 5)])
    result = world.ask({"user_id": "u1", "k": 100})
    reasons = {i["reason"] for i in result.items if "session" in i["sources"]}
    assert reasons == {"because you viewed Item 12"}


def test_unknown_user_gets_a_cold_start_answer_from_the_content_index(world: World) -> None:
    world.settings["MAX_CANDIDATES"] = "20"
    result = world.ask({"user_id": "brand-new", "k": 10, "filters": {"include_categories": ["garden"]}})
    assert result.cold_start and result.degraded == []
    assert len(result.items) == 10
    assert all("garden" in i["categories"] for i in result.items)
    assert result.source_counts.get("content", 0) > 0
    assert any("content" in i["sources"] for i in result.items)


def test_content_index_down_degrades_the_cold_start(world: World) -> None:
    result = world.ask({"user_id": "brand-new", "k": 5}, content=Failing(DependencyError("opensearch: 503")))
    assert result.degraded == ["content_index"]
    assert len(result.items) == 5 and all(i["sources"] == ["popular"] for i in result.items)


@pytest.mark.parametrize(
    ("store", "name"),
    [
        ("candidates", "candidate_cache"),
        ("sessions", "session"),
        ("users", "user_features"),
        ("trending", "trending"),
    ],
)
def test_each_failed_dependency_is_named_and_the_answer_still_comes(
    world: World, store: str, name: str
) -> None:
    world.users.items["u1"] = user_with_history()
    result = world.ask({"user_id": "u1", "k": 5}, **{store: Failing(DependencyError("down"))})
    assert result.degraded == [name]
    assert len(result.items) == 5
    assert "down" in result.failures[name]


def test_purchases_are_still_excluded_when_the_user_store_is_down_but_the_session_knows(world: World) -> None:
    world.sessions.append("u1", [SessionEntry("i0", "purchase", NOW - 5)])
    result = world.ask({"user_id": "u1", "k": 100}, users=Failing(DependencyError("down")))
    assert "i0" not in ids(result)


def test_no_model_at_all_answers_with_popularity_flagged_degraded(world: World, tmp_path: Path) -> None:
    world.bundle_root = tmp_path / "empty"
    world.bundle_root.mkdir()
    world.trending.add({(int(NOW // 300), "i9"): 5.0, (int(NOW // 300), "i8"): 3.0})
    result = world.ask({"user_id": "u1", "k": 4})
    assert result.model_version is None
    assert result.degraded == ["model"]
    assert ids(result)[:2] == ["i9", "i8"]
    assert len(result.items) == 4, "topped up from the content index"


def test_a_ranker_failing_at_request_time_falls_back_to_popularity(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    online = world.online()
    model = online.models.current()
    assert model is not None

    def broken(x: Any) -> Any:
        raise RuntimeError("tflite: invoke failed")

    monkeypatch.setattr(model.ranker, "score", broken)
    result = online.recommender.recommend(parse_body('{"user_id": "u1", "k": 3}'))
    assert result.degraded == ["model"] and ids(result) == ["i0", "i1", "i2"]


def test_diversity_widens_the_categories_shown(world: World) -> None:
    # The CF list only holds books, and the ranker weighs CF scores heavily.
    books = [(f"i{i}", 1.0) for i in range(0, len(ITEMS), len(CATEGORIES))]
    world.cache.publish("c1", [("u1", books)], {})

    def spread(d: float) -> int:
        result = world.ask({"user_id": "u1", "k": 5, "diversity": d})
        return len({i["categories"][0] for i in result.items})

    assert spread(0.0) == 1
    assert spread(1.0) >= 3


@pytest.mark.parametrize("warm", [False, True])
def test_first_cold_start_request_after_init_is_not_degraded(world: World, warm: bool) -> None:
    # Read timeout 200 ms: a 300 ms first call misses it unless init has already paid for it.
    users, content = SlowFirstCall(world.users, 0.3), SlowFirstCall(world.content, 0.3)
    online = world.online(users=users, content=content, warm=warm)
    # Warm-up: each read and one search with a long deadline, then one request end to end.
    assert (users.calls, content.calls) == ((2, 2) if warm else (0, 0))
    result = online.recommender.recommend(parse_body('{"user_id": "brand-new", "k": 10}'))
    assert result.cold_start and len(result.items) == 10
    if warm:
        assert result.degraded == [] and result.source_counts["content"] > 0
    else:
        assert result.degraded == ["user_features", "content_index"], "what warming at init avoids"


def test_warm_up_with_dependencies_down_does_not_fail_init(world: World) -> None:
    down = Failing(DependencyError("connection refused"))
    online = world.online(users=down, sessions=down, candidates=down, trending=down, content=down)
    result = online.recommender.recommend(parse_body('{"user_id": "u1", "k": 3}'))
    assert len(result.items) == 3 and "user_features" in result.degraded
