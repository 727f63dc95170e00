"""Create the stateful resources of `template.yaml` in moto (tests and the local stack).

The template is the single source of truth: key schemas, TTL attributes, shard counts and so on
are read from the resources' Properties, so local tables cannot drift from deployed ones.
Only physical names differ (locally they are `recpipe-<env>-<logical id>`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[3]
TEMPLATE = ROOT / "template.yaml"

#: Logical ids in template.yaml that the code depends on.
USER_FEATURES_TABLE = "UserFeaturesTable"
EVENT_STREAM = "EventStream"
FAILURE_QUEUE = "FeatureUpdaterFailureQueue"
MODEL_BUCKET = "ModelArtifactsBucket"
ARCHIVE_BUCKET = "EventArchiveBucket"
RETRAIN_TOPIC = "RetrainNotificationTopic"


class _CfnLoader(yaml.SafeLoader):
    """YAML loader that understands CloudFormation short-form tags (!Ref, !Sub, !GetAtt, ...)."""


def _construct_tag(loader: yaml.SafeLoader, tag_suffix: str, node: yaml.Node) -> Any:
    name = "Ref" if tag_suffix == "Ref" else f"Fn::{tag_suffix}"
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
        if tag_suffix == "GetAtt" and isinstance(value, str):
            value = value.split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    return {name: value}


_CfnLoader.add_multi_constructor("!", _construct_tag)


def load_template(path: Path = TEMPLATE) -> dict[str, Any]:
    with path.open() as f:
        data = yaml.load(f, Loader=_CfnLoader)
    if not isinstance(data, dict) or "Resources" not in data:
        raise ValueError(f"{path} is not a CloudFormation/SAM template")
    return data


@dataclass(frozen=True, slots=True)
class LocalNames:
    env: str = "local"

    def physical(self, logical_id: str) -> str:
        return f"recpipe-{self.env}-{logical_id}".lower()


class _Resolver:
    """Resolves the intrinsics that matter for local resources using parameter defaults."""

    def __init__(self, template: dict[str, Any]) -> None:
        self.params = {k: v.get("Default") for k, v in template.get("Parameters", {}).items()}

    def __call__(self, value: Any) -> Any:
        if isinstance(value, dict) and len(value) == 1:
            ((key, arg),) = value.items()
            if key == "Ref":
                return self.params.get(arg, arg)
            if key == "Fn::If":
                return self(arg[1])
            if key == "Fn::Sub" and isinstance(arg, str):
                out = arg
                for name, default in self.params.items():
                    out = out.replace("${" + name + "}", str(default))
                return out
        if isinstance(value, dict):
            return {k: self(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self(v) for v in value]
        return value


def resource(template: dict[str, Any], logical_id: str) -> dict[str, Any]:
    try:
        res = template["Resources"][logical_id]
    except KeyError:
        raise KeyError(f"template.yaml has no resource {logical_id}") from None
    props = _Resolver(template)(res.get("Properties", {}))
    return {"Type": res["Type"], "Properties": props}


def updater_batch_size(template: dict[str, Any] | None = None) -> int:
    """Records per feature-updater invocation, as deployed (FeatureUpdaterEventSource's
    BatchSize): what the local poller and the stream benchmark deliver."""
    props = resource(template or load_template(), "FeatureUpdaterEventSource")["Properties"]
    return int(props["BatchSize"])


def updater_batching_window_s(template: dict[str, Any] | None = None) -> float:
    """FeatureUpdaterEventSource's MaximumBatchingWindowInSeconds: how long a batch short of
    BatchSize waits for more records before the updater is invoked."""
    props = resource(template or load_template(), "FeatureUpdaterEventSource")["Properties"]
    return float(props.get("MaximumBatchingWindowInSeconds", 0))


def dynamodb_create_args(template: dict[str, Any], logical_id: str, table_name: str) -> dict[str, Any]:
    props = resource(template, logical_id)["Properties"]
    args: dict[str, Any] = {
        "TableName": table_name,
        "KeySchema": props["KeySchema"],
        "AttributeDefinitions": props["AttributeDefinitions"],
        "BillingMode": props.get("BillingMode", "PAY_PER_REQUEST"),
    }
    if props.get("GlobalSecondaryIndexes"):
        args["GlobalSecondaryIndexes"] = props["GlobalSecondaryIndexes"]
    return args


def create_local_resources(session: Any, names: LocalNames, template_path: Path = TEMPLATE) -> dict[str, str]:
    """Create every stateful resource the local stack needs; idempotent. Returns logical -> name/url."""
    template = load_template(template_path)
    out: dict[str, str] = {}

    ddb = session.client("dynamodb")
    for logical_id, res in template["Resources"].items():
        if res["Type"] != "AWS::DynamoDB::Table":
            continue
        name = names.physical(logical_id)
        existing = ddb.list_tables()["TableNames"]
        if name not in existing:
            ddb.create_table(**dynamodb_create_args(template, logical_id, name))
            ttl = resource(template, logical_id)["Properties"].get("TimeToLiveSpecification")
            if ttl and ttl.get("Enabled"):
                ddb.update_time_to_live(
                    TableName=name,
                    TimeToLiveSpecification={"Enabled": True, "AttributeName": ttl["AttributeName"]},
                )
        out[logical_id] = name

    kinesis = session.client("kinesis")
    stream_props = resource(template, EVENT_STREAM)["Properties"]
    stream = names.physical(EVENT_STREAM)
    if stream not in kinesis.list_streams()["StreamNames"]:
        shards = int(stream_props.get("ShardCount", 1) or 1)
        kinesis.create_stream(StreamName=stream, ShardCount=shards)
        kinesis.get_waiter("stream_exists").wait(
            StreamName=stream, WaiterConfig={"Delay": 0.1, "MaxAttempts": 50}
        )
    out[EVENT_STREAM] = stream

    sqs = session.client("sqs")
    out[FAILURE_QUEUE] = sqs.create_queue(QueueName=names.physical(FAILURE_QUEUE))["QueueUrl"]

    s3 = session.client("s3")
    for logical_id in (MODEL_BUCKET, ARCHIVE_BUCKET):
        bucket = names.physical(logical_id)
        s3.create_bucket(Bucket=bucket)
        versioning = resource(template, logical_id)["Properties"].get("VersioningConfiguration")
        if versioning:
            s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": versioning["Status"]})
        out[logical_id] = bucket

    sns = session.client("sns")
    out[RETRAIN_TOPIC] = sns.create_topic(Name=names.physical(RETRAIN_TOPIC))["TopicArn"]
    return out
