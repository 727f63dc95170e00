"""The retrain's own choice of the EASE regularisation and the co-occurrence weight."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from recpipe.domain.catalogue import InteractionLog
from recpipe.domain.events import EventType
from recpipe.training.cf import _relative_rows, fit_item_linear, fit_item_linear_grid, fit_sequential
from recpipe.training.fusion import CarveOuts, Context, FusionParams, ndcg_lists, pools
from recpipe.training.pipeline import TrainParams, train_bundle
from recpipe.training.tuning import choose_blend, pick

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
    kept, gain, se = pick({(200.0, 1.0): base, (500.0, 1.0): noisy}, (200.0, 1.0))
    assert kept == (200.0, 1.0) and 0 < gain < 2 * se
    moved, gain, se = pick({(200.0, 1.0): base, (500.0, 1.0): noisy, (1000.0, 0.0): clear}, (200.0, 1.0))
    assert moved == (1000.0, 0.0) and gain > 2 * se
    # a default that is itself the best is kept, with no gain
    assert pick({(200.0, 1.0): clear, (500.0, 1.0): base}, (200.0, 1.0)) == ((200.0, 1.0), 0.0, 0.0)


def test_choose_blend_scores_every_pair_on_the_carve_out_as_the_blend_orders_the_head() -> None:
    log = _taste_log(60)
    nu, ni = len(log.user_vocab), len(log.item_vocab)

    def fit_seq(w: InteractionLog, head: np.ndarray) -> object:
        return fit_sequential(w, head, ni, window=5, decay=0.85, damping=0.3)

    choice = choose_blend(
        log,
        nu,
        ni,
        regularizations=(5.0, 500.0),
        weights=(0.0, 2.0),
        default=(50.0, 1.0),
        head=100,
        fit_sequential=fit_seq,  # type: ignore[arg-type]
        users=40,
        ratio=0.25,
        rng=np.random.default_rng(3),
    )
    assert choice is not None
    assert choice.default == (50.0, 1.0) and choice.users == 40
    assert list(choice.ndcg) == [(r, w) for r in (50.0, 5.0, 500.0) for w in (1.0, 0.0, 2.0)]
    assert (choice.linear_regularization, choice.sequential_weight) in choice.ndcg
    # the same carve-out (same seed), recomputed by brute force over the whole catalogue for
    # one pair: EASE at 500 plus twice the co-occurrence, each relative to the user's best
    fit_log, carved, held = CarveOuts(log, nu, ni).fold(40, 0.25, np.random.default_rng(3))
    truth = CarveOuts(log, nu, ni).truth(carved, held)
    linear = fit_item_linear(fit_log, nu, ni, head=100, regularization=500.0)
    seq = fit_sequential(fit_log, linear.head, ni, window=5, decay=0.85, damping=0.3)
    e, q = linear.scores(carved), seq.scores(linear.user_items, carved)
    seen = linear.user_items[carved].toarray() > 0
    e[seen], q[seen] = -np.inf, -np.inf
    blend = _relative_rows(e) + 2.0 * _relative_rows(q)
    order = np.argsort(-blend, axis=1, kind="stable")[:, :10]
    lists = np.where(np.take_along_axis(blend, order, axis=1) > 0, order, -1).astype(np.int32)
    assert choice.ndcg[(500.0, 2.0)] == pytest.approx(float(ndcg_lists(lists, truth, 10).mean()), abs=1e-6)
    metrics = choice.metrics(10)
    assert metrics["blend_tuning_l500_w2_ndcg@10"] == round(choice.ndcg[(500.0, 2.0)], 5)
    assert metrics["linear_regularization"] == choice.linear_regularization


def test_empty_grids_try_the_default_alone_and_keep_it() -> None:
    log = _taste_log(40)
    nu, ni = len(log.user_vocab), len(log.item_vocab)
    # without a co-occurrence model the weights change nothing: only the default's is scored
    choice = choose_blend(
        log,
        nu,
        ni,
        regularizations=(),
        weights=(0.0, 2.0),
        default=(50.0, 1.0),
        head=100,
        fit_sequential=None,
        users=20,
        ratio=0.25,
        rng=np.random.default_rng(0),
    )
    assert choice is not None and list(choice.ndcg) == [(50.0, 1.0)]
    assert (choice.linear_regularization, choice.sequential_weight, choice.gain) == (50.0, 1.0, 0.0)


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
        CFModels(linear, seq, als), ctx, users, FusionParams(depth=6, als_depth=6), sequential_weight=0.0
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
    assert f"blend_tuning_l{TrainParams.tiny().linear_regularization:g}_w1_ndcg@10" in m
    # the bundle's params are the ones its lists were fitted with
    assert result.manifest["params"]["linear_regularization"] == m["linear_regularization"]
    assert result.manifest["params"]["sequential_weight"] == m["sequential_weight"]
    fixed = TrainParams.from_dict(
        {**TrainParams.tiny().to_dict(), "linear_regularization_grid": [], "sequential_weight_grid": []}
    )
    m2 = train_bundle(log, [], tmp_path / "fixed", version="v2", params=fixed).metrics
    assert m2["linear_regularization"] == fixed.linear_regularization and "blend_tuning_gain_se" not in m2


@pytest.mark.parametrize(
    "bad",
    [
        {"linear_regularization_grid": [100, -1]},
        {"sequential_weight_grid": [-0.5]},
        {"linear_regularization": 0},
    ],
)
def test_train_params_refuse_a_bad_grid_from_a_retrain_request(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="must be"):
        TrainParams.from_dict(bad)


def test_grids_round_trip_through_a_json_request() -> None:
    p = TrainParams.from_dict({"linear_regularization_grid": [300, 3000], "sequential_weight_grid": [0]})
    assert p.linear_regularization_grid == (300.0, 3000.0) and p.sequential_weight_grid == (0.0,)
    assert TrainParams.from_dict(p.to_dict()) == p
