"""Fixtures for the online path's unit tests: a small hand-made catalogue in a real bundle with
a tiny Keras model converted to TFLite (the ranker's code path, not its quality, is under test;
integration tests use a bundle trained by recpipe.training)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from recpipe.bundle import Neighbours, write_bundle
from recpipe.domain.features import N_FEATURES
from recpipe.domain.items import MAX_ITEM_CATEGORIES, N_DAYPARTS, ItemTable

CATEGORIES = ["books", "music", "games", "garden", "kitchen"]
N_ITEMS = 60


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


def make_items(n: int = N_ITEMS, seed: int = 7) -> ItemTable:
    """Item i has category CATEGORIES[i % 5] (and 'kitchen' too for every 7th); popularity falls with i."""
    rng = np.random.default_rng(seed)
    cats = np.full((n, MAX_ITEM_CATEGORIES), -1, np.int32)
    cats[:, 0] = np.arange(n) % len(CATEGORIES)
    cats[::7, 1] = CATEGORIES.index("kitchen")
    emb = rng.normal(size=(n, 8)).astype(np.float32)
    # Items of one category point the same way, so MMR has something to diversify.
    for c in range(len(CATEGORIES)):
        emb[cats[:, 0] == c, c] += 4.0
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    pop = np.linspace(1.0, 0.0, n, dtype=np.float32)
    return ItemTable(
        item_ids=[f"i{i}" for i in range(n)],
        titles=[f"Item {i}" for i in range(n)],
        category_vocab=list(CATEGORIES),
        category_ids=cats,
        popularity=pop,
        daypart_popularity=np.tile(pop[:, None], (1, N_DAYPARTS)),
        first_seen=np.full(n, time.time() - 30 * 86400.0),
        embeddings=emb,
    )


def make_neighbours(items: ItemTable, k: int = 10) -> Neighbours:
    sims = items.embeddings @ items.embeddings.T
    np.fill_diagonal(sims, -np.inf)
    idx = np.argsort(-sims, axis=1)[:, :k].astype(np.int32)
    return Neighbours(indices=idx, scores=np.take_along_axis(sims, idx, axis=1).astype(np.float16))


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
