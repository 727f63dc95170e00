"""Evaluation outputs: JSON, the Markdown table the README shows, and the PNG plots."""

from __future__ import annotations

import json
from pathlib import Path

from recpipe_dev.evaluation.report import (
    markdown_table,
    plot_latency,
    plot_quality,
    write_json,
    write_markdown,
)

REPORT = {
    "protocol": "stream",
    "k": 10,
    "dataset": "movielens:tiny",
    "methods": {
        "popularity": {"hit_rate@10": 0.1, "ndcg@10": 0.05, "mrr@10": 0.04, "coverage@10": 0.01},
        "pipeline": {"hit_rate@10": 0.3, "ndcg@10": 0.2, "mrr@10": 0.15, "coverage@10": 0.2},
    },
    "by_segment": {"new_users": {"pipeline": {"hit_rate@10": 0.25, "ndcg@10": 0.125, "n_evaluated": 8.0}}},
    "ratios": {"pipeline_vs_popularity_ndcg@10": 4.0},
    "config": {"seed": 1, "evaluated_events": 10},
}


def test_markdown_table_has_one_row_per_method_with_four_decimals() -> None:
    table = markdown_table(REPORT)
    lines = table.strip().splitlines()
    assert lines[0] == "| method | hit_rate@10 | ndcg@10 | mrr@10 | coverage@10 |"
    assert lines[3] == "| full ranked pipeline | 0.3000 | 0.2000 | 0.1500 | 0.2000 |"
    assert len(lines) == 4


def test_written_files_round_trip(tmp_path: Path) -> None:
    write_json(REPORT, tmp_path / "r.json")
    assert json.loads((tmp_path / "r.json").read_text()) == REPORT
    write_markdown(REPORT, tmp_path / "r.md")
    text = (tmp_path / "r.md").read_text()
    assert "pipeline_vs_popularity_ndcg@10: 4.0" in text and "new users (8 events)" in text
    assert "| full ranked pipeline | 0.2500 | 0.1250 | - | - |" in text


def test_plots_are_png(tmp_path: Path) -> None:
    plot_quality(REPORT, tmp_path / "q.png")
    assert (tmp_path / "q.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert plot_latency({"samples_ms": {"100": [1.0, 2.0, 3.0], "500": [2.0, 4.0]}}, tmp_path / "l.png")
    assert (tmp_path / "l.png").read_bytes()[:4] == b"\x89PNG"
    assert not plot_latency({"p99_ms": 3.0}, tmp_path / "none.png")


def test_paired_differences_are_per_user_means_with_their_standard_error(tmp_path: Path) -> None:
    from recpipe_dev.evaluation.random_protocol import _paired

    per_user = {
        "project_pipeline": [0.5, 0.4, 0.3, 0.2],
        "project_cf": [0.5, 0.4, 0.3, 0.2],
        "project_cf_blend": [0.5, 0.2, 0.3, 0.2],
        "ease": [0.4, 0.4, 0.2, 0.2],
    }
    paired = _paired(per_user)
    # differences 0.1, 0, 0.1, 0: mean 0.05, sample sd 0.057735, se 0.028868
    assert paired["project_pipeline_minus_ease"] == {"diff": 0.05, "se": 0.028868, "users": 4}
    assert paired["project_pipeline_minus_project_cf"] == {"diff": 0.0, "se": 0.0, "users": 4}
    # the learned order against the same candidates in the fixed blend's order: 0, 0.2, 0, 0
    assert paired["project_pipeline_minus_project_cf_blend"] == {"diff": 0.05, "se": 0.05, "users": 4}
    assert "project_pipeline_live_session_minus_project_pipeline" not in paired
    report = {**REPORT, "protocol": "random", "paired_ndcg@10": paired}
    write_markdown(report, tmp_path / "r.md")
    assert (
        "- paired_ndcg@10 project_pipeline_minus_ease: +0.0500 ± 0.0289 (4 users)"
        in (tmp_path / "r.md").read_text()
    )
