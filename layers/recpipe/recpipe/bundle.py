"""The model bundle: one versioned directory that training writes and serving loads.

    manifest.json   format, version, created, data window, feature spec, metrics, sha256 per file
    ranker.tflite   the ranking model (input [n, N_FEATURES] float32 -> output [n, 1] float32)
    items.npz       numeric item columns (see ItemTable)
    items.json      item ids, titles, category vocabulary
    neighbours.npz  item-item lists: `indices` int32 [n, K] (-1 padded), `scores` float16 [n, K]
    candidates.npz  optional: the CF lists published to the candidate cache, `items` int32
    candidates.json [users, K] (-1 padded, codes into `item_ids`) and `scores`; `user_ids`,
                    `item_ids`. Not read at load: serving restores an emptied cache from them.

Loading verifies every checksum and the feature spec before anything is used; a bundle that
fails is refused with BundleError so the caller can keep its last good model.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from recpipe.domain.features import feature_spec, feature_spec_hash
from recpipe.domain.items import ItemTable

BUNDLE_FORMAT = 1
MANIFEST = "manifest.json"
RANKER = "ranker.tflite"
ITEMS_NPZ = "items.npz"
ITEMS_JSON = "items.json"
NEIGHBOURS = "neighbours.npz"
BUNDLE_FILES = (RANKER, ITEMS_NPZ, ITEMS_JSON, NEIGHBOURS)
CANDIDATES_NPZ = "candidates.npz"
CANDIDATES_JSON = "candidates.json"
#: Travel with the bundle when present (model stores copy them), never needed to serve.
OPTIONAL_FILES = (CANDIDATES_NPZ, CANDIDATES_JSON)


class BundleError(Exception):
    """A bundle that must not be served: missing file, checksum or spec mismatch, bad arrays."""


@dataclass(slots=True)
class Neighbours:
    indices: npt.NDArray[np.int32]
    scores: npt.NDArray[np.float16]

    def of(self, item: int) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.float16]]:
        row = self.indices[item]
        keep = row >= 0
        return row[keep], self.scores[item][keep]


@dataclass(slots=True)
class Bundle:
    path: Path
    manifest: dict[str, Any]
    items: ItemTable
    neighbours: Neighbours

    @property
    def version(self) -> str:
        return str(self.manifest["version"])

    @property
    def ranker_path(self) -> Path:
        return self.path / RANKER


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_bundle(
    out_dir: Path,
    *,
    version: str,
    items: ItemTable,
    neighbours: Neighbours,
    ranker_tflite: bytes,
    metrics: dict[str, Any] | None = None,
    data_window: dict[str, Any] | None = None,
    params: dict[str, Any] | None = None,
) -> dict[str, Any]:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / RANKER).write_bytes(ranker_tflite)
    np.savez(
        out_dir / ITEMS_NPZ,
        category_ids=items.category_ids.astype(np.int32),
        popularity=items.popularity.astype(np.float32),
        daypart_popularity=items.daypart_popularity.astype(np.float32),
        first_seen=items.first_seen.astype(np.float64),
        embeddings=items.embeddings.astype(np.float32),
    )
    (out_dir / ITEMS_JSON).write_text(
        json.dumps(
            {"item_ids": items.item_ids, "titles": items.titles, "category_vocab": items.category_vocab}
        )
    )
    np.savez(
        out_dir / NEIGHBOURS,
        indices=neighbours.indices.astype(np.int32),
        scores=neighbours.scores.astype(np.float16),
    )
    manifest = {
        "format": BUNDLE_FORMAT,
        "version": version,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "data_window": data_window or {},
        "feature_spec": feature_spec(),
        "metrics": metrics or {},
        "params": params or {},
        "n_items": len(items),
        "files": {name: sha256_file(out_dir / name) for name in BUNDLE_FILES},
    }
    (out_dir / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True))
    return manifest


def read_manifest(bundle_dir: Path) -> dict[str, Any]:
    try:
        manifest = json.loads((bundle_dir / MANIFEST).read_text())
    except FileNotFoundError:
        raise BundleError(f"{bundle_dir}: no {MANIFEST}") from None
    except json.JSONDecodeError as exc:
        raise BundleError(f"{bundle_dir}/{MANIFEST}: not JSON ({exc})") from None
    if not isinstance(manifest, dict):
        raise BundleError(f"{MANIFEST} must be an object")
    for key in ("format", "version", "feature_spec", "files"):
        if key not in manifest:
            raise BundleError(f"{MANIFEST} lacks '{key}'")
    if manifest["format"] != BUNDLE_FORMAT:
        raise BundleError(f"bundle format {manifest['format']!r} is not supported (expected {BUNDLE_FORMAT})")
    spec = manifest["feature_spec"]
    if not isinstance(spec, dict) or spec.get("sha256") != feature_spec_hash():
        raise BundleError(
            "bundle was trained on another feature spec "
            f"({spec.get('version') if isinstance(spec, dict) else spec!r}); this code serves {feature_spec()['version']}"
        )
    return manifest


def verify_files(bundle_dir: Path, manifest: dict[str, Any]) -> None:
    files = manifest["files"]
    for name in BUNDLE_FILES:
        expected = files.get(name)
        if expected is None:
            raise BundleError(f"manifest has no checksum for {name}")
        path = bundle_dir / name
        if not path.is_file():
            raise BundleError(f"bundle file {name} is missing")
        actual = sha256_file(path)
        if actual != expected:
            raise BundleError(f"checksum mismatch for {name}: {actual[:12]} != {expected[:12]}")


def load_bundle(bundle_dir: Path, *, verify: bool = True) -> Bundle:
    manifest = read_manifest(bundle_dir)
    if verify:
        verify_files(bundle_dir, manifest)
    try:
        meta = json.loads((bundle_dir / ITEMS_JSON).read_text())
        with np.load(bundle_dir / ITEMS_NPZ, allow_pickle=False) as arr:
            items = ItemTable(
                item_ids=list(meta["item_ids"]),
                titles=list(meta["titles"]),
                category_vocab=list(meta["category_vocab"]),
                category_ids=arr["category_ids"],
                popularity=arr["popularity"],
                daypart_popularity=arr["daypart_popularity"],
                first_seen=arr["first_seen"],
                embeddings=arr["embeddings"],
            )
        with np.load(bundle_dir / NEIGHBOURS, allow_pickle=False) as arr:
            neighbours = Neighbours(indices=arr["indices"], scores=arr["scores"])
    except (KeyError, ValueError, OSError) as exc:
        raise BundleError(f"bundle arrays are unreadable: {exc}") from None
    if len(neighbours.indices) != len(items):
        raise BundleError(f"neighbours cover {len(neighbours.indices)} items, item table has {len(items)}")
    if int(manifest.get("n_items", len(items))) != len(items):
        raise BundleError("manifest n_items does not match the item table")
    return Bundle(path=bundle_dir, manifest=manifest, items=items, neighbours=neighbours)


def bundle_candidates(bundle_dir: Path) -> Iterator[tuple[str, list[tuple[str, float]]]] | None:
    """The bundle's CF lists as (user_id, [(item_id, score), ...] best first), users without a
    list skipped; None when the bundle carries none. Raises BundleError on inconsistent files."""
    npz, meta_path = bundle_dir / CANDIDATES_NPZ, bundle_dir / CANDIDATES_JSON
    if not (npz.is_file() and meta_path.is_file()):
        return None
    try:
        meta = json.loads(meta_path.read_text())
        user_ids, item_ids = list(meta["user_ids"]), list(meta["item_ids"])
        with np.load(npz, allow_pickle=False) as arr:
            codes, scores = arr["items"], arr["scores"]
    except (OSError, ValueError, KeyError) as exc:
        raise BundleError(f"{bundle_dir}: unreadable candidate lists ({exc})") from None
    if (
        codes.shape != scores.shape
        or codes.shape[0] != len(user_ids)
        or (codes.size and codes.max() >= len(item_ids))
    ):
        raise BundleError(f"{bundle_dir}: candidate arrays do not match their ids")

    def rows() -> Iterator[tuple[str, list[tuple[str, float]]]]:
        for r, user in enumerate(user_ids):
            pairs = [
                (item_ids[i], float(sc))
                for i, sc in zip(codes[r].tolist(), scores[r].tolist(), strict=True)
                if i >= 0
            ]
            if pairs:
                yield user, pairs

    return rows()
