"""The promotion gate publishes a model only when it is not worse than the live one."""

from __future__ import annotations

from recpipe.training.gate import decide


def test_first_model_is_published() -> None:
    d = decide({"ndcg@10": 0.1}, None, live_version=None, new_version="v1")
    assert d.publish and "no live model" in d.reason


def test_worse_beyond_the_margin_is_kept_out_with_the_numbers() -> None:
    d = decide({"ndcg@10": 0.10}, {"ndcg@10": 0.15}, live_version="v1", new_version="v2", margin=0.02)
    assert not d.publish
    assert "0.1000" in d.reason and "0.1500" in d.reason and "v1" in d.reason


def test_within_the_margin_or_better_is_published() -> None:
    assert decide(
        {"ndcg@10": 0.14}, {"ndcg@10": 0.15}, live_version="v1", new_version="v2", margin=0.02
    ).publish
    assert decide(
        {"ndcg@10": 0.20}, {"ndcg@10": 0.15}, live_version="v1", new_version="v2", margin=0.0
    ).publish


def test_no_holdout_metric_keeps_the_live_model() -> None:
    d = decide({"eval_users": 0}, {"ndcg@10": 0.15}, live_version="v1", new_version="v2")
    assert not d.publish and "no holdout" in d.reason


def test_rerunning_the_live_version_is_allowed_as_a_noop() -> None:
    d = decide({"ndcg@10": 0.0}, {"ndcg@10": 0.15}, live_version="v2", new_version="v2")
    assert d.publish and "no-op" in d.reason


def test_the_reason_names_the_basis_of_the_comparison() -> None:
    same = decide({"ndcg@10": 0.10}, {"ndcg@10": 0.15}, live_version="v1", new_version="v2")
    assert same.basis == "same_holdout" and "on the same holdout" in same.reason
    fallback = decide(
        {"ndcg@10": 0.20},
        {"ndcg@10": 0.15},
        live_version="v1",
        new_version="v2",
        basis="live_manifest",
        basis_note="live bundle v1 could not be loaded (BundleError: checksum)",
    )
    assert fallback.publish and fallback.basis == "live_manifest"
    assert "live_manifest: live bundle v1 could not be loaded" in fallback.reason
    assert fallback.to_dict()["basis"] == "live_manifest"


def test_worse_than_cf_order_needs_more_than_two_standard_errors() -> None:
    """The rule train_bundle and the gate share: a consistent loss is worse, noise is not."""
    from recpipe.training.gate import worse_than_cf_order

    cf = [0.5, 0.4, 0.6, 0.3, 0.5, 0.4]
    assert worse_than_cf_order([v - 0.05 for v in cf], cf)  # every user loses 0.05: SE 0
    noisy = [v + d for v, d in zip(cf, [-0.3, 0.25, -0.2, 0.2, -0.1, 0.05], strict=True)]
    assert not worse_than_cf_order(noisy, cf)  # mean -0.017, SE 0.09: within the noise
    assert not worse_than_cf_order(cf, cf)
    assert not worse_than_cf_order([0.1], [0.9])  # one user: no standard error, not comparable
