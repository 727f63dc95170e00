"""`recpipe bench stream` runs end to end on a tiny workload and writes a self-describing report
(the figures themselves are the benchmark's business, not a test's)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from recpipe_dev.cli import main as cli_main


def test_bench_stream_writes_its_report(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "stream.json"
    monkeypatch.chdir(tmp_path)
    code = cli_main(
        [
            "bench",
            "stream",
            "--events",
            "300",
            "--batch-size",
            "50",
            "--freshness",
            "3",
            "--no-recommend",  # the POST -> /recommendations part trains a bundle (~20 s)
            "--aws",
            "inprocess",
            "--json",
            str(out),
        ]
    )
    assert code == 0
    report = json.loads(out.read_text())
    assert report["updater_dynamodb"]["events"] == 300 and report["updater_dynamodb"]["failed_records"] == 0
    assert report["updater_in_memory_store"]["failed_records"] == 0
    by_mode = report["updater_dynamodb_by_write_mode"]
    assert set(by_mode) == {"transact", "item"} and report["updater_dynamodb"] == by_mode["transact"]
    # Each mode writes its own users from an empty table: the same number of user writes.
    assert by_mode["item"]["failed_records"] == 0
    assert by_mode["item"]["user_writes"] == by_mode["transact"]["user_writes"] > 0
    assert len(report["load_average_1_5_15_start"]) == 3
    # The deploy-time batch size alternative (FeatureUpdaterBatchSize) on its own users.
    by_batch = report["updater_dynamodb_by_batch_size"]
    assert set(by_batch) == {"50", "100"} and by_batch["50"] == report["updater_dynamodb"]
    assert by_batch["100"]["failed_records"] == 0 and by_batch["100"]["events"] == 300
    assert report["events_per_cpu_s"] == report["updater_dynamodb"]["events_per_cpu_s"]
    assert report["events_per_s"] > 0 and "in-process" in report["aws_backend"]
    assert "freshness_recommendation_ms" not in report
    for key in ("freshness_session_ms", "freshness_dynamodb_ms"):
        assert report[key]["n"] == 3
        assert 0 < report[key]["p50_ms"] <= report[key]["p99_ms"]
