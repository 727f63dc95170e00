"""recpipe.stream.dynamodb_codec: the updater's faster AttributeValue (de)serialisation gives
exactly what botocore's own serializer and parser give."""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.parsers import create_parser
from botocore.serialize import create_serializer
from recpipe.stream import dynamodb_codec
from recpipe_dev.testing.dynamodb_wire import ALL_TYPES_ITEM, wire_item

pytestmark = pytest.mark.unit

ITEM: dict[str, Any] = {**ALL_TYPES_ITEM, "b_text": {"B": "text is encoded"}}


def _client() -> Any:
    return boto3.client(
        "dynamodb",
        region_name="us-east-1",
        endpoint_url="http://127.0.0.1:1",
        aws_access_key_id="x",
        aws_secret_access_key="x",
        config=Config(parameter_validation=False),
    )


def _operation(name: str) -> Any:
    return _client().meta.service_model.operation_model(name)


def _requests() -> list[tuple[str, dict[str, Any]]]:
    put = {
        "TableName": "t",
        "Item": ITEM,
        "ConditionExpression": "version = :v",
        "ExpressionAttributeValues": {":v": {"N": "3"}},
    }
    return [
        ("TransactWriteItems", {"TransactItems": [{"Put": put}, {"Put": put}], "ClientRequestToken": "tok"}),
        ("PutItem", put),
        (
            "BatchGetItem",
            {"RequestItems": {"t": {"Keys": [{"user_id": {"S": "a"}}], "ConsistentRead": True}}},
        ),
        # Every Put member, in an unusual order.
        (
            "TransactWriteItems",
            {
                "ClientRequestToken": "tok",
                "TransactItems": [
                    {
                        "Put": {
                            "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
                            "ExpressionAttributeNames": {"#v": "version"},
                            "ConditionExpression": "#v = :v",
                            "ExpressionAttributeValues": {":v": {"N": "3"}},
                            "Item": ITEM,
                            "TableName": "t",
                        }
                    }
                ],
            },
        ),
        # Not only Puts, or not plain: botocore's path (and botocore's outcome).
        (
            "TransactWriteItems",
            {"TransactItems": [{"Put": put}, {"Delete": {"TableName": "t", "Key": {"k": {"S": "a"}}}}]},
        ),
        ("TransactWriteItems", {"TransactItems": [{"Put": {**put, "Item": {"a": {}}}}]}),
        ("TransactWriteItems", {"TransactItems": [{"Put": {**put, "TableName": 7}}]}),
        # Not plain AttributeValues: botocore's path (and botocore's outcome).
        ("PutItem", {"TableName": "t", "Item": {"a": {}, "b": {"S": "x", "N": "1"}, "c": {"M": {"d": {}}}}}),
    ]


@pytest.mark.parametrize(("operation", "params"), _requests())
def test_request_bodies_are_botocores(operation: str, params: dict[str, Any]) -> None:
    op = _operation(operation)
    ours = dynamodb_codec.AttributeValueSerializer().serialize_to_request(params, op)
    theirs = create_serializer("json", include_validation=False).serialize_to_request(params, op)
    # orjson writes the body compact and in UTF-8: the same JSON, other bytes.
    assert json.loads(ours.pop("body")) == json.loads(theirs.pop("body"))
    assert ours == theirs


def test_a_body_orjson_refuses_is_written_as_botocore_writes_it() -> None:
    op = _operation("PutItem")
    params = {"TableName": "t", "Item": {"a": {"S": "x"}, 7: {"S": "int key"}}}
    ours = dynamodb_codec.AttributeValueSerializer().serialize_to_request(params, op)
    theirs = create_serializer("json", include_validation=False).serialize_to_request(params, op)
    assert ours == theirs


def test_non_ascii_strings_travel_as_utf8() -> None:
    op = _operation("PutItem")
    params = {"TableName": "t", "Item": {"title": {"S": "Amélie ✓"}}}
    body = dynamodb_codec.AttributeValueSerializer().serialize_to_request(params, op)["body"]
    assert "Amélie ✓".encode() in body and json.loads(body)["Item"]["title"]["S"] == "Amélie ✓"


@pytest.mark.parametrize(
    ("operation", "body"),
    [
        ("BatchGetItem", {"Responses": {"t": [wire_item(ITEM), wire_item(ITEM)]}, "UnprocessedKeys": {}}),
        ("GetItem", {"Item": wire_item(ITEM)}),
        ("GetItem", {"Item": {"a": {"S": "x"}, "gap": {"L": [None, {"S": "y"}]}, "m": {"M": {"k": None}}}}),
        ("GetItem", {"Item": {"a": {"S": "x"}, "ss": {"SS": ["a", None]}, "bs": {"BS": [None]}}}),
    ],
)
def test_parsed_responses_are_botocores(operation: str, body: dict[str, Any]) -> None:
    op = _operation(operation)
    response = {"status_code": 200, "headers": {}, "body": json.dumps(body).encode()}
    ours = dynamodb_codec.AttributeValueParser().parse(dict(response), op.output_shape)
    theirs = create_parser("json").parse(dict(response), op.output_shape)
    assert ours == theirs


def _get_item_outcomes(body: bytes) -> list[Any]:
    """What the fast parser and botocore's make of a GetItem answer: a result or an error type."""
    op = _operation("GetItem")
    response = {"status_code": 200, "headers": {}, "body": body}
    outcomes: list[Any] = []
    for parser in (dynamodb_codec.AttributeValueParser(), create_parser("json")):
        try:
            outcomes.append(parser.parse(dict(response), op.output_shape))
        except Exception as exc:  # whatever botocore does, the fast parser does
            outcomes.append(type(exc))
    return outcomes


@pytest.mark.parametrize(
    "body", [b"", b"not json", b'{"Item": {"a": {"N": 1e999}}}', b'{"Item": {}} trailing']
)
def test_bodies_orjson_refuses_are_parsed_as_botocore_parses_them(body: bytes) -> None:
    ours, theirs = _get_item_outcomes(body)
    assert ours == theirs


def test_an_attribute_value_with_two_members_fails_as_in_botocore() -> None:
    ours, theirs = _get_item_outcomes(b'{"Item": {"a": {"S": "x", "N": "1"}}}')
    assert ours == theirs


def test_install_swaps_only_a_dynamodb_client_it_recognises() -> None:
    client = _client()
    assert dynamodb_codec.install(client)
    assert isinstance(client._serializer, dynamodb_codec.AttributeValueSerializer)
    assert not dynamodb_codec.install(client)  # already swapped: left as it is
    validating = boto3.client(
        "dynamodb", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x"
    )
    assert not dynamodb_codec.install(validating)  # parameter validation wraps the serializer
    sqs = boto3.client("sqs", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    assert not dynamodb_codec.install(sqs)


def test_install_leaves_a_serializer_without_the_internals_it_calls(monkeypatch: pytest.MonkeyPatch) -> None:
    # A botocore release that renamed one: the client keeps botocore's own serializer.
    monkeypatch.delattr("botocore.serialize.Serializer._expand_host_prefix")
    client = _client()
    assert not dynamodb_codec.install(client)
    assert type(client._serializer) is not dynamodb_codec.AttributeValueSerializer


@pytest.mark.parametrize(
    "items",
    [
        [{"Put": {"TableName": "t", "Item": ITEM}}] * 3,
        [
            {"Put": {"TableName": "a", "Item": ITEM}},
            {"Delete": {"TableName": "b", "Key": {}}},
            {"Update": {"TableName": "a", "Key": {}}},
            {"ConditionCheck": {"TableName": "c", "Key": {}}},
        ],
        [{"Put": {"Item": ITEM}}, {"Put": {"TableName": "t"}, "Delete": {"TableName": "u"}}, {}],
        [{"Put": "not a dict"}],
        [],
    ],
)
def test_the_transaction_resource_list_is_botocores(items: list[Any]) -> None:
    import jmespath

    op = _operation("TransactWriteItems")
    path = op.operation_context_parameters["ResourceArnList"]["path"]
    cache = dynamodb_codec._ContextParamCache(lambda _name, _op, args: jmespath.search(path, args))
    for _ in range(2):  # computed, then from the cache
        got = cache("ResourceArnList", op, {"TransactItems": items, "ClientRequestToken": "x"})
        assert got == jmespath.search(path, {"TransactItems": items})
