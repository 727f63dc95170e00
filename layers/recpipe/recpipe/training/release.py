"""Published versions and rollback: model bundle, candidate lists and content index together.

A retrain publishes one version name for all three (candidates under `cand:<version>:`, the
content index `<alias>-<version>` or `<dir>/<version>/`, the bundle `bundles/<version>/`) and
promotes by switching the pointers, the model pointer last. Superseded versions stay restorable
for the retention (PUBLISHED_RETENTION_DAYS, default 7): bundles and content-index versions are
kept by the store, candidate lists are given the retention as TTL when superseded.

Rollback switches back in the same order as a promote: candidate pointer, content index, then
the model pointer. Serving reads the candidate lists and searches the content index of the
version its bundle names (recpipe.serving.model_provider.Selection.candidate_version, and
recpipe.ports.SERVED_VERSION for the content index), so a request sees either the old bundle
with the old lists and index or the new bundle with the new ones: the model pointer is the one
switch that moves all three. The earlier switches only prepare (and serve requests that have
no model). A live experiment is ended (a rollback means "everyone gets this").
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from recpipe.domain.experiments import Experiment

DEFAULT_RETENTION_DAYS = 7.0


class RollbackError(Exception):
    """The requested version cannot be restored (named reason); nothing was switched."""


class VersionedModels(Protocol):
    def current_version(self) -> str | None: ...

    def set_current(self, version: str) -> None: ...

    def manifest(self, version: str) -> dict[str, Any] | None: ...

    def versions(self) -> list[str]: ...

    def current_experiment(self) -> Experiment | None: ...

    def set_experiment(self, experiment: Experiment | None) -> None: ...


class VersionedCandidates(Protocol):
    def current_version(self) -> str | None: ...

    def version_meta(self, version: str) -> dict[str, Any] | None: ...

    def version_ttl_s(self, version: str) -> float | None:
        """Seconds until the version's lists expire; None when they do not expire; raises
        KeyError when the version is gone."""
        ...

    def restore(self, version: str) -> None:
        """Make a complete version current again and keep it (no TTL)."""
        ...


class VersionedContent(Protocol):
    def versions(self) -> list[str]: ...

    def current_version(self) -> str | None: ...

    def switch(self, version: str) -> None: ...


@dataclass(frozen=True, slots=True)
class VersionInfo:
    version: str
    created: str | None
    live: bool
    bundle: bool
    candidates: str
    content: str
    restorable: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _created(manifest: dict[str, Any] | None) -> str:
    return str((manifest or {}).get("created") or "")


def published_versions(
    models: VersionedModels,
    candidates: VersionedCandidates | None,
    content: VersionedContent | None,
) -> list[VersionInfo]:
    """Every bundle version with what remains of its candidate lists and content index, newest
    first. Restorable: bundle complete, lists present (when a cache is configured) and content
    index version present (when an index is configured)."""
    live = models.current_version()
    # OpenSearch index names are lower case.
    content_versions = {v.lower() for v in content.versions()} if content is not None else set()
    manifests = {v: models.manifest(v) for v in models.versions()}
    out = []
    for version in sorted(manifests, key=lambda v: (_created(manifests[v]), v), reverse=True):
        cand_ok = True
        cand = "not configured"
        if candidates is not None:
            if candidates.version_meta(version) is None:
                cand, cand_ok = "expired or missing", False
            else:
                try:
                    ttl = candidates.version_ttl_s(version)
                    cand = "kept" if ttl is None else f"expires in {ttl / 3600:.1f} h"
                except KeyError:
                    cand, cand_ok = "expired", False
        cont_ok = True
        cont = "not configured"
        if content is not None:
            cont_ok = version.lower() in content_versions
            cont = "present" if cont_ok else "missing"
        out.append(
            VersionInfo(
                version=version,
                created=_created(manifests[version]) or None,
                live=version == live,
                bundle=manifests[version] is not None,
                candidates=cand,
                content=cont,
                restorable=manifests[version] is not None and cand_ok and cont_ok,
            )
        )
    return out


def rollback(
    models: VersionedModels,
    candidates: VersionedCandidates | None,
    content: VersionedContent | None,
    *,
    to: str | None = None,
    log: Callable[[str], None] = lambda line: None,
) -> dict[str, Any]:
    """Restore `to` (default: the newest restorable version older than the live one)."""
    versions = published_versions(models, candidates, content)
    live = models.current_version()
    by_name = {v.version: v for v in versions}
    if to is None:
        names = [v.version for v in versions]
        older = names[names.index(live) + 1 :] if live in names else names
        target = next((by_name[v] for v in older if by_name[v].restorable), None)
        if target is None:
            raise RollbackError(f"no restorable version older than {live!r}")
    else:
        if to not in by_name:
            raise RollbackError(f"version {to!r} is not published (see `recpipe versions`)")
        target = by_name[to]
        if not target.restorable:
            raise RollbackError(
                f"version {to!r} is not restorable: candidates {target.candidates}, content {target.content}"
            )
    t0 = time.perf_counter()
    steps: list[str] = []
    if candidates is not None:
        candidates.restore(target.version)
        steps.append("candidates")
        log(f"candidate pointer -> {target.version}")
    if content is not None:
        content.switch(target.version)
        steps.append("content")
        log(f"content index -> {target.version}")
    ended = None
    experiment = models.current_experiment()
    if experiment is not None:
        models.set_experiment(None)
        ended = experiment.name
        log(f"experiment {experiment.name} ended")
    models.set_current(target.version)  # last: the switch serving follows
    steps.append("model")
    log(f"model pointer -> {target.version}")
    return {
        "from": live,
        "to": target.version,
        "steps": steps,
        "experiment_ended": ended,
        "took_ms": round((time.perf_counter() - t0) * 1000.0, 1),
    }
