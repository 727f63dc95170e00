"""The retrain task handlers with the sample payloads of events/ (the `sam local invoke` inputs),
over in-memory/local-directory adapters."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType
from typing import Any

import aws_xray_sdk.core  # noqa: F401 - its recorder opens a UDP socket at import: before sockets are off
import pytest
from recpipe.adapters.s3_models import DirectoryModelStore
from recpipe.training import workflow
from recpipe.training.runs import DirectoryRunStore
from recpipe_dev.local.functions import LambdaContext, load_function
from recpipe_dev.testing.fakes_candidates import InMemoryCandidateCache

ROOT = Path(__file__).resolve().parents[3]


def _event(name: str) -> dict[str, Any]:
    return dict(json.loads((ROOT / "events" / name).read_text()))


@pytest.fixture()
def app(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[ModuleType, workflow.RetrainDeps, list[tuple[str, str, str]]]:
    module = load_function("retrain")
    sent: list[tuple[str, str, str]] = []

    def notify(topic: str, subject: str, body: str) -> str:
        sent.append((topic, subject, body))
        return "msg-1"

    deps = workflow.RetrainDeps(
        runs=DirectoryRunStore(tmp_path / "runs"),
        models=DirectoryModelStore(tmp_path / "bundles"),
        candidates=InMemoryCandidateCache(),
        notify=notify,
    )
    monkeypatch.setattr(module, "deps", deps)
    return module, deps, sent


def test_notify_failure_names_the_run_and_the_error(app: tuple[ModuleType, Any, list[Any]]) -> None:
    module, _, sent = app
    out = module.notify_failure(_event("retrain_notify_failure.json"), LambdaContext("retrain"))
    assert out["message_id"] == "msg-1"
    topic, subject, body = sent[0]
    assert topic.endswith(":recpipe-retrain")
    assert subject == "recpipe retrain failed: DataImportError"
    details = json.loads(body)
    assert details["version"] == "20260101T000000Z-sample"
    assert details["cause"] == "DataImportError: cannot read ratings.csv"


def test_evaluate_publishes_the_first_model_and_plans_shards(app: tuple[ModuleType, Any, list[Any]]) -> None:
    module, deps, _ = app
    event = _event("retrain_evaluate.json")
    report = {"metrics": {"ndcg@10": 0.2}, "users_with_candidates": 45_000}
    deps.runs.put_bytes(event["run_id"], workflow.TRAIN_REPORT, json.dumps(report).encode())

    out = module.evaluate(event, LambdaContext("retrain"))

    assert out["publish"] is True and "no live model" in out["reason"]
    assert [(s["lo"], s["hi"]) for s in out["shards"]] == [(0, 20000), (20000, 40000), (40000, 45000)]
    recorded = json.loads(deps.runs.get_bytes(event["run_id"], workflow.DECISION_FILE))
    assert recorded["publish"] is True


def test_a_step_without_its_inputs_fails_loudly(app: tuple[ModuleType, Any, list[Any]]) -> None:
    module, _, _ = app
    from recpipe.training.runs import RunArtefactMissing

    with pytest.raises(RunArtefactMissing, match="train_report.json"):
        module.evaluate(_event("retrain_evaluate.json"), LambdaContext("retrain"))


def test_prepare_refuses_an_unknown_source(app: tuple[ModuleType, Any, list[Any]]) -> None:
    module, _, _ = app
    with pytest.raises(workflow.RetrainError, match="unknown data source"):
        module.prepare({"request": {"source": {"kind": "ftp"}}, "execution": "x"}, LambdaContext("retrain"))


def test_evaluate_reports_a_ranker_replaced_by_the_cf_order(
    app: tuple[ModuleType, Any, list[Any]], capsys: pytest.CaptureFixture[str]
) -> None:
    """A run whose learned ranker lost to its CF order says so in the decision and in a metric."""
    module, deps, _ = app
    event = _event("retrain_evaluate.json")
    report = {"metrics": {"ndcg@10": 0.2, "ranker_order": "cf_order"}, "users_with_candidates": 10}
    deps.runs.put_bytes(event["run_id"], workflow.TRAIN_REPORT, json.dumps(report).encode())

    out = module.evaluate(event, LambdaContext("retrain"))

    assert out["publish"] is True and out["ranker_order"] == "cf_order"
    recorded = json.loads(deps.runs.get_bytes(event["run_id"], workflow.DECISION_FILE))
    assert recorded["ranker_order"] == "cf_order"
    emitted = [json.loads(ln) for ln in capsys.readouterr().out.splitlines() if ln.startswith('{"_aws"')]
    assert [m["RetrainRankerCFOrder"] for m in emitted if "RetrainRankerCFOrder" in m] == [[1.0]]
