"""Random protocol: per-user stratified 75/25 split, every rating a positive, top-k excluding the
user's training items, metrics with Microsoft Recommenders' definitions (comparable with its
MovieLens benchmark table).

Every tuned method gets the same budget (SEARCH_SPACE: 8 configurations each), scored by nDCG@k
on a validation split carved out of the training part the same way; the best configuration is
refitted on the whole training part and evaluated once on the test part.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp
from recpipe.domain.catalogue import InteractionLog
from recpipe.ranking_metrics import evaluate_lists, ndcg_at_k

from recpipe_dev.evaluation.baselines import SEARCH_SPACE, interaction_matrix, make_model, top_k
from recpipe_dev.evaluation.data import Dataset
from recpipe_dev.evaluation.splits import stratified_split

BASELINES = ("popularity", "item_knn", "bpr", "als", "ease")
CANDIDATE_DEPTH = 200
Progress = Callable[[str], None]


@dataclass(slots=True)
class RandomProtocolConfig:
    k: int = 10
    seed: int = 42
    test_ratio: float = 0.25
    #: Also score the project's own batch model and online path (train_bundle + Recommender).
    product: bool = True
    #: Evaluate only this many users (seeded sample); None = all (CI smoke uses a subset).
    max_users: int | None = None
    methods: tuple[str, ...] = BASELINES


def _matrices(log: InteractionLog, mask: npt.NDArray[np.bool_]) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """Binary user x item matrix, and the same cells holding the (latest) interaction time."""
    nu, ni = len(log.user_vocab), len(log.item_vocab)
    binary = interaction_matrix(log.users[mask], log.items[mask], nu, ni)
    rows = np.flatnonzero(mask)
    rows = rows[np.argsort(log.ts[rows], kind="stable")]
    cell = log.users[rows].astype(np.int64) * ni + log.items[rows]
    # keep each cell's latest row (np.unique on the reversed order finds the last occurrence)
    _, last = np.unique(cell[::-1], return_index=True)
    rows = rows[::-1][last]
    times = sp.csr_matrix((log.ts[rows], (log.users[rows], log.items[rows])), shape=(nu, ni))
    return binary, times


def _score_lists(
    tops: npt.NDArray[np.int64], truth: sp.csr_matrix, users: npt.NDArray[np.int64], k: int, n_items: int
) -> dict[str, float]:
    return evaluate_lists(
        ((tops[row].tolist(), set(truth[u].indices.tolist())) for row, u in enumerate(users)), k, n_items
    )


def _carve(
    log: InteractionLog, within: npt.NDArray[np.bool_], ratio: float, seed: int
) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.bool_]]:
    """Split the rows in `within` per user: (fit mask, held-out mask) over the whole log."""
    idx = np.flatnonzero(within)
    keep = stratified_split(log.take(idx), ratio, seed)
    fit = np.zeros(len(log), np.bool_)
    held = np.zeros(len(log), np.bool_)
    fit[idx[keep]] = True
    held[idx[~keep]] = True
    return fit, held


def run_random(
    dataset: Dataset, config: RandomProtocolConfig, progress: Progress = lambda _: None
) -> dict[str, Any]:
    warnings.filterwarnings("ignore", module="implicit")
    t_start = time.perf_counter()
    log, k, seed = dataset.log, config.k, config.seed
    n_items = len(log.item_vocab)
    rng = np.random.default_rng(seed)
    all_users = np.unique(log.users).astype(np.int64)
    users = all_users
    if config.max_users is not None and config.max_users < len(all_users):
        users = np.sort(rng.choice(all_users, config.max_users, replace=False))
        log = log.take(np.isin(log.users, users))

    train = stratified_split(log, 1.0 - config.test_ratio, seed)
    x_train, _ = _matrices(log, train)
    x_test, _ = _matrices(log, ~train)
    fit_mask, val_mask = _carve(log, train, 1.0 - config.test_ratio, seed + 1)
    x_fit, _ = _matrices(log, fit_mask)
    x_val, _ = _matrices(log, val_mask)

    methods: dict[str, dict[str, float]] = {}
    tuning: dict[str, Any] = {}
    best_params: dict[str, dict[str, Any]] = {}
    #: per-user nDCG@k of each method, in `users` order (for paired differences)
    per_user: dict[str, list[float]] = {}
    for method in config.methods:
        t0 = time.perf_counter()
        trials: list[dict[str, Any]] = []
        for params in SEARCH_SPACE[method]:
            model = make_model(method, params, seed)
            model.fit(x_fit)
            score = _score_lists(top_k(model.scores(users, x_fit), x_fit[users], k), x_val, users, k, n_items)
            trials.append({"params": params, f"val_ndcg@{k}": round(score[f"ndcg@{k}"], 6)})
        best = max(trials, key=lambda t: t[f"val_ndcg@{k}"])
        best_params[method] = dict(best["params"])
        model = make_model(method, best["params"], seed)
        model.fit(x_train)
        tops = top_k(model.scores(users, x_train), x_train[users], k)
        methods[method] = _score_lists(tops, x_test, users, k, n_items)
        per_user[method] = [
            ndcg_at_k(tops[row].tolist(), set(x_test[u].indices.tolist()), k) for row, u in enumerate(users)
        ]
        tuning[method] = {
            "budget": len(trials),
            "best": best["params"],
            "trials": trials,
            "seconds": round(time.perf_counter() - t0, 2),
        }
        progress(f"{method}: ndcg@{k}={methods[method][f'ndcg@{k}']:.4f} best={best['params']}")

    report: dict[str, Any] = {
        "protocol": "random",
        "k": k,
        "dataset": dataset.name,
        "methods": methods,
        "tuning": tuning,
        "config": {
            "seed": seed,
            "split": f"per-user stratified random {1 - config.test_ratio:.2f}/{config.test_ratio:.2f}",
            "validation": "same split carved out of the training part (seed+1), best by nDCG@k",
            "relevance": "every rating is a positive; training items excluded from the lists",
            "metric_definitions": "Microsoft Recommenders python_evaluation (release 1.2): "
            "precision_at_k, recall_at_k, ndcg_at_k (binary), map (by #relevant), map_at_k (by min(#relevant,k))",
            "users": len(users),
            "items": n_items,
            "interactions": len(log),
            "train_interactions": int(train.sum()),
        },
    }
    if config.product:
        _product_rows(
            report,
            dataset=dataset,
            log=log,
            train=train,
            users=users,
            x_train=x_train,
            x_test=x_test,
            config=config,
            progress=progress,
            per_user=per_user,
        )
        report[f"paired_ndcg@{k}"] = _paired(per_user)
    report["methods"] = {name: {m: round(v, 6) for m, v in r.items()} for name, r in methods.items()}
    report["config"]["seconds"] = round(time.perf_counter() - t_start, 2)
    return report


def _product_rows(
    report: dict[str, Any],
    *,
    dataset: Dataset,
    log: InteractionLog,
    train: npt.NDArray[np.bool_],
    users: npt.NDArray[np.int64],
    x_train: sp.csr_matrix,
    x_test: sp.csr_matrix,
    config: RandomProtocolConfig,
    progress: Progress,
    per_user: dict[str, list[float]],
) -> None:
    """The project as built, on the comparable protocol: `train_bundle` on the training part,
    its ALS candidates alone, and the online path (Recommender over the replayed stores) asked
    once per user right after the user's last training interaction."""
    import tempfile
    from dataclasses import replace
    from pathlib import Path

    from recpipe.training.pipeline import RETURN_AFTER_S, TrainParams, train_bundle

    from recpipe_dev.evaluation.stream_protocol import ProductHarness

    t0 = time.perf_counter()
    k, item_ids, n_items = config.k, log.item_vocab, len(log.item_vocab)
    last_ts = np.full(len(log.user_vocab), -np.inf)
    np.maximum.at(last_ts, log.users[train], log.ts[train])
    with tempfile.TemporaryDirectory(prefix="recpipe-eval-") as scratch:
        product = ProductHarness(
            dataset, log, np.flatnonzero(train), Path(scratch), seed=config.seed, progress=progress
        )
        try:
            cf_lists: list[tuple[list[str], set[str]]] = []
            online_lists: list[tuple[list[str], set[str]]] = []
            live_lists: list[tuple[list[str], set[str]]] = []
            for u in users.tolist():
                user_id = log.user_vocab[u]
                history = {item_ids[i] for i in x_train[u].indices.tolist()}
                truth = {item_ids[i] for i in x_test[u].indices.tolist()}
                cf_lists.append(([i for i in product.cf(user_id) if i not in history][:k], truth))
                # A returning user (the held-out ratings are long-term taste, not what follows
                # a session): asked a day after the last training interaction.
                product.clock.now = float(last_ts[u]) + RETURN_AFTER_S
                online_lists.append((product.ask(user_id, history, k)[0], truth))
                # The same user asked 1 s after the last interaction, with the session live.
                product.clock.now = float(last_ts[u]) + 1.0
                live_lists.append((product.ask(user_id, history, k)[0], truth))
        finally:
            product.close()
        # The same candidates in the fixed blend's order: the retrain with the learned fusion
        # off (fusion.folds = 0), what the fusion's order replaced. Its lists are never served
        # here; the row shows what the learned ordering adds over the candidates' CF order.
        rows = np.flatnonzero(train)
        defaults = TrainParams()
        blend = train_bundle(
            log.take(rows[np.argsort(log.ts[rows], kind="stable")]),
            dataset.catalogue,
            Path(scratch) / "blend",
            version=f"eval-{config.seed}-blend",
            params=replace(defaults, fusion=replace(defaults.fusion, folds=0)),
        )
        blend_lists: list[tuple[list[str], set[str]]] = []
        for u, (_, truth) in zip(users.tolist(), cf_lists, strict=True):
            user_id = log.user_vocab[u]
            history = {item_ids[i] for i in x_train[u].indices.tolist()}
            listed = [i for i, _ in blend.candidates[user_id]] if user_id in blend.candidates else []
            blend_lists.append(([i for i in listed if i not in history][:k], truth))
    for name, lists in (
        ("project_cf", cf_lists),
        ("project_cf_blend", blend_lists),
        ("project_pipeline", online_lists),
        ("project_pipeline_live_session", live_lists),
    ):
        per_user[name] = [ndcg_at_k(rec, rel, k) for rec, rel in lists]
    report["methods"]["project_cf"] = evaluate_lists(cf_lists, k, n_items)
    report["methods"]["project_cf_blend"] = evaluate_lists(blend_lists, k, n_items)
    report["methods"]["project_pipeline"] = evaluate_lists(online_lists, k, n_items)
    report["methods"]["project_pipeline_live_session"] = evaluate_lists(live_lists, k, n_items)
    report["config"]["project"] = {
        "batch_path": "recpipe.training.train_bundle (default TrainParams) on the training part",
        "project_cf": "its published CF candidates (EASE, time-local EASE and ALS in the learned fusion order), by CF score",
        "project_cf_blend": "the same retrain with the learned fusion off (fusion.folds=0): the candidates "
        "in the fixed blend's order (EASE and time-local EASE relative scores, ALS filling), by CF score",
        "project_pipeline": "Recommender over the FeatureUpdater-replayed stores, asked once per user "
        "a day after the user's last training interaction (a returning user: the session has expired)",
        "project_pipeline_live_session": "the same, asked 1 s after the last training interaction "
        "(the session of the last training ratings is live)",
        "post_filtered_requests": product.post_filtered,
        "seconds": round(time.perf_counter() - t0, 2),
        # the bundle's own training figures (validation nDCG per kind of list, best epoch, ...)
        "training_metrics": {
            name: value
            for name, value in product.trained.metrics.items()
            if isinstance(value, (int, float, str))
        },
    }
    progress(
        f"project: cf ndcg@{k}={report['methods']['project_cf'][f'ndcg@{k}']:.4f} "
        f"pipeline ndcg@{k}={report['methods']['project_pipeline'][f'ndcg@{k}']:.4f}"
    )


#: Paired comparisons reported by the random protocol: (row, reference).
PAIRS = (
    ("project_pipeline", "ease"),
    ("project_pipeline", "project_cf"),
    ("project_pipeline", "project_cf_blend"),
    ("project_cf", "ease"),
    ("project_pipeline_live_session", "project_pipeline"),
)


def _paired(per_user: dict[str, list[float]]) -> dict[str, dict[str, float]]:
    """Mean per-user nDCG difference with its standard error, on the same users: a tighter test
    than comparing two means with their own standard errors (the users' spread cancels)."""
    out: dict[str, dict[str, float]] = {}
    for row, ref in PAIRS:
        if row not in per_user or ref not in per_user:
            continue
        d = np.asarray(per_user[row], np.float64) - np.asarray(per_user[ref], np.float64)
        out[f"{row}_minus_{ref}"] = {
            "diff": round(float(d.mean()), 6),
            "se": round(float(d.std(ddof=1) / np.sqrt(len(d))), 6) if len(d) > 1 else 0.0,
            "users": len(d),
        }
    return out
