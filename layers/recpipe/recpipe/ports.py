"""Ports: the small interfaces the online, stream and batch paths depend on. Adapters implement
them (recpipe.adapters); in-memory fakes implement them for unit tests (recpipe_dev.testing)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from recpipe.domain.events import Event
from recpipe.domain.user import UserFeatures

#: The published version (bundle version) the current request is served with, set when the
#: request's model is selected (recpipe.serving.model_provider.ModelProvider.select) and carried
#: into the read threads (recpipe.serving.reads.DeadlineRunner). Versioned artefacts read per
#: request (the content index) follow it instead of their own pointer, so one request never
#: pairs one version's model with another version's data, whatever order a rollback switches
#: the pointers in. None: no model (read the artefact's own pointer).
SERVED_VERSION: ContextVar[str | None] = ContextVar("recpipe_served_version", default=None)


class DependencyError(Exception):
    """A backing service failed or was too slow; callers degrade instead of failing."""


class RetryableError(DependencyError):
    """Throttling, timeouts, connection resets: the same call may succeed later."""


class CandidateCacheEmpty(DependencyError):
    """The candidate cache names no published version: Redis restarted without its data, or
    nothing was published yet. Answers are degraded until the lists are restored."""


class ConflictError(Exception):
    """An optimistic-concurrency write lost the race; re-read and re-apply."""


# ---- online reads ---------------------------------------------------------------------------
class CandidateCache(Protocol):
    def current_version(self) -> str | None: ...

    def get(self, user_id: str, version: str | None = None) -> list[tuple[str, float]]:
        """The user's CF candidates (best first); [] when none. From `version` when it is a
        complete published version (the one published with the served bundle), else from the
        version the pointer names."""
        ...


class CandidatePublisher(Protocol):
    def publish(
        self,
        version: str,
        lists: Iterable[tuple[str, Sequence[tuple[str, float]]]],
        meta: Mapping[str, object],
    ) -> int:
        """Write every list under `version`, then switch the pointer. Returns lists written.
        Re-publishing a complete version is a no-op."""
        ...


@dataclass(frozen=True, slots=True)
class SessionEntry:
    item_id: str
    type: str
    ts: float


class SessionStore(Protocol):
    def append(self, user_id: str, entries: Sequence[SessionEntry]) -> None: ...

    def recent(self, user_id: str, limit: int = 20) -> list[SessionEntry]:
        """Most recent first."""
        ...


class TrendingStore(Protocol):
    def add(self, weights: Mapping[tuple[int, str], float]) -> None:
        """Add weight per (time bucket, item)."""
        ...

    def top(self, now: float, n: int) -> list[tuple[str, float]]:
        """Trending items with scores normalised to [0, 1], best first."""
        ...


class UserFeatureStore(Protocol):
    def get(self, user_id: str) -> UserFeatures | None: ...

    def get_many(self, user_ids: Sequence[str]) -> dict[str, UserFeatures]: ...

    def put(self, features: UserFeatures, expected_version: int) -> UserFeatures:
        """Conditional write: raises ConflictError unless the stored version is `expected_version`.
        Returns the stored features (version incremented)."""
        ...


# ---- content index (cold start) ----------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ContentDoc:
    item_id: str
    title: str
    categories: tuple[str, ...]
    text: str = ""
    popularity: float = 0.0


class ContentIndex(Protocol):
    def search(
        self, *, text: str | None, categories: Sequence[str], k: int, exclude: Sequence[str] = ()
    ) -> list[tuple[str, float]]:
        """Content-based candidates: matches on text/categories, boosted by popularity."""
        ...


class ContentIndexWriter(Protocol):
    def publish(self, version: str, docs: Iterable[ContentDoc]) -> int:
        """Index under a versioned index, then switch the alias. Returns documents indexed."""
        ...


# ---- stream and artefacts -------------------------------------------------------------------------
class EventPublisher(Protocol):
    def publish(self, events: Sequence[Event]) -> list[tuple[Event, str]]:
        """Put events on the stream (partition key user_id), retrying partial failures.
        Returns the events that still failed, with the reason."""
        ...


class ModelStore(Protocol):
    def current_version(self) -> str | None:
        """The version named by the model pointer (SSM parameter locally or in AWS)."""
        ...

    def fetch(self, version: str, dest: Path) -> Path:
        """Download bundle `version` into `dest` and return its directory."""
        ...

    def upload(self, bundle_dir: Path, version: str) -> None: ...

    def set_current(self, version: str) -> None: ...


# ---- stream path ----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class TrendingHit:
    """One event's contribution to trending; `event_id` makes it count once."""

    event_id: str
    item_id: str
    ts: float
    weight: float


class TrendingCounter(Protocol):
    def add_once(self, hits: Sequence[TrendingHit]) -> int:
        """Count each hit whose event id was not counted before; returns hits counted."""
        ...


class SessionWriter(Protocol):
    def append_many(self, entries_by_user: Mapping[str, Sequence[SessionEntry]]) -> None:
        """SessionStore.append for several users in one round trip."""
        ...


class FailureSink(Protocol):
    def report(self, failures: Sequence[Mapping[str, Any]]) -> None:
        """Persist reports of records that can never succeed (the failure queue)."""
        ...


class BatchUserFeatureWriter(Protocol):
    """A UserFeatureStore that can commit several users' conditional writes in one request."""

    def put_many(
        self, writes: Sequence[tuple[UserFeatures, int]]
    ) -> Mapping[str, UserFeatures | ConflictError | DependencyError]:
        """(features, expected_version) per distinct user -> per user: the stored features,
        ConflictError (version changed) or DependencyError/RetryableError."""
        ...


# ---- feedback loop ----------------------------------------------------------------------------
class ImpressionWriter(Protocol):
    def write(self, lines: Sequence[bytes]) -> list[tuple[bytes, str]]:
        """Deliver impression records, each already one archive line (recpipe.domain.impressions
        .impression_line), to the archive. Returns the lines that still failed, with the reason
        (never raises for a partial failure)."""
        ...
