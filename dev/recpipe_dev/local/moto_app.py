"""The moto WSGI application the local stack serves (granian imports `app` from here).

moto as it is, with one patch applied on import: TransactWriteItems rolls back only the items
the transaction touches (RECPIPE_MOTO_TRANSACTIONS=as-is turns it off, for comparison).

Why: moto 5.2.5 takes its rollback copy by deep-copying every table the transaction touches,
once per action, and a cancelled transaction puts those copies back in place of the tables.
The server answers several clients at once (granian's threads; the updater keeps several
chunks in flight), and moto holds no lock, so:
- a write another client commits while the transaction runs is undone when the transaction
  is cancelled (DynamoDB never loses it: its transactions isolate items, not tables);
- the copy walks the table's dicts while other requests insert into them, which can fail
  with "dictionary changed size during iteration" (an InternalFailure for the client);
- the copy is O(table size) per action, so a 100-Put transaction against a table of a few
  thousand users takes seconds, long enough to slow the local stack's tests and to look like
  a hang.
Restoring the touched items gives DynamoDB's outcome: a cancelled transaction leaves every
item it touched as it was, and every other item as the other clients left it.
tests/integration/local/test_moto_server.py checks both.

Tables with a DynamoDB stream keep moto's own path: there the table copy also rolls back the
stream records, which the touched-items copy does not.

`python -m recpipe_dev.local.moto_app -p PORT` serves the same app with werkzeug (moto's own dev
server), the fallback when granian is not installed.
"""

from __future__ import annotations

import argparse
import copy
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import moto.dynamodb.models as ddb_models
from moto.dynamodb.models.dynamo_type import DynamoType
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

_state = threading.local()
_original_transact = ddb_models.DynamoDBBackend.transact_write_items


class _CopyShim:
    """Stands in for the `copy` module inside moto.dynamodb.models: while a transaction of ours
    runs in this thread, "copying" a Table returns the table itself (its touched items are
    saved instead), so moto's rollback puts the same table objects back."""

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
    hash_key = DynamoType(attrs[table.hash_key_attr])
    return hash_key, (DynamoType(attrs[range_attr]) if range_attr is not None else None)


def _snapshot(backend: Any, transact_items: list[dict[str, Any]]) -> list[Saved] | None:
    """Copies of the items the transaction may change; None = use moto's own path."""
    saved: list[Saved] = []
    for entry in transact_items:
        if len(entry) != 1:
            return None  # moto refuses it (TransactWriteSingleOpException)
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
        # Deep: an Update changes the stored Item in place.
        saved.append((table, hash_key, range_key, copy.deepcopy(current)))
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
            table.items.setdefault(hash_key, {})[range_key] = item


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


def install_transaction_patch() -> bool:
    """Idempotent. False (moto left as-is) when moto's internals are not the ones this was
    written against (moto 5.2.5, pinned in dev/pyproject.toml)."""
    if not (hasattr(ddb_models, "copy") and hasattr(ddb_models.DynamoDBBackend, "transact_write_items")):
        return False
    ddb_models.copy = _CopyShim  # type: ignore[assignment]
    ddb_models.DynamoDBBackend.transact_write_items = transact_write_items  # type: ignore[method-assign]
    return True


TOUCHED_ITEMS = os.environ.get("RECPIPE_MOTO_TRANSACTIONS", "touched-items") != "as-is"
if TOUCHED_ITEMS:
    install_transaction_patch()

app = DomainDispatcherApplication(create_backend_app)


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
