"""UserFeatureStore on DynamoDB (table `UserFeaturesTable`, partition key `user_id`).

Item layout (format `json+deflate/3`, the default):
    user_id (S), version (N), first_seen (N), last_seen (N), total_events (N),
    expires_at (N, the table's TTL attribute: users who stop coming age out),
    features_format (S) = "json+deflate/3",
    features (B) = raw deflate (8 KB window) of the JSON of `UserFeatures.columns()`: each
    collection as parallel columns, which decode with C-level calls instead of a Python step
    per element. Written and read with ISA-L (`isal`, level 1): the same deflate streams as
    zlib's (any inflater with an 8 KB window reads them), in about half zlib's CPU,
    applied (B) = `UserFeatures.applied`: the applied events' 8-byte fingerprints, oldest first
    (kept out of the zlib document: random bytes do not compress, they only cost CPU).
The scalar attributes are there for operators and queries; the state itself is one compressed
document because a user's state is ~10 KB of nested lists as native maps: compressed into one
binary attribute it takes fewer write units (they are billed per KB), and (de)serialising one
blob is a single C call where nested AttributeValues are one Python call per node (see
docs/stream.md, Storage layouts). JSON keeps floats exact
(shortest repr round-trips), so no float<->Decimal rounding can creep in. Items written in the
native layout (`layout="native"`: `to_item()` as maps/lists, floats as exact decimal strings)
`json+zlib/2` items (zlib, the same content as `UserFeatures.document()`'s nested pairs) and
`json+zlib/1` items (the event ids themselves inside the document) are read as well; any
item is written back in the current format.

Writes are conditional on `version` (optimistic concurrency); `ClientError` codes become the
domain errors of recpipe.ports so callers never see botocore. `put_many` commits many users'
conditional writes in TransactWriteItems requests (up to 100 per request): one round trip
instead of one per user, at twice the write capacity per item (see docs/stream.md).
"""

from __future__ import annotations

import math
import random
import time
import uuid
import zlib
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from typing import Any, cast

import orjson
from botocore.exceptions import BotoCoreError, ClientError, ConnectionError, ReadTimeoutError
from isal import isal_zlib

from recpipe.domain.user import UserFeatures
from recpipe.ports import ConflictError, DependencyError, RetryableError

#: Features of a user not seen for this long are deleted by DynamoDB's TTL.
USER_TTL_S = 180 * 24 * 3600
DOCUMENT_FORMAT = "json+deflate/3"
#: `UserFeatures.document()`'s nested pairs, fingerprints beside the document.
DOCUMENT_FORMAT_V2 = "json+zlib/2"
#: json+deflate/3's window (2**13 = 8 KB: a typical document is 4 KB, a heavy user's ~10 KB).
#: Streams never refer further back than this, so an inflater with an 8 KB window (the readers
#: of every release since /3) reads them.
DEFLATE_WBITS = 13
#: ISA-L's level 1 (of 0-3): on a steady-state document, smaller output than zlib's level 1 in
#: about half its CPU (docs/stream.md, Feature updater CPU).
DEFLATE_LEVEL = 1
#: What isal_zlib raises for a stream it cannot inflate (its stub types it as an instance).
_ISAL_ERROR = cast(type[Exception], isal_zlib.error)
#: The format before fingerprints: `applied_event_ids` (strings) inside the document.
DOCUMENT_FORMAT_V1 = "json+zlib/1"
#: BatchGetItem takes at most 100 keys per call.
BATCH_GET_MAX = 100
#: Rounds of UnprocessedKeys retries before giving up with RetryableError.
UNPROCESSED_RETRIES = 5
#: TransactWriteItems takes at most 100 actions (and 4 MB) per request.
TRANSACT_MAX_ITEMS = 100
#: Re-submissions of a transaction's innocent/throttled items before they become RetryableError.
TRANSACT_RETRIES = 3
#: CancellationReasons codes worth re-submitting (after a backoff).
RETRYABLE_CANCEL_CODES = frozenset(
    {"ThrottlingError", "ProvisionedThroughputExceeded", "TransactionConflict", "RequestLimitExceeded"}
)

RETRYABLE_CODES = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "RequestLimitExceeded",
        "InternalServerError",
        "ServiceUnavailable",
        "TransactionConflictException",
    }
)


def to_attribute(value: Any) -> dict[str, Any]:
    """Plain JSON-ish value -> DynamoDB AttributeValue (floats as exact decimal strings)."""
    if value is None:
        return {"NULL": True}
    if isinstance(value, bool):
        return {"BOOL": value}
    if isinstance(value, int):
        return {"N": str(value)}
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"DynamoDB cannot store non-finite number {value!r}")
        return {"N": repr(value)}
    if isinstance(value, Decimal):
        return {"N": str(value)}
    if isinstance(value, str):
        return {"S": value}
    if isinstance(value, Mapping):
        return {"M": {str(k): to_attribute(v) for k, v in value.items()}}
    if isinstance(value, list | tuple):
        return {"L": [to_attribute(v) for v in value]}
    raise TypeError(f"cannot store {type(value).__name__} in DynamoDB")


def from_attribute(attr: Mapping[str, Any]) -> Any:
    """DynamoDB AttributeValue -> plain value (numbers as int or float)."""
    ((kind, value),) = attr.items()
    if kind == "N":
        try:
            return int(value)
        except ValueError:
            return float(value)
    if kind == "S":
        return value
    if kind == "M":
        return {k: from_attribute(v) for k, v in value.items()}
    if kind == "L":
        return [from_attribute(v) for v in value]
    if kind == "BOOL":
        return bool(value)
    if kind == "NULL":
        return None
    raise ValueError(f"unsupported DynamoDB attribute type {kind}")


def domain_error(exc: Exception, what: str) -> ConflictError | DependencyError:
    err = map_client_error(exc, what)
    assert isinstance(err, ConflictError | DependencyError)
    return err


def map_client_error(exc: Exception, what: str) -> Exception:
    if isinstance(exc, ClientError):
        code = exc.response.get("Error", {}).get("Code", "")
        if code == "ConditionalCheckFailedException":
            return ConflictError(f"{what}: version changed concurrently")
        if code in RETRYABLE_CODES:
            return RetryableError(f"{what}: {code}")
        return DependencyError(f"{what}: {code or exc}")
    if isinstance(exc, ConnectionError | ReadTimeoutError):
        return RetryableError(f"{what}: {exc}")
    return DependencyError(f"{what}: {exc}")


class DynamoDBUserFeatureStore:
    """UserFeatureStore over a low-level DynamoDB client (fast: no resource-layer conversion)."""

    def __init__(
        self,
        client: Any,
        table_name: str,
        *,
        consistent_read: bool = True,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        layout: str = "document",
    ) -> None:
        self._ddb = client
        self._table = table_name
        # The updater reads before a conditional write: a strongly consistent read avoids a
        # guaranteed conflict on the write. The online path may pass False (half the cost).
        self._consistent = consistent_read
        self._clock = clock
        self._sleep = sleep
        if layout not in ("document", "native"):
            raise ValueError(f"unknown user feature layout {layout!r}")
        self._layout = layout

    def get(self, user_id: str) -> UserFeatures | None:
        try:
            resp = self._ddb.get_item(
                TableName=self._table,
                Key={"user_id": {"S": user_id}},
                ConsistentRead=self._consistent,
            )
        except (ClientError, BotoCoreError) as exc:
            raise map_client_error(exc, f"get user {user_id}") from exc
        item = resp.get("Item")
        return None if item is None else self._decode(item)

    def get_many(self, user_ids: Sequence[str]) -> dict[str, UserFeatures]:
        out: dict[str, UserFeatures] = {}
        unique = list(dict.fromkeys(user_ids))
        for start in range(0, len(unique), BATCH_GET_MAX):
            keys: list[dict[str, Any]] = [
                {"user_id": {"S": u}} for u in unique[start : start + BATCH_GET_MAX]
            ]
            for attempt in range(UNPROCESSED_RETRIES + 1):
                try:
                    resp = self._ddb.batch_get_item(
                        RequestItems={self._table: {"Keys": keys, "ConsistentRead": self._consistent}}
                    )
                except (ClientError, BotoCoreError) as exc:
                    raise map_client_error(exc, f"batch get {len(keys)} users") from exc
                for item in resp.get("Responses", {}).get(self._table, []):
                    features = self._decode(item)
                    out[features.user_id] = features
                keys = resp.get("UnprocessedKeys", {}).get(self._table, {}).get("Keys", [])
                if not keys:
                    break
                if attempt == UNPROCESSED_RETRIES:
                    raise RetryableError(f"batch get: {len(keys)} keys still unprocessed (throttled)")
                self._sleep(min(1.0, 0.02 * 2**attempt) * (0.5 + random.random()))
        return out

    def put(self, features: UserFeatures, expected_version: int) -> UserFeatures:
        stored = features.at_version(expected_version + 1)
        try:
            self._ddb.put_item(**self._put_action(stored, expected_version))
        except (ClientError, BotoCoreError) as exc:
            raise map_client_error(exc, f"put user {features.user_id}") from exc
        return stored

    def put_many(
        self, writes: Sequence[tuple[UserFeatures, int]]
    ) -> dict[str, UserFeatures | ConflictError | DependencyError]:
        """Conditional writes of several users (distinct ids), TRANSACT_MAX_ITEMS per
        TransactWriteItems request. Per user: the stored features, ConflictError (its version
        changed: re-read and re-apply) or RetryableError/DependencyError. A transaction is
        all-or-nothing, so when DynamoDB cancels it the items that did not cause the
        cancellation were not written either: they are re-submitted without the culprits."""
        out: dict[str, UserFeatures | ConflictError | DependencyError] = {}
        for start in range(0, len(writes), TRANSACT_MAX_ITEMS):
            chunk = writes[start : start + TRANSACT_MAX_ITEMS]
            # Encoded once: re-submissions after a cancellation reuse the request items.
            pending = [
                (new, self._put_action(new, v)) for new, v in ((f.at_version(v + 1), v) for f, v in chunk)
            ]
            for attempt in range(TRANSACT_RETRIES + 1):
                retry, backoff = self._transact(pending, out)
                if not retry:
                    break
                if attempt == TRANSACT_RETRIES:
                    for stored, _ in retry:
                        out[stored.user_id] = RetryableError(
                            f"put user {stored.user_id}: transaction cancelled {attempt + 1} times"
                        )
                    break
                if backoff:
                    self._sleep(min(1.0, 0.02 * 2**attempt) * (0.5 + random.random()))
                pending = retry
        return out

    def _transact(
        self,
        pending: list[tuple[UserFeatures, dict[str, Any]]],
        out: dict[str, UserFeatures | ConflictError | DependencyError],
    ) -> tuple[list[tuple[UserFeatures, dict[str, Any]]], bool]:
        """One TransactWriteItems; fills `out` with final outcomes. Returns what to re-submit
        and whether to back off first (throttled, or cancelled with no culprit named)."""
        if len(pending) == 1:  # no transaction needed (and it would cost 2x the write units)
            stored, action = pending[0]
            try:
                self._ddb.put_item(**action)
                out[stored.user_id] = stored
            except (ClientError, BotoCoreError) as exc:
                out[stored.user_id] = domain_error(exc, f"put user {stored.user_id}")
            return [], False
        try:
            self._ddb.transact_write_items(
                TransactItems=[{"Put": action} for _, action in pending],
                # Makes the SDK's own retry of a request that did commit a no-op, not a conflict.
                ClientRequestToken=uuid.uuid4().hex,
            )
        except (ClientError, BotoCoreError) as exc:
            reasons = (exc.response.get("CancellationReasons") or []) if isinstance(exc, ClientError) else []
            if len(reasons) != len(pending):  # no per-item information: the same outcome for all
                err = domain_error(exc, f"transact put {len(pending)} users")
                if isinstance(err, ConflictError):
                    err = RetryableError(f"transact put {len(pending)} users: cancelled without reasons")
                for stored, _ in pending:
                    out[stored.user_id] = err
                return [], False
            retry = []
            culprit = throttled = False
            for (stored, action), reason in zip(pending, reasons, strict=True):
                why = reason.get("Code") or "None"
                if why == "ConditionalCheckFailed":
                    out[stored.user_id] = ConflictError(
                        f"put user {stored.user_id}: version changed concurrently"
                    )
                    culprit = True
                elif why == "None" or why in RETRYABLE_CANCEL_CODES:
                    # "None": innocent, not written because another item cancelled the transaction.
                    retry.append((stored, action))
                    throttled = throttled or why != "None"
                else:  # ValidationError, ItemCollectionSizeLimitExceeded...: retrying cannot help
                    out[stored.user_id] = DependencyError(
                        f"put user {stored.user_id}: {why} {reason.get('Message', '')}".rstrip()
                    )
                    culprit = True
            return retry, throttled or not culprit
        for stored, _ in pending:
            out[stored.user_id] = stored
        return [], False

    def _put_action(self, stored: UserFeatures, expected_version: int) -> dict[str, Any]:
        """The conditional Put of `stored` (already at expected_version + 1)."""
        item = encode_item(stored) if self._layout == "document" else encode_native_item(stored)
        item["expires_at"] = {"N": str(int(self._clock()) + USER_TTL_S)}
        action: dict[str, Any] = {"TableName": self._table, "Item": item}
        if expected_version == 0:
            action["ConditionExpression"] = "attribute_not_exists(user_id)"
        else:
            action["ConditionExpression"] = "version = :expected"
            action["ExpressionAttributeValues"] = {":expected": {"N": str(expected_version)}}
        return action

    @staticmethod
    def _decode(item: Mapping[str, Any]) -> UserFeatures:
        try:
            return decode_item(item)
        # orjson.JSONDecodeError is a ValueError
        except (ValueError, KeyError, TypeError, zlib.error, _ISAL_ERROR) as exc:
            user = item.get("user_id", {}).get("S", "?")
            raise DependencyError(f"user {user}: unreadable feature item ({exc})") from None


def encode_item(features: UserFeatures) -> dict[str, Any]:
    # orjson: encodes in native code, unlike json's Python fallbacks for these nested lists, and
    # floats still round-trip exactly (shortest repr). Raw deflate: no adler32. One call (one
    # GIL release, which the updater's chunk threads would otherwise hand to each other).
    doc = isal_zlib.compress(orjson.dumps(features.columns()), DEFLATE_LEVEL, -DEFLATE_WBITS)
    item: dict[str, Any] = {
        "user_id": {"S": features.user_id},
        "version": {"N": str(features.version)},
        "total_events": {"N": str(features.total_events)},
        "features_format": {"S": DOCUMENT_FORMAT},
        "features": {"B": doc},
        "applied": {"B": features.applied},
    }
    if features.first_seen is not None:
        item["first_seen"] = to_attribute(features.first_seen)
    if features.last_seen is not None:
        item["last_seen"] = to_attribute(features.last_seen)
    return item


def encode_native_item(features: UserFeatures) -> dict[str, Any]:
    return {k: to_attribute(v) for k, v in features.to_item().items()}


def decode_item(item: Mapping[str, Any]) -> UserFeatures:
    if "features" not in item:  # native layout
        return UserFeatures.from_item({k: from_attribute(v) for k, v in item.items() if k != "expires_at"})
    fmt = item.get("features_format", {}).get("S")
    if fmt not in (DOCUMENT_FORMAT, DOCUMENT_FORMAT_V2, DOCUMENT_FORMAT_V1):
        raise ValueError(f"unsupported features_format {fmt!r}")
    if fmt == DOCUMENT_FORMAT:
        body = orjson.loads(isal_zlib.decompress(item["features"]["B"], -DEFLATE_WBITS))
        return UserFeatures.from_columns(
            body, str(item["user_id"]["S"]), int(item["version"]["N"]), item["applied"]["B"]
        )
    body = orjson.loads(zlib.decompress(item["features"]["B"]))
    body["user_id"] = item["user_id"]["S"]
    body["version"] = int(item["version"]["N"])
    if fmt == DOCUMENT_FORMAT_V2:
        body["applied"] = item["applied"]["B"]
    return UserFeatures.from_item(body)
