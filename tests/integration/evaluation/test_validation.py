"""`recpipe validate`: the retrain scored on the random protocol's validation carve-outs. What
matters is that the test part is never read: results must not move when it changes."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from recpipe.training.pipeline import TrainParams, candidate_lists, train_bundle
from recpipe_dev.cli import main
from recpipe_dev.evaluation.baselines import SEARCH_SPACE
from recpipe_dev.evaluation.data import Dataset, load_dataset
from recpipe_dev.evaluation.random_protocol import RandomProtocolConfig
from recpipe_dev.evaluation.splits import stratified_split
from recpipe_dev.evaluation.validation import run_validation, validation_split
from recpipe_dev.synthetic import generate, write_movielens

SEED = 5


@pytest.fixture(scope="module")
def shop_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("shop")
    log, items = generate(n_users=250, n_items=300, n_interactions=9000, seed=4)
    write_movielens(log, items, directory, min_ratings=5)
    return directory


@pytest.fixture(scope="module")
def shop(shop_dir: Path) -> Dataset:
    return load_dataset(f"movielens:{shop_dir}")


def test_the_split_is_the_random_protocols_training_part_carved_again(shop: Dataset) -> None:
    fit, held, test = validation_split(shop, SEED)
    # the three parts partition the rows
    assert not (fit & held).any() and not (fit & test).any() and not (held & test).any()
    assert (fit | held | test).all()
    # the test part is exactly what `recpipe evaluate --protocol random --seed SEED` scores
    ratio = 1.0 - RandomProtocolConfig().test_ratio
    assert (test == ~stratified_split(shop.log, ratio, SEED)).all()
    # and the validation part is about a quarter of the training part
    assert 0.2 < held.sum() / (fit.sum() + held.sum()) < 0.3


def test_scores_do_not_depend_on_the_test_part(shop: Dataset) -> None:
    params = TrainParams.tiny()
    first = run_validation(shop, seeds=[SEED], params=params)
    # the test rows point at other items, at other times: nothing that is scored may move
    _, _, test = validation_split(shop, SEED)
    rng = np.random.default_rng(0)
    log = shop.log
    items = log.items.copy()
    items[test] = rng.integers(0, len(log.item_vocab), int(test.sum()))
    ts = log.ts.copy()
    ts[test] = ts[test] + rng.uniform(0, 86400.0 * 30, int(test.sum()))
    changed = Dataset(shop.name, replace(log, items=items, ts=ts), shop.items)
    again = run_validation(changed, seeds=[SEED], params=params)

    def timeless(report: dict[str, Any]) -> dict[str, Any]:
        return {seed: {k: v for k, v in e.items() if k != "seconds"} for seed, e in report["seeds"].items()}

    assert timeless(first) == timeless(again)

    entry = first["seeds"][str(SEED)]
    assert entry["users"] > 100
    for name in ("published", "blend"):
        assert 0.0 < entry[f"{name}_ndcg@10"] < 1.0
        assert entry[f"{name}_ndcg@10_se"] > 0.0
    for name in ("blend", "ease"):
        gain = entry["published_ndcg@10"] - entry[f"{name}_ndcg@10"]
        assert entry[f"published_minus_{name}_ndcg@10"] == pytest.approx(gain, abs=2e-5)
    # EASE at the best of the random protocol's search space on these very items
    assert entry["ease_regularization"] in {p["reg"] for p in SEARCH_SPACE["ease"]}
    assert 0.0 < entry["ease_ndcg@10"] < 1.0
    assert {"linear_regularization", "sequential_weight", "fusion_adopted"} <= set(entry["retrain"])
    assert first["mean"]["published_ndcg@10"] == entry["published_ndcg@10"]

    # the candidates stage is the retrain's blend row, computed without the retrain's other stages
    quick = run_validation(shop, seeds=[SEED], params=params, stage="candidates")
    assert quick["stage"] == "candidates"
    fast = quick["seeds"][str(SEED)]
    assert fast["blend_ndcg@10"] == entry["blend_ndcg@10"]
    assert fast["blend_ndcg@10_se"] == entry["blend_ndcg@10_se"]
    assert fast["ease_ndcg@10"] == entry["ease_ndcg@10"]
    assert fast["blend_minus_ease_ndcg@10"] == pytest.approx(
        entry["blend_ndcg@10"] - entry["ease_ndcg@10"], abs=2e-5
    )
    assert "published_ndcg@10" not in fast
    assert fast["retrain"]["linear_regularization"] == entry["retrain"]["linear_regularization"]
    again_quick = run_validation(changed, seeds=[SEED], params=params, stage="candidates")
    assert timeless(again_quick) == timeless(quick)
    with pytest.raises(ValueError, match="stage"):
        run_validation(shop, seeds=[SEED], params=params, stage="ranker")


def test_candidate_lists_are_what_a_retrain_without_the_fusion_publishes(
    shop: Dataset, tmp_path: Path
) -> None:
    params = TrainParams.tiny()
    blend = replace(params, fusion=replace(params.fusion, folds=0))
    published = train_bundle(shop.log, shop.catalogue, tmp_path, version="v", params=blend).candidates
    lists, metrics = candidate_lists(shop.log, shop.catalogue, params)
    assert len(lists) == len(published) > 100
    users = shop.log.user_vocab
    compared = [u for u in users if u in published]
    assert len(compared) == len(published)
    for user in compared:
        assert lists[user] == published[user]
    assert {"linear_regularization", "sequential_weight"} <= set(metrics)


def test_cli_writes_the_report_and_refuses_bad_params(
    shop_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = f"movielens:{shop_dir}"
    assert main(["validate", "--data", data, "--params", "{not json"]) == 2
    assert "bad --params" in capsys.readouterr().err
    assert main(["validate", "--data", data, "--params", '{"no_such_field": 1}']) == 2
    assert "no_such_field" in capsys.readouterr().err
    assert main(["validate", "--data", data, "--seeds", "4,x"]) == 2
    assert "--seeds" in capsys.readouterr().err
    assert main(["validate", "--data", data, "--params", '{"linear_regularization": -1}']) == 2
    assert "linear_regularization" in capsys.readouterr().err
    # a setting the retrain itself refuses, once it gets to it: a message, not a traceback
    odd = {**TrainParams.tiny().to_dict(), "cf_method": "svd"}
    assert main(["validate", "--data", data, "--seeds", "3", "--params", json.dumps(odd)]) == 2
    assert "unknown cf_method 'svd'" in capsys.readouterr().err

    params = tmp_path / "params.json"
    tiny = TrainParams.tiny().to_dict()
    tiny["fusion"]["folds"] = 0  # the blend alone: one retrain per seed, no blend row
    params.write_text(json.dumps(tiny))
    out = tmp_path / "validate.json"
    argv = ["validate", "--data", data, "--seeds", "3", "--params", f"@{params}", "--json", str(out)]
    assert main([*argv, "--quiet"]) == 0
    report = json.loads(out.read_text())
    assert report["protocol"] == "validation" and report["params"]["fusion"]["folds"] == 0
    assert set(report["seeds"]) == {"3"} and "blend_ndcg@10" not in report["seeds"]["3"]
    table = capsys.readouterr().out
    assert "| 3 |" in table and "| mean |" in table and "best EASE" in table

    fast = tmp_path / "candidates.json"
    argv = ["validate", "--data", data, "--seeds", "3", "--stage", "candidates", "--json", str(fast)]
    assert main([*argv, "--params", f"@{params}", "--quiet"]) == 0
    quick = json.loads(fast.read_text())
    assert quick["stage"] == "candidates"
    # the same blend lists as the retrain above (its fusion was off): the same figure
    assert quick["seeds"]["3"]["blend_ndcg@10"] == report["seeds"]["3"]["published_ndcg@10"]
    table = capsys.readouterr().out
    assert "| blend - EASE |" in table and "| 3 |" in table
