"""A small hand-made catalogue for the online path's unit tests (imported by name: the test
folders are not packages)."""

from __future__ import annotations

import time

import numpy as np
from recpipe.bundle import Neighbours
from recpipe.domain.items import MAX_ITEM_CATEGORIES, N_DAYPARTS, ItemTable

CATEGORIES = ["books", "music", "games", "garden", "kitchen"]
N_ITEMS = 60


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
