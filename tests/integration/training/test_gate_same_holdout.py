"""The Evaluate step scores the LIVE bundle on the new run's holdout (same users, same moment,
same code) and gates on that; the live manifest's number is only a recorded fallback."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any  # the trained_run fixture (conftest.TrainedRun)

import pytest
from recpipe.adapters.s3_models import DirectoryModelStore
from recpipe.bundle import load_bundle
from recpipe.training import holdout as holdout_module
from recpipe.training import workflow
from recpipe.training.gate import CF_PER_USER, PER_USER, paired_margin
from recpipe.training.holdout import Holdout, evaluate_model, rank, score
from recpipe.training.runs import DirectoryRunStore

LIVE = "it-v1"
#: What the live manifest claims (measured on its own, older window): never the gate's basis here.
MANIFEST_CLAIM = 0.999


@pytest.fixture()
def deps(trained_run: Any, tmp_path: Path) -> workflow.RetrainDeps:
    models = DirectoryModelStore(tmp_path / "bundles")
    models.upload(trained_run.result.bundle_dir, LIVE)
    manifest_path = tmp_path / "bundles" / LIVE / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["metrics"]["ndcg@10"] = MANIFEST_CLAIM
    manifest_path.write_text(json.dumps(manifest))
    models.set_current(LIVE)
    return workflow.RetrainDeps(runs=DirectoryRunStore(tmp_path / "runs"), models=models)


def _new_run(
    deps: workflow.RetrainDeps, trained_run: Any, ndcg: float, *, noise: float = 0.0, per_user: bool = True
) -> None:
    """A trained run 'v2' as the Train step leaves it, reporting `ndcg` on its holdout: its
    per-user figures are the live model's shifted to that mean, +-`noise` user by user, and its
    candidates' CF order far below (so only the live comparison is at stake)."""
    holdout = trained_run.result.holdout
    assert holdout is not None and holdout.users
    deps.runs.put_bytes("v2", workflow.HOLDOUT_FILE, holdout.to_bytes())
    live = _live_on_holdout(trained_run)[PER_USER]
    shift = ndcg - sum(live) / len(live)
    mine = [v + shift + (noise if i % 2 else -noise) for i, v in enumerate(live)]
    figures = (
        {PER_USER: mine, CF_PER_USER: [v - 1.0 for v in live]}
        if per_user
        else {PER_USER: [], CF_PER_USER: []}
    )
    report = {
        "version": "v2",
        "metrics": {**trained_run.result.metrics, "ndcg@10": ndcg, **figures},
        "users_with_candidates": 10,
        "data_window": trained_run.result.manifest["data_window"],
    }
    deps.runs.put_bytes("v2", workflow.TRAIN_REPORT, json.dumps(report).encode())


def _live_on_holdout(trained_run: Any, since: float | None = None) -> dict[str, Any]:
    bundle = load_bundle(trained_run.result.bundle_dir)
    assert trained_run.result.holdout is not None
    return evaluate_model(
        trained_run.result.holdout,
        bundle.items,
        bundle.neighbours,
        bundle.ranker_path.read_bytes(),
        since=since,
    )


def test_holdout_survives_the_run_store_round_trip(trained_run: Any) -> None:
    holdout = trained_run.result.holdout
    assert holdout is not None
    again = Holdout.from_bytes(holdout.to_bytes())
    assert again == holdout
    live = _live_on_holdout(trained_run)
    assert live["eval_users"] == len(holdout.users) == trained_run.result.metrics["eval_users"]
    assert 0.0 <= live["ndcg@10"] <= 1.0
    # the new model's stored rankings reproduce its reported holdout metrics
    ranked = score(holdout, [u.ranked for u in holdout.users])
    assert ranked["ndcg@10"] == trained_run.result.metrics["ndcg@10"]
    assert ranked["hit_rate@10"] == trained_run.result.metrics["hit_rate@10"]
    # the paired differences against the published CF order and the fixed blend's order are
    # the per-user ranked figures minus each order's mean on the same users
    m = trained_run.result.metrics
    mean_ranked = sum(m[PER_USER]) / len(m[PER_USER])
    for name, reference in (("cf", "cf_ndcg@10"), ("cf_blend", "cf_blend_ndcg@10")):
        assert m[f"ranked_minus_{name}_ndcg@10"] == pytest.approx(mean_ranked - m[reference], abs=3e-5)
        assert m[f"ranked_minus_{name}_ndcg@10_se"] is None or m[f"ranked_minus_{name}_ndcg@10_se"] >= 0.0


def test_a_better_new_model_is_published_against_the_live_bundle_on_the_same_holdout(
    deps: workflow.RetrainDeps, trained_run: Any
) -> None:
    live = _live_on_holdout(trained_run)["ndcg@10"]
    _new_run(deps, trained_run, round(live + 0.03, 5))

    out = workflow.evaluate(deps, "v2", "v2", gate_margin=0.02)

    assert out["publish"] is True and out["shards"]
    assert out["basis"] == "same_holdout" and out["live"] == live  # not the manifest's 0.999
    assert out["live_on_holdout"]["ndcg@10"] == live
    assert f"{live:.4f}" in out["reason"] and "same holdout" in out["reason"]
    decision = json.loads(deps.runs.get_bytes("v2", workflow.DECISION_FILE))
    assert decision["live_manifest_metrics"]["ndcg@10"] == MANIFEST_CLAIM
    assert decision["new_metrics"]["ndcg@10"] == round(live + 0.03, 5)
    # the live bundle was trained on everything, holdout included: recorded, it favours the live model
    assert decision["live_trained_on_holdout"] is True


def test_the_live_margin_is_two_standard_errors_of_the_paired_difference(
    deps: workflow.RetrainDeps, trained_run: Any
) -> None:
    live_users = _live_on_holdout(trained_run)[PER_USER]
    live = _live_on_holdout(trained_run)["ndcg@10"]
    noise = 0.2
    # the paired difference is shift +- noise: its SE is about noise / sqrt(n)
    _new_run(deps, trained_run, round(live, 5), noise=noise)
    margin = paired_margin(_json(deps)["metrics"][PER_USER], live_users)
    assert margin is not None and margin > 0
    _new_run(deps, trained_run, round(live - 0.5 * margin, 5), noise=noise)
    inside = workflow.evaluate(deps, "v2", "v2", gate_margin=0.5)
    assert inside["publish"] is True and inside["margin_basis"] == "2 SE"

    _new_run(deps, trained_run, round(live - 3 * margin, 5), noise=noise)
    out = workflow.evaluate(deps, "v2", "v2", gate_margin=0.5)

    assert out["publish"] is False and out["shards"] == []
    assert out["basis"] == "same_holdout" and out["margin_basis"] == "2 SE"
    assert "worse than live it-v1" in out["reason"] and "(2 SE) on the same holdout" in out["reason"]
    decision = json.loads(deps.runs.get_bytes("v2", workflow.DECISION_FILE))
    assert decision["publish"] is False and decision["live"] == live
    assert decision["new"] == round(live - 3 * margin, 5) and decision["margin"] == pytest.approx(
        margin, abs=1e-4
    )


def test_without_per_user_figures_the_fixed_margin_applies_and_is_named(
    deps: workflow.RetrainDeps, trained_run: Any
) -> None:
    live = _live_on_holdout(trained_run)["ndcg@10"]
    _new_run(deps, trained_run, round(live - 0.01, 5), per_user=False)
    assert workflow.evaluate(deps, "v2", "v2", gate_margin=0.02)["publish"] is True
    _new_run(deps, trained_run, round(live - 0.05, 5), per_user=False)
    out = workflow.evaluate(deps, "v2", "v2", gate_margin=0.02)
    assert out["publish"] is False and out["margin_basis"] == "fixed" and "fixed margin" in out["reason"]


def test_a_ranker_worse_than_its_own_candidates_is_never_published(
    deps: workflow.RetrainDeps, trained_run: Any
) -> None:
    live = _live_on_holdout(trained_run)["ndcg@10"]
    _new_run(deps, trained_run, round(live + 0.05, 5), noise=0.01)
    report = _json(deps)
    # its candidates in CF order do better than its ranked lists, by far more than 2 SE
    report["metrics"][CF_PER_USER] = [v + 0.2 for v in report["metrics"][PER_USER]]
    deps.runs.put_bytes("v2", workflow.TRAIN_REPORT, json.dumps(report).encode())

    out = workflow.evaluate(deps, "v2", "v2", gate_margin=0.02)

    assert out["publish"] is False and out["shards"] == []
    assert "worse than its own candidates in CF order" in out["reason"]
    decision = json.loads(deps.runs.get_bytes("v2", workflow.DECISION_FILE))
    assert decision["cf_order"] > decision["new"] and decision["cf_margin"] is not None


def _json(deps: workflow.RetrainDeps) -> dict[str, Any]:
    return dict(json.loads(deps.runs.get_bytes("v2", workflow.TRAIN_REPORT)))


def test_an_unloadable_live_bundle_falls_back_to_its_manifest_metric_and_says_so(
    deps: workflow.RetrainDeps, trained_run: Any, tmp_path: Path
) -> None:
    (tmp_path / "bundles" / LIVE / "ranker.tflite").write_bytes(b"not the published ranker")
    _new_run(deps, trained_run, 0.5)

    out = workflow.evaluate(deps, "v2", "v2", gate_margin=0.02)

    assert out["publish"] is False  # 0.5 + 0.02 < 0.999
    assert out["basis"] == "live_manifest" and out["live"] == MANIFEST_CLAIM
    assert out["live_on_holdout"] is None
    assert "could not be loaded" in out["basis_note"] and "BundleError" in out["basis_note"]
    assert "live_manifest" in out["reason"] and "could not be loaded" in out["reason"]


def test_a_live_model_trained_into_the_holdout_is_compared_only_on_what_came_after_its_window(
    deps: workflow.RetrainDeps, trained_run: Any, tmp_path: Path
) -> None:
    holdout = trained_run.result.holdout
    times = sorted(t for u in holdout.users for _, t in u.relevant_after)
    live_end = times[len(times) // 2]  # the live model saw the first half of this holdout
    manifest_path = tmp_path / "bundles" / LIVE / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["data_window"]["end"] = live_end
    manifest_path.write_text(json.dumps(manifest))
    _new_run(deps, trained_run, 0.999)  # the report's whole-holdout number must not be used

    out = workflow.evaluate(deps, "v2", "v2", gate_margin=0.02)

    decision = json.loads(deps.runs.get_bytes("v2", workflow.DECISION_FILE))
    after = [u for u in holdout.users if any(t > live_end for _, t in u.relevant_after)]
    assert 0 < len(after) < len(holdout.users)
    assert decision["holdout_since"] == live_end and decision["live_trained_on_holdout"] is True
    assert decision["new_on_holdout"]["eval_users"] == decision["live_on_holdout"]["eval_users"] == len(after)
    expected_new = score(holdout, [u.ranked for u in holdout.users], since=live_end)["ndcg@10"]
    expected_live = _live_on_holdout(trained_run, since=live_end)["ndcg@10"]
    assert out["new"] == expected_new != 0.999 and out["live"] == expected_live
    assert f"only events after the live window ended, {len(after)} users" in out["reason"]


def test_the_holdout_ranks_with_the_session_types_the_store_holds(
    trained_run: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Serving's retriever skips removed items as session anchors; the holdout must hand it the
    same entries, types included, so the gate scores what serving would have served (it once
    replayed every entry as a view)."""
    holdout = trained_run.result.holdout
    assert holdout is not None
    bundle = load_bundle(trained_run.result.bundle_dir)
    recorded = [u for u in holdout.users if u.session]
    assert all(len(u.session_types) == len(u.session) for u in recorded)
    user = next(u for u in holdout.users if len(set(u.recent)) >= 2)
    anchors: list[list[int]] = []
    real = holdout_module.CandidateRetriever.retrieve

    def spy(self: Any, inputs: Any, eligibility: Any) -> Any:
        anchors.append(self.session_anchors(inputs.session).tolist())
        return real(self, inputs, eligibility)

    monkeypatch.setattr(holdout_module.CandidateRetriever, "retrieve", spy)

    def rank_one(u: Any) -> None:
        one = Holdout(holdout.t2, holdout.k, holdout.policy, holdout.trending, [u])
        rank(one, bundle.items, bundle.neighbours, bundle.ranker_path.read_bytes())

    session = list(dict.fromkeys(user.recent))[:2]
    rank_one(replace(user, session=session, session_types=["remove_from_cart", "view"]))
    rank_one(replace(user, session=session, session_types=[]))  # a file from before the types
    assert anchors == [
        bundle.items.indices(session[1:]).tolist(),
        bundle.items.indices(session).tolist(),
    ]
