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
            "--freshness-window-events",
            "2",
            # in-process moto copies the whole table per transaction item: a small population
            "--users",
            "30",
            "--write-modes",
            "transact,item",
            "--extra-batch-sizes",
            "100",
            "--warmup-events",
            "100",
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
    for key in ("freshness_session_ms", "freshness_dynamodb_without_batching_window_ms"):
        assert report[key]["n"] == 3
        assert 0 < report[key]["p50_ms"] <= report[key]["p99_ms"]
    # As deployed, a lone event waits out the template's batching window before the updater runs.
    assert report["batching_window_s"] == 1.0 and report["freshness_dynamodb_ms"]["n"] == 2
    assert report["freshness_dynamodb_ms"]["p50_ms"] >= 1000.0
    config, head = report["config"], report["headline"]
    assert config["users"] == 30 and config["user_activity"].startswith("Zipf")
    assert config["warmup_events"] == 100 and config["users_seeded"] >= config["users_active_in_timed_run"]
    assert head["events_per_updater_cpu_s"] == report["updater_dynamodb"]["events_per_cpu_s"]
    assert head["updater_cpu_us_per_event"] > 0 and 0 <= head["user_state_cache_hit_rate"] <= 1


def test_the_default_population_is_a_busy_shards() -> None:
    """100,000 users with skewed activity and a warm-up before timing: the state cache's hit rate
    is what a shard of a real shop sees, not a small population's."""
    import argparse

    from recpipe_dev.bench.stream import add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args([])
    assert args.users >= 100_000 and args.user_zipf > 0
    assert args.warmup_events < 0  # default: as many warm-up events as timed ones
