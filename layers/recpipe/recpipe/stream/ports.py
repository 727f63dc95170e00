"""The stream path's own small interfaces (beyond recpipe.ports), implemented by the Redis/SQS
adapters and by recpipe_dev.testing.fakes_stream."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from recpipe.domain.user import UserFeatures
from recpipe.ports import ConflictError, DependencyError, SessionEntry


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
