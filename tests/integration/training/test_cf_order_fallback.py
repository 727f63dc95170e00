"""A retrain whose learned ranker orders the gate's holdout worse than its own candidates' CF
order ships the fresh candidates with the CF-order scorer, instead of being refused whole."""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from recpipe.domain.features import FEATURE_NAMES, N_FEATURES
from recpipe.training import pipeline
from recpipe.training.gate import CF_PER_USER, PER_USER, decide, worse_than_cf_order
from recpipe.training.pipeline import TrainParams, train_bundle
from recpipe.training.ranker import tflite_scores
from recpipe_dev.testing.trained import small_shop

pytestmark = pytest.mark.integration

#: The real trainer, kept before a test patches the pipeline's name for it.
learned_trainer = pipeline.train_list_ranker


def _against_cf(*args: Any, **kwargs: Any) -> tuple[Any, dict[str, float]]:
    """Train as the pipeline does, then ship a ranker that puts the CF list last (a ranker that
    makes lists worse, which is what the fallback is for)."""
    import keras

    _, metrics = learned_trainer(*args, **kwargs)
    col = FEATURE_NAMES.index("src_cf")
    rows = keras.Input(shape=(N_FEATURES,), dtype="float32")
    out = keras.layers.Lambda(lambda v: keras.ops.sigmoid(-4.0 * v[..., col : col + 1]))(rows)
    return keras.Model(rows, out), metrics


@dataclass
class FallbackRun:
    result: pipeline.TrainResult
    progress: str  # what the retrain printed on stderr


@pytest.fixture(scope="module")
def fallback(tmp_path_factory: pytest.TempPathFactory) -> FallbackRun:
    log, items = small_shop()
    err = io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stderr(err):
        mp.setattr(pipeline, "train_list_ranker", _against_cf)
        result = train_bundle(
            log,
            items,
            tmp_path_factory.mktemp("fallback"),
            version="fb-v1",
            params=TrainParams.tiny(),
            progress=True,
        )
    return FallbackRun(result, err.getvalue())


def test_a_ranker_worse_than_its_candidates_is_replaced_by_the_cf_order(fallback: FallbackRun) -> None:
    m = fallback.result.metrics
    assert m["ranker_order"] == "cf_order"
    # the learned ranker's figures stay in the record: it lost by more than the gate's 2 SE
    assert m["learned_ranker_minus_cf_ndcg@10"] + 2 * m["learned_ranker_minus_cf_ndcg@10_se"] < 0
    # what ships orders the holdout as the candidates' CF order does, user by user
    assert not worse_than_cf_order(m[PER_USER], m[CF_PER_USER])
    assert m["ranked_minus_cf_ndcg@10"] == pytest.approx(0.0, abs=1e-6)
    assert m["ndcg@10"] > m["learned_ranker_ndcg@10"]
    decision = decide(m, None, live_version=None, new_version="fb-v1")
    assert decision.publish, decision.reason


def test_the_bundle_ships_the_cf_order_scorer(fallback: FallbackRun) -> None:
    blob = (fallback.result.bundle_dir / "ranker.tflite").read_bytes()
    rng = np.random.default_rng(0)
    x = rng.random((30, N_FEATURES), dtype=np.float32)
    x[:, FEATURE_NAMES.index("src_cf")] = (np.arange(30) < 12).astype(np.float32)
    x[:, FEATURE_NAMES.index("cf_rank")] = np.where(np.arange(30) < 12, 1.0 / (1.0 + np.arange(30)), 0.0)
    order = np.argsort(-tflite_scores(blob, x), kind="stable")
    assert order[:12].tolist() == list(range(12))  # the CF list first, in its order
    assert fallback.result.manifest["metrics"]["ranker_order"] == "cf_order"


def test_a_ranker_that_does_not_lose_ships_as_trained(trained_run: Any) -> None:
    assert trained_run.result.metrics["ranker_order"] == "learned"
    assert "learned_ranker_ndcg@10" not in trained_run.result.metrics


def test_the_fallback_is_reported_on_the_progress_output(fallback: FallbackRun) -> None:
    assert "shipping the CF-order scorer" in fallback.progress
