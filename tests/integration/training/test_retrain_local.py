"""`recpipe retrain` on the local stack: the workflow's steps in-process against a real Redis,
a directory of bundle versions and the in-process content index."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import redis
from recpipe.adapters.content_index import InProcessContentIndexWriter
from recpipe.adapters.redis_candidates import RedisCandidateCache
from recpipe.adapters.s3_models import DirectoryModelStore
from recpipe.redis_keys import KeyLayout
from recpipe.training import workflow
from recpipe.training.pipeline import TrainParams
from recpipe.training.runs import DirectoryRunStore
from recpipe.training.sources import default_loaders
from recpipe_dev.cli import main
from recpipe_dev.synthetic import DEV_LOADERS

SHOP = {"kind": "synthetic", "n_users": 300, "n_items": 400, "n_interactions": 12000, "seed": 3}


def _deps(tmp_path: Path, redis_url: str) -> workflow.RetrainDeps:
    return workflow.RetrainDeps(
        runs=DirectoryRunStore(tmp_path / "runs"),
        models=DirectoryModelStore(tmp_path / "bundles"),
        candidates=RedisCandidateCache(redis.Redis.from_url(redis_url), KeyLayout("loc"), pointer_ttl_s=0),
        content=InProcessContentIndexWriter(tmp_path / "content"),
        loaders={**default_loaders(), **DEV_LOADERS},
    )


def _request(version: str) -> dict[str, object]:
    return {"source": SHOP, "params": TrainParams.tiny().to_dict(), "version": version, "shard_size": 64}


def test_half_finished_publish_is_invisible_and_rerunning_completes_it(
    tmp_path: Path, redis_url: str
) -> None:
    deps = _deps(tmp_path, redis_url)
    client = redis.Redis.from_url(redis_url)
    cache = RedisCandidateCache(client, KeyLayout("loc"), pointer_ttl_s=0)
    first = workflow.run_local(deps, _request("v1"))
    assert first["promoted"]["version"] == "v1"
    assert deps.models.current_version() == "v1" and cache.current_version() == "v1"
    keys_v1 = len(list(client.scan_iter(match="rp:loc:cand:v1:*")))
    user = json.loads((tmp_path / "runs" / "v1" / "candidates.json").read_text())["user_ids"][0]
    served_v1 = cache.get(user)
    assert served_v1

    # re-running the publish of the live version changes nothing
    shard = first["evaluation"]["shards"][0]
    again = workflow.publish_candidates(deps, "v1", "v1", lo=shard["lo"], hi=shard["hi"], shard=0)
    assert again == {"shard": 0, "written": 0, "already_published": True}
    assert workflow.promote(deps, "v1", "v1")["already_live"] is True
    assert len(list(client.scan_iter(match="rp:loc:cand:v1:*"))) == keys_v1

    # v2: train and publish half of the shards, then "crash"
    run = workflow.prepare(deps, _request("v2"))
    workflow.train(deps, run["run_id"], "v2")
    ev = workflow.evaluate(deps, run["run_id"], "v2", gate_margin=1.0, shard_size=64)
    assert ev["publish"] and len(ev["shards"]) >= 2
    for s in ev["shards"][: len(ev["shards"]) // 2]:
        workflow.publish_candidates(deps, "v2", "v2", lo=s["lo"], hi=s["hi"], shard=s["shard"])
    assert deps.models.current_version() == "v1"
    assert cache.current_version() == "v1"
    assert cache.get(user) == served_v1  # readers still get v1's lists

    # the retried run finishes the job; the old version starts expiring
    for s in ev["shards"]:
        workflow.publish_candidates(deps, "v2", "v2", lo=s["lo"], hi=s["hi"], shard=s["shard"])
    workflow.index_content(deps, "v2", "v2")
    workflow.promote(deps, "v2", "v2")
    assert deps.models.current_version() == "v2" and cache.current_version() == "v2"
    assert (tmp_path / "content" / "CURRENT").read_text().strip() == "v2"
    assert client.ttl(next(client.scan_iter(match="rp:loc:cand:v1:u:*"))) > 0


def test_the_command_runs_the_workflow_end_to_end(
    tmp_path: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("ENV_NAME", "cli")
    monkeypatch.setenv("CONTENT_INDEX_DIR", str(tmp_path / "content"))
    out = tmp_path / "result.json"
    code = main(
        [
            "retrain",
            "--source", "synthetic",
            "--synthetic", "300,400,12000",
            "--params", "tiny",
            "--version", "cli-v1",
            "--work-dir", str(tmp_path / "runs"),
            "--bundle-dir", str(tmp_path / "bundles"),
            "--json", str(out),
            "--quiet",
        ]
    )  # fmt: skip
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "gate: PUBLISH" in printed and "live model: cli-v1" in printed
    assert (tmp_path / "bundles" / "CURRENT").read_text().strip() == "cli-v1"
    assert (
        RedisCandidateCache(redis.Redis.from_url(redis_url), KeyLayout("cli")).current_version() == "cli-v1"
    )
    assert out.is_file()


def test_the_command_reports_unreadable_data(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        [
            "retrain",
            "--data",
            str(tmp_path / "missing"),
            "--work-dir",
            str(tmp_path),
            "--bundle-dir",
            str(tmp_path / "b"),
            "--quiet",
        ]
    )
    assert code == 1
    assert "not a directory" in capsys.readouterr().err
