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

from recpipe.domain.features import FEATURE_NAMES, N_FEATURES

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
#: Starting weight of the CF prior (relative CF score in [0, 1]): a 1.0 vs 0.9 score gap is
#: a logit gap of 0.3 before any training.
PRIOR_INIT = 3.0
#: Starting weight of the session prior (cosine similarity to the closest live-session item):
#: an untrained model puts what the visitor is looking at now above what is merely popular, so
#: a visitor without CF history sees the session's influence from the first model on.
SESSION_PRIOR_INIT = 3.0
#: Largest |Keras - TFLite| score difference accepted at export.
EXPORT_TOLERANCE = 1e-4


class RankerExportError(Exception):
    """The TFLite model does not reproduce the Keras scores."""


@dataclass(frozen=True, slots=True)
class RankerParams:
    hidden: tuple[int, ...] = (64, 32)
    epochs: int = 6
    #: unused since the listwise ranker (`list_batch`); kept so older runs' params still load
    batch_size: int = 512
    learning_rate: float = 2e-3
    seed: int = 7
    #: lists per gradient step, and the share of lists held out to pick the epoch (listwise)
    list_batch: int = 32
    validation: float = 0.2


#: Below this variance a feature counts as constant in the training rows.
CONSTANT_VARIANCE = 1e-8


def feature_scaling(x: npt.NDArray[np.float32]) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """Mean and variance of each feature column for the ranker's standardisation.

    A column that never varies in training (e.g. `src_content`: training's pools have no
    content-index candidates) gets an enormous variance, so it standardises to ~0 and the
    model ignores it. With its true variance (0) a serving value of 1 would become 1/epsilon =
    1e7 after standardisation and saturate every score of that row: the model cannot have
    learned anything about a feature it never saw move."""
    mean = x.mean(axis=0).astype(np.float32)
    variance = x.var(axis=0).astype(np.float32)
    variance[variance < CONSTANT_VARIANCE] = 1e12
    return mean, variance


def _padded(
    xs: list[npt.NDArray[np.float32]],
    ys: list[npt.NDArray[np.float32]],
    which: list[int],
    width: int,
    rng: np.random.Generator,
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """Lists `which` as [lists, width, features] rows, labels (summing to 1) and a row mask."""
    x = np.zeros((len(which), width, N_FEATURES), np.float32)
    y = np.zeros((len(which), width), np.float32)
    mask = np.zeros((len(which), width), np.float32)
    for row, i in enumerate(which):
        n = len(ys[i])
        # rows in random order: ties (e.g. every non-CF row under the prior) must not sort a
        # list's positive first just because the example builder put it there
        perm = rng.permutation(n)
        x[row, :n] = xs[i][perm]
        y[row, :n] = ys[i][perm] / float(ys[i].sum())
        mask[row, :n] = 1.0
    return x, y, mask


def _list_ndcg(
    scores: npt.NDArray[np.float32], y: npt.NDArray[np.float32], mask: npt.NDArray[np.float32], k: int
) -> npt.NDArray[np.float64]:
    """Binary nDCG@k of each list's order (padding sorts last)."""
    s = np.where(mask > 0, scores, -np.inf)
    order = np.argsort(-s, axis=1, kind="stable")[:, :k]
    gains = np.take_along_axis((y > 0).astype(np.float64), order, axis=1)
    disc = 1.0 / np.log2(np.arange(2, k + 2))
    dcg = (gains * disc[: gains.shape[1]]).sum(axis=1)
    n_rel = np.minimum((y > 0).sum(axis=1), k)
    idcg = np.array([disc[:n].sum() for n in n_rel.tolist()])
    return np.where(idcg > 0, dcg / np.maximum(idcg, 1e-12), 0.0)


def train_list_ranker(
    xs: list[npt.NDArray[np.float32]],
    ys: list[npt.NDArray[np.float32]],
    params: RankerParams,
    *,
    kinds: list[str] | None = None,
    holdout: list[bool] | None = None,
    verbose: int = 0,
) -> tuple[Any, dict[str, float]]:
    """Listwise training: softmax cross-entropy over each list (labels normalised to sum to 1).

    The score is two priors, a learned weight on the relative CF score (started at PRIOR_INIT)
    and one on the similarity to the live session (started at SESSION_PRIOR_INIT), plus an MLP
    over the standardised feature row that applies when the request has a live session or no
    CF list. A returning user's pool without a session is therefore ordered like the CF list;
    every other request by the priors plus the learned corrections. A share
    of the lists is held out (`holdout` flags them; else `params.validation` at random; the
    pipeline holds out whole pools, as serving ranks them); after each epoch their nDCG@10 is
    measured, per kind of list (`kinds`, e.g. next-event and carve-out: each situation
    counts equally), and the best epoch's weights are kept among the epochs that order no kind
    of list worse than the priors alone (epoch 0) by more than two standard errors, so
    training never ships a model that orders held-out lists of either situation worse than
    its own start.
    The exported model is the scorer with a sigmoid (order-preserving, scores in (0, 1))."""
    import keras

    keep = [i for i, y in enumerate(ys) if float(y.sum()) > 0]
    if not keep:
        raise ValueError("no ranker training lists with a positive")
    keras.utils.set_random_seed(params.seed)
    rng = np.random.default_rng(params.seed)
    if holdout is not None:
        val = np.asarray([bool(holdout[i]) for i in keep])
    elif len(keep) >= 10:
        val = rng.random(len(keep)) < params.validation
    else:
        val = np.zeros(len(keep), bool)
    if val.all():
        val[:] = False
    fit = ~val
    fit_lists = [keep[j] for j in np.flatnonzero(fit).tolist()]
    val_lists_idx = [keep[j] for j in np.flatnonzero(val).tolist()]
    width = max(len(ys[i]) for i in fit_lists)
    x, y, mask = _padded(xs, ys, fit_lists, width, rng)
    xv, yv, mv = _padded(xs, ys, val_lists_idx, max((len(ys[i]) for i in val_lists_idx), default=1), rng)
    mean, variance = feature_scaling(np.concatenate([xs[i] for i in keep]))
    norm = keras.layers.Normalization(axis=-1, mean=mean, variance=variance)
    mlp = [keras.layers.Dense(w, activation="relu") for w in params.hidden]
    mlp.append(keras.layers.Dense(1, kernel_initializer="zeros", bias_initializer="zeros"))
    prior_cols = [FEATURE_NAMES.index("cf_score"), FEATURE_NAMES.index("session_max_sim")]
    prior = keras.layers.Dense(
        1,
        use_bias=False,
        kernel_initializer=keras.initializers.Constant(
            np.asarray([[PRIOR_INIT], [SESSION_PRIOR_INIT]], np.float32)
        ),
        name="priors",
    )

    session_cols = [FEATURE_NAMES.index("session_max_sim"), FEATURE_NAMES.index("session_mean_sim")]
    pool_cf_col = FEATURE_NAMES.index("pool_has_cf")

    def corrected(v: Any) -> Any:
        # 1 when the request has a live session (its similarity columns are computed) or no CF
        # list (a visitor: nothing long-term to keep), else 0 (a returning user without session)
        mag = keras.ops.abs(v[..., session_cols[0]]) + keras.ops.abs(v[..., session_cols[1]])
        live = keras.ops.cast(keras.ops.greater(mag, 0.0), "float32")
        no_cf = keras.ops.cast(keras.ops.less(v[..., pool_cf_col], 0.5), "float32")
        return keras.ops.expand_dims(keras.ops.maximum(live, no_cf), -1)

    def logits(t: Any) -> Any:
        h = norm(t)
        for layer in mlp:
            h = layer(h)
        # The learned corrections apply with a live session or without a CF list: for a
        # returning user without a session the CF order stands. Measured on the random
        # protocol, corrections for returning users ordered their lists worse than the CF
        # order on test (docs/training.md), so the model does not make that trade.
        h = keras.layers.Multiply()([h, keras.layers.Lambda(corrected)(t)])
        raw = keras.layers.Lambda(lambda v: keras.ops.stack([v[..., c] for c in prior_cols], axis=-1))(t)
        return keras.layers.Add()([h, prior(raw)])

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

    kind_fit = np.asarray([kinds[i] if kinds else "all" for i in fit_lists])
    kind_val = np.asarray([kinds[i] if kinds else "all" for i in val_lists_idx])
    groups = sorted(set(kind_val.tolist()))
    # each kind of list carries the same total weight, whatever how many lists it has
    names, counts = np.unique(kind_fit, return_counts=True)
    share = {str(n): len(fit_lists) / (len(names) * float(c)) for n, c in zip(names, counts, strict=True)}
    weight = np.asarray([share.get(str(g), 1.0) for g in kind_fit], np.float32)

    def val_lists() -> dict[str, npt.NDArray[np.float64]]:
        if not val.any():
            return {}
        # held-out lists may be whole pools (wider than the training lists): scored row by row
        flat = np.asarray(scorer.predict(xv.reshape(-1, N_FEATURES), verbose=0, batch_size=8192), np.float32)
        s = flat.reshape(xv.shape[0], xv.shape[1])
        return {g: _list_ndcg(s[kind_val == g], yv[kind_val == g], mv[kind_val == g], 10) for g in groups}

    def val_ndcg() -> tuple[float, dict[str, float]]:
        lists = val_lists()
        per = {g: float(v.mean()) for g, v in lists.items()}
        return (float(np.mean(list(per.values()))) if per else 0.0), per

    prior_lists = val_lists()

    def protects() -> bool:
        """No kind of list is worse than under the priors alone by more than 2 standard errors."""
        for g, now in val_lists().items():
            diff = now - prior_lists[g]
            se = float(diff.std(ddof=1) / np.sqrt(len(diff))) if len(diff) > 1 else 0.0
            if float(diff.mean()) < -2.0 * se:
                return False
        return True

    start, per_start = val_ndcg()
    best = start
    best_per = per_start
    best_epoch = 0
    best_weights = list_model.get_weights()
    loss = 0.0
    for epoch in range(1, params.epochs + 1):
        hist = list_model.fit(
            [x, mask],
            y,
            sample_weight=weight,
            epochs=1,
            batch_size=params.list_batch,
            shuffle=True,
            verbose=0,
        )
        loss = float(hist.history["loss"][-1])
        score, per = val_ndcg()
        if verbose:
            print(f"epoch {epoch}: loss {loss:.4f} validation ndcg@10 {per} (priors {per_start})")
        # an epoch that orders one kind of list worse than the priors alone do is never kept
        if (score > best and protects()) or not val.any():
            best, best_epoch, best_weights, best_per = score, epoch, list_model.get_weights(), per
    list_model.set_weights(best_weights)
    return scorer, {
        "train_loss": loss,
        "train_lists": float(len(fit_lists)),
        "validation_lists": float(val.sum()),
        "validation_ndcg@10_prior": round(start, 5),
        "validation_ndcg@10": round(best, 5),
        **{f"validation_ndcg@10_{g}_prior": round(v, 5) for g, v in per_start.items()},
        **{f"validation_ndcg@10_{g}": round(v, 5) for g, v in best_per.items()},
        "best_epoch": float(best_epoch),
    }


def cf_order_scorer(learned: Any) -> Any:
    """The scorer a retrain ships when its learned ranker orders the gate's holdout worse than the
    candidates' own CF order: CF candidates in the published CF order, above every other
    candidate, and the others (all of a pool without a CF list, e.g. a new visitor) in the
    learned ranker's order. Scores stay in (0, 1]: CF rows 0.5 + 0.5 / (1 + rank), other rows
    half the learned score."""
    import keras

    src_cf, cf_rank = FEATURE_NAMES.index("src_cf"), FEATURE_NAMES.index("cf_rank")

    def combine(t: Any) -> Any:
        rows, learned_score = t
        is_cf = keras.ops.cast(keras.ops.greater(rows[..., src_cf : src_cf + 1], 0.5), "float32")
        # the cf_rank column is 1 / (1 + position in the CF list): 1 for the first item
        in_order = 0.5 + 0.5 * rows[..., cf_rank : cf_rank + 1]
        return is_cf * in_order + (1.0 - is_cf) * 0.5 * learned_score

    rows_in = keras.Input(shape=(N_FEATURES,), dtype="float32", name="features")
    out = keras.layers.Lambda(combine, name="cf_order")([rows_in, learned(rows_in)])
    return keras.Model(rows_in, out)


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
