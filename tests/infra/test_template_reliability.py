"""Reliability wiring of template.yaml: the stream consumer's failure handling, the scoring
Lambda's scaling, the retrain workflow, alarms and outputs."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path
from typing import Any

import pytest
from infra_contract import ASL_PATH, ROOT
from recpipe.adapters.dynamodb_users import TRANSACT_MAX_ITEMS
from recpipe.config import (
    BaseSettings,
    IngestSettings,
    RecommendSettings,
    RetrainSettings,
    UpdaterSettings,
)
from recpipe.stream.wiring import UPDATER_CHUNK_WORKERS
from recpipe_dev.local.resources import updater_batch_size


def props(resources: dict[str, Any], logical_id: str) -> dict[str, Any]:
    return resources[logical_id].get("Properties", {})


def test_feature_updater_reads_the_stream_with_partial_batch_failures(resources: dict[str, Any]) -> None:
    mappings = [r["Properties"] for r in resources.values() if r["Type"] == "AWS::Lambda::EventSourceMapping"]
    (esm,) = mappings
    assert esm["EventSourceArn"] == {"Fn::GetAtt": ["EventStream", "Arn"]}
    assert esm["FunctionName"] == {"Ref": "FeatureUpdaterFunction.Alias"}
    assert esm["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert esm["BisectBatchOnFunctionError"] is True
    # Bounded: -1 (the default) retries a poison record until it expires, blocking the shard.
    assert 0 <= esm["MaximumRetryAttempts"] <= 10
    assert 60 <= esm["MaximumRecordAgeInSeconds"] <= 6 * 3600
    assert esm["DestinationConfig"]["OnFailure"]["Destination"] == {
        "Fn::GetAtt": ["FeatureUpdaterFailureQueue", "Arn"]
    }
    assert esm["ParallelizationFactor"] == {"Ref": "FeatureUpdaterParallelization"}
    assert 0 < esm["MaximumBatchingWindowInSeconds"] <= 5
    assert esm["StartingPosition"] == "TRIM_HORIZON"  # nothing posted before the first deploy is lost


def test_the_feature_updater_gets_a_full_vcpu_and_room_for_its_state_cache(
    resources: dict[str, Any], template: dict[str, Any]
) -> None:
    fn = props(resources, "FeatureUpdaterFunction")
    assert fn["MemorySize"] == {"Ref": "FeatureUpdaterMemorySize"}
    memory_mb = template["Parameters"]["FeatureUpdaterMemorySize"]["Default"]
    assert memory_mb >= 1769  # Lambda's CPU share: one vCPU from 1769 MB (512 MB is ~0.3)
    # Every cached state at its largest (~47 KB, docs/stream.md) next to ~300 MB of runtime.
    cache_users = UpdaterSettings.model_fields["user_state_cache_users"].default
    assert cache_users * 47 / 1024 + 300 <= memory_mb


def test_the_local_stack_delivers_the_deployed_batch_size(template: dict[str, Any]) -> None:
    # The local poller and `recpipe bench stream` use the mapping's BatchSize, resolved as deployed.
    default = template["Parameters"]["FeatureUpdaterBatchSize"]["Default"]
    assert updater_batch_size(template) == default == 500
    # Over 100 users a batch is written as several transactions, some of them in flight at once.
    assert default > TRANSACT_MAX_ITEMS and UPDATER_CHUNK_WORKERS > 1


def test_event_archive_is_a_gzip_date_partitioned_copy_of_the_stream(resources: dict[str, Any]) -> None:
    firehose = props(resources, "EventArchiveFirehose")
    assert firehose["DeliveryStreamType"] == "KinesisStreamAsSource"
    assert firehose["KinesisStreamSourceConfiguration"]["KinesisStreamARN"] == {
        "Fn::GetAtt": ["EventStream", "Arn"]
    }
    s3 = firehose["ExtendedS3DestinationConfiguration"]
    assert s3["BucketARN"] == {"Fn::GetAtt": ["EventArchiveBucket", "Arn"]}
    assert s3["CompressionFormat"] == "GZIP"
    # The layout recpipe.adapters.archive reads: events/year=YYYY/month=MM/day=DD/hour=HH/
    assert s3["Prefix"].startswith("events/year=!{timestamp:yyyy}/month=!{timestamp:MM}/day=!{timestamp:dd}/")
    assert s3["ErrorOutputPrefix"] and not s3["ErrorOutputPrefix"].startswith("events/")


def test_scoring_lambda_is_sized_aliased_and_scales_provisioned_concurrency(
    template: dict[str, Any], resources: dict[str, Any]
) -> None:
    fn = props(resources, "RecommendFunction")
    assert fn["AutoPublishAlias"] == "live"
    assert fn["MemorySize"] == {"Ref": "RecommendMemorySize"}
    assert template["Parameters"]["RecommendMemorySize"]["Default"] >= 1024
    assert fn["Timeout"] <= 10
    # 0 must be deployable (dev): the provisioned concurrency block only exists under a condition.
    pc = fn["ProvisionedConcurrencyConfig"]["Fn::If"]
    assert pc[0] == "HasProvisionedConcurrency"
    assert pc[1] == {"ProvisionedConcurrentExecutions": {"Ref": "ProvisionedConcurrency"}}
    assert pc[2] == {"Ref": "AWS::NoValue"}
    assert template["Parameters"]["ProvisionedConcurrency"]["MinValue"] == 0
    target = resources["RecommendScalableTarget"]
    assert target["Condition"] == "HasProvisionedConcurrency"
    assert target["Properties"]["ScalableDimension"] == "lambda:function:ProvisionedConcurrency"
    assert target["Properties"]["ResourceId"] == {"Fn::Sub": "function:${RecommendFunction}:live"}
    policy = props(resources, "RecommendScalingPolicy")
    assert policy["PolicyType"] == "TargetTrackingScaling"
    tracking = policy["TargetTrackingScalingPolicyConfiguration"]
    assert tracking["PredefinedMetricSpecification"]["PredefinedMetricType"] == (
        "LambdaProvisionedConcurrencyUtilization"
    )
    assert 0 < tracking["TargetValue"] < 1


def test_gradual_deployments_roll_back_on_the_scoring_alarm(resources: dict[str, Any]) -> None:
    preference = props(resources, "RecommendFunction")["DeploymentPreference"]
    assert {"Ref": "RecommendErrorsAlarm"} in preference["Alarms"]


def test_retrain_workflow_runs_daily_from_the_asl_file(resources: dict[str, Any]) -> None:
    machine = props(resources, "RetrainStateMachine")
    assert machine["DefinitionUri"] == "statemachines/retrain.asl.json"
    schedules = [e for e in machine["Events"].values() if e["Type"] in {"ScheduleV2", "Schedule"}]
    assert schedules and schedules[0]["Properties"]["ScheduleExpression"] == {"Ref": "RetrainSchedule"}
    assert machine["Logging"]["Level"] in {"ERROR", "ALL"}


def test_every_placeholder_of_the_state_machine_is_substituted(resources: dict[str, Any]) -> None:
    if not ASL_PATH.exists():
        pytest.fail(f"{ASL_PATH.relative_to(ROOT)} is missing")
    placeholders = set(re.findall(r"\$\{([A-Za-z0-9_]+)\}", ASL_PATH.read_text()))
    json.loads(ASL_PATH.read_text())  # and it is JSON
    substitutions = props(resources, "RetrainStateMachine")["DefinitionSubstitutions"]
    assert placeholders, "the state machine uses no substitutions at all?"
    assert placeholders <= set(substitutions), f"unsubstituted: {sorted(placeholders - set(substitutions))}"
    # Training runs as a managed SageMaker job in AWS, with a role of its own.
    assert "sagemaker:createTrainingJob.sync" in substitutions["TrainingResource"]["Fn::Sub"]
    assert substitutions["SageMakerRoleArn"] == {"Fn::GetAtt": ["TrainingJobRole", "Arn"]}
    assert substitutions["TrainingImage"] == {"Ref": "TrainingImage"}


def _defined_functions(app: Path) -> set[str]:
    tree = ast.parse(app.read_text())
    return {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}


def test_every_function_handler_in_the_template_exists(resources: dict[str, Any]) -> None:
    functions = {k: r["Properties"] for k, r in resources.items() if r["Type"] == "AWS::Serverless::Function"}
    assert len(functions) == 10
    for logical_id, p in functions.items():
        code = ROOT / p["CodeUri"]
        module, attribute = p["Handler"].split(".")
        app = code / f"{module}.py"
        assert app.is_file(), f"{logical_id}: {app.relative_to(ROOT)} missing"
        assert attribute in _defined_functions(app), (
            f"{logical_id}: no {attribute}() in {app.relative_to(ROOT)}"
        )


def test_the_layer_is_built_from_the_recpipe_package_for_python311(resources: dict[str, Any]) -> None:
    layer = resources["RecpipeLayer"]
    assert layer["Properties"]["ContentUri"] == "layers/recpipe/"
    assert layer["Properties"]["CompatibleRuntimes"] == ["python3.11"]
    assert layer["Metadata"]["BuildMethod"] == "python3.11"
    assert (ROOT / "layers/recpipe/requirements.txt").is_file()


def test_the_scoring_lambda_gets_sigterm_at_shutdown(resources: dict[str, Any]) -> None:
    """Lambda sends SIGTERM to the runtime only when an external extension is registered: the
    scoring function carries the no-op one, so buffered impressions are flushed (#17)."""
    assert props(resources, "RecommendFunction")["Layers"] == [{"Ref": "ShutdownExtensionLayer"}]
    layer = resources["ShutdownExtensionLayer"]["Properties"]
    extension = ROOT / layer["ContentUri"] / "extensions" / "recpipe-shutdown"
    assert extension.is_file() and extension.stat().st_mode & 0o111, "must be executable"
    assert "Metadata" not in resources["ShutdownExtensionLayer"], "zipped as is (extensions/ at the root)"


def _alarms(resources: dict[str, Any]) -> list[dict[str, Any]]:
    return [r["Properties"] for r in resources.values() if r["Type"] == "AWS::CloudWatch::Alarm"]


@pytest.mark.parametrize(
    ("namespace", "metric", "dimension_value"),
    [
        ("AWS/Lambda", "IteratorAge", {"Ref": "FeatureUpdaterFunction"}),
        (
            "AWS/SQS",
            "ApproximateNumberOfMessagesVisible",
            {"Fn::GetAtt": ["FeatureUpdaterFailureQueue", "QueueName"]},
        ),
        ("AWS/ApiGateway", "5XXError", {"Fn::Sub": "recpipe-${EnvName}"}),
        ("AWS/ApiGateway", "Latency", {"Fn::Sub": "recpipe-${EnvName}"}),
        ("AWS/Lambda", "Errors", {"Fn::Sub": "recpipe-${EnvName}-recommend"}),
    ],
)
def test_alarms_watch_the_failure_signals_and_notify(
    resources: dict[str, Any], namespace: str, metric: str, dimension_value: Any
) -> None:
    matching = [
        a
        for a in _alarms(resources)
        if a["Namespace"] == namespace
        and a["MetricName"] == metric
        and any(d["Value"] == dimension_value for d in a["Dimensions"])
    ]
    assert matching, f"no {namespace} {metric} alarm"
    alarm = matching[0]
    assert alarm["AlarmActions"] == [{"Ref": "AlarmTopic"}]
    if metric == "Latency":
        assert alarm["ExtendedStatistic"] == "p99"


def test_the_api_alarms_watch_the_stage_the_template_deploys(resources: dict[str, Any]) -> None:
    api = props(resources, "RecommendationsApi")
    assert api["Name"] == {"Fn::Sub": "recpipe-${EnvName}"}  # the ApiName dimension of the alarms
    recommend = props(resources, "RecommendFunction")
    assert recommend["FunctionName"] == {"Fn::Sub": "recpipe-${EnvName}-recommend"}


def test_outputs_name_the_endpoints_an_operator_needs(template: dict[str, Any]) -> None:
    outputs = template["Outputs"]
    for name in (
        "ApiUrl",
        "ApiKeyId",
        "EventStreamName",
        "UserFeaturesTableName",
        "ModelBucketName",
        "RetrainStateMachineArn",
    ):
        assert name in outputs, name
    assert outputs["ApiKeyId"]["Condition"] == "UseApiKey"


#: Which settings model each function's code reads (recpipe/config.py).
FUNCTION_SETTINGS: dict[str, type[BaseSettings]] = {
    "RecommendFunction": RecommendSettings,
    "IngestEventsFunction": IngestSettings,
    "FeatureUpdaterFunction": UpdaterSettings,
    **{
        f"Retrain{step}Function": RetrainSettings
        for step in (
            "Prepare",
            "Train",
            "Evaluate",
            "PublishCandidates",
            "IndexContent",
            "Promote",
            "NotifyFailure",
        )
    },
}
#: Read by the retrain steps outside their settings model (index access mapping, archive).
RETRAIN_EXTRA = {
    "ARCHIVE_BUCKET",
    "OPENSEARCH_AUTH_SECRET_ARN",
    "CONTENT_INDEX_READER_ROLE_ARN",
    "CONTENT_INDEX_WRITER_ROLE_ARN",
}


def test_each_function_gets_the_variables_its_settings_require_and_only_its_own(
    template: dict[str, Any], resources: dict[str, Any]
) -> None:
    global_env = set(template["Globals"]["Function"]["Environment"]["Variables"])
    assert global_env - {"ENV_NAME"} == {v for v in global_env if v.startswith("POWERTOOLS_")}
    functions = {k for k, r in resources.items() if r["Type"] == "AWS::Serverless::Function"}
    assert functions == set(FUNCTION_SETTINGS), "a function without a settings model in this test"
    for logical_id, model in FUNCTION_SETTINGS.items():
        env = (
            set(resources[logical_id]["Properties"].get("Environment", {}).get("Variables", {})) | global_env
        )
        fields = model.model_fields.values()
        required = {f.alias for f in fields if f.is_required() and f.alias}
        # Model location: the S3 pointer in AWS (RECPIPE_BUNDLE_DIR is the local alternative).
        if "MODEL_BUCKET" in {f.alias for f in fields}:
            required |= {"MODEL_BUCKET", "MODEL_POINTER_PARAM"}
        assert required <= env, f"{logical_id}: missing {sorted(required - env)}"
        known = {f.alias for f in fields if f.alias} | (RETRAIN_EXTRA if model is RetrainSettings else set())
        unknown = {v for v in env if not v.startswith("POWERTOOLS_")} - known
        assert not unknown, f"{logical_id}: variables its code does not read: {sorted(unknown)}"


def test_the_dedup_window_covers_the_stream_retention(resources: dict[str, Any]) -> None:
    # A failure-queue re-drive re-reads records from the stream and is deduplicated by the
    # fingerprints alone (the shard marks may have moved past the skipped records): every
    # record that can still be re-read must still have its fingerprint.
    from recpipe.domain.user import DEDUP_WINDOW_S

    hours = props(resources, "EventStream")["RetentionPeriodHours"]
    assert isinstance(hours, int) and hours * 3600 <= DEDUP_WINDOW_S
