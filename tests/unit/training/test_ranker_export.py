"""The exported ranker scores the same in the serving TFLite runtime as in Keras."""

from __future__ import annotations

import numpy as np
import pytest
from recpipe.domain.features import N_FEATURES
from recpipe.training.ranker import RankerParams, export_tflite, keras_scores, tflite_scores, train_ranker


@pytest.fixture(scope="module")
def trained() -> tuple[object, bytes]:
    rng = np.random.default_rng(0)
    x = rng.random((2000, N_FEATURES), dtype=np.float32)
    y = (x[:, 0] + 0.3 * x[:, 3] > 0.9).astype(np.float32)
    model, metrics = train_ranker(x, y, RankerParams(hidden=(16, 8), epochs=10, batch_size=128))
    assert metrics["train_auc"] > 0.75  # it learned the planted rule
    return model, export_tflite(model, x[:64])


@pytest.mark.parametrize("batch", [1, 7, 333])
def test_tflite_matches_keras_for_any_batch_size(trained: tuple[object, bytes], batch: int) -> None:
    model, blob = trained
    x = np.random.default_rng(batch).random((batch, N_FEATURES), dtype=np.float32)
    np.testing.assert_allclose(tflite_scores(blob, x), keras_scores(model, x), rtol=0, atol=1e-4)


def test_the_model_takes_the_feature_vector_and_returns_one_score_per_row(
    trained: tuple[object, bytes],
) -> None:
    from recpipe.tflite import Interpreter

    _, blob = trained
    interp = Interpreter(model_content=blob)
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    assert list(inp["shape_signature"]) == [-1, N_FEATURES]
    assert inp["dtype"] == np.float32 and out["dtype"] == np.float32
    assert list(out["shape_signature"]) == [-1, 1]
