"""Candidate Cache on Redis: the online reader and the batch publisher.

Layout (recpipe.redis_keys): every list of a version lives under `cand:<version>:u:<user>`; the
version's `meta` key is written once all lists are in; the pointer `cand:current` is switched
last with one SET. A reader therefore only ever follows the pointer to a complete version, and
a crash mid-publish leaves the pointer where it was. The previous version's keys are given the
retention (PUBLISHED_RETENTION_DAYS, default 7 days) as TTL, so requests still served by the
previous bundle find their lists and `recpipe rollback` can restore it; versions a failed run
left incomplete expire after OLD_VERSION_TTL_S.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from itertools import islice
from typing import Any

import redis

from recpipe.ports import CandidateCacheEmpty, DependencyError, RetryableError
from recpipe.redis_keys import (
    OLD_VERSION_TTL_S,
    PUBLISHED_RETENTION_S,
    KeyLayout,
    decode_candidates,
    encode_candidates,
)

#: Lists per pipeline round trip while publishing (bounded memory, few round trips).
PUBLISH_CHUNK = 2000
#: Keys per SCAN/EXPIRE batch when expiring an old version.
EXPIRE_CHUNK = 5000
#: Versions become key segments and SCAN patterns: no ':' and no glob characters.
VERSION_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def check_version(version: str) -> str:
    if not VERSION_RE.match(version):
        raise ValueError(f"invalid candidate version {version!r} (expected {VERSION_RE.pattern})")
    return version


def _as_str(raw: bytes | str | None) -> str | None:
    if raw is None:
        return None
    return raw.decode() if isinstance(raw, bytes) else raw


def _dependency_error(exc: redis.RedisError) -> DependencyError:
    if isinstance(exc, redis.TimeoutError | redis.ConnectionError):
        return RetryableError(f"redis: {exc}")
    return DependencyError(f"redis: {exc}")


class RedisCandidateCache:
    """CandidateCache + CandidatePublisher over one Redis client.

    `pointer_ttl_s` caches the pointer in-process so a request costs one GET; a switch becomes
    visible to a warm reader within that time (old keys stay readable for hours, so a stale
    pointer still finds its lists).
    """

    def __init__(
        self,
        client: redis.Redis,
        layout: KeyLayout | None = None,
        *,
        pointer_ttl_s: float = 1.0,
        retention_s: int = PUBLISHED_RETENTION_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._redis = client
        self.retention_s = retention_s
        self._keys = layout or KeyLayout()
        self._pointer_ttl_s = pointer_ttl_s
        self._clock = clock
        self._pointer: str | None = None
        self._pointer_read_at = float("-inf")
        #: version -> (complete?, checked at): cached like the pointer, so reading the lists of
        #: the served bundle's version costs no extra round trip per request.
        self._complete: dict[str, tuple[bool, float]] = {}
        #: Called (from the request path: must not block) when a read finds no version.
        self.on_empty: Callable[[], None] | None = None

    # ---- reads (online path) ---------------------------------------------------------------
    def current_version(self) -> str | None:
        now = self._clock()
        if self._pointer is not None and now - self._pointer_read_at < self._pointer_ttl_s:
            return self._pointer
        try:
            version = _as_str(self._redis.get(self._keys.candidate_pointer()))
        except redis.RedisError as exc:
            raise _dependency_error(exc) from exc
        # No version is not cached: while the cache is empty (being restored) each read looks
        # again, so the restored pointer is seen at once rather than a pointer TTL later.
        self._pointer, self._pointer_read_at = version, now if version is not None else float("-inf")
        return version

    def _is_complete(self, version: str) -> bool:
        now = self._clock()
        known = self._complete.get(version)
        if known is not None and now - known[1] < self._pointer_ttl_s:
            return known[0]
        try:
            complete = bool(self._redis.exists(self._keys.candidate_version_meta(version)))
        except redis.RedisError as exc:
            raise _dependency_error(exc) from exc
        if len(self._complete) > 64:  # a handful of live versions; never grows without bound
            self._complete.clear()
        self._complete[version] = (complete, now)
        return complete

    def get(self, user_id: str, version: str | None = None) -> list[tuple[str, float]]:
        pointer = self.current_version()
        if version is None or (version != pointer and not self._is_complete(version)):
            version = pointer
        if version is None:
            # Not "this user has no list": every user's list is missing. Raised so the answer
            # says candidate_cache in `degraded`, and the restore is started.
            if self.on_empty is not None:
                self.on_empty()
            raise CandidateCacheEmpty("candidate cache has no published version")
        try:
            raw = self._redis.get(self._keys.candidates(version, user_id))
        except redis.RedisError as exc:
            raise _dependency_error(exc) from exc
        try:
            return decode_candidates(raw)
        except (ValueError, TypeError) as exc:
            raise DependencyError(f"candidate list of {user_id!r} in {version} is corrupt: {exc}") from exc

    def require_version(self) -> str:
        """The current version, or CandidateCacheEmpty (the /health probe)."""
        version = self.current_version()
        if version is None:
            raise CandidateCacheEmpty("candidate cache has no published version")
        return version

    def try_lock(self, ttl_s: int) -> bool:
        """Take the restore lock (SET NX EX): False while another instance holds it."""
        try:
            return bool(self._redis.set(self._keys.candidate_restore_lock(), "1", nx=True, ex=ttl_s))
        except redis.RedisError as exc:
            raise _dependency_error(exc) from exc

    def unlock(self) -> None:
        try:
            self._redis.delete(self._keys.candidate_restore_lock())
        except redis.RedisError as exc:
            raise _dependency_error(exc) from exc

    def version_meta(self, version: str) -> dict[str, Any] | None:
        """The meta written at the end of a publish (None while the version is incomplete)."""
        raw = self._redis.get(self._keys.candidate_version_meta(version))
        return None if raw is None else dict(json.loads(raw))

    # ---- publish (batch path) ----------------------------------------------------------------
    def publish(
        self,
        version: str,
        lists: Iterable[tuple[str, Sequence[tuple[str, float]] | bytes]],
        meta: Mapping[str, object],
    ) -> int:
        """Write all lists under `version`, then the meta key, then switch the pointer.

        Re-publishing a complete version writes nothing (returns 0) but still makes sure the
        pointer names it, so a run that died between meta and pointer is finished by a re-run.
        """
        check_version(version)
        meta_key = self._keys.candidate_version_meta(version)
        try:
            if self._redis.exists(meta_key):
                self._switch(version)
                return 0
            written = self.write_lists(version, lists)
            body = {**dict(meta), "version": version, "lists": written, "published_at": time.time()}
            self._redis.set(meta_key, json.dumps(body, default=str))
            self._switch(version)
        except redis.RedisError as exc:
            raise _dependency_error(exc) from exc
        return written

    def write_lists(
        self, version: str, lists: Iterable[tuple[str, Sequence[tuple[str, float]] | bytes]]
    ) -> int:
        """Write (part of) a version's lists without touching meta or pointer.

        A list may come already encoded (bytes that `keys.decode_candidates` reads, e.g. from
        training's vectorised encoder). The workflow's Map state calls this once per shard, then
        `commit` once; writing the same shard twice only overwrites identical values.
        """
        check_version(version)
        try:
            return self._write_lists(version, lists)
        except redis.RedisError as exc:
            raise _dependency_error(exc) from exc

    def _write_lists(
        self, version: str, lists: Iterable[tuple[str, Sequence[tuple[str, float]] | bytes]]
    ) -> int:
        self._redis.sadd(self._keys.candidate_versions(), version)
        written = 0
        it = iter(lists)
        key = self._keys.candidates
        # One MSET per chunk (far fewer client-side command objects than a SET each), sent from
        # a writer thread so the next chunk is encoded while Redis takes this one.
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="candidate-writer") as writer:
            pending: Future[Any] | None = None
            while chunk := list(islice(it, PUBLISH_CHUNK)):
                mapping: dict[str | bytes, bytes | float | int | str] = {
                    key(version, user_id): pairs if isinstance(pairs, bytes) else encode_candidates(pairs)
                    for user_id, pairs in chunk
                }
                if pending is not None:
                    pending.result()
                pending = writer.submit(self._redis.mset, mapping)
                written += len(chunk)
            if pending is not None:
                pending.result()
        return written

    def commit(self, version: str, meta: Mapping[str, object]) -> bool:
        """Mark a sharded publish complete and switch the pointer. False if already complete."""
        check_version(version)
        meta_key = self._keys.candidate_version_meta(version)
        try:
            created = bool(self._redis.set(meta_key, json.dumps({**dict(meta), "version": version}), nx=True))
            self._switch(version)
        except redis.RedisError as exc:
            raise _dependency_error(exc) from exc
        return created

    def _switch(self, version: str) -> None:
        pointer = self._keys.candidate_pointer()
        previous = _as_str(self._redis.getset(pointer, version))
        self._pointer, self._pointer_read_at = version, self._clock()
        if previous and previous != version:
            self.expire_version(previous, self.retention_s)
        # Versions a failed run left half-written would otherwise stay in memory forever.
        registry = self._keys.candidate_versions()
        for raw in self._redis.smembers(registry):
            other = _as_str(raw)
            if other and other not in (version, previous):
                self.expire_version(other, OLD_VERSION_TTL_S)
                self._redis.srem(registry, other)
        if previous and previous != version:
            self._redis.srem(registry, previous)

    # ---- retention and rollback ------------------------------------------------------------------
    def version_ttl_s(self, version: str) -> float | None:
        """Seconds until `version`'s lists expire (None: kept); KeyError when already gone."""
        try:
            ttl = int(self._redis.ttl(self._keys.candidate_version_meta(version)))
        except redis.RedisError as exc:
            raise _dependency_error(exc) from exc
        if ttl == -2:
            raise KeyError(version)
        return None if ttl == -1 else float(ttl)

    def restore(self, version: str) -> None:
        """Make a complete, still retained version current again (rollback): its keys lose
        their TTL, then the pointer switches and the version it replaces gets the retention."""
        check_version(version)
        try:
            if not self._redis.exists(self._keys.candidate_version_meta(version)):
                raise DependencyError(f"candidate version {version} is not complete or has expired")
            batch: list[bytes] = []
            for key in self._redis.scan_iter(match=self._keys.candidate_version_pattern(version), count=1000):
                batch.append(key)
                if len(batch) >= EXPIRE_CHUNK:
                    self._persist(batch)
                    batch = []
            if batch:
                self._persist(batch)
            self._switch(version)
        except redis.RedisError as exc:
            raise _dependency_error(exc) from exc

    def _persist(self, keys: list[bytes]) -> None:
        pipe = self._redis.pipeline(transaction=False)
        for key in keys:
            pipe.persist(key)
        pipe.execute()

    def expire_version(self, version: str, ttl_s: int) -> int:
        """Give every key of `version` a TTL (SCAN, so Redis is never blocked). Returns keys."""
        count = 0
        batch: list[bytes] = []
        for key in self._redis.scan_iter(match=self._keys.candidate_version_pattern(version), count=1000):
            batch.append(key)
            if len(batch) >= EXPIRE_CHUNK:
                count += self._expire(batch, ttl_s)
                batch = []
        if batch:
            count += self._expire(batch, ttl_s)
        return count

    def _expire(self, keys: list[bytes], ttl_s: int) -> int:
        pipe = self._redis.pipeline(transaction=False)
        for key in keys:
            pipe.expire(key, ttl_s)
        pipe.execute()
        return len(keys)
