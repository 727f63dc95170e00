"""`recpipe validate`: how defaults are chosen, as a command.

Issue #14 asks that defaults be chosen on validation splits only, never on the test split the
random protocol reports. This runs the product (`train_bundle`, exactly as a retrain runs it)
on the random protocol's *validation* carve-outs: for each seed, the per-user stratified
training part of `recpipe evaluate --protocol random --seed SEED` loses another random quarter
of each user's items (seed + 1, the split the protocol tunes its baselines on), the retrain
fits on the rest, and its published lists are scored on that quarter. The test part is never
read. Beside the published order it scores the same retrain with the learned fusion off
(`fusion.folds = 0`: the candidates in the fixed blend's order), so a setting's effect on the
ordering is a paired per-user difference on the same users, and EASE at the regularisation
(of the random protocol's search space) that scores best on these very validation items: an
upper bound of tuned EASE on this split, so "ahead of EASE" here is a conservative check.

`--params` takes a retrain request's `params` (the JSON object a Step Functions execution
takes, read by `TrainParams.from_dict`), so a setting is tried exactly as it would ship.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from recpipe.ranking_metrics import ndcg_at_k
from recpipe.training.pipeline import TrainParams, candidate_lists, train_bundle

from recpipe_dev.evaluation.baselines import EASE, SEARCH_SPACE, top_k
from recpipe_dev.evaluation.data import Dataset
from recpipe_dev.evaluation.random_protocol import RandomProtocolConfig, _carve, _matrices
from recpipe_dev.evaluation.splits import stratified_split

Progress = Callable[[str], None]
#: the random protocol's split (75 % training part) and its baseline tuning's carve-out of it
TRAIN_RATIO = 1.0 - RandomProtocolConfig().test_ratio


def validation_split(
    dataset: Dataset, seed: int
) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.bool_], npt.NDArray[np.bool_]]:
    """(fit rows, validation rows, test rows) of the random protocol with `seed`: the test rows
    are what `recpipe evaluate --protocol random --seed SEED` scores; fit and validation
    partition the rest per user, as the protocol's baseline tuning does."""
    log = dataset.log
    train = stratified_split(log, TRAIN_RATIO, seed)
    fit, held = _carve(log, train, TRAIN_RATIO, seed + 1)
    return fit, held, ~train


def _lists_ndcg(
    candidates: Any,
    *,
    users: npt.NDArray[np.int64],
    user_vocab: list[str],
    item_vocab: list[str],
    x_fit: Any,
    x_val: Any,
    k: int,
) -> npt.NDArray[np.float64]:
    """Per-user nDCG@k of the published lists (the user's fitted items removed, as serving's
    seen-set does for a returning user) against the user's validation items."""
    out = np.zeros(len(users), np.float64)
    for row, u in enumerate(users.tolist()):
        user_id = user_vocab[u]
        history = {item_vocab[i] for i in x_fit[u].indices.tolist()}
        listed = [i for i, _ in candidates[user_id]] if user_id in candidates else []
        truth = {item_vocab[i] for i in x_val[u].indices.tolist()}
        out[row] = ndcg_at_k([i for i in listed if i not in history][:k], truth, k)
    return out


def _best_ease(
    x_fit: Any, x_val: Any, users: npt.NDArray[np.int64], k: int
) -> tuple[float, npt.NDArray[np.float64]]:
    """EASE at the regularisation of the random protocol's search space that scores best on
    these very validation items (an upper bound of tuned EASE here): (lambda, per-user nDCG@k)."""
    best: tuple[float, float, npt.NDArray[np.float64]] | None = None
    for params in SEARCH_SPACE["ease"]:
        model = EASE(**params)
        model.fit(x_fit)
        tops = top_k(model.scores(users, x_fit), x_fit[users], k)
        per_user = np.asarray(
            [ndcg_at_k(tops[row].tolist(), set(x_val[u].indices.tolist()), k) for row, u in enumerate(users)],
            np.float64,
        )
        if best is None or per_user.mean() > best[1]:
            best = (float(params["reg"]), float(per_user.mean()), per_user)
    assert best is not None
    return best[0], best[2]


def _mean_se(v: npt.NDArray[np.float64]) -> tuple[float, float]:
    se = float(v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 else 0.0
    return float(v.mean()) if len(v) else 0.0, se


#: what `run_validation` fits per seed: the whole retrain, or its CF stages alone
STAGES = ("retrain", "candidates")


def run_validation(
    dataset: Dataset,
    *,
    seeds: Sequence[int],
    params: TrainParams | None = None,
    k: int = 10,
    stage: str = "retrain",
    progress: Progress = lambda _: None,
) -> dict[str, Any]:
    """Per seed: nDCG@k of the retrain's published lists and of its blend order on the
    validation carve-out, the paired difference (± one standard error) and what the retrain
    chose; and the means over the seeds.

    `stage="candidates"` fits only the retrain's CF stages (`candidate_lists`: its own lambda /
    weight choice, then the blend's lists, exactly what a retrain with the fusion off publishes):
    the blend's row alone, deterministic, in seconds per seed."""
    if not seeds:
        raise ValueError("at least one seed")
    if stage not in STAGES:
        raise ValueError(f"stage must be one of {', '.join(STAGES)}, got {stage!r}")
    p = params or TrainParams()
    log = dataset.log
    per_seed: dict[str, dict[str, Any]] = {}
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="recpipe-validate-") as scratch:
        for seed in seeds:
            t0 = time.perf_counter()
            fit, held, _test = validation_split(dataset, seed)
            rows = np.flatnonzero(fit)
            window = log.take(rows[np.argsort(log.ts[rows], kind="stable")])
            x_fit, _ = _matrices(log, fit)
            x_val, _ = _matrices(log, held)
            users = np.unique(log.users[held]).astype(np.int64)
            blend_params = replace(p, fusion=replace(p.fusion, folds=0))
            runs = {"blend": blend_params} if stage == "candidates" else {"published": p}
            if stage == "retrain" and p.fusion.folds > 0:
                runs["blend"] = blend_params
            scores: dict[str, npt.NDArray[np.float64]] = {}
            chosen: dict[str, Any] = {}
            for name, run_params in runs.items():
                if stage == "candidates":
                    lists, metrics = candidate_lists(window, dataset.catalogue, run_params)
                else:
                    result = train_bundle(
                        window,
                        dataset.catalogue,
                        Path(scratch) / f"{seed}-{name}",
                        version=f"validate-{seed}-{name}",
                        params=run_params,
                    )
                    lists, metrics = result.candidates, result.metrics
                scores[name] = _lists_ndcg(
                    lists,
                    users=users,
                    user_vocab=log.user_vocab,
                    item_vocab=log.item_vocab,
                    x_fit=x_fit,
                    x_val=x_val,
                    k=k,
                )
                if name == next(iter(runs)):
                    chosen = {
                        key: metrics[key]
                        for key in (
                            "linear_regularization",
                            "als_regularization",
                            "linear_weight",
                            "sequential_weight",
                            "als_weight",
                            "fusion_adopted",
                            f"fusion_validation_ndcg@{k}",
                            f"fusion_validation_blend_ndcg@{k}",
                            "fusion_validation_gain_se",
                        )
                        if key in metrics
                    }
            ease_reg, scores["ease"] = _best_ease(x_fit, x_val, users, k)
            entry: dict[str, Any] = {"users": len(users)}
            for name, v in scores.items():
                mean, se = _mean_se(v)
                entry[f"{name}_ndcg@{k}"] = round(mean, 5)
                entry[f"{name}_ndcg@{k}_se"] = round(se, 5)
            first = next(iter(runs))
            pairs = [("published", "blend"), (first, "ease")] if len(runs) > 1 else [(first, "ease")]
            for a, b in pairs:
                gain, gain_se = _mean_se(scores[a] - scores[b])
                entry[f"{a}_minus_{b}_ndcg@{k}"] = round(gain, 5)
                entry[f"{a}_minus_{b}_ndcg@{k}_se"] = round(gain_se, 5)
            entry["ease_regularization"] = ease_reg
            entry["retrain"] = chosen
            entry["seconds"] = round(time.perf_counter() - t0, 1)
            per_seed[str(seed)] = entry
            progress(
                f"seed {seed}: "
                + " ".join(f"{name} ndcg@{k}={entry[f'{name}_ndcg@{k}']:.4f}" for name in runs)
                + (f" gain={entry[f'published_minus_blend_ndcg@{k}']:+.4f}" if len(runs) > 1 else "")
                + f" ease={entry[f'ease_ndcg@{k}']:.4f} (lambda {ease_reg:g})"
                + f" ({entry['seconds']} s)"
            )
    keys = [key for key in next(iter(per_seed.values())) if key.endswith(f"@{k}")]
    means = {key: round(float(np.mean([e[key] for e in per_seed.values()])), 5) for key in keys}
    return {
        "protocol": "validation",
        "dataset": dataset.name,
        "k": k,
        "split": f"random protocol's training part (per-user {TRAIN_RATIO:.2f}, seed), carved again per user "
        f"{TRAIN_RATIO:.2f}/{1 - TRAIN_RATIO:.2f} with seed + 1; the retrain fits the first part, its lists "
        "are scored on the second; the test part is never read",
        "stage": stage,
        "params": p.to_dict(),
        "seeds": per_seed,
        "mean": means,
        "seconds": round(time.perf_counter() - t_start, 1),
    }
