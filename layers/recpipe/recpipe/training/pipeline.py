"""train_bundle: from an interaction log and a catalogue to a servable, evaluated model bundle.

Time is split in three (quantiles of event time, so every part has data):

    [start, T1)  fit CF (ALS) -> candidates, neighbours, item table used while replaying
    [T1, T2)     replay events in time order -> ranker examples (labels: what the user chose)
    [T2, end]    holdout: CF refit on [start, T2); the ranked pipeline vs CF alone at T2

Then CF is refitted on the whole window (same hyper-parameters) for the published candidates,
embeddings and neighbours; the ranker trained on [T1, T2) ships with them, unless it orders the
holdout worse than the CF order (the gate's rule): then the CF-order scorer ships in its place.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from recpipe.bundle import CANDIDATES_NPZ, Neighbours, write_bundle
from recpipe.domain.catalogue import InteractionLog, ItemMeta
from recpipe.domain.features import FEATURE_NAMES
from recpipe.domain.items import ItemTable
from recpipe.ranking_metrics import hit_rate_at_k, ndcg_at_k
from recpipe.redis_keys import SCORE_DECIMALS
from recpipe.training.candidates import CandidateLists
from recpipe.training.cf import (
    BlendWeights,
    CFModel,
    ItemLinearModel,
    SequentialModel,
    fit_als,
    fit_bpr,
    fit_item_linear,
    fit_sequential,
    fused_top_n,
    head_neighbours,
    neighbours,
    row_weights,
)
from recpipe.training.examples import ExampleLists, carve_out_lists, carve_out_mask
from recpipe.training.fusion import (
    CFModels,
    Context,
    FusionModel,
    FusionParams,
    adopt,
    carve_outs,
    fused_lists,
    train_fusion,
)
from recpipe.training.gate import worse_than_cf_order
from recpipe.training.history import (
    CandidatePolicy,
    Examples,
    ReplayState,
    Snapshot,
    TrendingWindow,
    replay,
)
from recpipe.training.holdout import PER_USER, Holdout, holdout_user, rank, score
from recpipe.training.item_table import build_item_table, item_universe
from recpipe.training.ranker import RankerParams, cf_order_scorer, export_tflite, train_list_ranker
from recpipe.training.tuning import choose_blend

CANDIDATES_FILE = "candidates.npz"
#: Carve-out lists are requests of a returning user: a day after the last kept event, so the
#: session has expired and the list is about long-term taste (next-event lists have the session).
RETURN_AFTER_S = 86400.0
#: Where session neighbours of head items come from (TrainParams.neighbour_source).
NEIGHBOUR_SOURCES = ("sequential", "linear", "cosine")
REPORT_FILE = "train_report.json"


@dataclass(frozen=True, slots=True)
class TrainParams:
    #: "als" or "bpr" (see docs/training.md for the holdout comparison)
    cf_method: str = "als"
    #: ALS: 128 factors under a strong ridge (100, confidence 1 + 10 x weight) score 0.2197
    #: nDCG@10 alone on five validation splits of ml-latest-small (64 factors at 0.05 / 2, the
    #: earlier defaults: 0.1832 on split 42, where this scores 0.2188); on ml-100k's validation
    #: splits ridge 50 / 200 scored 0.2481 / 0.2414 against 0.2694 (docs/training.md)
    factors: int = 128
    iterations: int = 15
    regularization: float = 100.0
    alpha: float = 10.0
    #: other ALS ridges the retrain tries on its carve-out, with every blend that weighs ALS
    #: (training/tuning.py; ALS only, () keeps `regularization`): a generated ml-1m-sized shop
    #: wants 200, a 10M shop at 100,000 items fell back to a blend without ALS at 100
    als_regularization_grid: tuple[float, ...] = (50.0, 200.0)
    #: the item embeddings (the bundle's item table: the ranker's session / history / cart
    #: similarities, the neighbours of items outside the head, diversity) come from their own
    #: ALS, the one that shipped before the strong ridge: the ridge that scores user x item
    #: best (above) made the session path worse (docs/training.md). None: the factor model's
    #: own item factors
    embedding_factors: int | None = 64
    embedding_regularization: float = 0.05
    embedding_alpha: float = 2.0
    #: BPR only
    bpr_iterations: int = 100
    bpr_learning_rate: float = 0.01
    bpr_regularization: float = 0.01
    #: item-linear (EASE) candidate model over the `linear_head` most-interacted items
    #: (0 = ALS alone); its lists lead, ALS fills users it does not reach
    linear_head: int = 5000
    linear_regularization: float = 200.0
    #: other regularisations and time-local weights the retrain tries (every pair) on a
    #: carve-out of its own window (training/tuning.py): it moves off the defaults above only
    #: for a gain of more than two standard errors; () and () keep them without trying
    linear_regularization_grid: tuple[float, ...] = (100.0, 500.0, 1000.0, 2000.0)
    #: (EASE, time-local, ALS) blend weights the retrain tries beside the defaults; with an EASE
    #: weight each is tried at every regularisation, with an ALS weight at every ALS ridge. The
    #: first four are the blends of EASE and the time-local model that shipped before ALS joined
    #: the blend
    blend_weight_grid: tuple[tuple[float, float, float], ...] = (
        (1.0, 2.0, 0.0),
        (1.0, 0.0, 0.0),
        (1.0, 1.0, 0.0),
        (1.0, 4.0, 0.0),
        (0.0, 2.0, 3.0),
        (0.0, 3.0, 2.0),
        (0.0, 1.0, 2.0),
        (0.0, 1.0, 3.0),
    )
    #: the fixed blend that orders the CF lists: EASE (`linear_weight`), the time-local model
    #: (`sequential_weight`) and ALS (`als_weight`), each relative to the user's best unseen
    #: item. ALS and the time-local EASE alone, equally weighted, beat EASE + 2 x time-local by
    #: +0.0060 nDCG@10 on five validation splits of ml-latest-small (all five ahead) and +0.0074
    #: on ml-100k's; EASE still feeds the fusion and the head (docs/training.md)
    linear_weight: float = 0.0
    als_weight: float = 1.0
    #: time-local model (cf.SequentialModel over the same head): time-local EASE with ridge `sequential_regularization`
    #: over pairs at most `sequential_window` positions apart (0 = the damped counts, which use
    #: `sequential_decay` and `sequential_damping`). Chosen on validation splits of the random
    #: protocol (docs/training.md)
    sequential_weight: float = 1.0
    sequential_window: int = 20
    sequential_regularization: float = 100.0
    sequential_decay: float = 0.85
    sequential_damping: float = 0.3
    #: session neighbours of head items: "sequential" (the time-local model), "linear"
    #: (item-linear weights) or "cosine" (embeddings only); chosen on the replay's held-out
    #: next-event lists (docs/training.md)
    neighbour_source: str = "sequential"
    #: candidates published per user
    top_n: int = 200
    neighbours: int = 50
    #: event-time quantiles where the ranker window and the holdout start
    ranker_start: float = 0.7
    holdout_start: float = 0.9
    #: positive events sampled from the ranker window, and negatives kept per positive
    max_examples: int = 6000
    negatives: int = 100
    #: replay only this many users' histories (None = all); big logs subsample here
    max_replay_users: int | None = None
    #: carve-out lists (long-term taste): users sampled, share of their items held out, and
    #: rows per carve-out list: the CF head, and random others from the rest of the pool
    carve_out_users: int = 2000
    carve_out_ratio: float = 0.25
    #: independent carve-outs (each one CF refit), each over up to `carve_out_users` users.
    #: 0 by default: the ranker's corrections apply only with a live session, so lists without
    #: one (what carve-outs label) are ordered by CF alone and these lists would only train the
    #: priors' scale (measured in docs/training.md); kept as an option for other data
    carve_out_folds: int = 0
    carve_out_head: int = 100
    carve_out_others: int = 50
    max_eval_users: int = 2000
    eval_k: int = 10
    policy: CandidatePolicy = field(default_factory=CandidatePolicy)
    #: learned fusion of the CF models (training/fusion.py): the published lists' order when it
    #: beats the fixed blend on its carve-outs' validation users by > 2 SE; folds=0 turns it off
    fusion: FusionParams = field(default_factory=FusionParams)
    ranker: RankerParams = field(default_factory=RankerParams)
    seed: int = 7

    def __post_init__(self) -> None:
        # A retrain request's params come from outside (the workflow input): refuse nonsense
        # before any fitting starts, naming the field.
        if self.neighbour_source not in NEIGHBOUR_SOURCES:
            raise ValueError(
                f"neighbour_source must be one of {NEIGHBOUR_SOURCES}, got {self.neighbour_source!r}"
            )
        if self.linear_regularization <= 0 or any(not g > 0 for g in self.linear_regularization_grid):
            raise ValueError(
                "linear_regularization and every linear_regularization_grid value must be > 0; got "
                f"{self.linear_regularization}, {self.linear_regularization_grid}"
            )
        if self.embedding_factors is not None and (
            self.embedding_factors < 1
            or not self.embedding_regularization > 0
            or not self.embedding_alpha > 0
        ):
            raise ValueError(
                "embedding_factors must be >= 1 (or null), embedding_regularization and embedding_alpha > 0; "
                f"got {self.embedding_factors}, {self.embedding_regularization}, {self.embedding_alpha}"
            )
        if any(not g > 0 for g in self.als_regularization_grid):
            raise ValueError(
                f"every als_regularization_grid value must be > 0; got {self.als_regularization_grid}"
            )
        if (
            self.sequential_weight < 0
            or self.sequential_window < 1
            or not 0 < self.sequential_decay <= 1
            or not self.sequential_regularization >= 0
        ):
            raise ValueError(
                "sequential_weight must be >= 0, sequential_window >= 1, 0 < sequential_decay <= 1 and "
                f"sequential_regularization >= 0; got {self.sequential_weight}, {self.sequential_window}, "
                f"{self.sequential_decay}, {self.sequential_regularization}"
            )
        # BlendWeights refuses negative or all-zero weights
        for triple in (
            (self.linear_weight, self.sequential_weight, self.als_weight),
            *self.blend_weight_grid,
        ):
            if len(triple) != 3:  # (EASE, time-local, ALS)
                raise ValueError(f"every blend_weight_grid entry must be 3 weights, got {triple!r}")
            BlendWeights(*triple)

    @property
    def blend_weights(self) -> BlendWeights:
        return BlendWeights(self.linear_weight, self.sequential_weight, self.als_weight)

    @classmethod
    def tiny(cls) -> TrainParams:
        """Seconds on a few hundred interactions (tests)."""
        return cls(
            # a ridge of 100 would shrink 8 factors fitted on a few hundred events to noise
            factors=8,
            regularization=0.05,
            als_regularization_grid=(),
            embedding_factors=None,
            alpha=2.0,
            iterations=3,
            top_n=50,
            neighbours=10,
            max_examples=300,
            negatives=10,
            linear_head=500,
            carve_out_users=100,
            carve_out_head=30,
            carve_out_others=10,
            ranker=RankerParams(hidden=(16, 8), epochs=2, batch_size=256),
            fusion=FusionParams(folds=1, users=100, depth=30, als_depth=20, epochs=1, members=1),
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainParams:
        d = dict(d)
        if "linear_neighbours" in d:  # before neighbour_source
            d.setdefault("neighbour_source", "linear" if d.pop("linear_neighbours") else "cosine")
        policy = CandidatePolicy(**d.pop("policy", {}))
        rk = d.pop("ranker", {})
        if "hidden" in rk:
            rk = {**rk, "hidden": tuple(rk["hidden"])}
        fusion = FusionParams(**d.pop("fusion", {}))
        if "sequential_weight_grid" in d:  # before ALS joined the blend: EASE + w x time-local
            d.setdefault("blend_weight_grid", [(1.0, float(w), 0.0) for w in d.pop("sequential_weight_grid")])
        for grid in ("linear_regularization_grid", "als_regularization_grid"):
            if grid in d:  # a JSON list
                d[grid] = tuple(float(g) for g in d[grid])
        if "blend_weight_grid" in d:
            d["blend_weight_grid"] = tuple(tuple(float(w) for w in t) for t in d["blend_weight_grid"])
        return cls(**d, policy=policy, fusion=fusion, ranker=RankerParams(**rk))


@dataclass(slots=True)
class TrainResult:
    bundle_dir: Path
    manifest: dict[str, Any]
    #: user_id -> [(item_id, score), ...] best first (array-backed Mapping)
    candidates: CandidateLists
    metrics: dict[str, Any]
    candidates_path: Path | None = None
    stages: dict[str, dict[str, float]] = field(default_factory=dict)
    #: what the users evaluated at T2 knew and did next (the Evaluate step scores the live model on it)
    holdout: Holdout | None = None


def peak_rss_mib() -> float:
    """This process's peak resident set size. VmHWM is per address space, so unlike ru_maxrss
    it does not inherit the high-water mark of a parent that forked us before exec."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


class _Stages:
    """Wall time and process peak RSS after each stage (the benchmark reads these)."""

    def __init__(self, progress: bool, total: int) -> None:
        self.stages: dict[str, dict[str, float]] = {}
        self._bar: Any = None
        if progress:
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc="retrain", unit="stage")

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        if self._bar is not None:
            self._bar.set_postfix_str(name)
        t0 = time.perf_counter()
        yield
        self.stages[name] = {
            "wall_s": round(time.perf_counter() - t0, 3),
            "peak_rss_mib": round(peak_rss_mib(), 1),
        }
        if self._bar is not None:
            self._bar.update(1)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


@dataclass(slots=True)
class _Phase:
    """One CF fit with the item-side data derived from it."""

    model: CFModel
    items: ItemTable
    neighbours: Neighbours
    linear: ItemLinearModel | None = None
    sequential: SequentialModel | None = None
    context: Context | None = None


def _fit_cf(window: InteractionLog, n_users: int, n_items: int, params: TrainParams) -> CFModel:
    """The factor model of `params.cf_method` (ALS or BPR) on `window`."""
    if params.cf_method == "bpr":
        model = fit_bpr(
            window,
            n_users,
            n_items,
            factors=params.factors,
            iterations=params.bpr_iterations,
            learning_rate=params.bpr_learning_rate,
            regularization=params.bpr_regularization,
            seed=params.seed,
        )
    elif params.cf_method == "als":
        model = fit_als(
            window,
            n_users,
            n_items,
            factors=params.factors,
            iterations=params.iterations,
            regularization=params.regularization,
            alpha=params.alpha,
            seed=params.seed,
        )
    else:
        raise ValueError(f"unknown cf_method {params.cf_method!r} (als or bpr)")
    return model


def _embedding_params(params: TrainParams) -> TrainParams | None:
    """The ALS settings of the item embeddings, when they are not the factor model's own."""
    if params.embedding_factors is None:
        return None
    own = replace(
        params,
        cf_method="als",
        factors=params.embedding_factors,
        regularization=params.embedding_regularization,
        alpha=params.embedding_alpha,
    )
    if params.cf_method == "als" and (own.factors, own.regularization, own.alpha) == (
        params.factors,
        params.regularization,
        params.alpha,
    ):
        return None
    return own


def _fit_sequential(
    window: InteractionLog, head: npt.NDArray[np.int32], n_items: int, params: TrainParams
) -> SequentialModel:
    """The time-local model over `head` with `params`' window and regularisation (or decay and
    damping: the count model)."""
    return fit_sequential(
        window,
        head,
        n_items,
        window=params.sequential_window,
        decay=params.sequential_decay,
        damping=params.sequential_damping,
        regularization=params.sequential_regularization,
    )


def _fit_phase(
    window: InteractionLog,
    n_users: int,
    item_ids: list[str],
    catalogue: Sequence[ItemMeta],
    params: TrainParams,
    *,
    end_ts: float,
    with_neighbours: bool = True,
) -> _Phase:
    """CF model, item table, neighbours and item-linear model fitted on `window`.

    `with_neighbours=False` leaves every item without neighbours: for carve-out requests, which
    have no live session to draw neighbours from (a third of a carve-out fold's fit)."""
    embed = _embedding_params(params)
    # the embeddings' own ALS is fitted, read and dropped before the factor model: one ALS alive
    embeddings = None if embed is None else _fit_cf(window, n_users, len(item_ids), embed).normalised_items
    model = _fit_cf(window, n_users, len(item_ids), params)
    table = build_item_table(
        window,
        item_ids,
        catalogue,
        model.normalised_items if embeddings is None else embeddings,
        default_first_seen=end_ts,
    )
    idx, sim = neighbours(table.embeddings, params.neighbours if with_neighbours else 0)
    linear = sequential = None
    if params.linear_head > 0:
        linear = fit_item_linear(
            window,
            n_users,
            len(item_ids),
            head=params.linear_head,
            regularization=params.linear_regularization,
        )
        # the fusion reads the time-local scores as features even when the blend weighs them 0
        wants_sequential = (
            params.sequential_weight > 0
            or any(t[1] > 0 for t in params.blend_weight_grid)
            or params.fusion.folds > 0
            or (with_neighbours and params.neighbour_source == "sequential")
        )
        if wants_sequential:
            sequential = _fit_sequential(window, linear.head, len(item_ids), params)
        if with_neighbours and params.neighbour_source == "linear":
            idx, sim = head_neighbours(linear.head, linear.weights, (idx, sim))
        elif with_neighbours and sequential is not None and params.neighbour_source == "sequential":
            idx, sim = head_neighbours(sequential.head, sequential.weights, (idx, sim))
    context = None
    if linear is not None and params.fusion.folds > 0:
        context = Context.build(window, n_users, len(item_ids), _categories(item_ids, catalogue))
    return _Phase(model, table, Neighbours(indices=idx, scores=sim), linear, sequential, context)


def _categories(item_ids: list[str], catalogue: Sequence[ItemMeta]) -> list[list[str]]:
    meta_of = {m.item_id: m.categories for m in catalogue}
    return [list(meta_of.get(i, ())) for i in item_ids]


def _fused(
    phase: _Phase,
    users: npt.NDArray[np.int32],
    n: int,
    params: TrainParams,
    fusion: FusionModel | None = None,
) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.float32]]:
    """The phase's published CF lists: in the fusion's order when one was adopted, else the
    fixed blend's (fused_top_n with the phase's models)."""
    if fusion is not None and phase.linear is not None and phase.context is not None and len(users):
        return fused_lists(
            CFModels(phase.linear, phase.sequential, phase.model),
            phase.context,
            users,
            n,
            fusion=fusion,
            params=params.fusion,
            weights=params.blend_weights,
        )
    return fused_top_n(
        phase.linear,
        phase.model,
        users,
        n,
        sequential=phase.sequential,
        weights=params.blend_weights,
    )


def _cf_lookup(
    phase: _Phase,
    users: npt.NDArray[np.int32],
    n: int,
    params: TrainParams,
    fusion: FusionModel | None = None,
) -> dict[int, list[tuple[str, float]]]:
    if not len(users):
        return {}
    best, scores = _fused(phase, users, n, params, fusion)
    ids = phase.items.item_ids
    out: dict[int, list[tuple[str, float]]] = {}
    for row, u in enumerate(users.tolist()):
        # as the candidate cache stores them (what serving reads back)
        out[u] = [
            (ids[i], round(float(s), SCORE_DECIMALS))
            for i, s in zip(best[row].tolist(), scores[row].tolist(), strict=True)
            if i >= 0
        ]
    return out


def train_bundle(
    log: InteractionLog,
    items: Sequence[ItemMeta],
    out_dir: Path,
    *,
    version: str,
    params: TrainParams | None = None,
    progress: bool = False,
    on_snapshot: Callable[[Snapshot], None] | None = None,
) -> TrainResult:
    """Train candidates + ranker and write `out_dir/bundle` and `out_dir/candidates.npz`."""
    p = params or TrainParams()
    if len(log) == 0:
        raise ValueError("cannot train on an empty interaction log")
    out_dir = Path(out_dir)
    st = _Stages(progress, total=10)
    rng = np.random.default_rng(p.seed)

    with st.stage("prepare"):
        log = log.sorted_by_time()
        item_ids = item_universe(log, items)
        n_users = len(log.user_vocab)
        start_ts, end_ts = float(log.ts[0]), float(log.ts[-1])
        t1 = float(np.quantile(log.ts, p.ranker_start))
        t2 = _holdout_start(log, p)
        before_t1 = log.ts < t1
        before_t2 = log.ts < t2
        meta_of = {m.item_id: m.categories for m in items}
        item_cats = [list(meta_of.get(i, ())) for i in item_ids]
        trending = TrendingWindow(log.ts, log.items, row_weights(log), item_ids)
        replay_users = np.unique(log.users[(log.ts >= t1) & before_t2])
        if p.max_replay_users is not None and len(replay_users) > p.max_replay_users:
            replay_users = np.sort(rng.choice(replay_users, p.max_replay_users, replace=False))
        in_replay = np.zeros(n_users, bool)
        in_replay[replay_users] = True
        # The holdout's users (active after T2, known before it) are replayed too, so the gate
        # sees what the stores hold for each of them: up to max_eval_users (>= 500), all when fewer.
        holdout_users = np.unique(log.users[~before_t2])
        known_before = np.zeros(n_users, bool)
        known_before[log.users[before_t2]] = True
        holdout_users = holdout_users[known_before[holdout_users]]
        if len(holdout_users) > p.max_eval_users:
            holdout_users = np.sort(rng.choice(holdout_users, p.max_eval_users, replace=False))
        in_replay[holdout_users] = True

    with st.stage("cf_tune"):
        p, tune_metrics = _tune(log.take(before_t2), n_users, len(item_ids), p)

    with st.stage("cf_fusion"):
        fusion, fusion_metrics = _train_fusion(
            log.take(before_t2), n_users, item_ids, items, p, rng, progress
        )

    with st.stage("cf_ranker_window"):
        phase1 = _fit_phase(log.take(before_t1), n_users, item_ids, items, p, end_ts=t1)

    with st.stage("replay"):
        rows = np.flatnonzero(before_t2 & in_replay[log.users])
        window = np.flatnonzero(log.ts[rows] >= t1)
        sample = np.zeros(len(rows), bool)
        if len(window):
            sample[rng.choice(window, min(p.max_examples, len(window)), replace=False)] = True
        cf1 = _cf_lookup(phase1, np.unique(log.users[rows[sample]]).astype(np.int32), p.policy.cf, p, fusion)
        bar: Any = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=len(rows), desc="replay", unit="event", leave=False)
        examples, state = replay(
            log,
            rows,
            sample,
            items=phase1.items,
            neighbours=phase1.neighbours,
            categories_of=item_cats.__getitem__,
            cf_of=lambda u: cf1.get(u, []),
            trending=trending,
            policy=p.policy,
            negatives=p.negatives,
            seed=p.seed,
            on_snapshot=on_snapshot,
            progress=None if bar is None else (lambda k: bar.update(k - bar.n)),
            held_out=p.ranker.validation,
        )
        if bar is not None:
            bar.close()

    with st.stage("carve_out"):
        lists = _next_event_lists(examples)
        carve_metrics = {"carve_out_positives": 0.0, "carve_out_covered": 0.0}
        for fold in range(p.carve_out_folds):
            carved, fold_metrics = _carve_out(
                log, before_t2, item_ids, items, item_cats, p, rng, fold, fusion
            )
            lists.extend(carved)
            for name, value in fold_metrics.items():
                carve_metrics[name] += value

    with st.stage("train_ranker"):
        model, ranker_metrics = train_list_ranker(
            lists.x, lists.y, p.ranker, kinds=lists.kind, holdout=lists.held_out
        )
        probe = np.concatenate(lists.x)[:512]
        blob = export_tflite(model, probe)

    metrics: dict[str, Any] = {
        "ranker_examples": len(examples.x),
        "ranker_positives": int(examples.covered),
        "ranker_candidate_recall": round(examples.covered / max(examples.considered, 1), 4),
        "ranker_lists_next_event": lists.count("next_event"),
        "ranker_lists_new_visitor": lists.count("new_visitor"),
        "ranker_lists_carve_out": lists.count("carve_out"),
        "carve_out_candidate_recall": round(
            carve_metrics["carve_out_covered"] / max(carve_metrics["carve_out_positives"], 1.0), 4
        ),
        **{k: round(v, 5) for k, v in ranker_metrics.items()},
        **tune_metrics,
        **fusion_metrics,
    }
    with st.stage("evaluate"):
        eval_metrics, holdout, blob = _evaluate(
            log,
            t2,
            state,
            in_replay,
            item_ids,
            items,
            trending,
            blob,
            p,
            rng,
            fusion,
            cf_order=lambda: export_tflite(cf_order_scorer(model), probe),
            say=(lambda m: print(m, file=sys.stderr)) if progress else None,
        )
        metrics.update(eval_metrics)

    with st.stage("cf_full"):
        final, candidates = _published(log, item_ids, items, p, fusion)

    with st.stage("write_bundle"):
        bundle_dir = out_dir / "bundle"
        data_window = {
            "start": start_ts,
            "end": end_ts,
            "ranker_start": t1,
            "holdout_start": t2,
            "interactions": len(log),
            "users": n_users,
            "items": len(item_ids),
        }
        manifest = write_bundle(
            bundle_dir,
            version=version,
            items=final.items,
            neighbours=final.neighbours,
            ranker_tflite=blob,
            metrics=metrics,
            data_window=data_window,
            params=p.to_dict(),
        )
        cand_path = out_dir / CANDIDATES_FILE
        candidates.save(cand_path)
        # A copy travels with the bundle: serving restores an emptied candidate cache from it.
        candidates.save(bundle_dir / CANDIDATES_NPZ)
    st.close()
    (out_dir / REPORT_FILE).write_text(
        json.dumps(
            {"version": version, "metrics": metrics, "stages": st.stages, "data_window": data_window},
            indent=2,
        )
    )
    return TrainResult(bundle_dir, manifest, candidates, metrics, cand_path, st.stages, holdout)


def _holdout_start(log: InteractionLog, p: TrainParams) -> float:
    """T2: the gate's holdout starts here, and everything a retrain chooses is fitted before it."""
    return float(np.quantile(log.ts, p.holdout_start))


def _published(
    log: InteractionLog,
    item_ids: list[str],
    items: Sequence[ItemMeta],
    p: TrainParams,
    fusion: FusionModel | None,
) -> tuple[_Phase, CandidateLists]:
    """The models fitted on the whole (time-sorted) log and every active user's published list."""
    final = _fit_phase(log, len(log.user_vocab), item_ids, items, p, end_ts=float(log.ts[-1]))
    active = np.flatnonzero(np.diff(final.model.user_items.indptr) > 0).astype(np.int32)
    best, scores = _fused(final, active, p.top_n, p, fusion)
    return final, CandidateLists([log.user_vocab[u] for u in active.tolist()], best, scores, item_ids)


def candidate_lists(
    log: InteractionLog, items: Sequence[ItemMeta], params: TrainParams | None = None
) -> tuple[CandidateLists, dict[str, Any]]:
    """The lists `train_bundle` publishes with the learned fusion off (the fixed blend's order),
    from its two CF stages alone: `cf_tune` (the retrain's own lambda / time-local weight, chosen
    on the window before T2) and `cf_full`. No fusion, replay, ranker or gate: seconds where a
    retrain takes a minute, and deterministic, which is what choosing the candidate models'
    defaults on validation splits needs (`recpipe validate --stage candidates`)."""
    p = params or TrainParams()
    if len(log) == 0:
        raise ValueError("cannot train on an empty interaction log")
    log = log.sorted_by_time()
    item_ids = item_universe(log, items)
    before_t2 = log.ts < _holdout_start(log, p)
    p, metrics = _tune(log.take(before_t2), len(log.user_vocab), len(item_ids), p)
    _, lists = _published(log, item_ids, items, p, None)
    return lists, metrics


def _tune(
    window: InteractionLog, n_users: int, n_items: int, p: TrainParams
) -> tuple[TrainParams, dict[str, Any]]:
    """`p` with the item-linear regularisation, ALS ridge and blend weights its own carve-out
    prefers (training/tuning.py), and the figures behind the choice (the run record keeps them)."""
    fixed = {
        "linear_regularization": p.linear_regularization,
        "als_regularization": p.regularization,
        "linear_weight": p.linear_weight,
        "sequential_weight": p.sequential_weight,
        "als_weight": p.als_weight,
    }
    if p.linear_head <= 0 or not (p.linear_regularization_grid or p.blend_weight_grid):
        return p, fixed

    def fit_seq(w: InteractionLog, head: npt.NDArray[np.int32]) -> SequentialModel:
        return _fit_sequential(w, head, n_items, p)

    def fit_factors(w: InteractionLog, ridge: float) -> CFModel:
        return _fit_cf(w, n_users, n_items, replace(p, regularization=ridge))

    als = p.cf_method == "als"  # BPR's ridge is another parameter, not tuned here

    choice = choose_blend(
        window,
        n_users,
        n_items,
        regularizations=p.linear_regularization_grid,
        weights=tuple(BlendWeights(*t) for t in p.blend_weight_grid),
        default=(p.linear_regularization, p.blend_weights),
        head=p.linear_head,
        fit_sequential=fit_seq,
        fit_als=fit_factors,
        als_default=p.regularization,
        als_regularizations=p.als_regularization_grid if als else (),
        users=p.fusion.users,
        ratio=p.fusion.ratio,
        # its own stream: the fusion's carve-outs draw what they drew before this step existed
        rng=np.random.default_rng([p.seed, 1]),
        k=p.eval_k,
    )
    if choice is None:
        return p, fixed
    tuned = replace(
        p,
        linear_regularization=choice.linear_regularization,
        regularization=choice.als_regularization if als else p.regularization,
        linear_weight=choice.weights.linear,
        sequential_weight=choice.weights.sequential,
        als_weight=choice.weights.als,
    )
    return tuned, choice.metrics(p.eval_k)


def _train_fusion(  # noqa: PLR0917 - one call site, all inputs of one stage
    window: InteractionLog,
    n_users: int,
    item_ids: list[str],
    catalogue: Sequence[ItemMeta],
    p: TrainParams,
    rng: np.random.Generator,
    progress: bool,
) -> tuple[FusionModel | None, dict[str, Any]]:
    """The learned fusion from carve-outs of the window before the holdout (the gate's users'
    later events never train it), adopted only when its validation users' lists beat the fixed
    blend's; None (the blend's order) otherwise."""
    fp = p.fusion
    if fp.folds <= 0 or p.linear_head <= 0:
        return None, {"fusion_adopted": 0}
    n_items = len(item_ids)

    def fit(w: InteractionLog) -> CFModels:
        linear = fit_item_linear(
            w, n_users, n_items, head=p.linear_head, regularization=p.linear_regularization
        )
        # the time-local scores are features whatever the blend's weight on them
        seq = _fit_sequential(w, linear.head, n_items, p)
        # the same factor model as every phase (ALS or BPR): the features must mean the same
        return CFModels(linear, seq, _fit_cf(w, n_users, n_items, p))

    say = (lambda m: print(m, file=sys.stderr)) if progress else None
    train, val, metrics = carve_outs(
        window,
        n_users,
        n_items,
        _categories(item_ids, catalogue),
        fit,
        params=fp,
        weights=p.blend_weights,
        rng=rng,
        progress=say,
    )
    if not len(val[1]) or not (train[1].sum(axis=1) > 0).any():
        return None, {"fusion_adopted": 0, **metrics, "fusion_reason": "no carve-out lists"}
    model, fit_metrics = train_fusion(train, val, fp, seed=p.seed, k=p.eval_k)
    k = p.eval_k
    gain = fit_metrics[f"fusion_validation_ndcg@{k}"] - fit_metrics[f"fusion_validation_blend_ndcg@{k}"]
    adopted = adopt(gain, fit_metrics["fusion_validation_gain_se"], fp.adopt_margin_se)
    fit_metrics.pop("fusion_validation_curves")
    return (model if adopted else None), {"fusion_adopted": int(adopted), **metrics, **fit_metrics}


def _next_event_lists(examples: Examples) -> ExampleLists:
    """The replay's examples as lists (one chosen item and its sampled negatives each).

    A list without any CF row is a visitor's (no CF history yet): its own kind, so the epoch
    choice protects the visitors' lists apart from the returning users' ones."""
    out = ExampleLists()
    if not len(examples.group):
        return out
    src_cf = FEATURE_NAMES.index("src_cf")
    cuts = np.flatnonzero(np.diff(examples.group)) + 1
    held = examples.held_out if len(examples.held_out) else np.zeros(len(cuts) + 1, np.bool_)
    lists = zip(np.split(examples.x, cuts), np.split(examples.y, cuts), held.tolist(), strict=True)
    for xs, ys, whole in lists:
        kind = "next_event" if bool((xs[:, src_cf] > 0).any()) else "new_visitor"
        out.add(xs, ys, kind, held_out=whole)
    return out


def _carve_out(  # noqa: PLR0917 - one call site, all inputs of one stage
    log: InteractionLog,
    within: npt.NDArray[np.bool_],
    item_ids: list[str],
    catalogue: Sequence[ItemMeta],
    item_cats: list[list[str]],
    p: TrainParams,
    rng: np.random.Generator,
    fold: int = 0,
    fusion: FusionModel | None = None,
) -> tuple[ExampleLists, dict[str, float]]:
    """Long-term-taste lists: hold out part of sampled users' items (rows in `within`), refit
    CF on the rest, and label the pool of a request a day after each user's last kept event
    (a returning user without a live session)."""
    from recpipe.training.examples import ExampleBuilder

    if p.carve_out_users <= 0 or not within.any():
        return ExampleLists(), {"carve_out_positives": 0.0, "carve_out_covered": 0.0}
    n_users = len(log.user_vocab)
    rows = np.flatnonzero(within)
    per_user = np.bincount(log.users[rows], minlength=n_users)
    eligible = np.flatnonzero(per_user >= 2)
    users = eligible
    if len(users) > p.carve_out_users:
        users = np.sort(rng.choice(users, p.carve_out_users, replace=False))
    held = carve_out_mask(log.take(rows), users.astype(np.int64), p.carve_out_ratio, p.seed + 1 + 100 * fold)
    held_full = np.zeros(len(log), np.bool_)
    held_full[rows[held]] = True
    kept = within & ~held_full
    kept_log = log.take(np.flatnonzero(kept))
    end = float(kept_log.ts[-1]) if len(kept_log) else 0.0
    phase = _fit_phase(kept_log, n_users, item_ids, catalogue, p, end_ts=end, with_neighbours=False)
    cf = _cf_lookup(phase, users.astype(np.int32), p.policy.cf, p, fusion)
    trending = TrendingWindow(kept_log.ts, kept_log.items, row_weights(kept_log), item_ids)
    chosen = np.zeros(n_users, np.bool_)
    chosen[users] = True
    fold_rows = np.flatnonzero(kept & chosen[log.users])
    _, state = replay(
        log,
        fold_rows,
        np.zeros(len(fold_rows), np.bool_),
        items=phase.items,
        neighbours=phase.neighbours,
        categories_of=item_cats.__getitem__,
        cf_of=lambda _u: [],
        trending=trending,
        policy=p.policy,
        negatives=0,
        seed=p.seed,
    )
    last = np.zeros(n_users)
    np.maximum.at(last, log.users[fold_rows], log.ts[fold_rows])

    def state_of(u: int) -> tuple[Any, list[Any], float]:
        now = float(last[u]) + RETURN_AFTER_S
        return state.features.get(u), state.session_at(u, now), now

    return carve_out_lists(
        log,
        held_full,
        users.astype(np.int64),
        builder=ExampleBuilder(phase.items, phase.neighbours, p.policy),
        state_of=state_of,
        cf_of=lambda u: cf.get(u, []),
        trending_at=lambda now: trending.top(now, p.policy.trending),
        head=p.carve_out_head,
        others=p.carve_out_others,
        seed=p.seed + 2 + 100 * fold,
        held_out=p.ranker.validation,
    )


def _evaluate(  # noqa: PLR0917 - one call site, all inputs of one stage
    log: InteractionLog,
    t2: float,
    state: ReplayState,
    in_replay: npt.NDArray[np.bool_],
    item_ids: list[str],
    catalogue: Sequence[ItemMeta],
    trending: TrendingWindow,
    blob: bytes,
    p: TrainParams,
    rng: np.random.Generator,
    fusion: FusionModel | None = None,
    cf_order: Callable[[], bytes] | None = None,
    say: Callable[[str], None] | None = None,
) -> tuple[dict[str, Any], Holdout | None, bytes]:
    """HitRate/NDCG@k at T2 of the ranked pipeline (the exported TFLite model) vs CF alone, and
    the model to ship: `blob`, or `cf_order()` when `blob` orders the holdout worse than the
    candidates' CF order by the gate's own rule.

    The ranked figures come from `holdout.evaluate_model` on the returned Holdout, the same
    call the Evaluate step makes for the live bundle."""
    k = p.eval_k
    before = log.ts < t2
    after_users = np.unique(log.users[~before])
    known = np.zeros(len(in_replay), bool)
    known[log.users[before]] = True
    users = after_users[known[after_users] & in_replay[after_users]]
    if not len(users):
        return {"eval_users": 0}, None, blob
    if len(users) > p.max_eval_users:
        users = np.sort(rng.choice(users, p.max_eval_users, replace=False))
    cf_per_user: list[float] = []
    blend_per_user: list[float] = []
    phase2 = _fit_phase(log.take(before), len(in_replay), item_ids, catalogue, p, end_ts=t2)
    cf2 = _cf_lookup(phase2, users.astype(np.int32), max(p.policy.cf, k), p, fusion)
    # the fixed blend's order on the same users, for the record when the fusion is adopted
    blend2 = _cf_lookup(phase2, users.astype(np.int32), k, p) if fusion is not None else cf2
    popular = np.argsort(-phase2.items.popularity, kind="stable")[: p.policy.popular].astype(np.int32)
    relevant: dict[int, dict[str, float]] = {}  # user -> item -> first time after T2
    tail = ~before
    for u, i, t in zip(
        log.users[tail].tolist(), log.items[tail].tolist(), log.ts[tail].tolist(), strict=True
    ):
        relevant.setdefault(u, {}).setdefault(item_ids[i], t)

    holdout = Holdout(t2, k, p.policy, trending.top(t2, p.policy.trending))
    cf_hr = cf_ndcg = pop_ndcg = 0.0
    pop_list = [item_ids[i] for i in popular[: k * 4].tolist()]
    for u in users.tolist():
        features = state.features.get(u)
        seen = state.seen.get(u, set())
        holdout.users.append(
            holdout_user(
                log.user_vocab[u],
                affinity=features.affinity_at(t2) if features else {},
                recent=[r.item_id for r in features.recent] if features else [],
                session=[e.item_id for e in state.session_at(u, t2)],
                session_types=[e.type for e in state.session_at(u, t2)],
                cart=sorted(features.cart) if features else [],
                total_events=features.total_events if features else 0,
                seen=[item_ids[i] for i in seen],
                cf=cf2.get(u, []),
                relevant=relevant[u],
            )
        )
        rel = set(relevant[u])
        cf_list = [i for i, _ in cf2.get(u, [])[:k]]
        pop = [i for i in pop_list if phase2.items.index[i] not in seen][:k]
        cf_hr += hit_rate_at_k(cf_list, rel, k)
        cf_ndcg += ndcg_at_k(cf_list, rel, k)
        cf_per_user.append(ndcg_at_k(cf_list, rel, k))
        pop_ndcg += ndcg_at_k(pop, rel, k)
        blend_per_user.append(ndcg_at_k([i for i, _ in blend2.get(u, [])[:k]], rel, k))

    def ranked_by(model: bytes) -> dict[str, Any]:
        rankings, candidate_sets = rank(holdout, phase2.items, phase2.neighbours, model)
        holdout.users = [replace(h, ranked=r) for h, r in zip(holdout.users, rankings, strict=True)]
        return score(holdout, rankings, candidate_sets)

    def se(d: npt.NDArray[np.float64]) -> float | None:
        return round(float(d.std(ddof=1) / np.sqrt(len(d))), 5) if len(d) > 1 else None

    ranked = ranked_by(blob)
    # the ranked lists against the candidates' own CF order, user by user (the gate's margin)
    diff = np.asarray(ranked[PER_USER], np.float64) - np.asarray(cf_per_user, np.float64)
    order: dict[str, Any] = {"ranker_order": "learned"}
    if cf_order is not None and worse_than_cf_order(ranked[PER_USER], cf_per_user):
        # The gate would refuse this bundle, and with it the fresh candidates. Ship them with
        # the CF-order scorer instead (the order the gate compares with); the learned ranker's
        # figures stay in the record.
        order = {
            "ranker_order": "cf_order",
            f"learned_ranker_ndcg@{k}": ranked[f"ndcg@{k}"],
            f"learned_ranker_minus_cf_ndcg@{k}": round(float(diff.mean()), 5),
            f"learned_ranker_minus_cf_ndcg@{k}_se": se(diff),
        }
        (say or (lambda _: None))(
            f"the learned ranker orders the holdout worse than its candidates' CF order "
            f"({diff.mean():+.5f} nDCG@{k}, SE {se(diff)}): shipping the CF-order scorer"
        )
        blob = cf_order()
        ranked = ranked_by(blob)
        diff = np.asarray(ranked[PER_USER], np.float64) - np.asarray(cf_per_user, np.float64)
    n = float(len(users))
    # and against the same candidates in the fixed blend's order: what the learned orders (the
    # fusion in the batch path, the ranker online) add together
    diff_blend = np.asarray(ranked[PER_USER], np.float64) - np.asarray(blend_per_user, np.float64)

    return (
        {
            **order,
            "eval_users": int(n),
            f"hit_rate@{k}": ranked[f"hit_rate@{k}"],
            f"ndcg@{k}": ranked[f"ndcg@{k}"],
            f"ndcg@{k}_se": ranked[f"ndcg@{k}_se"],
            f"ranked_minus_cf_ndcg@{k}": round(float(diff.mean()), 5),
            f"ranked_minus_cf_ndcg@{k}_se": se(diff),
            f"ranked_minus_cf_blend_ndcg@{k}": round(float(diff_blend.mean()), 5),
            f"ranked_minus_cf_blend_ndcg@{k}_se": se(diff_blend),
            PER_USER: ranked[PER_USER],
            f"cf_{PER_USER}": [round(v, 5) for v in cf_per_user],
            f"cf_hit_rate@{k}": round(cf_hr / n, 5),
            f"cf_ndcg@{k}": round(cf_ndcg / n, 5),
            f"popular_ndcg@{k}": round(pop_ndcg / n, 5),
            f"cf_blend_ndcg@{k}": round(sum(blend_per_user) / n, 5),
            "candidate_recall": ranked["candidate_recall"],
            "mean_candidates": ranked["mean_candidates"],
        },
        holdout,
        blob,
    )


def with_overrides(params: TrainParams, **changes: Any) -> TrainParams:
    return replace(params, **changes)


__all__ = ["CANDIDATES_FILE", "Examples", "TrainParams", "TrainResult", "candidate_lists", "train_bundle"]
