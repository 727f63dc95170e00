"""Item categories for the updater's category affinity, from the current model bundle.

The updater needs only `item -> categories`, so it reads the bundle's item table (not the
ranker) and keeps it per container, re-checking the model pointer every `refresh_s`. An unknown
item, or no bundle at all, gives no categories: the event still counts (recent items, counts,
cart), it just adds no affinity. A bundle that cannot be read keeps the previous table.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from recpipe.bundle import ITEMS_JSON, ITEMS_NPZ, MANIFEST, BundleError

logger = logging.getLogger(__name__)

#: Pointer values meaning "no model yet" (as recpipe.adapters.s3_models reads them).
NO_VERSION = ("", "none", "-")
#: Returns (version, bundle directory) of the current bundle, or None when there is none yet.
BundleLocator = Callable[[], tuple[str, Path] | None]


def local_bundle_locator(root: Path) -> BundleLocator:
    """A bundle directory, or a directory of versions with a CURRENT file naming one."""

    def locate() -> tuple[str, Path] | None:
        if (root / MANIFEST).is_file():
            return str(json.loads((root / MANIFEST).read_text())["version"]), root
        pointer = root / "CURRENT"
        if pointer.is_file() and (version := pointer.read_text().strip()):
            return version, root / version
        return None

    return locate


def s3_bundle_locator(ssm: Any, s3: Any, pointer_param: str, bucket: str, cache_dir: Path) -> BundleLocator:
    """The version named by the SSM pointer; only the item-table files are downloaded."""

    def locate() -> tuple[str, Path] | None:
        try:
            version = ssm.get_parameter(Name=pointer_param)["Parameter"]["Value"].strip()
        except ssm.exceptions.ParameterNotFound:
            return None
        if version.lower() in NO_VERSION:  # the pointer before the first promotion
            return None
        dest = cache_dir / version
        if not (dest / MANIFEST).is_file():
            dest.mkdir(parents=True, exist_ok=True)
            for name in (ITEMS_JSON, ITEMS_NPZ, MANIFEST):  # manifest last: marks completion
                s3.download_file(bucket, f"bundles/{version}/{name}", str(dest / name))
        return version, dest

    return locate


class ItemCategories:
    """Callable `item_id -> categories` for FeatureUpdater."""

    def __init__(
        self,
        locate: BundleLocator | None,
        *,
        refresh_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._locate = locate
        self._refresh_s = refresh_s
        self._clock = clock
        self._checked_at = float("-inf")
        self.version: str | None = None
        self._table: dict[str, tuple[str, ...]] = {}

    def __call__(self, item_id: str) -> Sequence[str]:
        self._maybe_refresh()
        return self._table.get(item_id, ())

    def _maybe_refresh(self) -> None:
        if self._locate is None or self._clock() - self._checked_at < self._refresh_s:
            return
        self._checked_at = self._clock()
        try:
            found = self._locate()
            if found is None or found[0] == self.version:
                return
            version, path = found
            table = read_item_categories(path)
        except Exception as exc:  # boto, OS, format errors alike: keep serving the last table
            logger.warning("item categories not refreshed, keeping version %s: %s", self.version, exc)
            return
        self._table = table
        self.version = version


def read_item_categories(bundle_dir: Path) -> dict[str, tuple[str, ...]]:
    """item id -> categories from a bundle's item table (items.json + items.npz only: the
    ranker and the feature spec are the serving path's concern)."""
    meta = json.loads((bundle_dir / ITEMS_JSON).read_text())
    item_ids, vocab = list(meta["item_ids"]), list(meta["category_vocab"])
    with np.load(bundle_dir / ITEMS_NPZ, allow_pickle=False) as arr:
        category_ids = arr["category_ids"]
    if len(category_ids) != len(item_ids):
        raise BundleError(f"items.npz has {len(category_ids)} rows for {len(item_ids)} item ids")
    return {
        item_id: tuple(vocab[c] for c in row if 0 <= c < len(vocab))
        for item_id, row in zip(item_ids, category_ids.tolist(), strict=True)
    }
