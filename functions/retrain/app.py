"""Step Functions task handlers of the retrain workflow (statemachines/retrain.asl.json).

Each handler parses its state input, calls one step of recpipe.training.workflow and returns
the step's small JSON result. Exceptions propagate: Step Functions retries RetryableError and
the Lambda service errors, and routes everything else to NotifyFailure.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext
from recpipe.clients import batch_aws_client
from recpipe.config import RetrainSettings, load_settings
from recpipe.handler_kit.observability import Observability
from recpipe.training import workflow
from recpipe.training.sagemaker_entry import publish_source_tarball
from recpipe.training.wiring import build_deps

# Built at import (recpipe.handler_kit): one set of clients per environment.
settings = load_settings(RetrainSettings)
obs = Observability()
logger, metrics = obs.logger, obs.metrics
deps = build_deps(settings)


def _run(event: dict[str, Any]) -> tuple[str, str]:
    logger.append_keys(run_id=event.get("run_id"))
    return str(event["run_id"]), str(event["version"])


@obs.handler()
def prepare(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    run = workflow.prepare(
        deps,
        event.get("request") or {},
        execution=str(event.get("execution", "manual")),
        archive_bucket=event.get("archive_bucket"),
    )
    if event.get("training_code_uri"):  # the SageMaker job's code: this layer's recpipe, kept current
        run["training_code"] = publish_source_tarball(
            batch_aws_client("s3", settings), event["training_code_uri"]
        )
        logger.info("training code", extra=run["training_code"])
    metrics.add_metric("RetrainInteractions", MetricUnit.Count, run["interactions"])
    metrics.add_metric("RetrainImportErrors", MetricUnit.Count, run["import_errors"])
    return run


@obs.handler()
def train(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    # Also accepts the SageMaker CreateTrainingJob request, so the same state can target either.
    hp = event.get("HyperParameters") or event
    out = workflow.train(deps, *_run({"run_id": hp["run_id"], "version": hp["version"]}))
    return {**out, "TrainingJobStatus": "Completed"}


@obs.handler()
def evaluate(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    run_id, version = _run(event)
    out = workflow.evaluate(
        deps,
        run_id,
        version,
        gate_margin=float(event.get("gate_margin", 0.02)),
        shard_size=int(event.get("shard_size", 20000)),
    )
    metrics.add_metric("RetrainGateRejected", MetricUnit.Count, 0 if out["publish"] else 1)
    # the live model could not be scored on this holdout: the gate used its manifest number
    metrics.add_metric("RetrainGateFallback", MetricUnit.Count, 0 if out["basis"] == "same_holdout" else 1)
    # the retrain's learned ranker lost to its candidates' CF order: the CF-order scorer ships
    metrics.add_metric(
        "RetrainRankerCFOrder", MetricUnit.Count, 1 if out["ranker_order"] == "cf_order" else 0
    )
    logger.info(
        "gate decision",
        extra={k: out[k] for k in ("publish", "reason", "new", "live", "basis", "ranker_order")},
    )
    return out


@obs.handler()
def publish_candidates(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    run_id, version = _run(event)
    return workflow.publish_candidates(
        deps, run_id, version, lo=int(event["lo"]), hi=int(event["hi"]), shard=int(event.get("shard", 0))
    )


@obs.handler()
def index_content(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return workflow.index_content(deps, *_run(event))


@obs.handler()
def promote(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    out = workflow.promote(deps, *_run(event))
    logger.info("model promoted", extra=out)
    return out


@obs.handler()
def notify_failure(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    metrics.add_metric("RetrainFailed", MetricUnit.Count, 1)
    return workflow.notify_failure(
        deps, str(event["topic_arn"]), str(event.get("execution", "")), event.get("state") or {}
    )
