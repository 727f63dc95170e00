"""The retrain's own choice of the EASE regularisation and the co-occurrence weight."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from recpipe.domain.catalogue import InteractionLog
from recpipe.domain.events import EventType
from recpipe.training.cf import (
    BlendWeights,
    _relative_rows,
    fit_item_linear,
    fit_item_linear_grid,
    fit_sequential,
)
from recpipe.training.fusion import CarveOuts, Context, FusionParams, ndcg_lists, pools
from recpipe.training.pipeline import TrainParams, train_bundle
from recpipe.training.tuning import choose_blend, key_of, pick

T0 = 1_600_000_000.0


def _taste_log(n_users: int, seed: int = 0) -> InteractionLog:
    """Two tastes (a*, b*) of 12 items each; every user views 8 items of one taste, in time."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        group = "a" if u % 2 == 0 else "b"
        for n, i in enumerate(rng.choice(12, 8, replace=False).tolist()):
            rows.append((f"u{u}", f"{group}{i}", T0 + u * 1000.0 + n * 60.0, EventType.VIEW, None))
    return InteractionLog.from_rows(rows)


@pytest.mark.parametrize("n_users", [10, 60])  # fewer users than head items: user space; more: item space
def test_a_grid_of_fits_equals_one_fit_per_regularisation(n_users: int) -> None:
    log = _taste_log(n_users)
    nu, ni = len(log.user_vocab), len(log.item_vocab)
    users = np.arange(nu, dtype=np.int32)
    regs = (5.0, 50.0, 500.0)
    for reg, grid_fit in zip(
        regs, fit_item_linear_grid(log, nu, ni, head=100, regularizations=regs), strict=True
    ):
        one = fit_item_linear(log, nu, ni, head=100, regularization=reg)
        assert grid_fit.regularization == reg
        np.testing.assert_allclose(grid_fit.weights, one.weights, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(grid_fit.head_scores(users), one.head_scores(users), rtol=1e-5, atol=1e-6)
    # and the regularisation matters: the weights shrink as it grows
    fits = list(fit_item_linear_grid(log, nu, ni, head=100, regularizations=regs))
    norms = [float(np.abs(f.weights).sum()) for f in fits]
    assert norms[0] > norms[1] > norms[2] > 0


def test_pick_moves_off_the_default_only_for_a_gain_beyond_two_standard_errors() -> None:
    rng = np.random.default_rng(0)
    base = rng.random(400)
    noisy = base + rng.normal(0.002, 0.05, 400)  # mean gain 0.002, SE 0.0025
    clear = base + rng.normal(0.03, 0.05, 400)  # mean gain 0.03, SE 0.0025
    a, b, c = (200.0, 100.0, 0.0, 1.0, 1.0), (500.0, 100.0, 1.0, 1.0, 0.0), (1000.0, 50.0, 1.0, 0.0, 0.0)
    kept, gain, se = pick({a: base, b: noisy}, a)
    assert kept == a and 0 < gain < 2 * se
    moved, gain, se = pick({a: base, b: noisy, c: clear}, a)
    assert moved == c and gain > 2 * se
    # a default that is itself the best is kept, with no gain
    assert pick({a: clear, b: base}, a) == (a, 0.0, 0.0)


def _fit_als(log: InteractionLog, ridge: float = 0.1) -> object:
    from recpipe.training.cf import fit_als

    return fit_als(
        log,
        len(log.user_vocab),
        len(log.item_vocab),
        factors=4,
        iterations=5,
        regularization=ridge,
        alpha=2.0,
        seed=1,
    )


def test_choose_blend_scores_every_key_on_the_carve_out_as_the_blend_orders_the_catalogue() -> None:
    log = _taste_log(60)
    nu, ni = len(log.user_vocab), len(log.item_vocab)

    def fit_seq(w: InteractionLog, head: np.ndarray) -> object:
        return fit_sequential(w, head, ni, window=5, decay=0.85, damping=0.3)

    default = BlendWeights(1.0, 1.0, 0.0)
    choice = choose_blend(
        log,
        nu,
        ni,
        regularizations=(5.0, 500.0),
        weights=(BlendWeights(1.0, 0.0, 0.0), BlendWeights(1.0, 2.0, 0.0), BlendWeights(0.0, 1.0, 2.0)),
        default=(50.0, default),
        head=100,
        fit_sequential=fit_seq,  # type: ignore[arg-type]
        fit_als=_fit_als,  # type: ignore[arg-type]
        als_default=0.1,
        als_regularizations=(3.0,),
        users=40,
        ratio=0.25,
        rng=np.random.default_rng(3),
    )
    assert choice is not None
    assert choice.default == (50.0, 0.1, 1.0, 1.0, 0.0) and choice.users == 40
    # every regularisation with every triple that weighs EASE; a triple without EASE once, at
    # every ALS ridge as it weighs ALS
    with_ease = [(r, 0.1, 1.0, q, 0.0) for r in (50.0, 5.0, 500.0) for q in (1.0, 0.0, 2.0)]
    with_als = [(50.0, ridge, 0.0, 1.0, 2.0) for ridge in (0.1, 3.0)]
    assert sorted(choice.ndcg) == sorted([*with_ease, *with_als])
    assert key_of(choice.linear_regularization, choice.als_regularization, choice.weights) in choice.ndcg
    # the same carve-out (same seed), recomputed by brute force over the whole catalogue for
    # two keys, each score relative to the user's best (ALS's negatives as 0)
    fit_log, carved, held = CarveOuts(log, nu, ni).fold(40, 0.25, np.random.default_rng(3))
    truth = CarveOuts(log, nu, ni).truth(carved, held)
    seen = None
    for reg, ridge, (w_e, w_q, w_a) in (
        (500.0, 0.1, (1.0, 2.0, 0.0)),
        (50.0, 0.1, (0.0, 1.0, 2.0)),
        (50.0, 3.0, (0.0, 1.0, 2.0)),
    ):
        linear = fit_item_linear(fit_log, nu, ni, head=100, regularization=reg)
        seq = fit_sequential(fit_log, linear.head, ni, window=5, decay=0.85, damping=0.3)
        als = _fit_als(fit_log, ridge)
        e, q = linear.scores(carved), seq.scores(linear.user_items, carved)
        a = (als.user_factors[carved] @ als.item_factors.T).astype(np.float32)  # type: ignore[attr-defined]
        seen = linear.user_items[carved].toarray() > 0
        e[seen], q[seen], a[seen] = -np.inf, -np.inf, -np.inf
        rel_a = _relative_rows(a)
        rel_a = np.where(np.isneginf(rel_a), rel_a, np.maximum(rel_a, 0.0))
        terms = ((w_e, _relative_rows(e)), (w_q, _relative_rows(q)), (w_a, rel_a))
        blend = sum(w * t for w, t in terms if w > 0)
        order = np.argsort(-blend, axis=1, kind="stable")[:, :10]
        lists = np.where(np.take_along_axis(blend, order, axis=1) > 0, order, -1).astype(np.int32)
        want = float(ndcg_lists(lists, truth, 10).mean())
        assert choice.ndcg[(reg, ridge, w_e, w_q, w_a)] == pytest.approx(want, abs=1e-6)
    metrics = choice.metrics(10)
    assert metrics["blend_tuning_l500_r0.1_e1_q2_a0_ndcg@10"] == round(
        choice.ndcg[(500.0, 0.1, 1.0, 2.0, 0.0)], 5
    )
    assert metrics["blend_tuning_l50_r3_e0_q1_a2_ndcg@10"] == round(
        choice.ndcg[(50.0, 3.0, 0.0, 1.0, 2.0)], 5
    )
    assert metrics["linear_regularization"] == choice.linear_regularization
    assert metrics["als_weight"] == choice.weights.als
    assert metrics["als_regularization"] == choice.als_regularization


def test_empty_grids_try_the_default_alone_and_keep_it() -> None:
    log = _taste_log(40)
    nu, ni = len(log.user_vocab), len(log.item_vocab)
    # without a time-local model or ALS their weights change nothing: only the default is scored
    choice = choose_blend(
        log,
        nu,
        ni,
        regularizations=(),
        weights=(BlendWeights(1.0, 0.0, 0.0), BlendWeights(1.0, 2.0, 3.0)),
        default=(50.0, BlendWeights(1.0, 1.0, 0.0)),
        head=100,
        fit_sequential=None,
        users=20,
        ratio=0.25,
        rng=np.random.default_rng(0),
    )
    assert choice is not None and list(choice.ndcg) == [(50.0, 0.0, 1.0, 1.0, 0.0)]
    assert (choice.linear_regularization, choice.weights, choice.gain) == (
        50.0,
        BlendWeights(1.0, 1.0, 0.0),
        0.0,
    )


def test_a_zero_co_occurrence_weight_leaves_the_fusion_blend_to_ease_without_nans() -> None:
    log = _taste_log(40)
    nu, ni = len(log.user_vocab), len(log.item_vocab)
    from recpipe.training.cf import fit_als
    from recpipe.training.fusion import CFModels

    linear = fit_item_linear(log, nu, ni, head=100, regularization=10.0)
    seq = fit_sequential(log, linear.head, ni, window=5, decay=0.85, damping=0.3)
    als = fit_als(log, nu, ni, factors=4, iterations=5, regularization=0.1, alpha=2.0, seed=1)
    ctx = Context.build(log, nu, ni, [[] for _ in log.item_vocab])
    users = np.arange(nu, dtype=np.int32)
    p = pools(
        CFModels(linear, seq, als),
        ctx,
        users,
        FusionParams(depth=6, als_depth=6),
        weights=BlendWeights(1.0, 0.0, 0.0),
    )
    assert not np.isnan(p.features).any() and not np.isnan(p.blend).any()
    # blend candidates are ordered by EASE alone; the co-occurrence scores stay as features
    from recpipe.training.fusion import FUSION_FEATURES

    col = {n: k for k, n in enumerate(FUSION_FEATURES)}
    both = p.mask & (p.blend > 0)
    np.testing.assert_allclose(
        p.features[..., col["blend_rrank"]][both], p.features[..., col["ease_rrank"]][both]
    )
    assert p.features[..., col["seq_rel"]][p.mask].max() > 0


def test_train_bundle_records_the_choice_and_publishes_with_it(tmp_path: Path) -> None:
    log = _taste_log(80)
    result = train_bundle(log, [], tmp_path, version="v1", params=TrainParams.tiny())
    m = result.metrics
    assert {"linear_regularization", "sequential_weight", "blend_tuning_gain_se"} <= set(m)
    tiny = TrainParams.tiny()
    assert f"blend_tuning_l{tiny.linear_regularization:g}_r{tiny.regularization:g}_e0_q1_a1_ndcg@10" in m
    assert {"linear_weight", "als_weight"} <= set(m)
    # the bundle's params are the ones its lists were fitted with
    assert result.manifest["params"]["linear_regularization"] == m["linear_regularization"]
    assert result.manifest["params"]["sequential_weight"] == m["sequential_weight"]
    fixed = TrainParams.from_dict(
        {**TrainParams.tiny().to_dict(), "linear_regularization_grid": [], "blend_weight_grid": []}
    )
    m2 = train_bundle(log, [], tmp_path / "fixed", version="v2", params=fixed).metrics
    assert m2["linear_regularization"] == fixed.linear_regularization and "blend_tuning_gain_se" not in m2


@pytest.mark.parametrize(
    "bad",
    [
        {"linear_regularization_grid": [100, -1]},
        {"sequential_weight_grid": [-0.5]},
        {"blend_weight_grid": [[1, 0, 0], [0, 0, 0]]},
        {"blend_weight_grid": [[1, 0]]},
        {"linear_weight": 0, "sequential_weight": 0, "als_weight": 0},
        {"linear_regularization": 0},
    ],
)
def test_train_params_refuse_a_bad_grid_from_a_retrain_request(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="must be"):
        TrainParams.from_dict(bad)


def test_grids_round_trip_through_a_json_request() -> None:
    p = TrainParams.from_dict({"linear_regularization_grid": [300, 3000], "blend_weight_grid": [[1, 2, 0]]})
    assert p.linear_regularization_grid == (300.0, 3000.0) and p.blend_weight_grid == ((1.0, 2.0, 0.0),)
    assert TrainParams.from_dict(p.to_dict()) == p
    # a request from before ALS joined the blend: its time-local weights, beside EASE
    old = TrainParams.from_dict({"sequential_weight_grid": [0, 4]})
    assert old.blend_weight_grid == ((1.0, 0.0, 0.0), (1.0, 4.0, 0.0))


@pytest.mark.parametrize(
    ("winner", "alone_gain", "want_reg"),
    [
        # the blend leaves EASE out: lambda is EASE's own choice when its gain is clear ...
        ((0.0, 1.0, 0.0), 0.05, 500.0),
        # ... and stays the default when it is noise
        ((0.0, 1.0, 0.0), 0.0, 50.0),
        # the blend weighs EASE: its own key's lambda, whatever EASE alone prefers
        ((1.0, 2.0, 0.0), 0.05, 5.0),
    ],
)
def test_the_regularisation_comes_from_ease_alone_when_the_chosen_blend_leaves_ease_out(
    monkeypatch: pytest.MonkeyPatch, winner: tuple[float, float, float], alone_gain: float, want_reg: float
) -> None:
    from recpipe.training import tuning

    log = _taste_log(60)
    nu, ni = len(log.user_vocab), len(log.item_vocab)
    rng = np.random.default_rng(0)
    base = rng.random(40)

    def figures(linear: object, *_: object, weights: list[BlendWeights], **__: object) -> list[np.ndarray]:
        reg = linear.regularization  # type: ignore[attr-defined]
        out = []
        for w in weights:
            v = base.copy()
            if (w.linear, w.sequential, w.als) == winner and (w.linear == 0 or reg == 5.0):
                v = v + 0.2  # the winning blend, clearly
            if w == tuning.LINEAR_ALONE and reg == 500.0:
                v = v + alone_gain + rng.normal(0.0, 0.01, len(v))
            out.append(v)
        return out

    monkeypatch.setattr(tuning, "_blend_ndcg", figures)
    choice = choose_blend(
        log,
        nu,
        ni,
        regularizations=(5.0, 500.0),
        weights=(BlendWeights(1.0, 2.0, 0.0),),  # EASE alone is not in the grid: scored to choose lambda only
        default=(50.0, BlendWeights(0.0, 1.0, 0.0)),
        head=100,
        fit_sequential=lambda w, head: fit_sequential(w, head, ni, window=5, decay=0.85, damping=0.3),  # type: ignore[arg-type,misc]
        users=40,
        ratio=0.25,
        rng=np.random.default_rng(3),
    )
    assert choice is not None
    assert (choice.weights.linear, choice.weights.sequential, choice.weights.als) == winner
    assert choice.linear_regularization == want_reg
    # EASE alone was scored at every lambda, but is never the blend unless the grid holds it
    assert {(r, 0.0, 1.0, 0.0, 0.0) for r in (50.0, 5.0, 500.0)} <= set(choice.ndcg)
    assert choice.metrics(10)["linear_tuning_gain_se"] >= 0


@pytest.mark.parametrize(("winner", "want_ridge"), [((0.0, 1.0, 2.0), 3.0), ((1.0, 2.0, 0.0), 0.1)])
def test_the_als_ridge_is_chosen_with_the_blend_and_kept_when_the_blend_leaves_als_out(
    monkeypatch: pytest.MonkeyPatch, winner: tuple[float, float, float], want_ridge: float
) -> None:
    from recpipe.training import tuning

    log = _taste_log(60)
    nu, ni = len(log.user_vocab), len(log.item_vocab)
    base = np.random.default_rng(0).random(40)
    fitted: dict[int, float] = {}
    alive: list[object] = []  # ids stay unique while the models live

    def fit_als(w: InteractionLog, ridge: float) -> object:
        model = _fit_als(w, ridge)
        fitted[id(model)] = ridge
        alive.append(model)
        return model

    def figures(
        _: object, __: object, als: object, *, weights: list[BlendWeights], **___: object
    ) -> list[np.ndarray]:
        ridge = fitted.get(id(als))
        # the winning triple wins clearly at ridge 3 when it weighs ALS, anywhere otherwise
        return [
            base + 0.2 * ((w.linear, w.sequential, w.als) == winner and (w.als == 0 or ridge == 3.0))
            for w in weights
        ]

    monkeypatch.setattr(tuning, "_blend_ndcg", figures)
    choice = choose_blend(
        log,
        nu,
        ni,
        regularizations=(),
        weights=(BlendWeights(1.0, 2.0, 0.0), BlendWeights(0.0, 1.0, 2.0)),
        default=(50.0, BlendWeights(0.0, 1.0, 1.0)),
        head=100,
        fit_sequential=None,
        fit_als=fit_als,  # type: ignore[arg-type]
        als_default=0.1,
        als_regularizations=(3.0, 30.0),
        users=40,
        ratio=0.25,
        rng=np.random.default_rng(3),
    )
    assert choice is not None
    assert (choice.weights.linear, choice.weights.sequential, choice.weights.als) == winner
    assert choice.als_regularization == want_ridge
    assert sorted(fitted.values()) == [0.1, 3.0, 30.0]  # one ALS fit per ridge
    assert {(50.0, r, 0.0, 1.0, 2.0) for r in (0.1, 3.0, 30.0)} <= set(choice.ndcg)


def test_a_retrain_request_names_its_als_ridges_and_refuses_nonsense() -> None:
    p = TrainParams.from_dict({"als_regularization_grid": [20, 400]})
    assert p.als_regularization_grid == (20.0, 400.0)
    with pytest.raises(ValueError, match="als_regularization_grid"):
        TrainParams(als_regularization_grid=(0.0,))


def test_the_item_embeddings_come_from_their_own_als_when_it_differs(tmp_path: Path) -> None:
    from dataclasses import replace

    from recpipe.bundle import load_bundle
    from recpipe.training.pipeline import _embedding_params

    tiny = TrainParams.tiny()
    assert _embedding_params(tiny) is None  # tiny: the factor model's own item factors
    # the same settings as the factor model: no second fit
    same = replace(tiny, embedding_factors=tiny.factors, embedding_regularization=0.05, embedding_alpha=2.0)
    assert _embedding_params(same) is None
    own = replace(tiny, embedding_factors=4, embedding_regularization=0.5, embedding_alpha=1.0)
    embed = _embedding_params(own)
    assert embed is not None and (embed.factors, embed.regularization, embed.alpha) == (4, 0.5, 1.0)
    # the bundle's item table carries the embeddings' dimension, the CF lists the factor model's
    result = train_bundle(_taste_log(80), [], tmp_path, version="v1", params=own)
    items = load_bundle(result.bundle_dir).items
    assert items.embeddings.shape[1] == 4
    norms = np.linalg.norm(items.embeddings, axis=1)
    assert np.allclose(norms[norms > 0], 1.0, atol=1e-5)
    assert len(result.candidates) > 0
    with pytest.raises(ValueError, match="embedding_factors"):
        TrainParams(embedding_factors=0)
    # a retrain request may turn the separate embeddings off
    assert TrainParams.from_dict({"embedding_factors": None}).embedding_factors is None
