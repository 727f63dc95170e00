"""Encryption, network isolation and tracing settings of template.yaml. Each test names the
setting it protects: removing that setting from the template makes the test fail."""

from __future__ import annotations

from typing import Any

import pytest

VPC_FUNCTIONS = (
    "RecommendFunction",
    "IngestEventsFunction",
    "FeatureUpdaterFunction",
    "RetrainPublishCandidatesFunction",
    "RetrainIndexContentFunction",
    "RetrainPromoteFunction",
)


def props(resources: dict[str, Any], logical_id: str) -> dict[str, Any]:
    return resources[logical_id].get("Properties", {})


def test_user_features_table_is_on_demand_encrypted_recoverable_and_expiring(
    resources: dict[str, Any],
) -> None:
    table = props(resources, "UserFeaturesTable")
    assert table["BillingMode"] == "PAY_PER_REQUEST"
    assert table["SSESpecification"]["SSEEnabled"] is True
    assert table["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"] is True
    assert table["TimeToLiveSpecification"] == {"AttributeName": "expires_at", "Enabled": True}
    assert resources["UserFeaturesTable"].get("DeletionPolicy") == "Retain"


def test_event_stream_is_kms_encrypted(resources: dict[str, Any]) -> None:
    encryption = props(resources, "EventStream")["StreamEncryption"]
    assert encryption["EncryptionType"] == "KMS"
    assert encryption["KeyId"]


def test_failure_queue_is_encrypted_and_refuses_plain_http(resources: dict[str, Any]) -> None:
    queue = props(resources, "FeatureUpdaterFailureQueue")
    assert queue.get("SqsManagedSseEnabled") is True or queue.get("KmsMasterKeyId")
    assert queue["MessageRetentionPeriod"] == 1209600  # the maximum: time to inspect and replay
    policy = props(resources, "FeatureUpdaterFailureQueuePolicy")
    assert {"Ref": "FeatureUpdaterFailureQueue"} in policy["Queues"]
    assert _denies_insecure_transport(policy["PolicyDocument"])


def _denies_insecure_transport(document: dict[str, Any]) -> bool:
    return any(
        s["Effect"] == "Deny" and s.get("Condition", {}).get("Bool", {}).get("aws:SecureTransport") == "false"
        for s in document["Statement"]
    )


@pytest.mark.parametrize("bucket", ["ModelArtifactsBucket", "EventArchiveBucket"])
def test_buckets_are_versioned_encrypted_private_and_tls_only(resources: dict[str, Any], bucket: str) -> None:
    p = props(resources, bucket)
    assert p["VersioningConfiguration"]["Status"] == "Enabled"
    rules = p["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert rules and rules[0]["ServerSideEncryptionByDefault"]["SSEAlgorithm"] in {"AES256", "aws:kms"}
    block = p["PublicAccessBlockConfiguration"]
    assert block == {
        "BlockPublicAcls": True,
        "BlockPublicPolicy": True,
        "IgnorePublicAcls": True,
        "RestrictPublicBuckets": True,
    }
    assert p["OwnershipControls"]["Rules"][0]["ObjectOwnership"] == "BucketOwnerEnforced"
    bucket_policies = [
        r["Properties"]
        for r in resources.values()
        if r["Type"] == "AWS::S3::BucketPolicy" and r["Properties"]["Bucket"] == {"Ref": bucket}
    ]
    assert bucket_policies and _denies_insecure_transport(bucket_policies[0]["PolicyDocument"])


def test_model_bucket_lifecycle_expires_old_versions_and_tiers_old_bundles(resources: dict[str, Any]) -> None:
    rules = props(resources, "ModelArtifactsBucket")["LifecycleConfiguration"]["Rules"]
    enabled = [r for r in rules if r["Status"] == "Enabled"]
    assert any("NoncurrentVersionExpiration" in r for r in enabled)
    assert any(
        r.get("Prefix") == "bundles/"
        and any(t["StorageClass"] == "STANDARD_IA" for t in r.get("Transitions", []))
        for r in enabled
    )


def test_candidate_cache_encrypts_in_transit_and_at_rest_with_a_generated_auth_token(
    resources: dict[str, Any],
) -> None:
    cache = props(resources, "CandidateCache")
    assert resources["CandidateCache"]["Type"] == "AWS::ElastiCache::ReplicationGroup"
    assert cache["TransitEncryptionEnabled"] is True
    assert cache["AtRestEncryptionEnabled"] is True
    # The token never appears in the template: a dynamic reference to a secret generated here.
    token = cache["AuthToken"]["Fn::Sub"]
    assert token.startswith("{{resolve:secretsmanager:${CacheAuthSecret}:SecretString:")
    assert "GenerateSecretString" in props(resources, "CacheAuthSecret")
    assert cache["CacheSubnetGroupName"] == {"Ref": "CacheSubnetGroup"}
    assert cache["SecurityGroupIds"] == [{"Ref": "CacheSecurityGroup"}]


def test_cache_and_index_accept_traffic_only_from_the_functions(resources: dict[str, Any]) -> None:
    ingress = [
        r["Properties"]
        for r in resources.values()
        if r["Type"] == "AWS::EC2::SecurityGroupIngress"
        and r["Properties"]["GroupId"] == {"Ref": "CacheSecurityGroup"}
    ]
    assert ingress and all(
        i["SourceSecurityGroupId"] == {"Ref": "FunctionSecurityGroup"} and "CidrIp" not in i for i in ingress
    )
    assert "SecurityGroupIngress" not in props(resources, "CacheSecurityGroup")
    search_rules = props(resources, "SearchSecurityGroup")["SecurityGroupIngress"]
    assert all(r["SourceSecurityGroupId"] == {"Ref": "FunctionSecurityGroup"} for r in search_rules)
    assert all(r["FromPort"] == 443 for r in search_rules)


def test_content_index_is_in_the_vpc_encrypted_https_only_with_fine_grained_access(
    resources: dict[str, Any],
) -> None:
    domain = props(resources, "ContentIndexDomain")
    assert domain["VPCOptions"]["SecurityGroupIds"] == [{"Ref": "SearchSecurityGroup"}]
    assert domain["VPCOptions"]["SubnetIds"]
    assert domain["EncryptionAtRestOptions"]["Enabled"] is True
    assert domain["NodeToNodeEncryptionOptions"]["Enabled"] is True
    assert domain["DomainEndpointOptions"]["EnforceHTTPS"] is True
    assert domain["DomainEndpointOptions"]["TLSSecurityPolicy"].startswith("Policy-Min-TLS-1-2")
    security = domain["AdvancedSecurityOptions"]
    assert security["Enabled"] is True
    password = security["MasterUserOptions"]["MasterUserPassword"]["Fn::Sub"]
    assert password.startswith("{{resolve:secretsmanager:${ContentIndexMasterSecret}:")
    # A VPC domain fails to create before its service-linked role exists.
    assert {"Ref": "OpenSearchServiceLinkedRole"} in str_values(domain["Tags"])


def str_values(tags: list[dict[str, Any]]) -> list[Any]:
    values = [t["Value"] for t in tags]
    return [
        v for value in values for v in (value.get("Fn::If", [value]) if isinstance(value, dict) else [value])
    ]


def test_tracing_is_on_for_functions_api_and_workflow(
    template: dict[str, Any], resources: dict[str, Any]
) -> None:
    assert template["Globals"]["Function"]["Tracing"] == "Active"
    functions = [k for k, r in resources.items() if r["Type"] == "AWS::Serverless::Function"]
    assert all(props(resources, f).get("Tracing", "Active") == "Active" for f in functions)
    assert props(resources, "RecommendationsApi")["TracingEnabled"] is True
    assert props(resources, "RetrainStateMachine")["Tracing"]["Enabled"] is True


def test_functions_run_python311_x86_with_powertools_environment(template: dict[str, Any]) -> None:
    glob = template["Globals"]["Function"]
    assert glob["Runtime"] == "python3.11"
    assert glob["Architectures"] == ["x86_64"]
    env = glob["Environment"]["Variables"]
    for name in ("POWERTOOLS_SERVICE_NAME", "POWERTOOLS_METRICS_NAMESPACE", "POWERTOOLS_LOG_LEVEL"):
        assert env.get(name), name
    assert glob["Layers"] == [{"Ref": "RecpipeLayer"}]


@pytest.mark.parametrize("function", VPC_FUNCTIONS)
def test_functions_that_reach_the_cache_or_index_run_in_the_vpc(
    resources: dict[str, Any], function: str
) -> None:
    vpc = props(resources, function)["VpcConfig"]
    assert vpc["SubnetIds"] and vpc["SecurityGroupIds"]
    assert "FunctionSecurityGroup" in str(vpc["SecurityGroupIds"])


def test_created_vpc_reaches_aws_apis_through_endpoints_without_a_nat(resources: dict[str, Any]) -> None:
    endpoints = {
        r["Properties"]["ServiceName"]["Fn::Sub"].rsplit(".", 1)[-1]: r["Properties"]["VpcEndpointType"]
        for r in resources.values()
        if r["Type"] == "AWS::EC2::VPCEndpoint"
    }
    assert endpoints.get("dynamodb") == "Gateway"
    assert endpoints.get("s3") == "Gateway"
    for service in ("kinesis-streams", "ssm", "secretsmanager", "sqs", "monitoring"):
        assert endpoints.get(service) == "Interface", service
    assert not any(
        r["Type"] in {"AWS::EC2::NatGateway", "AWS::EC2::InternetGateway"} for r in resources.values()
    )


def test_api_logs_access_and_throttles_every_method(resources: dict[str, Any]) -> None:
    api = props(resources, "RecommendationsApi")
    assert api["AccessLogSetting"]["DestinationArn"] == {
        "Fn::GetAtt": ["RecommendationsApiAccessLogs", "Arn"]
    }
    assert "$context.requestId" in api["AccessLogSetting"]["Format"]
    (setting,) = api["MethodSettings"]
    assert setting["ResourcePath"] == "/*" and setting["HttpMethod"] == "*"
    assert setting["ThrottlingRateLimit"] and setting["ThrottlingBurstLimit"]
    # A fresh account has no API Gateway logging role; the stack provides it.
    assert resources["RecommendationsApiAccount"]["Type"] == "AWS::ApiGateway::Account"
