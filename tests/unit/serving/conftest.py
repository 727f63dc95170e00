"""Fixtures for the online path's unit tests: a small hand-made catalogue in a real bundle with
a tiny Keras model converted to TFLite (the ranker's code path, not its quality, is under test;
integration tests use a bundle trained by recpipe.training)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from recpipe.bundle import write_bundle
from recpipe.domain.features import N_FEATURES
from serving_catalogue import make_items, make_neighbours


@pytest.fixture(scope="session")
def tiny_ranker(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """A real TFLite model ([n, N_FEATURES] -> [n, 1]) that prefers high popularity and CF scores."""
    tf = pytest.importorskip("tensorflow")
    import keras
    from recpipe.domain.features import FEATURE_NAMES

    inp = keras.Input(shape=(N_FEATURES,), dtype="float32")
    out = keras.layers.Dense(1, use_bias=True)(inp)
    model = keras.Model(inp, out)
    weights = np.zeros((N_FEATURES, 1), np.float32)
    for name, w in (
        ("cf_score", 2.0),
        ("item_popularity", 1.0),
        ("session_max_sim", 1.5),
        ("trending_score", 0.5),
    ):
        weights[FEATURE_NAMES.index(name), 0] = w
    model.layers[-1].set_weights([weights, np.zeros(1, np.float32)])
    export = tmp_path_factory.mktemp("tiny-ranker") / "saved"
    model.export(str(export), verbose=False)
    converted: bytes = tf.lite.TFLiteConverter.from_saved_model(str(export)).convert()
    return converted


BundleFactory = Callable[..., Path]


@pytest.fixture()
def make_bundle(tmp_path: Path, tiny_ranker: bytes) -> BundleFactory:
    def build(version: str = "v1", *, ranker: bytes | None = None, root: Path | None = None) -> Path:
        items = make_items()
        out = (root or tmp_path) / version
        write_bundle(
            out,
            version=version,
            items=items,
            neighbours=make_neighbours(items),
            ranker_tflite=tiny_ranker if ranker is None else ranker,
        )
        return out

    return build
