"""CI smoke of `recpipe evaluate`: small seeded runs of both protocols on real MovieLens data,
through the real code paths, checking the pipeline beats popularity and runs are reproducible."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from recpipe.training.pipeline import TrainParams
from recpipe_dev.cli import main
from recpipe_dev.evaluation.data import Dataset, DatasetError, load_dataset
from recpipe_dev.evaluation.random_protocol import RandomProtocolConfig, run_random
from recpipe_dev.evaluation.stream_protocol import StreamProtocolConfig, run_stream


@pytest.fixture(scope="module")
def movielens(dataset_dir: Path) -> Dataset:
    return load_dataset(f"movielens:{dataset_dir}")


def test_random_protocol_smoke_beats_popularity(movielens: Dataset) -> None:
    config = RandomProtocolConfig(max_users=120, methods=("popularity", "ease"))
    result = run_random(movielens, config)
    methods = result["methods"]
    assert result["config"]["users"] == 120
    # the project's own batch model and online path (train_bundle + Recommender) are the rows
    # scored beside the baselines, on the same users; no model lives only in the evaluation
    for name in ("project_cf", "project_cf_blend", "project_pipeline", "project_pipeline_live_session"):
        assert methods[name]["n_evaluated"] == 120, name
    assert result["config"]["project"]["post_filtered_requests"] >= 0
    for name in ("ease", "project_cf"):
        assert methods[name]["ndcg@10"] > methods["popularity"]["ndcg@10"], name
        assert methods[name]["map"] > methods["popularity"]["map"], name
    assert result["tuning"]["ease"]["budget"] == 8


def test_tuned_baselines_reproduce_exactly(movielens: Dataset) -> None:
    # Seeds fixed and implicit single-threaded: two runs give identical numbers.
    config = RandomProtocolConfig(max_users=80, methods=("als", "item_knn"), product=False)
    first, again = run_random(movielens, config), run_random(movielens, config)
    assert first["methods"] == again["methods"]
    assert first["tuning"]["als"]["budget"] == first["tuning"]["item_knn"]["budget"] == 8


def test_stream_protocol_smoke_live_signals_beat_popularity_and_batch(movielens: Dataset) -> None:
    # A lighter ranker training than the default keeps CI fast; the paths are the same.
    light = TrainParams(max_examples=2000, negatives=15)
    result = run_stream(
        movielens,
        StreamProtocolConfig(max_users=150, max_events=300, train_params=light, show_progress=False),
    )
    methods = result["methods"]
    assert result["config"]["evaluated_events"] == 300
    assert methods["pipeline"]["n_evaluated"] == 300
    assert methods["pipeline"]["ndcg@10"] > methods["popularity"]["ndcg@10"]
    assert methods["pipeline"]["ndcg@10"] > methods["batch_only"]["ndcg@10"]
    assert result["online"]["requests"] == 300 and not result["online"]["degraded"]


def test_cli_writes_json_markdown_and_plot(dataset_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "eval.json"
    code = main(
        [
            "evaluate",
            "--data",
            f"movielens:{dataset_dir}",
            "--protocol",
            "stream",
            "--max-users",
            "60",
            "--max-events",
            "30",
            "--json",
            str(out),
            "--out-dir",
            str(tmp_path),
            "--quiet",
        ]
    )
    assert code == 0
    report = json.loads(out.read_text())
    assert report["protocol"] == "stream" and report["k"] == 10
    assert (tmp_path / "eval-stream.md").read_text().count("| full ranked pipeline |") == 3
    assert (tmp_path / "quality-stream.png").read_bytes()[:4] == b"\x89PNG"
    # --replot redraws from the report, adding the latency plot once a serving benchmark exists
    replot = tmp_path / "replot"
    replot.mkdir()
    (replot / "serving.json").write_text(json.dumps({"samples_ms": {"100": [1.5, 2.0, 9.0]}}))
    code = main(
        [
            "evaluate",
            "--data",
            "-",
            "--protocol",
            "stream",
            "--replot",
            "--json",
            str(out),
            "--out-dir",
            str(replot),
        ]
    )
    assert code == 0
    assert (replot / "latency.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads(out.read_text()) == report  # the report itself is not rewritten


def test_unknown_dataset_is_refused_with_a_precise_reason(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="expected movielens:DIR"):
        load_dataset("netflix:/nowhere")
    with pytest.raises(DatasetError, match="cannot load MovieLens"):
        load_dataset(f"movielens:{tmp_path}")
    assert main(["evaluate", "--data", "csv:x", "--protocol", "random", "--quiet"]) == 2
