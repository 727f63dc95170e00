"""Faster botocore (de)serialisation of DynamoDB AttributeValues for the updater's client.

botocore turns request parameters into JSON and responses back by walking the service model
shape by shape, one Python call per node. A 100-user TransactWriteItems is ~4,000 such nodes
(each user item is 8 AttributeValues inside a Put), and the updater sends one per 100 users
and parses a BatchGetItem response of the same shape, so that walk was a large share of the
updater's CPU per event (figures: docs/stream.md, Feature updater). An AttributeValue is
already in wire form except its binary members (base64 on the wire), so the subclasses here
convert whole AttributeValues directly and leave every other shape to botocore. Same output:
tests/unit/stream/test_dynamodb_codec.py compares request bodies and parsed responses with
botocore's own classes for every attribute type. Anything unexpected (an unknown member, an
empty or multi-member value, a non-dict) takes botocore's path, which reports it as before.
The endpoint ruleset's ResourceArnList of a transaction is memoised (`_ContextParamCache`).
"""

from __future__ import annotations

import binascii
import json
from collections.abc import Mapping
from typing import Any

import orjson
from botocore.parsers import JSONParser, ResponseParserFactory
from botocore.serialize import JSONSerializer

_SCALARS = frozenset({"S", "N", "NULL", "BOOL"})
_MEMBERS = frozenset({"S", "N", "B", "SS", "NS", "BS", "M", "L", "NULL", "BOOL"})


class _NotFast(Exception):
    """The value is not a plain AttributeValue: let botocore handle it."""


def _b64(value: Any) -> str:
    # botocore's Serializer._get_base64 (base64.b64encode is this call behind a Python wrapper)
    if isinstance(value, str):
        value = value.encode("utf-8")
    return binascii.b2a_base64(value, newline=False).decode("ascii")


#: base64.b64decode without its Python wrapper: the same non-strict decoding of str or bytes,
#: the same errors (binascii.Error, ValueError for a non-ASCII str).
_unb64 = binascii.a2b_base64


def attribute_to_wire(value: Any) -> dict[str, Any]:
    if type(value) is not dict or len(value) != 1:
        raise _NotFast
    ((kind, inner),) = value.items()
    if kind in _SCALARS or kind in ("SS", "NS"):
        # Strings, numbers and booleans are serialised as they are (botocore's default).
        return {kind: list(inner) if kind in ("SS", "NS") else inner}
    if kind == "B":
        return {kind: _b64(inner)}
    if kind == "M":
        return {kind: {k: attribute_to_wire(v) for k, v in inner.items()}}
    if kind == "L":
        return {kind: [attribute_to_wire(v) for v in inner]}
    if kind == "BS":
        return {kind: [_b64(v) for v in inner]}
    raise _NotFast


def attribute_from_wire(value: Any) -> dict[str, Any]:
    if type(value) is not dict or len(value) != 1:
        raise _NotFast
    ((kind, inner),) = value.items()
    if kind not in _MEMBERS or inner is None:
        raise _NotFast
    if kind in _SCALARS:
        return {kind: inner}
    if kind == "B":
        return {kind: _unb64(inner)}
    if kind in ("SS", "NS"):
        if any(v is None for v in inner):
            raise _NotFast
        return {kind: list(inner)}
    if kind == "M":
        return {kind: {k: attribute_from_wire(v) for k, v in inner.items()}}
    if kind == "L":
        return {kind: [attribute_from_wire(v) for v in inner]}
    if any(v is None for v in inner):  # BS
        raise _NotFast
    return {kind: [_unb64(v) for v in inner]}


#: A transaction Put's string members (the rest: Item, ExpressionAttributeValues/Names maps).
_PUT_STRINGS = frozenset({"TableName", "ConditionExpression", "ReturnValuesOnConditionCheckFailure"})
_PUT_ATTRIBUTE_MAPS = frozenset({"Item", "ExpressionAttributeValues"})


def _put_to_wire(put: Any) -> dict[str, Any]:
    """A TransactWriteItems Put as botocore writes it: its members in the caller's order,
    strings as they are, attribute maps through attribute_to_wire, the names map copied."""
    if type(put) is not dict:
        raise _NotFast
    out: dict[str, Any] = {}
    for name, value in put.items():
        if name in _PUT_ATTRIBUTE_MAPS and type(value) is dict:
            out[name] = {k: attribute_to_wire(v) for k, v in value.items()}
        elif name in _PUT_STRINGS and type(value) is str:
            out[name] = value
        elif (
            name == "ExpressionAttributeNames"
            and type(value) is dict
            and all(type(v) is str for v in value.values())
        ):
            out[name] = dict(value)
        else:
            raise _NotFast
    return out


#: The JSONSerializer methods AttributeValueSerializer.serialize_to_request calls.
_SERIALIZER_INTERNALS = (
    "_create_default_request",
    "_handle_query_compatible_trait",
    "_serialize",
    "_expand_host_prefix",
)


class AttributeValueSerializer(JSONSerializer):
    def serialize_to_request(self, parameters: Any, operation_model: Any) -> Any:
        # botocore's JSON request, its body written by orjson: a 100-user transaction is ~0.5 MB
        # of mostly base64 text, which json.dumps scans character by character in Python's
        # escaping loop; orjson writes it in one native pass.
        # Compact UTF-8 instead of ", "-separated ASCII escapes: the same JSON to DynamoDB.
        serialized = self._create_default_request()  # type: ignore[attr-defined]
        serialized["method"] = operation_model.http.get("method", self.DEFAULT_METHOD)
        meta = operation_model.metadata
        serialized["headers"] = {
            "X-Amz-Target": f"{meta['targetPrefix']}.{operation_model.name}",
            "Content-Type": f"application/x-amz-json-{meta['jsonVersion']}",
        }
        self._handle_query_compatible_trait(operation_model, serialized)  # type: ignore[attr-defined]
        body = self.MAP_TYPE()
        if operation_model.input_shape is not None:
            self._serialize(body, parameters, operation_model.input_shape)  # type: ignore[attr-defined]
        try:
            serialized["body"] = orjson.dumps(body)
        except TypeError:  # something orjson refuses (a non-string key...): botocore's way
            serialized["body"] = json.dumps(body).encode(self.DEFAULT_ENCODING)
        host_prefix = self._expand_host_prefix(parameters, operation_model)  # type: ignore[attr-defined]
        if host_prefix is not None:
            serialized["host_prefix"] = host_prefix
        return serialized

    def _serialize_type_list(self, serialized: Any, value: Any, shape: Any, key: Any) -> None:
        # A transaction of Puts (the updater's only kind) at once: botocore walks ~6 shapes
        # per Put, each a Python call, to write members that are already in wire form.
        if shape.name == "TransactWriteItemList" and type(value) is list:
            try:
                wire = []
                for item in value:
                    if type(item) is not dict or item.keys() != {"Put"}:
                        raise _NotFast
                    wire.append({"Put": _put_to_wire(item["Put"])})
                serialized[key] = wire
                return
            except _NotFast:
                pass
        super()._serialize_type_list(serialized, value, shape, key)  # type: ignore[misc]

    def _serialize_type_structure(self, serialized: Any, value: Any, shape: Any, key: Any) -> None:
        if shape.name == "AttributeValue" and key is not None:
            try:
                serialized[key] = attribute_to_wire(value)
                return
            except _NotFast:
                pass
        super()._serialize_type_structure(serialized, value, shape, key)  # type: ignore[misc]

    def _serialize_type_map(self, serialized: Any, value: Any, shape: Any, key: Any) -> None:
        # A whole item (map of AttributeValues) at once: one call instead of two per attribute.
        if shape.value.name == "AttributeValue" and type(value) is dict:
            try:
                serialized[key] = {k: attribute_to_wire(v) for k, v in value.items()}
                return
            except _NotFast:
                pass
        super()._serialize_type_map(serialized, value, shape, key)  # type: ignore[misc]


class AttributeValueParser(JSONParser):
    def _parse_body_as_json(self, body_contents: bytes) -> Any:
        # A 100-user BatchGetItem answer is ~0.5 MB, mostly base64: orjson reads it several
        # times faster than json.loads. Anything orjson refuses takes botocore's path (which
        # also turns a body that is not JSON into {"message": body}).
        if body_contents:
            try:
                return orjson.loads(body_contents)
            except orjson.JSONDecodeError:
                pass
        return super()._parse_body_as_json(body_contents)  # type: ignore[misc]

    def _handle_structure(self, shape: Any, value: Any) -> Any:
        if shape.name == "AttributeValue":
            try:
                return attribute_from_wire(value)
            except _NotFast:
                pass
        return super()._handle_structure(shape, value)  # type: ignore[misc]

    def _handle_map(self, shape: Any, value: Any) -> Any:
        # A whole item at once; keys (AttributeName, a string shape) are kept as they are.
        if shape.value.name == "AttributeValue" and type(value) is dict:
            try:
                return {k: attribute_from_wire(v) for k, v in value.items()}
            except _NotFast:
                pass
        return super()._handle_map(shape, value)  # type: ignore[misc]


#: TransactWriteItems' action names, the members its ResourceArnList expression reads.
_TRANSACT_ACTIONS = ("ConditionCheck", "Put", "Delete", "Update")
_ABSENT = object()


def _transact_tables(call_args: Mapping[str, Any]) -> tuple[Any, ...] | None:
    """Per transaction item, (action, TableName) of each action present: all that botocore's
    ResourceArnList expression reads. None when a value is not what the API expects."""
    items = call_args.get("TransactItems")
    if type(items) is not list:
        return None
    key = []
    for item in items:
        if type(item) is not dict:
            return None
        found = []
        for action in _TRANSACT_ACTIONS:
            op = item.get(action, _ABSENT)
            if op is _ABSENT:
                continue
            if type(op) is not dict:
                return None
            table = op.get("TableName", _ABSENT)
            if not (table is _ABSENT or type(table) is str):
                return None
            found.append((action, table))
        key.append(tuple(found))
    return tuple(key)


def _minimal_transact(key: tuple[Any, ...]) -> dict[str, Any]:
    return {
        "TransactItems": [
            {action: ({} if table is _ABSENT else {"TableName": table}) for action, table in item}
            for item in key
        ]
    }


class _ContextParamCache:
    """botocore evaluates the endpoint ruleset's ResourceArnList parameter of every
    TransactWriteItems with a JMESPath expression over all its items (~15 interpreter steps per
    item, every request). Its value depends only on each item's actions and
    TableNames, so it is computed once per distinct such layout, by botocore itself on a copy
    holding just those fields."""

    def __init__(self, resolve: Any) -> None:
        self._resolve = resolve
        self._cache: dict[tuple[Any, ...], Any] = {}

    def __call__(self, param_name: str, operation_model: Any, call_args: Any) -> Any:
        if param_name == "ResourceArnList" and operation_model.name == "TransactWriteItems":
            key = _transact_tables(call_args)
            if key is not None:
                if key not in self._cache:
                    if len(self._cache) >= 256:
                        self._cache.clear()
                    self._cache[key] = self._resolve(param_name, operation_model, _minimal_transact(key))
                value = self._cache[key]
                return list(value) if isinstance(value, list) else value
        return self._resolve(param_name, operation_model, call_args)


class _ParserFactory(ResponseParserFactory):
    def create_parser(self, protocol_name: str) -> Any:
        if protocol_name == "json" and not getattr(self, "_defaults", None):
            return AttributeValueParser()
        return super().create_parser(protocol_name)


def install(client: Any) -> bool:
    """Give a botocore DynamoDB client (built without parameter validation) the faster
    serializer and parser. False, client unchanged, when its internals are not the ones
    this was checked against."""
    endpoint = getattr(client, "_endpoint", None)
    factory = getattr(endpoint, "_response_parser_factory", None)
    serializer = getattr(client, "_serializer", None)
    if (
        client.meta.service_model.service_name != "dynamodb"
        or type(serializer) is not JSONSerializer
        or type(factory) is not ResponseParserFactory
        or getattr(factory, "_defaults", None)
        or not all(callable(getattr(serializer, m, None)) for m in _SERIALIZER_INTERNALS)
    ):
        return False
    resolver = getattr(client, "_ruleset_resolver", None)
    context_param = "_resolve_param_as_operation_context_param"
    if resolver is None or not callable(getattr(resolver, context_param, None)):
        return False
    fast = AttributeValueSerializer()
    fast.__dict__.update(serializer.__dict__)
    client._serializer = fast
    endpoint._response_parser_factory = _ParserFactory()  # type: ignore[union-attr]
    setattr(resolver, context_param, _ContextParamCache(getattr(resolver, context_param)))
    return True
