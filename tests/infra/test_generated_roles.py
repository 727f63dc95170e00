"""Least privilege after the SAM transform: the roles CloudFormation will actually create.

Policy templates and SAM's own additions (execution, X-Ray, VPC, CodeDeploy roles) expand into
statements the raw template does not show; this runs the SAM translator in-process and checks
what it generates."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from infra_contract import RESOURCELESS_ACTIONS, as_list
from recpipe_dev.local.resources import load_template

VPC_FUNCTIONS = {
    "RecommendFunction",
    "IngestEventsFunction",
    "FeatureUpdaterFunction",
    "RetrainPublishCandidatesFunction",
    "RetrainIndexContentFunction",
    "RetrainPromoteFunction",
}

#: AWS-managed policies a role of this stack may carry. No *FullAccess, no
#: AWSLambdaKinesisExecutionRole (Resource "*").
ALLOWED_MANAGED = {
    "service-role/AWSLambdaBasicExecutionRole",
    "AWSXrayWriteOnlyAccess",
    "service-role/AWSLambdaVPCAccessExecutionRole",
    "service-role/AWSCodeDeployRoleForLambda",
    "service-role/AmazonAPIGatewayPushToCloudWatchLogs",
}

#: What SAM itself adds on "*" (VPC network interfaces, SSM policy templates) besides the
#: template's own resource-less actions.
GENERATED_RESOURCELESS_ACTIONS = RESOURCELESS_ACTIONS | {
    "ec2:CreateNetworkInterface",
    "ec2:DeleteNetworkInterface",
    "ec2:DescribeNetworkInterfaces",
    "ec2:DetachNetworkInterface",
    "ssm:DescribeParameters",
}


class _NoManagedPolicyNames:
    """The template names managed policies by ARN only, so the name -> ARN map is empty."""

    def load(self) -> dict[str, str]:
        return {}


@pytest.fixture(scope="module")
def generated() -> dict[str, Any]:
    from samtranslator.translator.transform import transform

    template = copy.deepcopy(load_template())
    for res in template["Resources"].values():
        for key in ("CodeUri", "ContentUri", "DefinitionUri"):
            if key in res.get("Properties", {}):
                res["Properties"][key] = "s3://bucket/key"  # what `sam package` puts there
    pseudo = {"AWS::Region": "us-east-1", "AWS::AccountId": "123456789012", "AWS::Partition": "aws"}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AWS_DEFAULT_REGION", "us-east-1")
        out: dict[str, Any] = transform(template, pseudo, _NoManagedPolicyNames())
    return out


def _roles(generated: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {k: r["Properties"] for k, r in generated["Resources"].items() if r["Type"] == "AWS::IAM::Role"}


def _managed_names(role: dict[str, Any]) -> set[str]:
    names = set()
    for arn in role.get("ManagedPolicyArns", []):
        text = arn if isinstance(arn, str) else arn["Fn::Sub"]
        names.add(text.split(":policy/", 1)[1])
    return names


def test_every_function_has_its_own_role(generated: dict[str, Any]) -> None:
    functions = {k: r for k, r in generated["Resources"].items() if r["Type"] == "AWS::Lambda::Function"}
    roles = [r["Properties"]["Role"] for r in functions.values()]
    assert len(functions) == 10
    assert len({str(r) for r in roles}) == len(roles)


def test_roles_carry_only_narrow_managed_policies(generated: dict[str, Any]) -> None:
    for name, role in _roles(generated).items():
        extra = _managed_names(role) - ALLOWED_MANAGED
        assert not extra, f"{name}: {sorted(extra)}"


def test_vpc_access_is_given_only_to_functions_in_the_vpc(generated: dict[str, Any]) -> None:
    for name, role in _roles(generated).items():
        has_vpc = "service-role/AWSLambdaVPCAccessExecutionRole" in _managed_names(role)
        assert has_vpc == (name.removesuffix("Role") in VPC_FUNCTIONS), name


def test_generated_statements_never_allow_every_action_or_resource(generated: dict[str, Any]) -> None:
    for name, role in _roles(generated).items():
        for policy in role.get("Policies", []):
            for statement in as_list(policy["PolicyDocument"]["Statement"]):
                if statement["Effect"] != "Allow":
                    continue
                actions = as_list(statement["Action"])
                assert not any(a == "*" or a.endswith(":*") for a in actions), f"{name}: {actions}"
                if "*" in as_list(statement["Resource"]):
                    assert set(actions) <= GENERATED_RESOURCELESS_ACTIONS, f"{name}: {actions} on '*'"


def test_the_schedule_can_only_start_the_retrain_workflow(generated: dict[str, Any]) -> None:
    schedulers = [
        r
        for n, r in _roles(generated).items()
        if n.startswith("RetrainStateMachine") and n.endswith("DailyRole")
    ]
    (role,) = schedulers
    (policy,) = role["Policies"]
    (statement,) = as_list(policy["PolicyDocument"]["Statement"])
    assert statement["Action"] == "states:StartExecution"
    assert statement["Resource"] == {"Ref": "RetrainStateMachine"}


def test_the_scoring_function_is_deployed_through_its_alias(generated: dict[str, Any]) -> None:
    resources = generated["Resources"]
    assert resources["RecommendFunctionAliaslive"]["Type"] == "AWS::Lambda::Alias"
    assert resources["RecommendFunctionDeploymentGroup"]["Type"] == "AWS::CodeDeploy::DeploymentGroup"
    assert resources["RecommendScalableTarget"]["DependsOn"] == "RecommendFunctionAliaslive"
