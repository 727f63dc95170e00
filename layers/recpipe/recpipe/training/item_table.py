"""Build the bundle's ItemTable from a window of the interaction log, the catalogue and CF factors."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from recpipe.domain.catalogue import InteractionLog, ItemMeta
from recpipe.domain.items import MAX_ITEM_CATEGORIES, N_DAYPARTS, ItemTable


def item_universe(log: InteractionLog, catalogue: Sequence[ItemMeta]) -> list[str]:
    """Dense item order: the log's item codes first (so a log code *is* the item index),
    then catalogue items that were never interacted with (cold-start items)."""
    seen = set(log.item_vocab)
    return list(log.item_vocab) + [m.item_id for m in catalogue if m.item_id not in seen]


def _log_scaled(counts: npt.NDArray[np.float64]) -> npt.NDArray[np.float32]:
    top = float(counts.max()) if counts.size else 0.0
    if top <= 0:
        return np.zeros(counts.shape, np.float32)
    return (np.log1p(counts) / np.log1p(top)).astype(np.float32)


def build_item_table(
    window: InteractionLog,
    item_ids: list[str],
    catalogue: Sequence[ItemMeta],
    embeddings: npt.NDArray[np.float32],
    *,
    default_first_seen: float,
) -> ItemTable:
    """`window` holds the interactions the table describes; its item codes index `item_ids`."""
    n = len(item_ids)
    meta = {m.item_id: m for m in catalogue}
    vocab: dict[str, int] = {}
    cat_ids = np.full((n, MAX_ITEM_CATEGORIES), -1, np.int32)
    titles: list[str] = []
    created = np.full(n, np.inf)
    for i, item_id in enumerate(item_ids):
        m = meta.get(item_id)
        titles.append(m.title if m else item_id)
        if m is None:
            continue
        for j, cat in enumerate(m.categories[:MAX_ITEM_CATEGORIES]):
            cat_ids[i, j] = vocab.setdefault(cat, len(vocab))
        if m.created_ts is not None:
            created[i] = m.created_ts

    counts = np.bincount(window.items, minlength=n).astype(np.float64)[:n]
    hours = ((window.ts // 3600) % 24).astype(np.int64)
    dayparts = np.zeros((n, N_DAYPARTS), np.float32)
    for d in range(N_DAYPARTS):
        mask = (hours // 6) == d
        dayparts[:, d] = _log_scaled(np.bincount(window.items[mask], minlength=n).astype(np.float64)[:n])

    first = np.full(n, np.inf)
    if len(window):
        np.minimum.at(first, window.items, window.ts)
    first_seen = np.minimum(first, created)
    first_seen[~np.isfinite(first_seen)] = default_first_seen

    emb = np.zeros((n, embeddings.shape[1]), np.float32)
    emb[: len(embeddings)] = embeddings[:n]
    return ItemTable(
        item_ids=item_ids,
        titles=titles,
        category_vocab=list(vocab),
        category_ids=cat_ids,
        popularity=_log_scaled(counts),
        daypart_popularity=dayparts,
        first_seen=first_seen.astype(np.float64),
        embeddings=emb,
    )
