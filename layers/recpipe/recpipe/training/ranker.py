"""The ranker: a small Keras MLP over the feature vector, exported to TFLite for serving.

Export goes SavedModel -> TFLiteConverter.from_saved_model (converting a concrete function
directly leaves READ_VARIABLE ops tflite-runtime cannot run). The exported model is checked in
the serving interpreter against Keras before it can enter a bundle.
"""

from __future__ import annotations

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
    #: lists per gradient step (listwise training)
    list_batch: int = 32


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


def train_list_ranker(
    xs: list[npt.NDArray[np.float32]],
    ys: list[npt.NDArray[np.float32]],
    params: RankerParams,
    *,
    verbose: int = 0,
) -> tuple[Any, dict[str, float]]:
    """Listwise training: softmax cross-entropy over each list (labels normalised to sum to 1),
    so the model learns the order within a request's pool, whatever the pool's size.

    The scorer is one MLP over a feature row (standardised by a Normalization layer adapted on
    the training rows, which travels inside the exported model); the list model applies it to
    every row of a padded [lists, L, features] batch. The exported model is the scorer with a
    sigmoid (order-preserving, scores in (0, 1) as MMR expects)."""
    import keras

    keep = [i for i, y in enumerate(ys) if float(y.sum()) > 0]
    if not keep:
        raise ValueError("no ranker training lists with a positive")
    keras.utils.set_random_seed(params.seed)
    width = max(len(ys[i]) for i in keep)
    x = np.zeros((len(keep), width, N_FEATURES), np.float32)
    y = np.zeros((len(keep), width), np.float32)
    mask = np.zeros((len(keep), width), np.float32)
    for row, i in enumerate(keep):
        n = len(ys[i])
        x[row, :n] = xs[i]
        y[row, :n] = ys[i] / float(ys[i].sum())
        mask[row, :n] = 1.0
    norm = keras.layers.Normalization(axis=-1)
    norm.adapt(np.concatenate([xs[i] for i in keep]))
    layers = [norm] + [keras.layers.Dense(w, activation="relu") for w in params.hidden]
    layers.append(keras.layers.Dense(1))

    def logits(t: Any) -> Any:
        for layer in layers:
            t = layer(t)
        return t

    rows_in = keras.Input(shape=(N_FEATURES,), dtype="float32", name="features")
    scorer = keras.Model(rows_in, keras.layers.Activation("sigmoid", name="score")(logits(rows_in)))
    lists_in = keras.Input(shape=(width, N_FEATURES), dtype="float32")
    mask_in = keras.Input(shape=(width,), dtype="float32")
    flat = keras.layers.Reshape((width,))(logits(lists_in))
    masked = keras.layers.Lambda(lambda t: t[0] + (t[1] - 1.0) * 1e9)([flat, mask_in])
    list_model = keras.Model([lists_in, mask_in], masked)
    list_model.compile(
        optimizer=keras.optimizers.Adam(params.learning_rate),
        loss=keras.losses.CategoricalCrossentropy(from_logits=True),
    )
    hist = list_model.fit(
        [x, mask], y, epochs=params.epochs, batch_size=params.list_batch, shuffle=True, verbose=verbose
    )
    return scorer, {"train_loss": float(hist.history["loss"][-1]), "train_lists": float(len(keep))}


def keras_scores(model: Any, x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    return np.asarray(model(x, training=False), np.float32).reshape(-1)


def export_tflite(model: Any, probe: npt.NDArray[np.float32]) -> bytes:
    """SavedModel -> TFLite bytes, verified on `probe` in the serving interpreter."""
    import tensorflow as tf

    with tempfile.TemporaryDirectory() as tmp:
        saved = Path(tmp) / "saved_model"
        model.export(str(saved), verbose=False)
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
