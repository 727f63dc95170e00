"""Least privilege: every function gets exactly the permissions its job needs, no statement
allows '*' actions, and '*' resources appear only where AWS offers nothing narrower."""

from __future__ import annotations

from typing import Any

import pytest
from infra_contract import RESOURCELESS_ACTIONS, as_list, statements

#: Function -> the SAM policy templates and inline statement Sids it may have. Adding a
#: permission is a deliberate change of this table, reviewed with the template.
EXPECTED_POLICIES: dict[str, set[str]] = {
    "RecommendFunction": {
        "DynamoDBReadPolicy",
        "S3ReadPolicy",
        "SSMParameterWithSlashPrefixReadPolicy",
        "AWSSecretsManagerGetSecretValuePolicy",
        "Sid:QueryContentIndex",
        "Sid:LogImpressions",
    },
    "IngestEventsFunction": {"AWSSecretsManagerGetSecretValuePolicy", "Sid:PutEvents"},
    "FeatureUpdaterFunction": {
        "DynamoDBCrudPolicy",
        "KinesisStreamReadPolicy",
        "Sid:ListShardsOfEventStream",
        "SQSSendMessagePolicy",
        "AWSSecretsManagerGetSecretValuePolicy",
        "S3ReadPolicy",
        "SSMParameterWithSlashPrefixReadPolicy",
    },
    "RetrainPrepareFunction": {"S3ReadPolicy", "S3CrudPolicy"},
    "RetrainTrainFunction": {"S3CrudPolicy"},
    "RetrainEvaluateFunction": {"S3CrudPolicy", "SSMParameterWithSlashPrefixReadPolicy"},
    "RetrainPublishCandidatesFunction": {
        "S3ReadPolicy",
        "AWSSecretsManagerGetSecretValuePolicy",
    },
    "RetrainIndexContentFunction": {
        "S3ReadPolicy",
        "AWSSecretsManagerGetSecretValuePolicy",
        "Sid:WriteContentIndex",
    },
    "RetrainPromoteFunction": {
        "AWSSecretsManagerGetSecretValuePolicy",
        "S3ReadPolicy",
        "SSMParameterWithSlashPrefixReadPolicy",
        "Sid:MoveModelPointer",
    },
    "RetrainNotifyFailureFunction": {"SNSPublishMessagePolicy"},
}


def _function_policies(resources: dict[str, Any], logical_id: str) -> list[Any]:
    return as_list(resources[logical_id]["Properties"].get("Policies", []))


def _policy_names(policies: list[Any]) -> set[str]:
    names: set[str] = set()
    for policy in policies:
        if isinstance(policy, str):
            names.add(policy)  # a managed policy name/ARN
        elif "Statement" in policy:
            names.update(f"Sid:{s['Sid']}" for s in statements(policy))
        else:
            names.update(policy)
    return names


def _identity_statements(resources: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """Every Allow statement granted to a principal of this stack (not resource policies)."""
    found: list[tuple[str, dict[str, Any]]] = []
    for logical_id, r in resources.items():
        props = r.get("Properties", {})
        if r["Type"] in {"AWS::Serverless::Function", "AWS::Serverless::StateMachine"}:
            for policy in as_list(props.get("Policies", [])):
                found += [(logical_id, s) for s in statements(policy)]
        elif r["Type"] == "AWS::IAM::Role":
            for policy in props.get("Policies", []):
                found += [(logical_id, s) for s in statements(policy["PolicyDocument"])]
        elif r["Type"] in {"AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"}:
            found += [(logical_id, s) for s in statements(props["PolicyDocument"])]
    return [(k, s) for k, s in found if s.get("Effect", "Allow") == "Allow"]


def test_every_function_is_listed_here(resources: dict[str, Any]) -> None:
    functions = {k for k, r in resources.items() if r["Type"] == "AWS::Serverless::Function"}
    assert functions == set(EXPECTED_POLICIES)


@pytest.mark.parametrize("function", sorted(EXPECTED_POLICIES))
def test_function_has_exactly_the_permissions_its_job_needs(resources: dict[str, Any], function: str) -> None:
    props = resources[function]["Properties"]
    assert "Role" not in props, "each function gets its own generated role"
    assert _policy_names(_function_policies(resources, function)) == EXPECTED_POLICIES[function]


def test_no_statement_allows_every_action(resources: dict[str, Any]) -> None:
    for owner, statement in _identity_statements(resources):
        for action in as_list(statement["Action"]):
            assert action != "*" and not action.endswith(":*"), f"{owner}: {action}"


def test_wildcard_resources_only_where_aws_requires_them(resources: dict[str, Any]) -> None:
    for owner, statement in _identity_statements(resources):
        if "*" not in as_list(statement["Resource"]):
            continue
        actions = set(as_list(statement["Action"]))
        assert actions <= RESOURCELESS_ACTIONS, f"{owner}: {sorted(actions - RESOURCELESS_ACTIONS)} on '*'"
        if "cloudwatch:PutMetricData" in actions:
            assert "cloudwatch:namespace" in str(statement.get("Condition")), owner


def test_scoring_function_can_only_read(resources: dict[str, Any]) -> None:
    policies = _function_policies(resources, "RecommendFunction")
    by_name = {next(iter(p)): p[next(iter(p))] for p in policies if "Statement" not in p}
    assert by_name["DynamoDBReadPolicy"] == {"TableName": {"Ref": "UserFeaturesTable"}}
    assert by_name["S3ReadPolicy"] == {"BucketName": {"Ref": "ModelArtifactsBucket"}}
    ssm_reads = [
        p["SSMParameterWithSlashPrefixReadPolicy"]
        for p in policies
        if "SSMParameterWithSlashPrefixReadPolicy" in p
    ]
    assert ssm_reads == [
        {"ParameterName": {"Ref": "ModelPointerParameter"}},
        {"ParameterName": {"Ref": "ExperimentParameter"}},
    ], "the model pointer and the experiment beside it, nothing else"
    search, impressions = [s for p in policies for s in statements(p)]
    assert set(search["Action"]) <= {"es:ESHttpGet", "es:ESHttpPost", "es:ESHttpHead"}
    # Its one write: served lists to the impression archive stream.
    assert impressions["Action"] == ["firehose:PutRecordBatch"]
    assert impressions["Resource"] == {"Fn::GetAtt": ["ImpressionArchiveFirehose", "Arn"]}


def test_event_intake_can_only_put_records_on_the_event_stream(resources: dict[str, Any]) -> None:
    (put,) = [s for p in _function_policies(resources, "IngestEventsFunction") for s in statements(p)]
    assert set(put["Action"]) == {"kinesis:PutRecord", "kinesis:PutRecords"}
    assert put["Resource"] == {"Fn::GetAtt": ["EventStream", "Arn"]}


def test_stream_consumer_is_not_given_the_broad_kinesis_managed_policy(resources: dict[str, Any]) -> None:
    # A SAM `Kinesis` event would attach AWSLambdaKinesisExecutionRole (Resource "*").
    events = resources["FeatureUpdaterFunction"]["Properties"].get("Events", {})
    assert not any(e["Type"] == "Kinesis" for e in events.values())
    policies = _function_policies(resources, "FeatureUpdaterFunction")
    assert not any(isinstance(p, str) for p in policies)


def test_only_the_promote_step_moves_the_model_pointer(resources: dict[str, Any]) -> None:
    writers = [
        owner for owner, s in _identity_statements(resources) if "ssm:PutParameter" in as_list(s["Action"])
    ]
    assert writers == ["RetrainPromoteFunction"]


def test_the_workflow_passes_only_the_training_role_to_sagemaker_only(resources: dict[str, Any]) -> None:
    (passing,) = [s for owner, s in _identity_statements(resources) if "iam:PassRole" in as_list(s["Action"])]
    assert passing["Resource"] == {"Fn::GetAtt": ["TrainingJobRole", "Arn"]}
    assert passing["Condition"]["StringEquals"]["iam:PassedToService"] == "sagemaker.amazonaws.com"


def test_prepare_may_upload_the_training_code_to_the_model_bucket(resources: dict[str, Any]) -> None:
    # Prepare puts s3://<ModelArtifactsBucket>/code/recpipe-training.tar.gz (the SageMaker job's
    # code, ${TrainingCodeUri}) next to the run snapshot: both are within its CRUD on that bucket.
    policies = _function_policies(resources, "RetrainPrepareFunction")
    crud = [p["S3CrudPolicy"] for p in policies if isinstance(p, dict) and "S3CrudPolicy" in p]
    assert crud == [{"BucketName": {"Ref": "ModelArtifactsBucket"}}]
    code_uri = resources["RetrainStateMachine"]["Properties"]["DefinitionSubstitutions"]["TrainingCodeUri"]
    assert code_uri == {"Fn::Sub": "s3://${ModelArtifactsBucket}/code/recpipe-training.tar.gz"}
