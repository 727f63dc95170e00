"""The moto WSGI application the local stack serves (granian imports `app` from here).

Changes to moto's behaviour-free internals, applied on import. Each keeps DynamoDB's (and
moto's) answers exactly; tests/integration/local/test_moto_server.py checks each against moto.

- Transactions (RECPIPE_MOTO_TRANSACTIONS=as-is turns it off): TransactWriteItems keeps its
  rollback copy of the items the transaction touches instead of a deep copy of every table
  it touches. moto 5 deep-copies the whole table per item of the transaction (72 ms for a
  1,000-user table, measured), which makes the local DynamoDB's transactions O(table size)
  while DynamoDB's are O(items). A cancelled transaction still leaves every item as it was.
  When every action is a Put, the stored item objects are the copy (a Put replaces the
  object, never changes it). Tables with a DynamoDB stream keep moto's own path, since the
  copy there also rolls back stream records.
- Fast paths (RECPIPE_MOTO_FAST_PATHS=as-is turns them off), measured on a 100-user
  BatchGetItem + TransactWriteItems batch of the stream benchmark, ~43 -> ~21 ms of moto CPU
  with the first six below; with all of them, `recpipe bench stream --events 20000
  --write-modes transact` moto CPU per event ~255 -> ~132 us without the updater's state
  cache and ~146 -> ~79 us with it (medians of three alternated runs each on a loaded
  2-CPU box):
  - AttributeValue responses are serialized without moto's alias search for absent members
    (identical bytes; `DynamoDBJSONSerializer`);
  - parsed condition expressions are memoised on (expression, names, values): a
    transaction's Put was parsed three times, and the parse is pure
    (`CachedConditionExpressionParser`);
  - an item's 400 KB check is one pass instead of a re-sum of the item per attribute (same
    limit, same attribute at fault; `_item_init`), and its plain values become DynamoTypes
    without __init__'s list() copies, sized inline (`_attr_size`);
  - AttributeValues in requests are parsed directly instead of by a loop over the shape's
    ten members (same parsed request; `DynamoDBJSONParser`);
  - the backend serving a host name is remembered instead of matched against every
    service's URL patterns per request (`HostCachingDispatcher`), and a response class's
    action names are listed once instead of per request (`_cached_method_names`);
  - items (maps of AttributeValues) are converted in one loop when responses are
    serialized and requests parsed (`_serialize_type_map`, `_parse_map`), their plain
    strings, numbers and binaries inline (base64 through binascii when the blob parser is
    moto's default: TransactWriteItems parse ~13.0 -> ~11.8 us per Put); DynamoResult's
    conversion tests the common types first (`_dynamo_to_dict`), and Item.size sizes plain
    values inline (`_item_size`): a 95-item BatchGetItem of the stream benchmark ~6.4 ->
    ~4.1 ms of moto CPU;
  - condition-cache keys are built as tuples instead of by json.dumps (`_plain_key`,
    ~2.7 -> ~0.9 us, three per Put);
  - the server's young garbage-collector generation holds 10,000 objects instead of 700
    (`install_gc_thresholds`: fewer collections and full-heap passes, no answer changes;
    stream benchmark moto CPU per event ~144 -> ~125 us, batch p99 ~100 -> ~30 ms);
  - string and binary DynamoTypes hash and compare without cast_value's type tests
    (`_dynamo_hash`, `_dynamo_eq`: every item lookup hashes its key), and an item of
    one-member string/bytes values has only its numbers checked, in order, instead of moto's
    recursive walk (`_validate_item_types`, the only check that can fail there): in-process
    replay of the stream benchmark ~120 -> ~109 us of moto CPU per event; number strings
    the check has accepted are remembered (`_validate_number_type`, a function of the
    string alone; with the walk ~4.7 -> ~2.4 us per Put);
  - BatchGetItem sizes each item once instead of twice and looks the backend up once
    (`_batch_get_item`, moto's handler otherwise line for line): 95-item BatchGetItem
    ~3.7 -> ~3.5 ms;
  - the empty-key check of a Put (no global indexes) looks at the key attributes' values
    instead of listing every empty string of the item first (`_validate_put_has_empty_keys`,
    ~2.7 -> ~1.0 us per Put);
  - a JSON body is not searched by moto's `<RequestId>` regex when it has no
    `<RequestId>` (`_enrich_response`, ~3% of the benchmark's moto CPU), and BatchGetItem's
    duplicate-key check is a set instead of a list scan (`_contains_duplicates`, ~1.5%).

`python -m recpipe_dev.local.moto_app -p PORT` serves the same app with werkzeug (moto's own dev
server), the fallback when granian is not installed.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import copy
import gc
import json
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import moto.core.parse as moto_parse
import moto.core.responses as moto_responses
import moto.core.serialize as moto_serialize
import moto.dynamodb.comparisons as ddb_comparisons
import moto.dynamodb.models as ddb_models
import moto.dynamodb.models.dynamo_type as ddb_dynamo_type
import moto.dynamodb.responses as ddb_responses
from moto.dynamodb.models.dynamo_type import DynamoType
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

_state = threading.local()
_original_transact = ddb_models.DynamoDBBackend.transact_write_items


class _CopyShim:
    """Stands in for the `copy` module inside moto.dynamodb.models: while a transaction of ours
    runs, "copying" a Table returns the table itself (its touched items are saved instead)."""

    @staticmethod
    def deepcopy(obj: Any, memo: dict[int, Any] | None = None) -> Any:
        if getattr(_state, "skip_table_copy", False) and isinstance(obj, ddb_models.Table):
            return obj
        return copy.deepcopy(obj, memo)


@contextmanager
def _tables_not_copied() -> Iterator[None]:
    _state.skip_table_copy = True
    try:
        yield
    finally:
        _state.skip_table_copy = False


Saved = tuple[Any, DynamoType, DynamoType | None, Any]


def _key_of(table: Any, op_type: str, op: dict[str, Any]) -> tuple[DynamoType, DynamoType | None] | None:
    attrs = op.get("Item") if op_type == "Put" else op.get("Key")
    if not isinstance(attrs, dict) or table.hash_key_attr not in attrs:
        return None
    range_attr = table.range_key_attr
    if range_attr is not None and range_attr not in attrs:
        return None
    hash_key = _dynamo_type(attrs[table.hash_key_attr])
    return hash_key, (_dynamo_type(attrs[range_attr]) if range_attr is not None else None)


def _snapshot(backend: Any, transact_items: list[dict[str, Any]]) -> list[Saved] | None:
    """Copies of the items the transaction may change; None = use moto's own path.

    A Put replaces the stored Item object and never changes it (Table.put_item builds a new
    Item), so when every action is a Put the stored objects themselves are the rollback
    copy; an Update changes an item in place, so any other action mix deep-copies."""
    saved: list[Saved] = []
    only_puts = all(len(entry) == 1 and "Put" in entry for entry in transact_items)
    for entry in transact_items:
        if len(entry) != 1:
            return None
        op_type, op = next(iter(entry.items()))
        table = backend.tables.get(op.get("TableName")) if isinstance(op, dict) else None
        if table is None:
            continue  # moto reports the missing table itself
        if table.stream_shard is not None:
            return None
        key = _key_of(table, op_type, op)
        if key is None:
            continue  # moto rejects a malformed key before writing anything
        hash_key, range_key = key
        if range_key is None:
            current = table.items.get(hash_key)
        else:
            current = table.items.get(hash_key, {}).get(range_key)
        saved.append((table, hash_key, range_key, current if only_puts else copy.deepcopy(current)))
    return saved


def _restore(saved: list[Saved]) -> None:
    # Reversed, so an item saved twice ends at its first (original) copy.
    for table, hash_key, range_key, item in reversed(saved):
        if range_key is None:
            if item is None:
                table.items.pop(hash_key, None)
            else:
                table.items[hash_key] = item
        elif item is None:
            table.items.get(hash_key, {}).pop(range_key, None)
        else:
            table.items[hash_key][range_key] = item


def transact_write_items(self: Any, transact_items: list[dict[str, Any]]) -> None:
    saved = _snapshot(self, transact_items) if len(transact_items) <= 100 else None
    if saved is None:
        return _original_transact(self, transact_items)
    with _tables_not_copied():
        try:
            return _original_transact(self, transact_items)
        except BaseException:
            _restore(saved)
            raise


def _item_init(self: Any, hash_key: DynamoType, range_key: DynamoType | None, attrs: dict[str, Any]) -> None:
    """moto's Item.__init__ with its 400 KB check done in one pass.

    moto inserts each attribute through LimitedSizeDict.__setitem__, which re-sums the sizes
    of every attribute already inserted: O(attributes^2) per item written. The running sum
    here makes the same decision at the same attribute (sizes of keys and values, limit
    405,000 bytes, ItemSizeTooLarge) and leaves the same LimitedSizeDict, whose later
    changes (UpdateItem) keep moto's own check. A one-member value other than a list or
    map becomes the DynamoType its __init__ makes (that type, that value, nothing
    converted) without the two list() copies __init__ takes of the dict."""
    self.hash_key = hash_key
    self.range_key = range_key
    self.attrs = item_attrs = ddb_dynamo_type.LimitedSizeDict()
    total = 0
    for key, value in attrs.items():
        attr = _dynamo_type(value)
        total += len(key if isinstance(key, bytes) else key.encode("utf-8")) + _attr_size(attr)
        if total > ITEM_SIZE_LIMIT:
            raise ddb_dynamo_type.ItemSizeTooLarge
        dict.__setitem__(item_attrs, key, attr)


_new_dynamo_type = DynamoType.__new__


def _dynamo_type(value: Any) -> DynamoType:
    """DynamoType(value): for a one-member dict other than a list or map, the object its
    __init__ makes (that type, that value, nothing converted), without __init__'s two
    list() copies of the dict; anything else through __init__."""
    if type(value) is dict and len(value) == 1:
        ((kind, inner),) = value.items()
        if kind not in ("L", "M"):
            attr = _new_dynamo_type(DynamoType)
            attr.type = kind
            attr.value = inner
            return attr
    return DynamoType(value)


def _attr_size(attr: Any) -> int:
    """DynamoType.size, its rules for plain strings, numbers, binaries and booleans inlined
    (moto's own method for sets, lists, maps and anything unusual)."""
    if type(attr) is DynamoType:
        kind = attr.type
        value = attr.value
        if kind == "N":
            return len(str(value))
        tv = type(value)
        if kind in ("S", "B"):
            if tv is str:
                return len(value.encode("utf-8"))
            if tv is bytes:
                return len(value)
        elif kind in ("BOOL", "NULL") and tv is bool:
            return 1
    return int(attr.size())


#: moto's LimitedSizeDict limit (DynamoDB's 400 KB, as moto measures it).
ITEM_SIZE_LIMIT = 405000


def install_transaction_patch() -> bool:
    """Idempotent. False (moto left as-is) when moto's internals are not the ones this was
    written against (moto 5.x): a changed moto stays slow rather than becoming wrong."""
    if not (hasattr(ddb_models, "copy") and hasattr(ddb_models.DynamoDBBackend, "transact_write_items")):
        return False
    ddb_models.copy = _CopyShim  # type: ignore[assignment]
    ddb_models.DynamoDBBackend.transact_write_items = transact_write_items  # type: ignore[method-assign]
    return True


class _NotPlain(Exception):
    """Not a plain AttributeValue: moto's own code handles it."""


#: The members of DynamoDB's AttributeValue structure (botocore's service model).
ATTRIBUTE_VALUE_MEMBERS = ("S", "N", "B", "SS", "NS", "BS", "M", "L", "NULL", "BOOL")
_ATTRIBUTE_VALUE_KEYS = frozenset(ATTRIBUTE_VALUE_MEMBERS)


class DynamoDBJSONSerializer(moto_serialize.JSONSerializer):
    """moto's JSON response serializer, with a direct path for AttributeValue dicts.

    moto finds each member of a response structure through an "attribute picker" that tries
    up to a dozen aliases per member (class-name prefixes, snake_case...) before concluding the
    member is absent. An AttributeValue has ten members and one present, and a 100-item
    BatchGetItem response holds ~1,000 of them: the picker was ~60 ms of a ~65 ms response.
    For a plain dict whose keys are all AttributeValue member names, none of those aliases
    can name another member (they are the shape names `StringAttributeValue`..., their
    snake_case forms, and lower-case forms of the key), so the picker's answer is `dict.get`.
    A one-member value is converted directly (`_plain_attribute_value`, moto's per-type rules
    inlined); other dicts are serialized member by member by moto's own code. The response
    bytes are identical (tests/integration/local/test_moto_server.py compares them with
    moto's path for every attribute type). Anything else takes moto's path."""

    def _serialize_type_structure(self, serialized: Any, value: Any, shape: Any, key: str) -> None:
        if (
            type(value) is dict
            and shape.name == "AttributeValue"
            and value.keys() <= _ATTRIBUTE_VALUE_KEYS
            and not getattr(self._value_picker, "response_transformers", None)
        ):
            if key:
                try:
                    self._default_serialize(serialized, self._plain_attribute_value(value), shape, key)
                    return
                except _NotPlain:
                    pass
            wrapper: Any = self.MAP_TYPE() if key else serialized
            for member_key, member_shape in shape.members.items():
                member_shape.parent = shape  # as moto's loop does (its aliases read it)
                member_value = value.get(member_key)
                if member_value is not None:
                    self._serialize(wrapper, member_value, member_shape, member_key)
            if key:
                self._default_serialize(serialized, wrapper, shape, key)
            return
        super()._serialize_type_structure(serialized, value, shape, key)

    def _serialize_type_map(self, serialized: Any, value: Any, shape: Any, key: str) -> None:
        """An item (a map of AttributeValues) converted in one loop: what moto's map rule
        does (the map stored under its key first, then each member through `_serialize`),
        with plain values converted directly as the structure rule above does."""
        value_shape = shape.value
        if (
            type(value) is not dict
            or value_shape.name != "AttributeValue"
            or getattr(self._value_picker, "response_transformers", None)
        ):
            super()._serialize_type_map(serialized, value, shape, key)
            return
        map_obj: Any = self.MAP_TYPE()
        self._default_serialize(serialized, map_obj, shape, key)
        # moto's _default_serialize stores under get_serialized_name(shape, key), which is
        # the key itself unless the shape renames it (AttributeValue does not).
        cls = type(self)
        stored_under_key = (
            cls._default_serialize is moto_serialize.ResponseSerializer._default_serialize
            and cls.get_serialized_name is moto_serialize.ResponseSerializer.get_serialized_name
            and "name" not in value_shape.serialization
        )
        for sub_key, sub_value in value.items():
            if sub_key and type(sub_value) is dict and sub_value.keys() <= _ATTRIBUTE_VALUE_KEYS:
                plain: Any = None
                if stored_under_key and len(sub_value) == 1:
                    ((kind, inner),) = sub_value.items()
                    if type(inner) is str and kind in ("S", "N"):
                        plain = {kind: inner}  # _moto_string(inner) is inner
                    elif kind == "B" and type(inner) is bytes:
                        plain = {kind: self._base64(inner)}
                    if plain is not None:
                        map_obj[sub_key] = plain
                        continue
                try:
                    plain = self._plain_attribute_value(sub_value)
                except _NotPlain:
                    pass
                else:
                    self._default_serialize(map_obj, plain, value_shape, sub_key)
                    continue
            self._serialize(map_obj, sub_value, value_shape, sub_key)

    def _plain_attribute_value(self, value: Any) -> dict[str, Any]:
        """What the member loop above makes of a plain AttributeValue (one member, not null),
        without a `_serialize` call per member: strings and numbers through moto's string rule,
        binary through `_base64`, booleans as they are, lists and maps element by element as
        BaseJSONSerializer does. _NotPlain for anything else (the loop handles it)."""
        if type(value) is not dict or len(value) != 1:
            raise _NotPlain
        ((kind, inner),) = value.items()
        if inner is None or kind not in _ATTRIBUTE_VALUE_KEYS:
            raise _NotPlain
        if kind in ("S", "N"):
            return {kind: _moto_string(inner)}
        if kind in ("NULL", "BOOL"):
            return {kind: inner}
        if kind == "B":
            return {kind: self._base64(inner)}
        if kind in ("SS", "NS"):
            return {kind: [_moto_string(v) for v in inner]}
        if kind == "BS":
            if any(v is None for v in inner):
                raise _NotPlain
            return {kind: [self._base64(v) for v in inner]}
        if kind == "M":
            return {kind: {k: self._plain_attribute_value(v) for k, v in inner.items()}}
        return {kind: [self._plain_attribute_value(v) for v in inner]}  # L


def _moto_string(value: Any) -> Any:
    # moto's JSON _serialize_type_string (enums aside: AttributeValues hold plain values)
    return str(value) if value not in [None, {}, []] else value


#: Parsed condition expressions kept (distinct expression + names + values).
CONDITION_CACHE_SIZE = 4096
_condition_cache: dict[Any, tuple[Any, list[str], list[str]]] = {}


class CachedConditionExpressionParser(ddb_comparisons.ConditionExpressionParser):
    """moto's condition parser, memoised on (expression, names, values).

    moto parses a TransactWriteItems Put's ConditionExpression three times (request
    validation, the transaction's own check, then put_item), ~0.1 ms each, and the parse
    is a pure function of those three inputs. The tree it returns is only evaluated
    (`Op.expr(item)` reads the item and its own fields; nothing mutates a node after
    construction), so one tree serves every request with equal inputs. Only successful
    parses are kept: an invalid expression raises on every request, as before. Inputs that
    are not JSON values are never cached."""

    def parse(self) -> Any:
        inputs = [
            self.condition_expression,
            self.expression_attribute_names,
            self.expression_attribute_values,
        ]
        key: Any
        try:
            key = _plain_key(inputs)
        except _NotPlain:
            try:
                key = json.dumps(inputs, sort_keys=True)
            except (TypeError, ValueError):
                return super().parse()
        hit = _condition_cache.get(key)
        if hit is None:
            op = super().parse()
            if len(_condition_cache) >= CONDITION_CACHE_SIZE:
                _condition_cache.clear()  # rare (the updater uses a handful of versions)
            _condition_cache[key] = (op, list(self.expr_attr_names_found), list(self.expr_attr_values_found))
            return op
        op, names_found, values_found = hit
        self.expr_attr_names_found.extend(names_found)
        self.expr_attr_values_found.extend(values_found)
        return op


def _plain_key(value: Any) -> Any:
    """A hashable key for a JSON value made of dicts (string keys, order ignored), lists,
    strings and None, equal exactly when json.dumps(sort_keys=True) of the values is:
    containers are tagged with their type, so no two shapes meet. ~3x cheaper than
    json.dumps on a Put's (expression, names, values). _NotPlain for anything else."""
    if value is None or type(value) is str:
        return value
    if type(value) is dict:
        if len(value) == 1:  # an AttributeValue, or one placeholder
            for k, v in value.items():
                if type(k) is not str:
                    raise _NotPlain
                return (dict, ((k, _plain_key(v)),))
        if not all(type(k) is str for k in value):
            raise _NotPlain
        return (dict, tuple(sorted([(k, _plain_key(v)) for k, v in value.items()])))
    if type(value) is list:
        return (list, tuple([_plain_key(v) for v in value]))
    raise _NotPlain


def _cached_condition_parser(
    expr: str | None, names: dict[str, str] | None, values: dict[str, dict[str, str]] | None
) -> ddb_comparisons.ConditionExpressionParser:
    return CachedConditionExpressionParser(expr, names, values)


def install_condition_cache() -> bool:
    """Idempotent. False (moto left as-is) when moto's parser factory is not where it was."""
    factory = "create_condition_expression_parser"
    modules = (ddb_comparisons, ddb_models, ddb_responses)  # the latter two import it by name
    if not all(hasattr(m, factory) for m in modules):
        return False
    for module in modules:
        setattr(module, factory, _cached_condition_parser)
    return True


_original_dynamo_to_dict = getattr(ddb_responses, "dynamo_to_dict", None)
_original_item_size = getattr(ddb_dynamo_type.Item, "size", None)


def _dynamo_to_dict(obj: Any) -> Any:
    """moto's dynamo_to_dict (DynamoResult's conversion of every response) with its type
    tests in the order of the common case: exact DynamoTypes, dicts (an item's
    LimitedSizeDict too), lists and strings first. moto's version imports DynamoType and
    runs up to five isinstance/hasattr tests per node, and a 100-item BatchGetItem response
    has ~2,000 nodes. The B/BS rules are moto's own; anything else (subclasses, objects
    with to_json, datetimes) is handed to moto's function."""
    t = type(obj)
    if t is DynamoType:
        kind = obj.type
        value = obj.value
        if kind == "B":
            return {"B": value if isinstance(value, bytes) else base64.b64decode(value)}
        if kind == "BS":
            return {"BS": [v if isinstance(v, bytes) else base64.b64decode(v) for v in value]}
        tv = type(value)
        if tv is str or tv is bool:
            return {kind: value}
        return {kind: _dynamo_to_dict(value)}
    if t is dict or t is ddb_dynamo_type.LimitedSizeDict:
        return {k: _dynamo_to_dict(v) for k, v in obj.items()}
    if t is list:
        return [_dynamo_to_dict(v) for v in obj]
    if t is str or t is int or t is bool or obj is None:
        return obj
    assert _original_dynamo_to_dict is not None
    return _original_dynamo_to_dict(obj)


def _item_size(self: Any) -> int:
    """moto's Item.size (bytes of attribute names plus DynamoType.size of each value) with
    DynamoType.size's rules for plain values inlined (`_attr_size`): BatchGetItem sizes
    every item twice for its 16 MB response limit."""
    total = 0
    for key, attr in self.attrs.items():
        total += len(key if isinstance(key, bytes) else key.encode("utf-8")) + _attr_size(attr)
    return total


_original_dynamo_hash = DynamoType.__dict__.get("__hash__")
_original_dynamo_eq = DynamoType.__dict__.get("__eq__")


def _dynamo_hash(self: Any) -> int:
    """DynamoType.__hash__ (hash of type and cast_value) for strings and binaries, whose
    cast_value is the value itself, without cast_value's five type tests: every item lookup
    hashes its key."""
    kind = self.type
    if (kind == "S" or kind == "B") and type(self) is DynamoType:  # noqa: PLR1714
        return hash((kind, self.value))
    assert _original_dynamo_hash is not None
    return int(_original_dynamo_hash(self))


def _dynamo_eq(self: Any, other: Any) -> Any:
    """DynamoType.__eq__ (same type, equal cast_value) for strings and binaries, as in
    `_dynamo_hash`; other types (numbers compare as Decimals) take moto's own method."""
    kind = self.type
    if (kind == "S" or kind == "B") and type(self) is DynamoType and type(other) is DynamoType:  # noqa: PLR1714
        return kind == other.type and self.value == other.value
    assert _original_dynamo_eq is not None
    return _original_dynamo_eq(self, other)


def install_key_comparisons() -> bool:
    """Idempotent. False (moto left as-is) when DynamoType does not define both methods."""
    if _original_dynamo_hash is None or _original_dynamo_eq is None:
        return False
    DynamoType.__hash__ = _dynamo_hash  # type: ignore[method-assign]
    DynamoType.__eq__ = _dynamo_eq  # type: ignore[method-assign]
    return True


_original_validate_item_types = getattr(ddb_models.Table, "_validate_item_types", None)


def _validate_item_types(self: Any, item_attrs: Any, attr: str | None = None) -> None:
    """Table._validate_item_types for an item of one-member values holding strings or bytes:
    of moto's checks only the number check can fail there (neither is an int or a dict),
    so the numbers are checked in item order, as moto's walk would. Items with other
    values, or attributes named N, S or NULL (moto checks names too), take moto's walk."""
    assert _original_validate_item_types is not None
    if attr is not None or type(item_attrs) is not dict:
        return _original_validate_item_types(self, item_attrs, attr)
    numbers = []
    for key, value in item_attrs.items():
        if type(value) is not dict or len(value) != 1 or key in ("N", "S", "NULL"):
            return _original_validate_item_types(self, item_attrs, attr)
        ((kind, inner),) = value.items()
        if type(inner) is not str and type(inner) is not bytes:  # bytes: a parsed B
            return _original_validate_item_types(self, item_attrs, attr)
        if kind == "N":
            numbers.append(inner)
    for number in numbers:
        self._validate_number_type(number)
    return None


_original_validate_number = getattr(ddb_models.Table, "_validate_number_type", None)
#: Number strings moto's check has accepted (kept up to this many, then forgotten).
VALID_NUMBERS_KEPT = 65536
_valid_numbers: set[str] = set()


def _validate_number_type(self: Any, value: Any) -> None:
    """Table._validate_number_type remembering the strings it accepted: the check (float
    parse, whitespace, finiteness, range) is a function of the string alone (it reads
    nothing else), and an item's versions, counters and expiry times repeat. Strings it
    refuses raise every time, as before; other values always take moto's check."""
    assert _original_validate_number is not None
    if type(value) is str:
        if value in _valid_numbers:
            return
        _original_validate_number(self, value)
        if len(_valid_numbers) >= VALID_NUMBERS_KEPT:
            _valid_numbers.clear()
        _valid_numbers.add(value)
        return
    _original_validate_number(self, value)


def install_item_type_check() -> bool:
    """Idempotent. False (moto left as-is) when the checks are not where they were."""
    if _original_validate_item_types is None or _original_validate_number is None:
        return False
    ddb_models.Table._validate_item_types = _validate_item_types  # type: ignore[method-assign]
    ddb_models.Table._validate_number_type = _validate_number_type  # type: ignore[method-assign]
    return True


def install_response_conversion() -> bool:
    """Idempotent. False (moto left as-is) when DynamoResult's conversion or Item.size are
    not where they were."""
    if _original_dynamo_to_dict is None or _original_item_size is None:
        return False
    ddb_responses.dynamo_to_dict = _dynamo_to_dict
    ddb_dynamo_type.Item.size = _item_size  # type: ignore[method-assign]
    return True


def install_item_size_check() -> bool:
    """Idempotent. False (moto left as-is) when Item/LimitedSizeDict are not as expected."""
    needed = ("Item", "LimitedSizeDict", "ItemSizeTooLarge", "bytesize")
    if not all(hasattr(ddb_dynamo_type, name) for name in needed):
        return False
    ddb_dynamo_type.Item.__init__ = _item_init  # type: ignore[method-assign]
    return True


def _attribute_value_from_request(value: Any, blob: Any) -> Any:
    """What moto's JSON parser makes of a plain AttributeValue (one member, not null):
    the same member, binary members through the parser's blob parser, strings, numbers
    and booleans as they are. Anything else raises _NotPlain (moto's path decides)."""
    if type(value) is not dict or len(value) != 1:
        raise _NotPlain
    ((kind, inner),) = value.items()
    if inner is None or kind not in _ATTRIBUTE_VALUE_KEYS:
        raise _NotPlain
    if kind in ("S", "N", "NULL", "BOOL"):
        return {kind: inner}
    if kind == "B":
        return {kind: blob(inner)}
    if kind == "M":
        return {kind: {k: _attribute_value_from_request(v, blob) for k, v in inner.items()}}
    if kind == "L":
        return {kind: [_attribute_value_from_request(v, blob) for v in inner]}
    if kind == "BS":
        return {kind: [blob(v) for v in inner]}
    return {kind: list(inner)}  # SS, NS


class DynamoDBJSONParser(moto_parse.JSONParser):
    """moto's JSON request parser, converting DynamoDB AttributeValues directly.

    moto walks every request against the service model; an AttributeValue costs a loop
    over its ten members, and a 100-item TransactWriteItems holds ~1,000 of them (~5 ms).
    For a plain AttributeValue the walk's result is known (`_attribute_value_from_request`,
    which mirrors BaseJSONParser: members in the value, blobs through `_blob_parser`, the
    rest as is); tests compare both parsers' output for every attribute type. Other
    services, shapes and unusual values take moto's path."""

    def _parse_structure(self, shape: Any, value: Any) -> Any:
        if shape.name == "AttributeValue" and self.MAP_TYPE is dict and self._dynamodb:
            try:
                return _attribute_value_from_request(value, self._blob_parser)
            except _NotPlain:
                pass
        return super()._parse_structure(shape, value)

    def _parse_map(self, shape: Any, value: Any) -> Any:
        """An item (a map of AttributeValues) in one loop: moto's map rule (keys through
        the key shape's handler, which for a string is the value itself) with each plain
        value converted directly instead of through `_parse_shape` and `_parse_structure`.
        Strings, numbers and binaries are inlined; a binary's base64 goes straight to
        binascii when the blob parser is moto's default (base64.b64decode of an ASCII str
        is binascii.a2b_base64 of it; other text takes b64decode, which raises for it)."""
        value_shape = shape.value
        if (
            type(value) is not dict
            or value_shape.name != "AttributeValue"
            or shape.key.type_name != "string"
            or hasattr(self, "_parse_string")
            or self.MAP_TYPE is not dict
            or not self._dynamodb
        ):
            return super()._parse_map(shape, value)
        parsed: dict[str, Any] = {}
        blob = self._blob_parser
        default_blob = blob is moto_parse.default_blob_parser
        for key, val in value.items():
            if type(val) is dict and len(val) == 1:
                ((kind, inner),) = val.items()
                if type(inner) is str:
                    if kind in ("S", "N"):
                        parsed[key] = {kind: inner}
                        continue
                    if kind == "B":
                        if default_blob and inner.isascii():
                            parsed[key] = {kind: binascii.a2b_base64(inner)}
                        else:
                            parsed[key] = {kind: blob(inner)}
                        continue
            try:
                parsed[key] = _attribute_value_from_request(val, blob)
            except _NotPlain:
                parsed[key] = self._parse_shape(value_shape, val)
        return parsed

    @property
    def _dynamodb(self) -> bool:
        return bool(self.operation_model.service_model.service_name == "dynamodb")


def install_request_parser() -> bool:
    """Idempotent. False (moto left as-is) when moto's parser registry is not as expected."""
    registry = getattr(moto_parse, "PROTOCOL_PARSERS", None)
    if not isinstance(registry, dict) or registry.get("json") not in (
        moto_parse.JSONParser,
        DynamoDBJSONParser,
    ):
        return False
    registry["json"] = DynamoDBJSONParser
    return True


def install_serializer_patch() -> bool:
    """Idempotent. False (moto left as-is) when moto's serializer registry or botocore's
    AttributeValue shape are not the ones the fast path was checked against."""
    import botocore.session

    registry = getattr(moto_serialize, "SERVICE_SPECIFIC_SERIALIZERS", None)
    ours = {"json": DynamoDBJSONSerializer}
    if not isinstance(registry, dict) or registry.get("dynamodb", ours) != ours:
        return False
    shape = botocore.session.get_session().get_service_model("dynamodb").shape_for("AttributeValue")
    if tuple(getattr(shape, "members", ())) != ATTRIBUTE_VALUE_MEMBERS:
        return False
    registry["dynamodb"] = {"json": DynamoDBJSONSerializer}
    return True


_method_names: dict[type, list[str]] = {}
_original_method_names = getattr(moto_responses, "method_names_from_class", None)


def _cached_method_names(clazz: Any) -> list[str]:
    """moto lists a response class's functions (inspect.getmembers) on every request to see
    whether the action exists: ~10% of a small request. The list only changes if the class
    does, and every patch here is applied at import, before the first request."""
    names = _method_names.get(clazz)
    if names is None:
        assert _original_method_names is not None
        names = _method_names[clazz] = _original_method_names(clazz)
    return names


def install_method_name_cache() -> bool:
    """Idempotent. False (moto left as-is) when moto no longer looks actions up this way."""
    if _original_method_names is None:
        return False
    moto_responses.method_names_from_class = _cached_method_names
    return True


_original_enrich = getattr(moto_responses.BaseResponse, "_enrich_response", None)


def _enrich_response(headers: dict[str, str], body: Any) -> tuple[dict[str, str], Any]:
    """moto's BaseResponse._enrich_response without its regex pass over a body that cannot
    match: moto rewrites `<RequestId>...</RequestId>` in every response body with a
    look-behind regex (~0.3 ms over a 100-item BatchGetItem's JSON). A str body without
    "<RequestId>" has no match, so the regex would return it unchanged; the status and the
    request-id header are set as moto sets them. Other bodies take moto's own code."""
    if type(body) is str and "<RequestId>" not in body:
        if "status" in headers:
            headers["status"] = str(headers["status"])
        moto_responses.gen_amzn_requestid_long(headers)
        return headers, body
    assert _original_enrich is not None
    return _original_enrich(headers, body)


def install_response_enrichment() -> bool:
    """Idempotent. False (moto left as-is) when _enrich_response or its request-id helper
    are not as expected."""
    method = moto_responses.BaseResponse.__dict__.get("_enrich_response")
    if not isinstance(method, staticmethod) or not hasattr(moto_responses, "gen_amzn_requestid_long"):
        return False
    if method.__func__ is not _enrich_response:
        moto_responses.BaseResponse._enrich_response = staticmethod(_enrich_response)  # type: ignore[method-assign]
    return True


_original_contains_duplicates = getattr(ddb_responses.DynamoHandler, "_contains_duplicates", None)


def _contains_duplicates(self: Any, keys: list[Any]) -> bool:
    """moto's BatchGetItem duplicate-key check with a set of `_plain_key`s instead of a
    list scan (95 keys: ~4,500 dict comparisons). For plain keys, == and `_plain_key`
    equality agree; any other key takes moto's own check."""
    seen: set[Any] = set()
    try:
        for key in keys:
            plain = _plain_key(key)
            if plain in seen:
                return True
            seen.add(plain)
    except _NotPlain:
        assert _original_contains_duplicates is not None
        return bool(_original_contains_duplicates(self, keys))
    return False


_original_batch_get_item = getattr(ddb_responses.DynamoHandler, "batch_get_item", None)
#: BatchGetItem's response size limit (moto's: 16 MB).
BATCH_GET_SIZE_LIMIT = 16 * 1024 * 1024


def _batch_get_item(self: Any) -> Any:
    """moto 5.2.5's DynamoHandler.batch_get_item, line for line, except that each item's size
    is computed once instead of twice (Item.size is a pure function of an item nothing
    changes in between) and the backend is looked up once, at the first key, instead of per
    key (the same dynamodb_backends[account][region] every time). Same validations in the
    same order, same messages, same UnprocessedKeys at the same 16 MB limit; the test
    compares both handlers' responses through the app."""
    r = ddb_responses
    table_batches = self.body["RequestItems"]

    results: dict[str, Any] = {
        "ConsumedCapacity": [],
        "Responses": {},
        "UnprocessedKeys": {},
    }

    for table_name, table_request in table_batches.items():
        if len(table_request["Keys"]) > 100:
            raise r.MockValidationException(
                "1 validation error detected: Value at 'requestItems."
                + table_name
                + ".member.keys' failed to satisfy constraint: Member must have length less than or equal to 100"
            )
    nr_of_keys_across_all_tables = sum([len(req["Keys"]) for _, req in table_batches.items()])
    if nr_of_keys_across_all_tables > 100:
        raise r.MockValidationException("Too many items requested for the BatchGetItem call")

    result_size: int = 0
    backend = None
    for table_name, table_request in table_batches.items():
        keys = table_request["Keys"]
        if self._contains_duplicates(keys):
            raise r.MockValidationException("Provided list of item keys contains duplicates")
        attributes_to_get = table_request.get("AttributesToGet")
        projection_expression = table_request.get("ProjectionExpression")
        expression_attribute_names = table_request.get("ExpressionAttributeNames", {})

        parser = r.ProjectionExpressionParser(projection_expression, expression_attribute_names)
        projection_expressions = parser.parse()
        r.validate_attributes_used(
            expression_attribute_names,
            parser.expr_attr_names_found,
            validation_error_prefix=False,
        )

        results["Responses"][table_name] = []
        for key in keys:
            if backend is None:
                backend = self.dynamodb_backend
            item = backend.get_item(table_name, key, projection_expressions)
            if item:
                size = item.size()
                if result_size + size > BATCH_GET_SIZE_LIMIT:
                    if table_name not in results["UnprocessedKeys"]:
                        results["UnprocessedKeys"][table_name] = {"Keys": []}
                    results["UnprocessedKeys"][table_name]["Keys"].append(key)
                else:
                    item_describe = item.describe_attrs(attributes_to_get)
                    results["Responses"][table_name].append(item_describe["Item"])
                    result_size += size

        results["ConsumedCapacity"].append({"CapacityUnits": len(keys), "TableName": table_name})
    return r.DynamoResult(results)


def install_batch_get_item() -> bool:
    """Idempotent. False (moto left as-is) when the handler or the names it uses are not
    where they were."""
    needed = (
        "MockValidationException",
        "ProjectionExpressionParser",
        "validate_attributes_used",
        "DynamoResult",
    )
    if _original_batch_get_item is None or not all(hasattr(ddb_responses, n) for n in needed):
        return False
    ddb_responses.DynamoHandler.batch_get_item = _batch_get_item  # type: ignore[method-assign]
    return True


_original_empty_key_check = getattr(ddb_responses, "validate_put_has_empty_keys", None)


def _validate_put_has_empty_keys(field_updates: Any, table: Any, custom_error_msg: str | None = None) -> None:
    """moto's check that no key attribute holds an empty string, for a table without global
    indexes and an item of non-empty dicts: moto lists every attribute that is an empty S/B
    and then looks each key name up in that list; only the key names' own values can
    decide, so they are looked at directly (first key name in moto's order, the same
    message). Tables with global indexes and unusual items take moto's function (which
    raises for them what it raises)."""
    assert _original_empty_key_check is not None
    if not table or table.global_indexes or type(field_updates) is not dict:
        return _original_empty_key_check(field_updates, table, custom_error_msg)
    for value in field_updates.values():
        if type(value) is not dict or not value:
            return _original_empty_key_check(field_updates, table, custom_error_msg)
    for key_name in table.attribute_keys:
        value = field_updates.get(key_name)
        if value is not None and next(iter(value)) in ("S", "B") and next(iter(value.values())) == "":
            if key_name:  # moto raises only for a truthy first match
                msg = (
                    custom_error_msg
                    or "One or more parameter values were invalid: An AttributeValue may not contain an empty string. Key: {}"
                )
                raise ddb_responses.MockValidationException(msg.format(key_name))
            return None
    return None


def install_empty_key_check() -> bool:
    """Idempotent. False (moto left as-is) when the check is not where it was."""
    if _original_empty_key_check is None or not hasattr(ddb_responses, "MockValidationException"):
        return False
    ddb_responses.validate_put_has_empty_keys = _validate_put_has_empty_keys
    return True


def install_duplicate_key_check() -> bool:
    """Idempotent. False (moto left as-is) when the check is not where it was."""
    if _original_contains_duplicates is None:
        return False
    ddb_responses.DynamoHandler._contains_duplicates = _contains_duplicates  # type: ignore[method-assign]
    return True


class HostCachingDispatcher(DomainDispatcherApplication):
    """moto's dispatcher, remembering which backend serves a host name.

    moto matches every request's host against the URL patterns of all its services in turn
    (~0.3 ms of a ~1.1 ms GetItem on this box). The answer is a pure function of the host
    string (the patterns and module list are fixed at import), so found backends are kept;
    hosts without a backend are looked up each time, as moto does (it logs those)."""

    def __init__(self, create_app: Any) -> None:
        super().__init__(create_app)
        self._backend_of: dict[str, Any] = {}

    def get_backend_for_host(self, host: str | None) -> Any:
        if host is None:
            return None
        backend = self._backend_of.get(host)
        if backend is None:
            backend = super().get_backend_for_host(host)
            if backend is not None:
                self._backend_of[host] = backend
        return backend


#: The server's garbage-collector thresholds (CPython's default is 700, 10, 10).
GC_THRESHOLDS = (10_000, 20, 10)
_DEFAULT_GC_THRESHOLDS = (700, 10, 10)


def install_gc_thresholds() -> bool:
    """A young generation of 10,000 objects instead of 700 in the process importing this
    module (the server; tests too). A 100-item request's parse keeps thousands of objects alive
    until its response is sent, so with 700 the collector runs several times per request
    and promotes them to the old generations, and the full collections that promotion
    triggers walk a heap that only grows (moto keeps every Item it ever built in
    Item.instances_tracked). Collection timing changes no answer. Stream benchmark moto CPU
    per event ~98 -> ~80 us (cached state) and ~144 -> ~125 us (no cache); batch p99 ~100
    -> ~30 ms (the full-collection pauses). False (left alone) when someone else already
    chose thresholds."""
    current = gc.get_threshold()
    if current not in (_DEFAULT_GC_THRESHOLDS, GC_THRESHOLDS):
        return False
    gc.set_threshold(*GC_THRESHOLDS)
    return True


TOUCHED_ITEMS = os.environ.get("RECPIPE_MOTO_TRANSACTIONS", "touched-items") != "as-is"
FAST_PATHS = os.environ.get("RECPIPE_MOTO_FAST_PATHS", "on") != "as-is"
if TOUCHED_ITEMS:
    install_transaction_patch()
if FAST_PATHS:
    install_serializer_patch()
    install_condition_cache()
    install_item_size_check()
    install_request_parser()
    install_method_name_cache()
    install_response_conversion()
    install_response_enrichment()
    install_duplicate_key_check()
    install_key_comparisons()
    install_item_type_check()
    install_empty_key_check()
    install_batch_get_item()
    install_gc_thresholds()

app = (HostCachingDispatcher if FAST_PATHS else DomainDispatcherApplication)(create_backend_app)


def main(argv: list[str] | None = None) -> None:
    from moto.moto_server.werkzeug_app import MotoRequestHandler
    from werkzeug.serving import run_simple

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("-H", "--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, required=True)
    args = parser.parse_args(argv)
    run_simple(args.host, args.port, app, threaded=True, request_handler=MotoRequestHandler)


if __name__ == "__main__":
    main()
