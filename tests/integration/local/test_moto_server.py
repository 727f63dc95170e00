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
    # The switch really leaves moto's own code in place (checked in a fresh interpreter, as
    # the server process imports the app), and the as-is server still answers.
    probe = (
        "import moto.dynamodb.models as m, recpipe_dev.local.moto_app as a; "
        "print(m.DynamoDBBackend.transact_write_items is a.transact_write_items)"
    )

    def patched(**switches: str) -> str:
        env = {**os.environ, **CREDENTIALS, **switches}
        out = subprocess.run(
            [sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True
        )
        return out.stdout.strip()

    assert patched() == "True"
    assert patched(RECPIPE_MOTO_TRANSACTIONS="as-is") == "False"
    env = {**CREDENTIALS, "RECPIPE_MOTO_TRANSACTIONS": "as-is"}
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


# ---- why the patch exists: moto's rollback puts whole-table copies back ------------------------


def _backend_with_users(n: int) -> Any:
    from moto.dynamodb.models import DynamoDBBackend

    backend = DynamoDBBackend("us-east-1", "123456789012")
    backend.create_table(
        "users",
        schema=[{"AttributeName": "user_id", "KeyType": "HASH"}],
        throughput=None,
        attr=[{"AttributeName": "user_id", "AttributeType": "S"}],
        global_indexes=None,
        indexes=None,
        streams=None,
        billing_mode="PAY_PER_REQUEST",
        sse_specification=None,
        tags=[],
        deletion_protection_enabled=False,
        warm_throughput=None,
    )
    for i in range(n):
        backend.put_item("users", {"user_id": {"S": f"u{i}"}, "version": {"N": "1"}})
    return backend


@pytest.mark.unit
@pytest.mark.parametrize("patched", [True, False], ids=["touched-items", "moto-as-is"])
def test_a_cancelled_transaction_keeps_another_client_s_write(patched: bool) -> None:
    """Another request, served by another thread while the transaction runs (moto takes no
    lock), writes an item the transaction does not touch; the transaction is then cancelled.
    DynamoDB keeps that write. moto's rollback puts back the table as it was before the
    transaction, so the write is lost; the touched-items rollback keeps it. (The interleaving
    is made deterministic here: the other write happens inside the transaction's first Put.)"""
    from moto.dynamodb.exceptions import TransactionCanceledException
    from recpipe_dev.local import moto_app

    assert moto_app.install_transaction_patch()
    backend = _backend_with_users(3)
    own_put = backend.put_item
    other_client_wrote: list[bool] = []

    def put_item(table_name: str, item_attrs: dict[str, Any], **kwargs: Any) -> Any:
        if not other_client_wrote:
            other_client_wrote.append(True)
            own_put("users", {"user_id": {"S": "other"}, "version": {"N": "9"}})
        return own_put(table_name, item_attrs, **kwargs)

    backend.put_item = put_item
    items = [
        _put("users", {"user_id": "u0"}, 2, 1),
        _put("users", {"user_id": "u1"}, 2, 5),  # stale: cancels the transaction
    ]
    transact = moto_app.transact_write_items if patched else moto_app._original_transact
    with pytest.raises(TransactionCanceledException):
        transact(backend, items)

    table = backend.get_table("users")
    versions = {k.value: v.attrs["version"].value for k, v in table.items.items()}
    assert other_client_wrote
    assert {k: versions[k] for k in ("u0", "u1", "u2")} == {"u0": "1", "u1": "1", "u2": "1"}
    if patched:
        assert versions["other"] == "9"
    else:  # the moto bug the patch exists for
        assert "other" not in versions


@pytest.mark.unit
def test_the_rollback_copy_is_of_the_touched_items_not_the_table(monkeypatch: pytest.MonkeyPatch) -> None:
    """moto deep-copies each touched table once per action (O(table size) each); the patch
    copies the touched items only, whatever the table's size."""
    from recpipe_dev.local import moto_app

    assert moto_app.install_transaction_patch()
    backend = _backend_with_users(50)
    copied: list[Any] = []
    real_deepcopy = moto_app.copy.deepcopy

    def deepcopy(obj: Any, memo: Any = None) -> Any:
        copied.append(type(obj).__name__)
        return real_deepcopy(obj, memo)

    monkeypatch.setattr(moto_app.copy, "deepcopy", deepcopy)
    items = [_put("users", {"user_id": f"u{i}"}, 2, 1) for i in range(3)]
    moto_app.transact_write_items(backend, items)
    assert copied.count("Item") == 3 and "Table" not in copied
    copied.clear()
    moto_app._original_transact(backend, [_put("users", {"user_id": f"u{i}"}, 3, 2) for i in range(3)])
    assert copied.count("Table") == 3
