"""The real statemachines/retrain.asl.json, executed by moto's Step Functions interpreter.

Each Lambda task is routed to the in-process handler of functions/retrain/app.py (moto's
Docker-less Lambda only echoes), so the states, Retry/Catch, the Choice gate and the Map over
shards are the real definition's; the handlers talk to moto S3/SSM/SNS and a real redis-server.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
import redis
from moto import mock_aws
from moto.awslambda_simple.models import LambdaSimpleBackend
from recpipe.adapters.redis_candidates import RedisCandidateCache
from recpipe.bundle import load_bundle
from recpipe.redis_keys import KeyLayout
from recpipe.training.pipeline import TrainParams
from recpipe_dev.local.functions import LambdaContext, load_function
from recpipe_dev.synthetic import DEV_LOADERS

ROOT = Path(__file__).resolve().parents[2]
ASL = ROOT / "statemachines" / "retrain.asl.json"
HANDLERS = {
    "Prepare": "prepare",
    "Train": "train",
    "Evaluate": "evaluate",
    "PublishCandidates": "publish_candidates",
    "IndexContent": "index_content",
    "Promote": "promote",
    "NotifyFailure": "notify_failure",
}
BUCKET = "recpipe-test-models"
ARCHIVE = "recpipe-test-archive"
POINTER = "/recpipe/test/model/current"
SYNTHETIC = {"kind": "synthetic", "n_users": 300, "n_items": 400, "n_interactions": 12000, "seed": 3}


@dataclass
class Stack:
    sfn: Any
    machine_arn: str
    s3: Any
    ssm: Any
    sqs: Any
    queue_url: str
    redis: redis.Redis
    content_dir: Path
    calls: list[str]

    def run(self, request: dict[str, Any], timeout_s: float = 120) -> dict[str, Any]:
        arn = self.sfn.start_execution(
            stateMachineArn=self.machine_arn, name=uuid.uuid4().hex, input=json.dumps(request)
        )["executionArn"]
        deadline = time.time() + timeout_s
        while time.time() < deadline:
            desc = self.sfn.describe_execution(executionArn=arn)
            if desc["status"] != "RUNNING":
                return dict(desc)
            time.sleep(0.2)
        raise AssertionError("execution did not finish")

    def notifications(self) -> list[dict[str, Any]]:
        msgs = self.sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=10).get("Messages", [])
        return [json.loads(m["Body"]) for m in msgs]


@pytest.fixture()
def stack(redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Stack]:
    config: Any = {"stepfunctions": {"execute_state_machine": True}, "lambda": {"use_docker": False}}
    with mock_aws(config=config):
        monkeypatch.setenv("MODEL_BUCKET", BUCKET)
        monkeypatch.setenv("MODEL_POINTER_PARAM", POINTER)
        monkeypatch.setenv("REDIS_URL", redis_url)
        monkeypatch.setenv("ENV_NAME", "test")
        monkeypatch.setenv("CONTENT_INDEX_DIR", str(tmp_path / "content"))
        monkeypatch.delenv("RECPIPE_BUNDLE_DIR", raising=False)
        monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
        app = load_function("retrain")
        # The synthetic shop is a dev-only data source: registered on the deployed handler's deps.
        app.deps.loaders.update(DEV_LOADERS)
        calls: list[str] = []

        def invoke(  # noqa: PLR0917 - moto's signature
            self: LambdaSimpleBackend,
            function_name: str,
            qualifier: Any,
            body: Any,
            headers: Any,
            response_headers: Any,
        ) -> bytes:
            name = function_name.rsplit(":", 1)[-1]
            step = name.removeprefix("retrain-")
            calls.append(step)
            event = json.loads(body) if body else {}
            try:
                result = getattr(app, step)(event, LambdaContext(name, timeout_s=900))
            except Exception as exc:  # what the Lambda runtime reports for an unhandled error
                response_headers["x-amz-function-error"] = "Unhandled"
                return json.dumps({"errorType": type(exc).__name__, "errorMessage": str(exc)}).encode()
            return json.dumps(result).encode()

        monkeypatch.setattr(LambdaSimpleBackend, "invoke", invoke)

        s3 = boto3.client("s3")
        s3.create_bucket(Bucket=BUCKET)
        s3.create_bucket(Bucket=ARCHIVE)
        ssm = boto3.client("ssm")
        ssm.put_parameter(Name=POINTER, Value="none", Type="String")
        sns = boto3.client("sns")
        topic = sns.create_topic(Name="retrain-notifications")["TopicArn"]
        sqs = boto3.client("sqs")
        queue_url = sqs.create_queue(QueueName="ops-inbox")["QueueUrl"]
        queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
        sns.subscribe(
            TopicArn=topic, Protocol="sqs", Endpoint=queue_arn, Attributes={"RawMessageDelivery": "false"}
        )
        iam = boto3.client("iam")
        role = iam.create_role(RoleName="retrain", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
        lam = boto3.client("lambda")
        arns = {}
        for state, step in HANDLERS.items():
            fn = lam.create_function(
                FunctionName=f"retrain-{step}",
                Runtime="python3.11",
                Role=role,
                Handler=f"app.{step}",
                Code={"ZipFile": b"PK\x05\x06" + b"\x00" * 18},
            )
            arns[state] = fn["FunctionArn"]
        subs = {
            "PrepareFunctionArn": arns["Prepare"],
            "TrainFunctionArn": arns["Train"],
            # locally the training state invokes the train function instead of SageMaker
            "TrainingResource": arns["Train"],
            "EvaluateFunctionArn": arns["Evaluate"],
            "PublishCandidatesFunctionArn": arns["PublishCandidates"],
            "IndexContentFunctionArn": arns["IndexContent"],
            "PromoteFunctionArn": arns["Promote"],
            "NotifyFailureFunctionArn": arns["NotifyFailure"],
            "NotificationTopicArn": topic,
            "ModelBucket": BUCKET,
            "EnvName": "test",
            "ModelPointerParam": POINTER,
            "ArchiveBucket": ARCHIVE,
            "TrainingImage": "unused",
            "TrainingInstanceType": "ml.m5.xlarge",
            "TrainingCodeUri": f"s3://{BUCKET}/code/recpipe-training.tar.gz",
            "SageMakerRoleArn": role,
        }
        definition = ASL.read_text()
        for key, value in subs.items():
            definition = definition.replace("${" + key + "}", value)
        assert "${" not in definition, "a substitution is missing from the test"
        sfn = boto3.client("stepfunctions")
        machine = sfn.create_state_machine(name="retrain", definition=definition, roleArn=role)[
            "stateMachineArn"
        ]
        client = redis.Redis.from_url(redis_url)
        yield Stack(sfn, machine, s3, ssm, sqs, queue_url, client, tmp_path / "content", calls)


def _request(version: str, **extra: Any) -> dict[str, Any]:
    return {
        "source": SYNTHETIC,
        "params": TrainParams.tiny().to_dict(),
        "version": version,
        "shard_size": 100,
        **extra,
    }


def test_a_successful_run_publishes_everything_and_switches_pointers_last(
    stack: Stack, tmp_path: Path
) -> None:
    out = stack.run(_request("v1"))

    assert out["status"] == "SUCCEEDED", out
    result = json.loads(out["output"])
    assert result["evaluation"]["publish"] is True
    assert len(result["published"]) == len(result["evaluation"]["shards"]) >= 2  # the Map ran per shard
    assert stack.calls[:3] == ["prepare", "train", "evaluate"]
    assert stack.calls[-2:] == ["index_content", "promote"]
    # Prepare put the SageMaker job's code where ${TrainingCodeUri} points, before Train ran
    code = stack.s3.head_object(Bucket=BUCKET, Key="code/recpipe-training.tar.gz")
    assert code["Metadata"]["recpipe-source-sha256"] == result["run"]["training_code"]["sha256"]
    # the model pointer names a complete, verifiable bundle
    assert stack.ssm.get_parameter(Name=POINTER)["Parameter"]["Value"] == "v1"
    for name in ("manifest.json", "ranker.tflite", "items.npz", "items.json", "neighbours.npz"):
        stack.s3.download_file(BUCKET, f"bundles/v1/{name}", str(tmp_path / name))
    bundle = load_bundle(tmp_path)
    assert bundle.version == "v1"
    # candidates are live under v1
    cache = RedisCandidateCache(stack.redis, KeyLayout("test"), pointer_ttl_s=0)
    assert cache.current_version() == "v1"
    meta = cache.version_meta("v1")
    assert meta is not None and meta["lists"] > 0
    some_user = next(
        iter(
            json.loads(stack.s3.get_object(Bucket=BUCKET, Key="runs/v1/candidates.json")["Body"].read())[
                "user_ids"
            ]
        )
    )
    assert cache.get(some_user), "a published user has candidates"
    # content index switched to v1 with popularity from the bundle
    assert (stack.content_dir / "CURRENT").read_text().strip() == "v1"
    decision = json.loads(stack.s3.get_object(Bucket=BUCKET, Key="runs/v1/decision.json")["Body"].read())
    assert decision["publish"] is True and "no live model" in decision["reason"]
    assert stack.notifications() == []


def test_the_gate_scores_the_live_bundle_on_the_new_holdout(stack: Stack) -> None:
    assert stack.run(_request("v1"))["status"] == "SUCCEEDED"
    # the live manifest's own number (older window) must not decide: make it unreachable
    key = "bundles/v1/manifest.json"
    manifest = json.loads(stack.s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())
    manifest["metrics"]["ndcg@10"] = 0.99
    stack.s3.put_object(Bucket=BUCKET, Key=key, Body=json.dumps(manifest).encode())

    out = stack.run(_request("v2", gate_margin=1.0))  # any same-data result is "not worse"

    assert out["status"] == "SUCCEEDED"
    evaluation = json.loads(out["output"])["evaluation"]
    assert evaluation["basis"] == "same_holdout" and evaluation["live"] != 0.99
    assert evaluation["live"] == evaluation["live_on_holdout"]["ndcg@10"]
    assert evaluation["publish"] is True
    assert stack.ssm.get_parameter(Name=POINTER)["Parameter"]["Value"] == "v2"


def test_the_gate_keeps_the_live_model_by_its_manifest_when_its_bundle_cannot_be_loaded(
    stack: Stack,
) -> None:
    assert stack.run(_request("v1"))["status"] == "SUCCEEDED"
    key = "bundles/v1/manifest.json"
    manifest = json.loads(stack.s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())
    manifest["metrics"]["ndcg@10"] = 0.99
    stack.s3.put_object(Bucket=BUCKET, Key=key, Body=json.dumps(manifest).encode())
    stack.s3.delete_object(Bucket=BUCKET, Key="bundles/v1/ranker.tflite")  # live bundle unloadable
    stack.calls.clear()

    out = stack.run(_request("v2", gate_margin=0.01))

    assert out["status"] == "SUCCEEDED"
    evaluation = json.loads(out["output"])["evaluation"]
    assert evaluation["publish"] is False
    assert evaluation["basis"] == "live_manifest" and "could not be loaded" in evaluation["basis_note"]
    assert "worse than live v1" in evaluation["reason"]
    assert "publish_candidates" not in stack.calls and "promote" not in stack.calls
    assert stack.ssm.get_parameter(Name=POINTER)["Parameter"]["Value"] == "v1"
    assert RedisCandidateCache(stack.redis, KeyLayout("test"), pointer_ttl_s=0).current_version() == "v1"
    # the bundle is uploaded (versioned) but not live; the decision says why
    decision = json.loads(stack.s3.get_object(Bucket=BUCKET, Key="runs/v2/decision.json")["Body"].read())
    assert decision["publish"] is False and decision["live"] == 0.99


def test_a_failing_step_ends_in_the_failure_notification(stack: Stack) -> None:
    out = stack.run({"source": {"kind": "movielens", "path": "/nonexistent/ml"}, "version": "v3"})

    assert out["status"] == "FAILED"
    assert stack.calls == ["prepare", "notify_failure"]
    notes = stack.notifications()
    assert len(notes) == 1
    assert notes[0]["Subject"].startswith("recpipe retrain failed: DataImportError")
    body = json.loads(notes[0]["Message"])
    assert body["error"] == "DataImportError" and "/nonexistent/ml" in body["cause"]
    assert stack.ssm.get_parameter(Name=POINTER)["Parameter"]["Value"] == "none"
