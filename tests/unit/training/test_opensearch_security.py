"""Content index access in OpenSearch FGAC, against recorded security-plugin request/response pairs."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
from opensearchpy import AuthorizationException, NotFoundError, OpenSearch, Transport, TransportError
from recpipe.adapters.opensearch_security import (
    ContentIndexAccess,
    content_roles,
    master_credentials,
    role_arn_of_caller,
)
from recpipe.config import RetrainSettings, load_settings
from recpipe.ports import ContentDoc, DependencyError, RetryableError
from recpipe.training import workflow
from recpipe.training.runs import DirectoryRunStore
from recpipe.training.wiring import content_access
from recpipe_dev.testing.settings import function_env

READER_ARN = "arn:aws:iam::123456789012:role/recpipe-test-RecommendFunctionRole-AbC"
WRITER_ARN = "arn:aws:iam::123456789012:role/recpipe-test-RetrainIndexContentFunctionRole-XyZ"
READER = "recpipe_test_content_reader"
WRITER = "recpipe_test_content_writer"
API = "/_plugins/_security/api"


class RecordingTransport(Transport):
    """opensearchpy's Transport with the network replaced: records each request, answers from a script."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.requests: list[tuple[str, str, Any]] = []
        self.responses: list[Any] = []

    def perform_request(  # noqa: PLR0917 - the signature opensearchpy calls
        self, method: str, url: str, params: Any = None, body: Any = None, timeout: Any = None,
        ignore: Any = (), headers: Any = None,
    ) -> Any:  # fmt: skip
        self.requests.append((method, url, body))
        answer = self.responses.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


def _client(responses: list[Any]) -> Any:
    c = OpenSearch(hosts=["https://search.invalid:443"], transport_class=RecordingTransport)
    c.transport.responses = list(responses)
    return c


def _access(responses: list[Any]) -> ContentIndexAccess:
    roles = content_roles("test", "recpipe-content", reader_arn=READER_ARN, writer_arn=WRITER_ARN)
    return ContentIndexAccess(_client(responses), roles)


def _not_found(name: str) -> NotFoundError:
    return NotFoundError(
        404, "NOT_FOUND", {"status": "NOT_FOUND", "message": f"Resource '{name}' not found."}
    )


def _created(name: str) -> dict[str, str]:
    return {"status": "CREATED", "message": f"'{name}' created."}


def _role_answer(name: str, cluster: list[str], actions: list[str]) -> dict[str, Any]:
    return {
        name: {
            "reserved": False,
            "hidden": False,
            "cluster_permissions": cluster,
            "index_permissions": [
                {
                    "index_patterns": ["recpipe-content*"],
                    "fls": [],
                    "masked_fields": [],
                    "allowed_actions": actions,
                }
            ],
            "tenant_permissions": [],
            "static": False,
        }
    }


def _mapping_answer(name: str, backend_roles: list[str]) -> dict[str, Any]:
    return {
        name: {
            "hosts": [],
            "users": [],
            "reserved": False,
            "hidden": False,
            "backend_roles": backend_roles,
            "and_backend_roles": [],
        }
    }


READER_ROLE_BODY = {
    "cluster_permissions": ["cluster_composite_ops_ro"],
    "index_permissions": [{"index_patterns": ["recpipe-content*"], "allowed_actions": ["read"]}],
}
WRITER_ROLE_BODY = {
    "cluster_permissions": ["cluster_composite_ops", "cluster_monitor"],
    "index_permissions": [
        {
            "index_patterns": ["recpipe-content*"],
            "allowed_actions": ["crud", "create_index", "manage", "manage_aliases"],
        }
    ],
}


def test_a_fresh_domain_gets_a_read_only_role_for_scoring_and_a_write_role_for_indexing() -> None:
    access = _access(
        [
            _not_found(READER),
            _created(READER),
            _not_found(READER),
            _created(READER),
            _not_found(WRITER),
            _created(WRITER),
            _not_found(WRITER),
            _created(WRITER),
        ]
    )

    changes = access.ensure()

    assert access.client.transport.requests == [
        ("GET", f"{API}/roles/{READER}", None),
        ("PUT", f"{API}/roles/{READER}", READER_ROLE_BODY),
        ("GET", f"{API}/rolesmapping/{READER}", None),
        ("PUT", f"{API}/rolesmapping/{READER}", {"backend_roles": [READER_ARN]}),
        ("GET", f"{API}/roles/{WRITER}", None),
        ("PUT", f"{API}/roles/{WRITER}", WRITER_ROLE_BODY),
        ("GET", f"{API}/rolesmapping/{WRITER}", None),
        ("PUT", f"{API}/rolesmapping/{WRITER}", {"backend_roles": [WRITER_ARN]}),
    ]
    assert set(changes.values()) == {"created"} and len(changes) == 4
    # the scoring role can only read: no write, create or alias action anywhere in its role
    assert READER_ROLE_BODY["index_permissions"][0]["allowed_actions"] == ["read"]


def test_rerunning_against_a_domain_in_the_desired_state_writes_nothing() -> None:
    access = _access(
        [
            _role_answer(READER, ["cluster_composite_ops_ro"], ["read"]),
            _mapping_answer(READER, [READER_ARN]),
            # order of actions as the domain returns them is irrelevant
            _role_answer(
                WRITER,
                ["cluster_monitor", "cluster_composite_ops"],
                ["manage_aliases", "crud", "manage", "create_index"],
            ),
            _mapping_answer(WRITER, [WRITER_ARN]),
        ]
    )

    changes = access.ensure()

    assert [m for m, _, _ in access.client.transport.requests] == ["GET"] * 4
    assert set(changes.values()) == {"unchanged"}


def test_drift_is_put_back_widened_reader_and_foreign_mapping_replaced() -> None:
    access = _access(
        [
            _role_answer(READER, ["cluster_composite_ops_ro"], ["read", "crud"]),  # someone widened it
            _created(READER),
            _mapping_answer(READER, [READER_ARN, "arn:aws:iam::123456789012:role/someone-else"]),
            _created(READER),
            _role_answer(WRITER, ["cluster_composite_ops", "cluster_monitor"], WRITER_ROLE_BODY_ACTIONS),
            _mapping_answer(WRITER, [WRITER_ARN]),
        ]
    )

    changes = access.ensure()

    puts = [(u, b) for m, u, b in access.client.transport.requests if m == "PUT"]
    assert puts == [
        (f"{API}/roles/{READER}", READER_ROLE_BODY),
        (f"{API}/rolesmapping/{READER}", {"backend_roles": [READER_ARN]}),
    ]
    assert changes == {
        f"role:{READER}": "updated",
        f"mapping:{READER}": "updated",
        f"role:{WRITER}": "unchanged",
        f"mapping:{WRITER}": "unchanged",
    }


WRITER_ROLE_BODY_ACTIONS = ["crud", "create_index", "manage", "manage_aliases"]


def test_unavailable_is_retryable_refused_is_not() -> None:
    with pytest.raises(RetryableError, match=READER):
        _access([TransportError(503, "Service Unavailable", {})]).ensure()
    refused = AuthorizationException(403, "security_exception", {"error": "no permissions"})
    with pytest.raises(DependencyError) as info:
        _access([refused]).ensure()
    assert not isinstance(info.value, RetryableError)


def test_role_arn_of_the_running_role() -> None:
    assert (
        role_arn_of_caller("arn:aws:sts::123456789012:assumed-role/recpipe-idx-Role-1/recpipe-test-fn")
        == "arn:aws:iam::123456789012:role/recpipe-idx-Role-1"
    )
    assert role_arn_of_caller("arn:aws-cn:sts::123456789012:assumed-role/R/s") == (
        "arn:aws-cn:iam::123456789012:role/R"
    )
    with pytest.raises(ValueError, match="not a role session"):
        role_arn_of_caller("arn:aws:iam::123456789012:user/alice")


def test_master_secret_must_name_user_and_password() -> None:
    assert master_credentials('{"username": "recpipe", "password": "s3cret"}') == ("recpipe", "s3cret")
    with pytest.raises(ValueError, match="username"):
        master_credentials("just-a-password")


# ---- the IndexContent step ---------------------------------------------------------------------
class _Writer:
    def __init__(self, calls: list[str]) -> None:
        self.calls = calls

    def publish(self, version: str, docs: Iterable[ContentDoc]) -> int:
        self.calls.append(f"publish {version}")
        return len(list(docs))


def _deps(tmp_path: Path, calls: list[str], access: Any) -> workflow.RetrainDeps:
    runs = DirectoryRunStore(tmp_path / "runs")
    runs.put_bytes(
        "v1", workflow.CONTENT_FILE, b'{"item_id": "m1", "title": "Heat", "categories": ["crime"]}\n'
    )
    return workflow.RetrainDeps(runs=runs, models=None, content=_Writer(calls), content_access=access)  # type: ignore[arg-type]


def test_index_content_maps_the_roles_before_publishing(tmp_path: Path) -> None:
    calls: list[str] = []

    def ensure() -> dict[str, str]:
        calls.append("access")
        return {f"role:{READER}": "created"}

    out = workflow.index_content(_deps(tmp_path, calls, ensure), "v1", "v1")

    assert calls == ["access", "publish v1"]
    assert out == {"indexed": 1, "access": {f"role:{READER}": "created"}}


def test_without_opensearch_the_mapping_is_skipped_with_a_log_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = load_settings(RetrainSettings, function_env(OPENSEARCH_AUTH_SECRET_ARN="arn:secret"))
    assert content_access(settings, {"OPENSEARCH_AUTH_SECRET_ARN": "arn:secret"}) is None
    calls: list[str] = []
    with caplog.at_level(logging.INFO, logger="recpipe.training.workflow"):
        out = workflow.index_content(_deps(tmp_path, calls, None), "v1", "v1")
    assert calls == ["publish v1"] and out["access"] == {}
    assert "role mapping skipped" in caplog.text


def test_with_opensearch_and_the_master_secret_the_step_gets_an_access_callable() -> None:
    settings = load_settings(
        RetrainSettings,
        function_env(OPENSEARCH_URL="https://search.invalid", CONTENT_INDEX_ALIAS="recpipe-test"),
    )
    assert callable(content_access(settings, {"OPENSEARCH_AUTH_SECRET_ARN": "arn:secret"}))
    assert content_access(settings, {}) is None  # no FGAC master user: nothing to map
