"""The local stack's moto server: both HTTP front ends, and TransactWriteItems with the
touched-items rollback (recpipe_dev.local.moto_app) keeping DynamoDB's all-or-nothing outcome."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from recpipe_dev.local.moto_server import MotoServer, child_pids, granian_installed, moto_command
from recpipe_dev.testing.dynamodb_wire import ALL_TYPES_ITEM, wire_item

CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}
FRONTS = [
    "werkzeug",
    pytest.param("granian", marks=pytest.mark.skipif(not granian_installed(), reason="dev extra")),
]


@pytest.fixture(params=FRONTS)
def ddb(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    with MotoServer(tmp_path / "moto.log", front=request.param, env=CREDENTIALS) as server:
        client = boto3.client(
            "dynamodb",
            endpoint_url=server.url,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        for name, keys in (("users", ["user_id"]), ("pairs", ["user_id", "item_id"])):
            client.create_table(
                TableName=name,
                KeySchema=[
                    {"AttributeName": k, "KeyType": t} for k, t in zip(keys, ("HASH", "RANGE"), strict=False)
                ],
                AttributeDefinitions=[{"AttributeName": k, "AttributeType": "S"} for k in keys],
                BillingMode="PAY_PER_REQUEST",
            )
        yield client


def _put(table: str, key: dict[str, str], version: int, expect: int | None) -> dict[str, Any]:
    item = {k: {"S": v} for k, v in key.items()} | {"version": {"N": str(version)}}
    put: dict[str, Any] = {"TableName": table, "Item": item}
    if expect is None:
        put["ConditionExpression"] = "attribute_not_exists(user_id)"
    else:
        put["ConditionExpression"] = "version = :v"
        put["ExpressionAttributeValues"] = {":v": {"N": str(expect)}}
    return {"Put": put}


def _versions(ddb: Any) -> dict[str, Any]:
    users = ddb.scan(TableName="users")["Items"]
    pairs = ddb.scan(TableName="pairs")["Items"]
    return {
        "users": sorted((i["user_id"]["S"], i["version"]["N"]) for i in users),
        "pairs": sorted((i["user_id"]["S"], i["item_id"]["S"], i["version"]["N"]) for i in pairs),
    }


@pytest.mark.integration
def test_a_committed_transaction_writes_every_item(ddb: Any) -> None:
    ddb.transact_write_items(
        TransactItems=[_put("users", {"user_id": f"u{i}"}, 1, None) for i in range(5)]
        + [_put("pairs", {"user_id": "u0", "item_id": "i1"}, 1, None)]
    )
    ddb.transact_write_items(TransactItems=[_put("users", {"user_id": f"u{i}"}, 2, 1) for i in range(3)])
    assert _versions(ddb) == {
        "users": [("u0", "2"), ("u1", "2"), ("u2", "2"), ("u3", "1"), ("u4", "1")],
        "pairs": [("u0", "i1", "1")],
    }


@pytest.mark.integration
def test_a_cancelled_transaction_changes_nothing_new_updated_or_deleted(ddb: Any) -> None:
    ddb.transact_write_items(
        TransactItems=[_put("users", {"user_id": f"u{i}"}, 1, None) for i in range(4)]
        + [_put("pairs", {"user_id": "u0", "item_id": "i1"}, 1, None)]
    )
    before = _versions(ddb)
    items = [
        _put("users", {"user_id": "u0"}, 2, 1),  # would succeed
        _put("users", {"user_id": "new"}, 1, None),  # would create an item
        {"Delete": {"TableName": "users", "Key": {"user_id": {"S": "u1"}}}},
        {
            "Update": {
                "TableName": "pairs",
                "Key": {"user_id": {"S": "u0"}, "item_id": {"S": "i1"}},
                "UpdateExpression": "SET version = :n",
                "ExpressionAttributeValues": {":n": {"N": "7"}},
            }
        },
        _put("users", {"user_id": "u2"}, 2, 5),  # the culprit: stale version
        _put("users", {"user_id": "u3"}, 2, 1),  # after the culprit
    ]
    with pytest.raises(ClientError) as err:
        ddb.transact_write_items(TransactItems=items)
    assert err.value.response["Error"]["Code"] == "TransactionCanceledException"
    codes = [r["Code"] for r in err.value.response["CancellationReasons"]]
    assert codes == ["None", "None", "None", "None", "ConditionalCheckFailed", "None"]
    assert _versions(ddb) == before


@pytest.mark.integration
def test_a_rejected_transaction_touching_one_item_twice_changes_nothing(ddb: Any) -> None:
    ddb.put_item(TableName="users", Item={"user_id": {"S": "u0"}, "version": {"N": "1"}})
    with pytest.raises(ClientError):
        ddb.transact_write_items(
            TransactItems=[_put("users", {"user_id": "u1"}, 1, None), _put("users", {"user_id": "u1"}, 2, 1)]
        )
    assert _versions(ddb)["users"] == [("u0", "1")]


@pytest.mark.integration
def test_moto_as_is_can_be_served_for_comparison(tmp_path: Path) -> None:
    # Each switch really leaves moto's own code in place (checked in a fresh interpreter, as
    # the server process imports the app), and the as-is server still answers.
    probe = (
        "import moto.dynamodb.models as m, moto.dynamodb.responses as r, recpipe_dev.local.moto_app as a; "
        "print(m.DynamoDBBackend.transact_write_items is a.transact_write_items, type(a.app).__name__, "
        "r.dynamo_to_dict is a._dynamo_to_dict, m.Item.size is a._item_size, "
        "__import__('gc').get_threshold()[0])"
    )

    def patched(**switches: str) -> str:
        env = {**os.environ, **CREDENTIALS, **switches}
        out = subprocess.run(
            [sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True
        )
        return out.stdout.strip()

    assert patched() == "True HostCachingDispatcher True True 10000"
    assert patched(RECPIPE_MOTO_TRANSACTIONS="as-is") == "False HostCachingDispatcher True True 10000"
    assert patched(RECPIPE_MOTO_FAST_PATHS="as-is") == "True DomainDispatcherApplication False False 700"
    env = {**CREDENTIALS, "RECPIPE_MOTO_TRANSACTIONS": "as-is", "RECPIPE_MOTO_FAST_PATHS": "as-is"}
    with MotoServer(tmp_path / "moto.log", front="werkzeug", env=env) as server:
        client = boto3.client("dynamodb", endpoint_url=server.url, **_client_kwargs())
        client.create_table(
            TableName="t",
            KeySchema=[{"AttributeName": "user_id", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "user_id", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        client.transact_write_items(
            TransactItems=[{"Put": {"TableName": "t", "Item": {"user_id": {"S": f"u{i}"}}}} for i in range(3)]
        )
        assert client.scan(TableName="t")["Count"] == 3


@pytest.mark.integration
@pytest.mark.skipif(not granian_installed(), reason="granian is in the dev extra")
def test_stopping_the_granian_front_end_leaves_no_worker_behind(tmp_path: Path) -> None:
    server = MotoServer(tmp_path / "moto.log", front="granian", env=CREDENTIALS)
    server.start()
    assert server.pid is not None
    workers = child_pids(server.pid)
    assert workers, "granian serves from a worker process"
    server.stop(timeout=0.5)
    for pid in workers:
        assert not os.path.exists(f"/proc/{pid}") or "zombie" in Path(f"/proc/{pid}/status").read_text()


@pytest.mark.unit
def test_an_unknown_front_end_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown moto front end"):
        moto_command("127.0.0.1", 1, "nginx")


def _client_kwargs() -> dict[str, str]:
    return {
        "region_name": "us-east-1",
        "aws_access_key_id": "testing",
        "aws_secret_access_key": "testing",
    }


# ---- moto_app's fast paths: same answers as moto's own code --------------------------------------


def _moto_body(result: Any, operation: str, *, fast: bool) -> str:
    """The response body moto serializes for `result` (a DynamoResult's input)."""
    import moto.core.serialize as moto_serialize
    from moto.core.utils import get_service_model
    from moto.dynamodb.responses import DynamoResult
    from recpipe_dev.local import moto_app

    model = get_service_model("dynamodb")
    cls = moto_app.DynamoDBJSONSerializer if fast else moto_serialize.JSONSerializer
    picker = moto_serialize.XFormedAttributePicker(response_transformers=None)
    serializer = cls(operation_model=model.operation_model(operation), value_picker=picker)
    return str(serializer.serialize(DynamoResult(result).result)["body"])


@pytest.mark.unit
@pytest.mark.parametrize("operation", ["GetItem", "BatchGetItem", "Scan"])
def test_the_attribute_value_serializer_writes_the_bytes_moto_writes(operation: str) -> None:
    from moto.dynamodb.models.dynamo_type import Item
    from recpipe_dev.local import moto_app

    assert moto_app.install_serializer_patch()
    item = Item(ALL_TYPES_ITEM["user_id"], None, wire_item(ALL_TYPES_ITEM))
    attrs = item.describe_attrs(attributes=None)["Item"]
    result: dict[str, Any] = {
        "GetItem": {"Item": attrs},
        "BatchGetItem": {"Responses": {"users": [attrs, attrs]}, "UnprocessedKeys": {}},
        "Scan": {"Items": [attrs], "Count": 1, "ScannedCount": 1},
    }[operation]
    assert _moto_body(result, operation, fast=True) == _moto_body(result, operation, fast=False)


@pytest.mark.unit
def test_unusual_attribute_values_are_serialized_as_moto_does() -> None:
    odd = {
        "gap": {"L": [None, {"S": "x"}, {"M": {"k": {}}}]},
        "sets": {"SS": ["x", ""]},
        "bs": {"BS": [b"\x00", "text"]},
        "empty": {},
        "two": {"S": "x", "N": "1"},
        "null_s": {"S": None},
        "number": {"N": 5},
        "": {"S": "unnamed"},
        "not_a_value": "x",
    }
    result = {"Item": odd}
    assert _moto_body(result, "GetItem", fast=True) == _moto_body(result, "GetItem", fast=False)


@pytest.mark.integration
def test_every_attribute_type_round_trips_through_the_server(ddb: Any) -> None:
    ddb.put_item(TableName="users", Item=ALL_TYPES_ITEM)
    key = {"user_id": ALL_TYPES_ITEM["user_id"]}
    got = ddb.get_item(TableName="users", Key=key, ConsistentRead=True)["Item"]
    batch = ddb.batch_get_item(RequestItems={"users": {"Keys": [key]}})["Responses"]["users"]
    expected = {k: _sets_as_sets(v) for k, v in ALL_TYPES_ITEM.items()}
    assert {k: _sets_as_sets(v) for k, v in got.items()} == expected
    assert [{k: _sets_as_sets(v) for k, v in i.items()} for i in batch] == [expected]


def _sets_as_sets(v: dict[str, Any]) -> Any:
    ((kind, value),) = v.items()
    return (kind, frozenset(value)) if kind in ("SS", "NS", "BS") else v


@pytest.mark.integration
def test_cached_conditions_answer_like_fresh_ones(ddb: Any) -> None:
    """The same expression with other values, names or items: each answer is its own."""
    ddb.transact_write_items(TransactItems=[_put("users", {"user_id": f"u{i}"}, 1, None) for i in range(3)])
    for _ in range(2):  # the second round is answered from the cache
        with pytest.raises(ClientError) as err:
            ddb.transact_write_items(
                TransactItems=[_put("users", {"user_id": "u0"}, 2, 1), _put("users", {"user_id": "u1"}, 2, 7)]
            )
        codes = [r["Code"] for r in err.value.response["CancellationReasons"]]
        assert codes == ["None", "ConditionalCheckFailed"]
    ddb.transact_write_items(
        TransactItems=[_put("users", {"user_id": "u0"}, 2, 1), _put("users", {"user_id": "u1"}, 2, 1)]
    )
    ddb.put_item(
        TableName="users",
        Item={"user_id": {"S": "u2"}, "version": {"N": "2"}},
        ConditionExpression="#v = :expected",
        ExpressionAttributeNames={"#v": "version"},
        ExpressionAttributeValues={":expected": {"N": "1"}},
    )
    with pytest.raises(ClientError, match="ConditionalCheckFailed"):
        ddb.put_item(
            TableName="users",
            Item={"user_id": {"S": "u2"}, "version": {"N": "3"}},
            ConditionExpression="#v = :expected",
            ExpressionAttributeNames={"#v": "version"},
            ExpressionAttributeValues={":expected": {"N": "1"}},
        )
    with pytest.raises(ClientError, match="ValidationException"):  # unused name: still refused
        ddb.put_item(
            TableName="users",
            Item={"user_id": {"S": "u2"}, "version": {"N": "3"}},
            ConditionExpression="version = :expected",
            ExpressionAttributeNames={"#v": "version"},
            ExpressionAttributeValues={":expected": {"N": "2"}},
        )
    assert _versions(ddb)["users"] == [("u0", "2"), ("u1", "2"), ("u2", "2")]


@pytest.mark.unit
@pytest.mark.parametrize("size", [404_000, 404_990, 405_000, 406_000])
def test_the_one_pass_item_size_check_decides_like_moto(size: int) -> None:
    """Same outcome (and the same attribute at fault) as LimitedSizeDict's per-insert re-sum."""
    from moto.dynamodb.exceptions import ItemSizeTooLarge
    from moto.dynamodb.models.dynamo_type import DynamoType, Item, LimitedSizeDict
    from recpipe_dev.local import moto_app

    attrs = {"user_id": {"S": "u"}, "a": {"S": "x" * (size // 2)}, "b": {"S": "y" * (size - size // 2)}}

    def moto_own() -> dict[str, Any] | str:
        out = LimitedSizeDict()
        try:
            for key, value in attrs.items():
                out[key] = DynamoType(value)
        except ItemSizeTooLarge:
            return f"too large at {len(out)}"
        return dict(out)

    def patched() -> dict[str, Any] | str:
        item = Item.__new__(Item)
        try:
            moto_app._item_init(item, DynamoType(attrs["user_id"]), None, attrs)
        except ItemSizeTooLarge:
            return f"too large at {len(item.attrs)}"
        assert type(item.attrs) is LimitedSizeDict
        return dict(item.attrs)

    assert patched() == moto_own()


@pytest.mark.unit
@pytest.mark.parametrize("operation", ["TransactWriteItems", "PutItem", "BatchGetItem"])
@pytest.mark.parametrize("malformed", ["", "not a value", "bad padding", "not ascii"])
def test_the_request_parser_reads_attribute_values_as_moto_does(operation: str, malformed: str) -> None:
    import json

    import moto.core.parse as moto_parse
    from moto.core.utils import get_service_model
    from recpipe_dev.local import moto_app

    assert moto_app.install_request_parser()
    wire = wire_item(ALL_TYPES_ITEM)
    odd = {
        "empty": {},
        "two": {"S": "x", "N": "1"},
        "null_s": {"S": None},
        "m": {"M": {"k": {}}},
        "": {"S": "unnamed"},
        "unknown": {"X": "1"},
        "b_padded": {"B": "AAE=="},
        "b_spaces": {"B": "AA E=\n"},
        "b_empty": {"B": ""},
    }
    put = {"TableName": "users", "Item": wire | odd, "ExpressionAttributeValues": {":v": {"N": "1"}}}
    body = {
        "TransactWriteItems": {
            "TransactItems": [{"Put": put}, {"Put": {"TableName": "users", "Item": wire}}]
        },
        "PutItem": put,
        "BatchGetItem": {"RequestItems": {"users": {"Keys": [{"user_id": {"S": "a"}}, wire]}}},
    }[operation]
    # moto's own errors, whatever they are
    bad = {"not a value": '"x"', "bad padding": '{"B": "AAE"}', "not ascii": '{"B": "\\u00fc"}'}
    if malformed:
        body = json.loads(json.dumps(body).replace('{"X": "1"}', bad[malformed]))
    request: Any = {"body": json.dumps(body).encode(), "headers": {}, "method": "POST", "url_path": "/"}
    model = get_service_model("dynamodb").operation_model(operation)
    ours = _outcome(moto_app.DynamoDBJSONParser(model).parse, dict(request))
    theirs = _outcome(moto_parse.JSONParser(model).parse, dict(request))
    assert ours == theirs


def _outcome(fn: Any, *args: Any) -> Any:
    """fn's result, or the type and text of what it raised."""
    try:
        return fn(*args)
    except Exception as e:
        return type(e), str(e)


@pytest.mark.unit
def test_the_dispatcher_finds_the_backend_moto_finds() -> None:
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
    from recpipe_dev.local.moto_app import HostCachingDispatcher

    ours = HostCachingDispatcher(create_backend_app)
    theirs = DomainDispatcherApplication(create_backend_app)
    hosts = [
        "dynamodb.us-east-1.amazonaws.com",
        "kinesis.eu-west-1.amazonaws.com",
        "sqs.us-east-1.amazonaws.com",
        "s3.amazonaws.com",
        "bucket.s3.amazonaws.com",
        "ssm.us-east-1.amazonaws.com",
        "moto_api",
        "dynamodb",
        "unknown.example.com",
    ]
    for _ in range(2):  # looked up, then remembered
        assert [ours.get_backend_for_host(h) for h in hosts] == [
            theirs.get_backend_for_host(h) for h in hosts
        ]
    assert ours.get_backend_for_host(None) is None


@pytest.mark.unit
def test_action_names_are_listed_as_moto_lists_them() -> None:
    from moto.core.utils import method_names_from_class
    from moto.dynamodb.responses import DynamoHandler
    from moto.kinesis.responses import KinesisResponse
    from recpipe_dev.local.moto_app import _cached_method_names

    for cls in (DynamoHandler, KinesisResponse, DynamoHandler):
        assert _cached_method_names(cls) == method_names_from_class(cls)


@pytest.mark.unit
def test_condition_cache_keys_meet_exactly_when_moto_s_json_keys_do() -> None:
    import itertools
    import json

    from recpipe_dev.local.moto_app import _NotPlain, _plain_key

    values: list[Any] = [
        None,
        "",
        "1",
        "version = :v",
        {},
        [],
        ["1"],
        [["1"]],
        [{}],
        {":v": {"N": "1"}},
        {":v": {"S": "1"}},
        {":v": {"N": "1"}, ":w": {"N": "2"}},
        {":w": {"N": "2"}, ":v": {"N": "1"}},
        {":v": {"L": [{"N": "1"}, {"S": "1"}]}},
        {":v": {"SS": ["a", "b"]}},
        {":v": {"SS": ["b", "a"]}},
        {"#n": "version"},
        {"#n": "version", "#m": "n"},
    ]
    for a, b in itertools.product(values, repeat=2):
        same_json = json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)
        assert (_plain_key(a) == _plain_key(b)) is same_json, (a, b)
    for odd in ({":v": {"N": 1}}, {":v": {"BOOL": True}}, {1: "x"}, ("1",), 1.0):
        with pytest.raises(_NotPlain):
            _plain_key(odd)


def _odd_dynamo_values() -> list[Any]:
    import datetime

    from moto.dynamodb.models.dynamo_type import DynamoType, Item

    class Sub(DynamoType):
        pass

    class Jsonable:
        def to_json(self) -> dict[str, Any]:
            return {"k": DynamoType({"S": "v"})}

    item = Item(ALL_TYPES_ITEM["user_id"], None, wire_item(ALL_TYPES_ITEM))
    return [
        item.attrs,
        {"Responses": {"t": [item.attrs, item.attrs]}, "UnprocessedKeys": {}, "ConsumedCapacity": []},
        DynamoType({"B": "AAE="}),
        DynamoType({"BS": ["AAE=", b"\x02"]}),
        DynamoType({"S": True}),
        DynamoType({"N": 5}),
        DynamoType({"NULL": True}),
        DynamoType({"M": {"a": {"L": [{"N": "1"}, {"B": b"\x00"}]}}}),
        Sub({"S": "x"}),
        Jsonable(),
        datetime.datetime(2024, 1, 2, 3, 4, 5),
        [1, 1.5, True, None, "s", b"raw", (1, 2)],
        {"nested": {"deeper": [DynamoType({"S": "x"}), {"t": datetime.date(2024, 1, 1)}]}},
    ]


@pytest.mark.unit
def test_the_response_conversion_is_moto_s() -> None:
    from moto.dynamodb.models.utilities import dynamo_to_dict
    from recpipe_dev.local import moto_app

    for value in _odd_dynamo_values():
        assert repr(moto_app._dynamo_to_dict(value)) == repr(dynamo_to_dict(value))


@pytest.mark.unit
def test_the_item_size_is_moto_s() -> None:
    from moto.dynamodb.models.dynamo_type import DynamoType, Item, LimitedSizeDict
    from recpipe_dev.local import moto_app

    assert moto_app._original_item_size is not None
    moto_size = moto_app._original_item_size

    items = [Item(ALL_TYPES_ITEM["user_id"], None, wire_item(ALL_TYPES_ITEM))]
    odd = Item.__new__(Item)
    odd.attrs = LimitedSizeDict()
    for key, value in {
        "s": {"S": "\u00fc\u20ac"},
        "b_text": {"B": "AAE="},
        "s_bool": {"S": True},
        "n_int": {"N": 12},
        "null": {"NULL": True},
        "bool_text": {"BOOL": "true"},
        "\u00e9": {"S": ""},
    }.items():
        dict.__setitem__(odd.attrs, key, DynamoType(value))
    items.append(odd)
    for item in items:
        assert moto_app._item_size(item) == moto_size(item)


def _dynamo_vars(value: Any) -> Any:
    """A DynamoType tree as plain data: its class, attributes and nested values."""
    from moto.dynamodb.models.dynamo_type import DynamoType

    if isinstance(value, DynamoType):
        return (type(value).__name__, {k: _dynamo_vars(v) for k, v in vars(value).items()})
    if isinstance(value, dict):
        return {k: _dynamo_vars(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_dynamo_vars(v) for v in value]
    return (type(value).__name__, value)


@pytest.mark.unit
@pytest.mark.parametrize(
    "odd",
    [
        {},
        {"two": {"S": "x", "N": "1"}},
        {"null_s": {"S": None}},
        {"number": {"N": 5}},
        {"s_bool": {"S": True}},
        {"map_of_odd": {"M": {"k": {"S": "x", "N": "1"}}}},
        {"empty": {}},
        {"not_a_value": "x"},
        {b"bytes_name": {"S": "x"}},
    ],
)
def test_items_are_built_as_moto_builds_them(odd: dict[Any, Any]) -> None:
    """Same DynamoTypes (classes, attributes, nesting), sizes and errors as moto's
    Item.__init__ (which inserts through LimitedSizeDict's own check)."""
    from moto.dynamodb.models.dynamo_type import DynamoType, Item, LimitedSizeDict
    from recpipe_dev.local import moto_app

    attrs = wire_item(ALL_TYPES_ITEM) | odd

    def moto_own() -> Any:
        out = LimitedSizeDict()
        for key, value in attrs.items():
            out[key] = DynamoType(value)
        return _dynamo_vars(dict(out)), type(out).__name__

    def patched() -> Any:
        item = Item.__new__(Item)
        moto_app._item_init(item, DynamoType(attrs["user_id"]), None, attrs)
        return _dynamo_vars(dict(item.attrs)), type(item.attrs).__name__

    assert _outcome(patched) == _outcome(moto_own)


@pytest.mark.unit
@pytest.mark.parametrize(
    "body",
    [
        '{"Responses": {}}',
        "",
        "<ErrorResponse><RequestId>old</RequestId></ErrorResponse>",
        '{"S": "<RequestId>x</RequestId>"}',
        '{"S": "<RequestId>"}',
        b"<RequestId>x</RequestId>",
        None,
    ],
)
def test_responses_are_enriched_as_moto_enriches_them(body: Any) -> None:
    from moto.moto_api._internal import mock_random
    from recpipe_dev.local import moto_app

    assert moto_app._original_enrich is not None

    def run(enrich: Any) -> Any:
        mock_random.seed(7)  # the same request id for both
        return _outcome(enrich, {"status": 200, "Content-Type": "x"}, body)

    assert run(moto_app._enrich_response) == run(moto_app._original_enrich)


@pytest.mark.unit
def test_duplicate_keys_are_found_as_moto_finds_them() -> None:
    from recpipe_dev.local import moto_app

    a = {"user_id": {"S": "a"}}
    pair = {"user_id": {"S": "a"}, "item_id": {"S": "i"}}
    cases: list[list[Any]] = [
        [],
        [a],
        [a, {"user_id": {"S": "b"}}],
        [a, {"user_id": {"S": "a"}}],
        [pair, {"item_id": {"S": "i"}, "user_id": {"S": "a"}}],  # same key, other order
        [a, {"user_id": {"N": "a"}}],
        [{"user_id": {"N": 1}}, {"user_id": {"N": 1.0}}],  # not plain: moto's check
        [{"user_id": {"N": 1}}, {"user_id": {"N": "1"}}],
        [a, {"user_id": {"L": [{"S": "a"}]}}, {"user_id": {"L": [{"S": "a"}]}}],
    ]
    assert moto_app._original_contains_duplicates is not None
    for keys in cases:
        ours = moto_app._contains_duplicates(None, keys)
        assert ours == moto_app._original_contains_duplicates(None, keys), keys


@pytest.mark.unit
def test_keys_hash_and_compare_as_moto_s() -> None:
    import itertools

    from moto.dynamodb.models.dynamo_type import DynamoType
    from recpipe_dev.local import moto_app

    class Sub(DynamoType):
        @property
        def cast_value(self) -> Any:
            return "other"

    values = [
        DynamoType({"S": "a"}),
        DynamoType({"S": "1"}),
        DynamoType({"S": ""}),
        DynamoType({"B": b"a"}),
        DynamoType({"B": "a"}),
        DynamoType({"N": "1"}),
        DynamoType({"N": "1.0"}),
        DynamoType({"SS": ["a"]}),
        DynamoType({"NULL": True}),
        Sub({"S": "a"}),
    ]
    assert moto_app._original_dynamo_hash is not None and moto_app._original_dynamo_eq is not None
    for v in values:
        assert _outcome(moto_app._dynamo_hash, v) == _outcome(moto_app._original_dynamo_hash, v), vars(v)
    for a, b in itertools.product(values, [*values, None, "a"]):
        ours = _outcome(moto_app._dynamo_eq, a, b)
        assert ours == _outcome(moto_app._original_dynamo_eq, a, b), (vars(a), b)


@pytest.mark.unit
@pytest.mark.parametrize(
    "odd",
    [
        {},
        {"bad": {"N": "abc"}, "worse": {"N": "1e999"}},
        {"space": {"N": " 1"}},
        {"inf": {"N": "inf"}},
        {"tiny": {"N": "1e-200"}},
        {"int": {"N": 5}},
        {"N": {"S": "x"}},
        {"S": {"N": "1"}},
        {"null_false": {"NULL": False}},
        {"s_int": {"S": 5}},
        {"user_id": {"S": {"S": "x"}}},
        {"m": {"M": {"N": {"N": "bad"}}}},
        {"two": {"S": "x", "N": "bad"}},
        {"first": {"N": "x1"}, "second": {"N": "x2"}},
        {"blob": {"B": b"\x00"}, "bad": {"N": "x"}},
        {"n_bytes": {"N": b"1"}, "s_bytes": {"S": b"x"}},
        {"user_id": {"S": b"x"}},
    ],
)
def test_item_types_are_checked_as_moto_checks_them(odd: dict[str, Any]) -> None:
    from moto.dynamodb.models.table import Table
    from recpipe_dev.local import moto_app

    table = Table(
        "users",
        account_id="123456789012",
        region="us-east-1",
        schema=[{"AttributeName": "user_id", "KeyType": "HASH"}],
        attr=[{"AttributeName": "user_id", "AttributeType": "S"}],
    )
    plain = wire_item({k: v for k, v in ALL_TYPES_ITEM.items() if k in ("user_id", "n", "empty")})
    item = plain | {"b": {"B": b"\x00\xff"}} | odd  # B as parsed: bytes
    assert moto_app._original_validate_item_types is not None
    ours = _outcome(moto_app._validate_item_types, table, item)
    assert ours == _outcome(moto_app._original_validate_item_types, table, item)
    assert _outcome(moto_app._validate_item_types, table, wire_item(ALL_TYPES_ITEM)) is None


@pytest.mark.unit
def test_a_plain_item_s_types_are_checked_without_moto_s_walk(monkeypatch: pytest.MonkeyPatch) -> None:
    from moto.dynamodb.models.table import Table
    from recpipe_dev.local import moto_app

    walks: list[Any] = []
    monkeypatch.setattr(moto_app, "_original_validate_item_types", lambda *a: walks.append(a))
    key = [{"AttributeName": "user_id", "KeyType": "HASH"}]
    table = Table(
        "users", "123456789012", "us-east-1", key, [{"AttributeName": "user_id", "AttributeType": "S"}]
    )
    item = {"user_id": {"S": "u"}, "version": {"N": "3"}, "features": {"B": b"\x00"}}
    moto_app._validate_item_types(table, item)
    assert walks == []


@pytest.mark.unit
@pytest.mark.parametrize("custom", [None, "custom {}"])
def test_empty_key_values_are_refused_as_moto_refuses_them(custom: str | None) -> None:
    import itertools

    from moto.dynamodb.models.table import Table
    from recpipe_dev.local import moto_app

    def table(keys: list[str], gsi: bool = False) -> Any:
        return Table(
            "t",
            "123456789012",
            "us-east-1",
            [{"AttributeName": k, "KeyType": t} for k, t in zip(keys, ("HASH", "RANGE"), strict=False)],
            [{"AttributeName": k, "AttributeType": "S"} for k in [*keys, "g"]],
            global_indexes=[
                {
                    "IndexName": "by_g",
                    "KeySchema": [{"AttributeName": "g", "KeyType": "HASH"}],
                    "Projection": {"ProjectionType": "ALL"},
                }
            ]
            if gsi
            else None,
        )

    tables = [table(["user_id"]), table(["user_id", "item_id"]), table(["user_id"], gsi=True), None]
    items: list[Any] = [
        {"user_id": {"S": "u"}, "item_id": {"S": "i"}, "n": {"N": "1"}},
        {"user_id": {"S": ""}, "item_id": {"S": "i"}},
        {"user_id": {"S": "u"}, "item_id": {"B": ""}},
        {"user_id": {"S": ""}, "item_id": {"S": ""}},
        {"user_id": {"B": b""}},
        {"user_id": {"S": "u"}, "other": {"S": ""}},
        {"user_id": {"S": "u"}, "g": {"S": ""}},
        {"user_id": {"S": "u"}, "empty": {}},
        {"user_id": {"S": "u"}, "odd": "x"},
        {"item_id": {"S": ""}},
        {},
    ]
    assert moto_app._original_empty_key_check is not None
    for t, item in itertools.product(tables, items):
        ours = _outcome(moto_app._validate_put_has_empty_keys, item, t, custom)
        assert ours == _outcome(moto_app._original_empty_key_check, item, t, custom), (item, t)


@pytest.mark.unit
def test_batch_get_item_answers_as_moto_s_handler(monkeypatch: pytest.MonkeyPatch) -> None:
    """Both handlers behind the same app and tables: same status and body for found,
    missing and projected items, every validation error, and UnprocessedKeys past 16 MB."""
    import json

    from moto.dynamodb.responses import DynamoHandler
    from recpipe_dev.local import moto_app
    from werkzeug.test import Client

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    client = Client(moto_app.app)
    auth = "AWS4-HMAC-SHA256 Credential=testing/20250101/eu-west-3/dynamodb/aws4_request, SignedHeaders=host, Signature=x"

    def call(op: str, body: dict[str, Any]) -> tuple[int, str]:
        r = client.post(
            "/",
            data=json.dumps(body),
            headers={
                "Host": "127.0.0.1:5000",
                "Content-Type": "application/x-amz-json-1.0",
                "X-Amz-Target": f"DynamoDB_20120810.{op}",
                "Authorization": auth,
            },
        )
        return r.status_code, r.get_data(as_text=True)

    for name in ("bgi-small", "bgi-big"):
        call("DeleteTable", {"TableName": name})
        call(
            "CreateTable",
            {
                "TableName": name,
                "KeySchema": [{"AttributeName": "user_id", "KeyType": "HASH"}],
                "AttributeDefinitions": [{"AttributeName": "user_id", "AttributeType": "S"}],
                "BillingMode": "PAY_PER_REQUEST",
            },
        )
    for i in range(5):
        item = wire_item(ALL_TYPES_ITEM) | {"user_id": {"S": f"u{i}"}, "v": {"N": str(i)}}
        assert call("PutItem", {"TableName": "bgi-small", "Item": item})[0] == 200
    for i in range(45):  # ~17.6 MB in all: past BatchGetItem's 16 MB
        item = {"user_id": {"S": f"u{i}"}, "blob": {"S": "x" * 390_000}}
        assert call("PutItem", {"TableName": "bgi-big", "Item": item})[0] == 200

    def keys(table: str, ids: list[int], **extra: Any) -> dict[str, Any]:
        return {table: {"Keys": [{"user_id": {"S": f"u{i}"}} for i in ids], **extra}}

    requests: list[dict[str, Any]] = [
        keys("bgi-small", [0, 1, 7, 2, 9]),
        keys("bgi-small", [0, 3], ConsistentRead=True) | keys("bgi-big", [1, 2]),
        keys(
            "bgi-small", [0, 1], ProjectionExpression="#u, v, m.x", ExpressionAttributeNames={"#u": "user_id"}
        ),
        keys("bgi-small", [0], ProjectionExpression="v", ExpressionAttributeNames={"#u": "user_id"}),
        keys("bgi-small", [0, 1], AttributesToGet=["v", "b"]),
        keys("bgi-small", [0, 0]),
        keys("bgi-small", list(range(101))),
        keys("bgi-small", list(range(60))) | keys("bgi-big", list(range(41))),
        keys("bgi-missing", [0]),
        keys("bgi-small", []),
        keys("bgi-big", list(range(45))),
        keys("bgi-small", [0, 1]) | keys("bgi-big", list(range(44))),
        {"bgi-small": {"Keys": [{"item_id": {"S": "u0"}}]}},
    ]
    assert moto_app._original_batch_get_item is not None
    answers = []
    for body in requests:
        monkeypatch.setattr(DynamoHandler, "batch_get_item", moto_app._original_batch_get_item)
        theirs = call("BatchGetItem", {"RequestItems": body})
        monkeypatch.setattr(DynamoHandler, "batch_get_item", moto_app._batch_get_item)
        ours = call("BatchGetItem", {"RequestItems": body})
        assert ours == theirs, (body, theirs[1][:300])
        answers.append(ours)
    assert sum('"UnprocessedKeys": {"bgi-big"' in body for _, body in answers) == 2
    assert sum(status == 400 for status, _ in answers) == 6


@pytest.mark.unit
def test_remembered_numbers_are_judged_as_moto_judges_them() -> None:
    from recpipe_dev.local import moto_app

    values: list[Any] = [
        "1",
        "-12.50",
        "1795643496.596617",
        "0",
        "1e125",
        "1e126",
        "-1e-131",
        "1e-130",
        "abc",
        " 1",
        "1 ",
        "inf",
        "nan",
        "",
        "0x10",
        "1_000",
        5,
        1.5,
        None,
        b"1",
    ]
    assert moto_app._original_validate_number is not None
    for _ in range(2):  # judged, then remembered
        for value in values:
            ours = _outcome(moto_app._validate_number_type, None, value)
            assert ours == _outcome(moto_app._original_validate_number, None, value), value
    assert "abc" not in moto_app._valid_numbers and "1" in moto_app._valid_numbers
