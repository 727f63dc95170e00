"""A bundle that fails verification is refused, so serving can keep its last good model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from recpipe.bundle import ITEMS_NPZ, MANIFEST, RANKER, BundleError, Neighbours, load_bundle, write_bundle
from recpipe.domain.items import ItemTable


def _write(tmp_path: Path) -> Path:
    n = 3
    items = ItemTable(
        item_ids=["a", "b", "c"],
        titles=["A", "B", "C"],
        category_vocab=["x"],
        category_ids=np.array([[0], [0], [-1]], np.int32),
        popularity=np.ones(n, np.float32),
        daypart_popularity=np.ones((n, 4), np.float32),
        first_seen=np.zeros(n),
        embeddings=np.eye(n, dtype=np.float32),
    )
    neighbours = Neighbours(
        indices=np.array([[1, -1], [0, 2], [1, -1]], np.int32), scores=np.ones((n, 2), np.float16)
    )
    write_bundle(
        tmp_path, version="v1", items=items, neighbours=neighbours, ranker_tflite=b"not really a model"
    )
    return tmp_path


def test_written_bundle_loads_back(tmp_path: Path) -> None:
    bundle = load_bundle(_write(tmp_path))
    assert bundle.version == "v1"
    assert bundle.items.index == {"a": 0, "b": 1, "c": 2}
    assert bundle.neighbours.of(0)[0].tolist() == [1]


def test_tampered_file_is_refused(tmp_path: Path) -> None:
    _write(tmp_path)
    (tmp_path / RANKER).write_bytes(b"tampered")
    with pytest.raises(BundleError, match="checksum mismatch for ranker.tflite"):
        load_bundle(tmp_path)


def test_missing_file_is_refused(tmp_path: Path) -> None:
    _write(tmp_path)
    (tmp_path / ITEMS_NPZ).unlink()
    with pytest.raises(BundleError, match="missing"):
        load_bundle(tmp_path)


def test_other_feature_spec_is_refused(tmp_path: Path) -> None:
    _write(tmp_path)
    manifest = json.loads((tmp_path / MANIFEST).read_text())
    manifest["feature_spec"]["sha256"] = "0" * 64
    (tmp_path / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="another feature spec"):
        load_bundle(tmp_path)


def test_garbage_manifest_is_refused(tmp_path: Path) -> None:
    (tmp_path / MANIFEST).write_text("{nope")
    with pytest.raises(BundleError, match="not JSON"):
        load_bundle(tmp_path)
    with pytest.raises(BundleError, match="no manifest.json"):
        load_bundle(tmp_path / "missing")
