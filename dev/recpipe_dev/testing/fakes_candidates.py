"""In-memory Candidate Cache with the same publish semantics as RedisCandidateCache."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from recpipe.adapters.redis_candidates import check_version
from recpipe.redis_keys import decode_candidates


class InMemoryCandidateCache:
    """CandidateCache + CandidatePublisher for unit tests.

    `fail_after` makes publish raise after that many lists, to test that an interrupted
    publish never becomes visible.
    """

    def __init__(self, *, fail_after: int | None = None) -> None:
        self.versions: dict[str, dict[str, list[tuple[str, float]]]] = {}
        self.meta: dict[str, dict[str, Any]] = {}
        self.pointer: str | None = None
        self.expired: list[str] = []
        self.fail_after = fail_after
        self.get_calls = 0

    def current_version(self) -> str | None:
        return self.pointer

    def get(self, user_id: str, version: str | None = None) -> list[tuple[str, float]]:
        self.get_calls += 1
        if version is None or version not in self.meta:
            version = self.pointer
        if version is None:
            return []
        return list(self.versions.get(version, {}).get(user_id, []))

    def version_meta(self, version: str) -> dict[str, Any] | None:
        return self.meta.get(version)

    def publish(
        self,
        version: str,
        lists: Iterable[tuple[str, Sequence[tuple[str, float]] | bytes]],
        meta: Mapping[str, object],
    ) -> int:
        check_version(version)
        if version in self.meta:
            self._switch(version)
            return 0
        written = self.write_lists(version, lists)
        self.meta[version] = {**dict(meta), "version": version, "lists": written}
        self._switch(version)
        return written

    def write_lists(
        self, version: str, lists: Iterable[tuple[str, Sequence[tuple[str, float]] | bytes]]
    ) -> int:
        check_version(version)
        store = self.versions.setdefault(version, {})
        written = 0
        for user_id, pairs in lists:
            if self.fail_after is not None and written >= self.fail_after:
                raise ConnectionError("simulated failure mid-publish")
            if isinstance(pairs, bytes):  # pre-encoded, as RedisCandidateCache accepts
                store[user_id] = decode_candidates(pairs)
            else:
                store[user_id] = [(str(i), float(s)) for i, s in pairs]
            written += 1
        return written

    def commit(self, version: str, meta: Mapping[str, object]) -> bool:
        check_version(version)
        created = version not in self.meta
        if created:
            self.meta[version] = {**dict(meta), "version": version}
        self._switch(version)
        return created

    def _switch(self, version: str) -> None:
        previous, self.pointer = self.pointer, version
        if previous and previous != version:
            self.expired.append(previous)
