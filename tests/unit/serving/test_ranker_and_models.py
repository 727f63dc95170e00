"""The Ranker (TFLite, one invoke per request) and the ModelProvider (verify, hot-swap, last good)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from recpipe.domain.features import FEATURE_NAMES, N_FEATURES
from recpipe.serving.model_provider import LOCAL_POINTER, LocalBundleSource, ModelProvider
from recpipe.serving.ranker import Ranker, RankerError, bucket_of

WEIGHTS = {"cf_score": 2.0, "item_popularity": 1.0, "session_max_sim": 1.5, "trending_score": 0.5}


def expected_scores(x: np.ndarray) -> np.ndarray:
    w = np.zeros(N_FEATURES, np.float32)
    for name, v in WEIGHTS.items():
        w[FEATURE_NAMES.index(name)] = v
    return x @ w


@pytest.mark.parametrize("n", [1, 5, 16, 17, 500, 1000])
def test_scores_match_the_model_whatever_the_bucket(tiny_ranker: bytes, n: int) -> None:
    ranker = Ranker(tiny_ranker)
    x = np.random.default_rng(n).random((n, N_FEATURES), dtype=np.float32)
    scores = ranker.score(x)
    assert scores.shape == (n,)
    np.testing.assert_allclose(scores, expected_scores(x), rtol=1e-5, atol=1e-5)
    # Same answer again (the slot's buffers are reused, not stale).
    np.testing.assert_allclose(ranker.score(x[::-1]), expected_scores(x[::-1]), rtol=1e-5, atol=1e-5)


def test_buckets_are_powers_of_two() -> None:
    assert [bucket_of(n) for n in (1, 16, 17, 100, 500, 1000, 1025)] == [16, 16, 32, 128, 512, 1024, 2048]


def test_wrong_feature_width_is_refused(tiny_ranker: bytes) -> None:
    with pytest.raises(RankerError, match=f"expected \\[n, {N_FEATURES}\\]"):
        Ranker(tiny_ranker).score(np.zeros((3, N_FEATURES + 1), np.float32))


def test_garbage_model_is_refused() -> None:
    with pytest.raises(RankerError, match="cannot be loaded"):
        Ranker(b"this is not a flatbuffer" * 10)


# ---- ModelProvider ----------------------------------------------------------------------------
class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def point(root: Path, version: str) -> None:
    (root / LOCAL_POINTER).write_text(version)


def provider(root: Path, events: list[tuple[str, dict[str, Any]]], clock: Clock) -> ModelProvider:
    return ModelProvider(
        LocalBundleSource(root),
        refresh_s=60.0,
        background=False,
        on_event=lambda name, detail: events.append((name, detail)),
        clock=clock,
    )


def test_loads_once_then_hot_swaps_when_the_pointer_moves(make_bundle: Any, tmp_path: Path) -> None:
    root = tmp_path / "bundles"
    make_bundle("v1", root=root)
    point(root, "v1")
    events: list[tuple[str, dict[str, Any]]] = []
    clock = Clock()
    models = provider(root, events, clock)
    first = models.current()
    assert first is not None and first.version == "v1"
    make_bundle("v2", root=root)
    point(root, "v2")
    clock.t = 30.0
    assert models.current() is first, "the pointer is not re-read before refresh_s"
    clock.t = 61.0
    second = models.current()
    assert second is not None and second.version == "v2"
    assert [e[0] for e in events] == ["model_loaded", "model_loaded"]
    assert events[1][1]["previous"] == "v1"


def test_a_corrupt_new_version_is_refused_and_the_last_good_model_kept(
    make_bundle: Any, tmp_path: Path
) -> None:
    root = tmp_path / "bundles"
    make_bundle("v1", root=root)
    point(root, "v1")
    events: list[tuple[str, dict[str, Any]]] = []
    clock = Clock()
    models = provider(root, events, clock)
    assert models.current() is not None
    bad = make_bundle("v2", root=root)
    with (bad / "items.json").open("a") as f:
        f.write(" ")  # checksum no longer matches the manifest
    point(root, "v2")
    clock.t = 61.0
    model = models.current()
    assert model is not None and model.version == "v1"
    assert events[-1][0] == "model_load_failed"
    assert "checksum mismatch for items.json" in events[-1][1]["reason"]
    assert events[-1][1]["serving"] == "v1"
    # A refused version is not retried at every check.
    clock.t = 122.0
    models.current()
    assert [e[0] for e in events].count("model_load_failed") == 1
    assert "v2" in models.failed_versions


def test_a_bundle_for_another_feature_spec_is_refused(make_bundle: Any, tmp_path: Path) -> None:
    root = tmp_path / "bundles"
    path = make_bundle("v1", root=root)
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["feature_spec"]["sha256"] = "0" * 64
    (path / "manifest.json").write_text(json.dumps(manifest))
    point(root, "v1")
    events: list[tuple[str, dict[str, Any]]] = []
    models = provider(root, events, Clock())
    assert models.current() is None
    assert "another feature spec" in events[-1][1]["reason"]


def test_a_model_with_non_finite_output_fails_the_smoke_test(make_bundle: Any, tmp_path: Path) -> None:
    tf = pytest.importorskip("tensorflow")
    import keras

    inp = keras.Input(shape=(N_FEATURES,), dtype="float32")
    out = keras.layers.Lambda(lambda t: tf.math.log(-1.0 - tf.abs(t[:, :1])))(inp)  # log of a negative: NaN
    export = tmp_path / "nan-model"
    keras.Model(inp, out).export(str(export), verbose=False)
    nan_model = tf.lite.TFLiteConverter.from_saved_model(str(export)).convert()
    root = tmp_path / "bundles"
    make_bundle("v1", root=root, ranker=nan_model)
    point(root, "v1")
    events: list[tuple[str, dict[str, Any]]] = []
    models = provider(root, events, Clock())
    assert models.current() is None
    assert events[-1][0] == "model_load_failed"
    assert "non-finite" in events[-1][1]["reason"]


def test_no_published_model_and_unreadable_pointer(tmp_path: Path, make_bundle: Any) -> None:
    events: list[tuple[str, dict[str, Any]]] = []
    clock = Clock()
    models = provider(tmp_path, events, clock)
    assert models.current() is None
    assert events[-1][0] == "model_missing"

    class BrokenSource(LocalBundleSource):
        def current_version(self) -> str | None:
            raise OSError("ssm: throttled")

    root = tmp_path / "b"
    make_bundle("v1", root=root)
    point(root, "v1")
    models = provider(root, events, clock)
    assert models.current() is not None
    models.source = BrokenSource(root)
    clock.t = 100.0
    assert models.current() is not None and models.current().version == "v1"  # type: ignore[union-attr]
    assert events[-1][0] == "model_pointer_failed"


def test_a_failed_download_is_retried_at_the_next_check(make_bundle: Any, tmp_path: Path) -> None:
    root = tmp_path / "bundles"
    make_bundle("v1", root=root)
    point(root, "v1")
    attempts = []

    class FlakySource(LocalBundleSource):
        def fetch(self, version: str) -> Path:
            attempts.append(version)
            if len(attempts) == 1:
                raise ConnectionError("s3: connection reset")
            return super().fetch(version)

    events: list[tuple[str, dict[str, Any]]] = []
    clock = Clock()
    models = ModelProvider(
        FlakySource(root),
        refresh_s=60,
        background=False,
        on_event=lambda n, d: events.append((n, d)),
        clock=clock,
    )
    assert models.current() is None
    assert events[-1][0] == "model_fetch_failed"
    clock.t = 61.0
    assert models.current() is not None
    assert attempts == ["v1", "v1"]


def test_background_refresh_swaps_without_blocking_the_request(make_bundle: Any, tmp_path: Path) -> None:
    root = tmp_path / "bundles"
    make_bundle("v1", root=root)
    point(root, "v1")
    clock = Clock()
    models = ModelProvider(LocalBundleSource(root), refresh_s=60, background=True, clock=clock)
    assert models.current() is not None  # the first load is synchronous
    make_bundle("v2", root=root)
    point(root, "v2")
    clock.t = 61.0
    served = models.current()
    assert served is not None
    import time

    deadline = time.monotonic() + 10
    while (models.model is None or models.model.version != "v2") and time.monotonic() < deadline:
        time.sleep(0.01)
    assert models.model is not None and models.model.version == "v2"
