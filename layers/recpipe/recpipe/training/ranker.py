"""The ranker: a small Keras MLP over the feature vector, exported to TFLite for serving.

Export goes SavedModel -> TFLiteConverter.from_saved_model (converting a concrete function
directly leaves READ_VARIABLE ops tflite-runtime cannot run). The exported model is checked in
the serving interpreter against Keras before it can enter a bundle.
"""

from __future__ import annotations

import inspect
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from recpipe.domain.features import N_FEATURES

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
#: Largest |Keras - TFLite| score difference accepted at export.
EXPORT_TOLERANCE = 1e-4


class RankerExportError(Exception):
    """The TFLite model does not reproduce the Keras scores."""


@dataclass(frozen=True, slots=True)
class RankerParams:
    hidden: tuple[int, ...] = (64, 32)
    epochs: int = 4
    batch_size: int = 512
    learning_rate: float = 2e-3
    seed: int = 7


def build_model(params: RankerParams) -> Any:
    import keras

    inputs = keras.Input(shape=(N_FEATURES,), dtype="float32", name="features")
    h = inputs
    for width in params.hidden:
        h = keras.layers.Dense(width, activation="relu")(h)
    out = keras.layers.Dense(1, activation="sigmoid", name="score")(h)
    model = keras.Model(inputs, out)
    model.compile(
        optimizer=keras.optimizers.Adam(params.learning_rate),
        loss="binary_crossentropy",
        metrics=[keras.metrics.AUC(name="auc")],
    )
    return model


def train_ranker(
    x: npt.NDArray[np.float32], y: npt.NDArray[np.float32], params: RankerParams, *, verbose: int = 0
) -> tuple[Any, dict[str, float]]:
    import keras

    keras.utils.set_random_seed(params.seed)
    model = build_model(params)
    if len(x) == 0:
        raise ValueError("no ranker training examples (is the ranker window empty?)")
    # Positives are rare; weight them so each list contributes as much signal as its negatives.
    pos = float(y.sum())
    weight = np.where(y > 0, (len(y) - pos) / max(pos, 1.0), 1.0).astype(np.float32)
    hist = model.fit(
        x,
        y,
        sample_weight=weight,
        epochs=params.epochs,
        batch_size=params.batch_size,
        shuffle=True,
        verbose=verbose,
    )
    metrics = {f"train_{k}": float(v[-1]) for k, v in hist.history.items()}
    return model, metrics


def keras_scores(model: Any, x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    return np.asarray(model(x, training=False), np.float32).reshape(-1)


def export_tflite(model: Any, probe: npt.NDArray[np.float32]) -> bytes:
    """SavedModel -> TFLite bytes, verified on `probe` in the serving interpreter."""
    import tensorflow as tf

    with tempfile.TemporaryDirectory() as tmp:
        saved = Path(tmp) / "saved_model"
        # The training image's Keras (3.4) has no `verbose`: it prints the endpoint summary.
        quiet = {"verbose": False} if "verbose" in inspect.signature(model.export).parameters else {}
        model.export(str(saved), **quiet)
        converter = tf.lite.TFLiteConverter.from_saved_model(str(saved))
        blob: bytes = converter.convert()
    expected = keras_scores(model, probe)
    got = tflite_scores(blob, probe)
    diff = float(np.max(np.abs(expected - got))) if len(probe) else 0.0
    if diff > EXPORT_TOLERANCE:
        raise RankerExportError(f"TFLite scores differ from Keras by {diff:.2e} (> {EXPORT_TOLERANCE})")
    return blob


def tflite_scores(blob: bytes, x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """Scores from the serving runtime (recpipe.tflite), resizing the batch dimension."""
    from recpipe.tflite import Interpreter

    if len(x) == 0:
        return np.zeros(0, np.float32)
    interp = Interpreter(model_content=blob)
    inp = interp.get_input_details()[0]
    interp.resize_tensor_input(inp["index"], [len(x), N_FEATURES])
    interp.allocate_tensors()
    interp.set_tensor(inp["index"], np.ascontiguousarray(x, np.float32))
    interp.invoke()
    out = interp.get_output_details()[0]
    return np.asarray(interp.get_tensor(out["index"]), np.float32).reshape(-1)
