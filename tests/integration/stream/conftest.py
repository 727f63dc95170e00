"""Fixtures of the stream path's integration tests."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from recpipe.bundle import ITEMS_JSON, ITEMS_NPZ, MANIFEST

#: write_items(bundle_dir, version, {item_id: [categories]}): the item-table files of a bundle.
WriteItems = Callable[[Path, str, dict[str, list[str]]], None]


def _write_items(bundle_dir: Path, version: str, cats: dict[str, list[str]]) -> None:
    bundle_dir.mkdir(parents=True)
    vocab = sorted({c for cs in cats.values() for c in cs})
    ids = np.full((len(cats), 3), -1, np.int32)
    for row, cs in enumerate(cats.values()):
        ids[row, : len(cs)] = [vocab.index(c) for c in cs]
    (bundle_dir / ITEMS_JSON).write_text(
        json.dumps({"item_ids": list(cats), "titles": list(cats), "category_vocab": vocab})
    )
    np.savez(bundle_dir / ITEMS_NPZ, category_ids=ids)
    (bundle_dir / MANIFEST).write_text(json.dumps({"version": version}))


@pytest.fixture()
def write_items() -> WriteItems:
    return _write_items
