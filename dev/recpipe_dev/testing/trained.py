"""A really trained bundle for tests of every path (ALS + Keras ranker -> TFLite, in seconds).

    from recpipe_dev.testing.trained import trained_bundle
    result = trained_bundle(tmp_path)          # TrainResult: bundle_dir, candidates, manifest
    bundle = recpipe.bundle.load_bundle(result.bundle_dir)

Built on the synthetic shop (recpipe_dev.synthetic), so it needs no dataset on disk; the
same seed gives the same data. Share it through a session-scoped fixture: it costs a few
seconds of TensorFlow.
"""

from __future__ import annotations

from pathlib import Path

from recpipe.domain.catalogue import InteractionLog, ItemMeta
from recpipe.training.pipeline import TrainParams, TrainResult, train_bundle

SMALL_SHOP = {"n_users": 300, "n_items": 400, "n_interactions": 12_000}


def small_shop(seed: int = 3) -> tuple[InteractionLog, list[ItemMeta]]:
    from recpipe_dev.synthetic import generate

    return generate(seed=seed, **SMALL_SHOP)


def trained_bundle(out_dir: Path, *, version: str = "test-v1", seed: int = 3) -> TrainResult:
    log, items = small_shop(seed)
    return train_bundle(log, items, Path(out_dir), version=version, params=TrainParams.tiny())
