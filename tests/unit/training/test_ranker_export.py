"""The exported ranker scores the same in the serving TFLite runtime as in Keras."""

from __future__ import annotations

import numpy as np
import pytest
from recpipe.domain.features import N_FEATURES
from recpipe.training.ranker import (
    RankerParams,
    export_tflite,
    keras_scores,
    tflite_scores,
    train_list_ranker,
)


@pytest.fixture(scope="module")
def trained() -> tuple[object, bytes]:
    """The listwise ranker the pipeline ships (priors, gate, MLP), trained on a planted rule."""
    from recpipe.domain.features import FEATURE_NAMES

    rng = np.random.default_rng(0)
    pop = FEATURE_NAMES.index("item_popularity")
    xs, ys = [], []
    for _ in range(300):
        x = rng.random((20, N_FEATURES), dtype=np.float32)
        y = np.zeros(20, np.float32)
        y[int(np.argmax(x[:, pop]))] = 1.0
        xs.append(x)
        ys.append(y)
    model, metrics = train_list_ranker(xs, ys, RankerParams(hidden=(16, 8), epochs=3, learning_rate=1e-2))
    assert metrics["best_epoch"] > 0  # it learned the planted rule
    probe = np.concatenate(xs)[:64]
    return model, export_tflite(model, probe)


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


def test_a_feature_constant_in_training_cannot_swing_a_serving_score() -> None:
    """src_content is 0 in every training row (training pools have no content candidates); a
    serving row with it set must score like the same row without it, not saturate."""
    from recpipe.domain.features import FEATURE_NAMES, N_FEATURES
    from recpipe.training.ranker import train_list_ranker

    rng = np.random.default_rng(1)
    col = FEATURE_NAMES.index("src_content")
    xs, ys = [], []
    for _ in range(400):
        x = rng.random((20, N_FEATURES), dtype=np.float32)
        x[:, col] = 0.0
        y = np.zeros(20, np.float32)
        # labels the priors cannot explain, so training moves the MLP off its zero start
        y[int(np.argmax(x[:, FEATURE_NAMES.index("item_popularity")]))] = 1.0
        xs.append(x)
        ys.append(y)
    model, metrics = train_list_ranker(xs, ys, RankerParams(hidden=(16, 8), epochs=3, learning_rate=1e-2))
    assert metrics["best_epoch"] > 0
    probe = rng.random((50, N_FEATURES), dtype=np.float32)
    probe[:, col] = 0.0
    flagged = probe.copy()
    flagged[:, col] = 1.0
    np.testing.assert_allclose(keras_scores(model, flagged), keras_scores(model, probe), atol=1e-4)


def test_without_a_live_session_the_ranker_keeps_the_cf_order() -> None:
    """A returning user's request (a CF list, no session: the similarity columns are 0) is
    ordered by the CF score whatever the learned corrections; with a session they apply."""
    from recpipe.domain.features import FEATURE_NAMES, N_FEATURES
    from recpipe.training.ranker import train_list_ranker

    rng = np.random.default_rng(2)
    pop = FEATURE_NAMES.index("item_popularity")
    cf = FEATURE_NAMES.index("cf_score")
    xs, ys = [], []
    for _ in range(400):
        x = rng.random((20, N_FEATURES), dtype=np.float32)
        x[:, FEATURE_NAMES.index("pool_has_cf")] = 1.0
        y = np.zeros(20, np.float32)
        y[int(np.argmax(x[:, pop]))] = 1.0  # what the corrections can learn: popularity
        xs.append(x)
        ys.append(y)
    model, metrics = train_list_ranker(xs, ys, RankerParams(hidden=(16, 8), epochs=3, learning_rate=1e-2))
    assert metrics["best_epoch"] > 0
    probe = rng.random((200, N_FEATURES), dtype=np.float32)
    probe[:, FEATURE_NAMES.index("pool_has_cf")] = 1.0  # a user the last retrain knew
    with_session = keras_scores(model, probe)
    probe[:, FEATURE_NAMES.index("session_max_sim")] = 0.0
    probe[:, FEATURE_NAMES.index("session_mean_sim")] = 0.0
    without = keras_scores(model, probe)
    # no session: the order is the CF score's, exactly
    np.testing.assert_array_equal(np.argsort(without, kind="stable"), np.argsort(probe[:, cf], kind="stable"))
    # with one: the learned corrections (popularity) reorder the list
    assert not np.array_equal(np.argsort(with_session), np.argsort(probe[:, cf]))


def test_the_cf_order_scorer_keeps_cf_lists_in_order_and_the_rest_learned(
    trained: tuple[object, bytes],
) -> None:
    """The scorer a retrain ships when its learned ranker loses to the CF order: through the
    serving runtime, CF candidates come first in CF-list order, every other candidate follows
    in the learned ranker's order, and a pool without a CF list is ordered as the ranker does."""
    from recpipe.domain.features import FEATURE_NAMES
    from recpipe.training.ranker import cf_order_scorer

    model, _ = trained
    rng = np.random.default_rng(5)
    src_cf, cf_rank = FEATURE_NAMES.index("src_cf"), FEATURE_NAMES.index("cf_rank")
    x = rng.random((40, N_FEATURES), dtype=np.float32)
    positions = rng.permutation(25)  # rows 0-24: CF candidates at these list positions
    x[:25, src_cf] = 1.0
    x[:25, cf_rank] = 1.0 / (1.0 + positions)  # the assembler's encoding of the CF position
    x[25:, src_cf] = 0.0
    x[25:, cf_rank] = 0.0
    blob = export_tflite(cf_order_scorer(model), x)
    got = tflite_scores(blob, x)
    order = np.argsort(-got, kind="stable")
    assert order[:25].tolist() == np.argsort(positions).tolist()  # the CF list, in its order
    learned = keras_scores(model, x)
    assert order[25:].tolist() == (25 + np.argsort(-learned[25:], kind="stable")).tolist()
    assert np.all((got > 0) & (got <= 1))
    # a visitor's pool (no CF candidate): the learned ranker's order, unchanged
    visitor = x[25:]
    np.testing.assert_array_equal(
        np.argsort(-tflite_scores(blob, visitor), kind="stable"),
        np.argsort(-keras_scores(model, visitor), kind="stable"),
    )
