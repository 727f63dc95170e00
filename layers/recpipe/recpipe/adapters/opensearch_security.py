"""Content index access inside OpenSearch fine-grained access control (FGAC).

With FGAC on, a SigV4-signed request is only allowed when its IAM role is mapped to an
OpenSearch security role. Before each publish, the IndexContent step (which holds the master
user, basic auth) makes sure that:

* `recpipe_<env>_content_reader` may only read (search/get) the content indices and alias, and
  is mapped to the scoring function's role (CONTENT_INDEX_READER_ROLE_ARN);
* `recpipe_<env>_content_writer` may create, fill, refresh and re-alias them, and is mapped to
  the indexing role (the step's own role).

Both are desired-state PUTs through the security plugin's REST API, made only when what the
domain holds differs, so re-running changes nothing. The mappings belong to this stack: they
are replaced, not merged.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from recpipe.ports import DependencyError, RetryableError

logger = logging.getLogger(__name__)

#: Action groups of the security plugin (see its default action groups).
READER_CLUSTER = ["cluster_composite_ops_ro"]
READER_INDEX = ["read"]
WRITER_CLUSTER = ["cluster_composite_ops", "cluster_monitor"]
WRITER_INDEX = ["crud", "create_index", "manage", "manage_aliases"]


@dataclass(frozen=True, slots=True)
class SecurityRole:
    name: str
    cluster_permissions: tuple[str, ...]
    index_patterns: tuple[str, ...]
    allowed_actions: tuple[str, ...]
    backend_roles: tuple[str, ...]

    def role_body(self) -> dict[str, Any]:
        return {
            "cluster_permissions": list(self.cluster_permissions),
            "index_permissions": [
                {"index_patterns": list(self.index_patterns), "allowed_actions": list(self.allowed_actions)}
            ],
        }

    def mapping_body(self) -> dict[str, Any]:
        return {"backend_roles": list(self.backend_roles)}


def content_roles(env_name: str, alias: str, *, reader_arn: str, writer_arn: str) -> list[SecurityRole]:
    """The two roles for one stack; the pattern covers the alias and its versioned indices."""
    pattern = (f"{alias}*",)
    return [
        SecurityRole(
            f"recpipe_{env_name}_content_reader",
            tuple(READER_CLUSTER),
            pattern,
            tuple(READER_INDEX),
            (reader_arn,),
        ),
        SecurityRole(
            f"recpipe_{env_name}_content_writer",
            tuple(WRITER_CLUSTER),
            pattern,
            tuple(WRITER_INDEX),
            (writer_arn,),
        ),
    ]


def role_arn_of_caller(caller_arn: str) -> str:
    """IAM role ARN from STS GetCallerIdentity's assumed-role ARN (what FGAC matches on).

    arn:aws:sts::123:assumed-role/Name/session -> arn:aws:iam::123:role/Name (roles without a
    path, as SAM generates them)."""
    m = re.fullmatch(r"arn:([\w-]+):sts::(\d{12}):assumed-role/([^/]+)/.+", caller_arn)
    if m:
        partition, account, name = m.groups()
        return f"arn:{partition}:iam::{account}:role/{name}"
    if re.fullmatch(r"arn:[\w-]+:iam::\d{12}:role/.+", caller_arn):
        return caller_arn
    raise ValueError(f"not a role session: {caller_arn!r} (the indexing step must run under an IAM role)")


def _role_state(found: Mapping[str, Any]) -> dict[str, Any]:
    """The parts of a GET roles/<name> answer that we manage, normalised for comparison."""
    return {
        "cluster_permissions": sorted(found.get("cluster_permissions") or []),
        "index_permissions": sorted(
            (sorted(p.get("index_patterns") or []), sorted(p.get("allowed_actions") or []))
            for p in found.get("index_permissions") or []
        ),
    }


def _error(exc: Exception, what: str) -> DependencyError:
    status = getattr(exc, "status_code", None)
    if status in (429, 502, 503, 504) or status == "N/A":  # throttled, unavailable, connection
        return RetryableError(f"opensearch security {what}: {exc}")
    return DependencyError(f"opensearch security {what}: {exc}")


class ContentIndexAccess:
    """Ensures the reader/writer roles and their mappings (client = master user, basic auth)."""

    def __init__(self, client: Any, roles: list[SecurityRole]) -> None:
        self.client = client
        self.roles = roles

    def _get(self, kind: str, name: str) -> dict[str, Any] | None:
        from opensearchpy import NotFoundError

        get = self.client.security.get_role if kind == "role" else self.client.security.get_role_mapping
        try:
            answer = get(role=name)
        except NotFoundError:
            return None
        return dict(answer.get(name) or {})

    def ensure(self) -> dict[str, str]:
        """{"role:<name>" | "mapping:<name>": "created" | "updated" | "unchanged"}."""
        out: dict[str, str] = {}
        for role in self.roles:
            try:
                found = self._get("role", role.name)
                if found is None or _role_state(found) != _role_state(role.role_body()):
                    self.client.security.create_role(role=role.name, body=role.role_body())
                    out[f"role:{role.name}"] = "created" if found is None else "updated"
                else:
                    out[f"role:{role.name}"] = "unchanged"
                mapped = self._get("mapping", role.name)
                if (
                    mapped is None
                    or sorted(mapped.get("backend_roles") or []) != sorted(role.backend_roles)
                    or (mapped.get("users") or mapped.get("hosts"))
                ):
                    self.client.security.create_role_mapping(role=role.name, body=role.mapping_body())
                    out[f"mapping:{role.name}"] = "created" if mapped is None else "updated"
                else:
                    out[f"mapping:{role.name}"] = "unchanged"
            except DependencyError:
                raise
            except Exception as exc:
                raise _error(exc, role.name) from exc
        logger.info("content index access", extra={"changes": out})
        return out


def master_credentials(secret_string: str) -> tuple[str, str]:
    """(username, password) from the master user secret ({"username": .., "password": ..})."""
    try:
        body = json.loads(secret_string)
        return str(body["username"]), str(body["password"])
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError('the OpenSearch master secret must be {"username": ..., "password": ...}') from exc
