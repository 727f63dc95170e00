"""The Candidate Cache on a real redis-server: readers only ever see complete versions."""

from __future__ import annotations

import pytest
import redis
from recpipe.adapters.redis_candidates import RedisCandidateCache
from recpipe.ports import CandidateCacheEmpty, DependencyError
from recpipe.redis_keys import OLD_VERSION_TTL_S, PUBLISHED_RETENTION_S, KeyLayout


@pytest.fixture()
def client(redis_url: str) -> redis.Redis:
    return redis.Redis.from_url(redis_url)


def _lists(n: int, tag: str) -> list[tuple[str, list[tuple[str, float]]]]:
    return [(f"u{u}", [(f"{tag}{u}-{j}", 1.0 - j / 10) for j in range(5)]) for u in range(n)]


def test_published_lists_are_served_best_first(client: redis.Redis) -> None:
    cache = RedisCandidateCache(client, KeyLayout("t"), pointer_ttl_s=0)
    assert cache.current_version() is None
    # No version at all is not "no list for this user": the read fails (the answer is degraded).
    with pytest.raises(CandidateCacheEmpty):
        cache.get("u1")

    written = cache.publish("v1", _lists(5000, "a"), {"model": "m1"})

    assert written == 5000
    assert cache.current_version() == "v1"
    assert cache.get("u42") == [(f"a42-{j}", 1.0 - j / 10) for j in range(5)]
    assert cache.get("nobody") == []
    meta = cache.version_meta("v1")
    assert meta is not None and meta["lists"] == 5000 and meta["model"] == "m1"


def test_switch_is_atomic_and_old_version_expires(client: redis.Redis) -> None:
    keys = KeyLayout("t")
    cache = RedisCandidateCache(client, keys, pointer_ttl_s=0)
    cache.publish("v1", _lists(10, "a"), {})
    cache.publish("v2", _lists(10, "b"), {})

    assert cache.get("u3")[0][0] == "b3-0"
    # The superseded version stays restorable for the retention (7 days by default).
    old_ttl = client.ttl(keys.candidates("v1", "u3"))
    assert PUBLISHED_RETENTION_S - 60 < old_ttl <= PUBLISHED_RETENTION_S
    assert client.ttl(keys.candidate_version_meta("v1")) > 0
    # the live version never expires
    assert client.ttl(keys.candidates("v2", "u3")) == -1
    assert client.ttl(keys.candidate_pointer()) == -1


def test_republishing_a_complete_version_is_a_noop(client: redis.Redis) -> None:
    cache = RedisCandidateCache(client, KeyLayout("t"), pointer_ttl_s=0)
    cache.publish("v1", _lists(10, "a"), {})
    assert cache.publish("v1", _lists(10, "zzz"), {}) == 0
    assert cache.get("u1")[0][0] == "a1-0"


def test_crash_mid_publish_never_moves_the_pointer(client: redis.Redis) -> None:
    cache = RedisCandidateCache(client, KeyLayout("t"), pointer_ttl_s=0)
    cache.publish("v1", _lists(10, "a"), {})

    def exploding() -> object:
        yield from _lists(3000, "b")[:2500]
        raise RuntimeError("training data source died")

    with pytest.raises(RuntimeError):
        cache.publish("v2", exploding(), {})  # type: ignore[arg-type]

    assert cache.current_version() == "v1"
    assert cache.get("u1")[0][0] == "a1-0"
    assert cache.version_meta("v2") is None
    # a re-run of the same version completes it
    assert cache.publish("v2", _lists(10, "b"), {}) == 10
    assert cache.get("u1")[0][0] == "b1-0"


def test_sharded_publish_commits_once(client: redis.Redis) -> None:
    cache = RedisCandidateCache(client, KeyLayout("t"), pointer_ttl_s=0)
    lists = _lists(100, "s")
    cache.write_lists("v9", lists[:50])
    cache.write_lists("v9", lists[50:])
    assert cache.current_version() is None
    assert cache.commit("v9", {"shards": 2}) is True
    assert cache.commit("v9", {"shards": 2}) is False
    assert cache.get("u99")[0][0] == "s99-0"


def test_pointer_is_cached_for_its_ttl(client: redis.Redis) -> None:
    now = [0.0]
    reader = RedisCandidateCache(client, KeyLayout("t"), pointer_ttl_s=2.0, clock=lambda: now[0])
    writer = RedisCandidateCache(client, KeyLayout("t"), pointer_ttl_s=0)
    writer.publish("v1", _lists(3, "a"), {})
    assert reader.current_version() == "v1"
    writer.publish("v2", _lists(3, "b"), {})
    now[0] = 1.0
    assert reader.current_version() == "v1"  # still cached; v1 keys remain readable
    assert reader.get("u1")[0][0] == "a1-0"
    now[0] = 2.5
    assert reader.current_version() == "v2"


def test_bad_versions_are_refused(client: redis.Redis) -> None:
    cache = RedisCandidateCache(client, KeyLayout("t"))
    for bad in ("", "a:b", "v*", "x" * 65):
        with pytest.raises(ValueError):
            cache.publish(bad, [], {})


def test_pre_encoded_lists_are_served_like_encoded_ones(client: redis.Redis) -> None:
    import numpy as np
    from recpipe.training.candidates import CandidateLists

    lists = CandidateLists(
        ["u1", "u2"],
        np.array([[0, 2, -1], [1, -1, -1]], np.int32),
        np.array([[0.9, -0.25, 0], [3.5, 0, 0]], np.float32),
        ["a", "b", "c"],
    )
    cache = RedisCandidateCache(client, KeyLayout("t"), pointer_ttl_s=0)
    assert cache.publish("v1", lists.encoded(), {}) == 2
    assert cache.get("u1") == [("a", 0.9), ("c", -0.25)]
    assert cache.get("u2") == [("b", 3.5)]


def test_a_version_left_half_written_by_a_failed_run_expires_at_the_next_switch(client: redis.Redis) -> None:
    keys = KeyLayout("t")
    cache = RedisCandidateCache(client, keys, pointer_ttl_s=0)
    cache.publish("v1", _lists(5, "a"), {})
    cache.write_lists("v2-failed", _lists(5, "x"))  # the run died before committing
    assert client.ttl(keys.candidates("v2-failed", "u1")) == -1

    cache.publish("v3", _lists(5, "c"), {})

    assert 0 < client.ttl(keys.candidates("v2-failed", "u1")) <= OLD_VERSION_TTL_S
    assert PUBLISHED_RETENTION_S - 60 < client.ttl(keys.candidates("v1", "u1")) <= PUBLISHED_RETENTION_S
    assert client.ttl(keys.candidates("v3", "u1")) == -1
    assert {m.decode() for m in client.smembers(keys.candidate_versions())} == {"v3"}


def test_an_unreachable_redis_is_a_retryable_dependency_error() -> None:
    from recpipe.ports import RetryableError
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    dead = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0))
    cache = RedisCandidateCache(dead, KeyLayout("t"))
    with pytest.raises(RetryableError):
        cache.write_lists("v1", _lists(3, "a"))
    with pytest.raises(RetryableError):
        cache.commit("v1", {})
    with pytest.raises(RetryableError):
        cache.get("u1")


def test_a_retained_version_is_restored_whole_and_the_one_it_replaces_is_retained(
    client: redis.Redis,
) -> None:
    keys = KeyLayout("t")
    cache = RedisCandidateCache(client, keys, pointer_ttl_s=0, retention_s=3600)
    cache.publish("v1", _lists(5, "a"), {})
    cache.publish("v2", _lists(5, "b"), {})
    assert 3000 < (cache.version_ttl_s("v1") or 0) <= 3600 and cache.version_ttl_s("v2") is None
    cache.restore("v1")
    assert cache.current_version() == "v1" and cache.get("u1")[0][0] == "a1-0"
    assert client.ttl(keys.candidates("v1", "u1")) == -1, "restored lists are kept"
    assert 3000 < (cache.version_ttl_s("v2") or 0) <= 3600, "and the replaced version is retained"
    client.delete(*client.keys(keys.candidate_version_pattern("v2")))
    with pytest.raises(KeyError):
        cache.version_ttl_s("v2")
    with pytest.raises(DependencyError, match="not complete or has expired"):
        cache.restore("v2")
    assert cache.current_version() == "v1"


def test_the_lists_of_a_named_complete_version_are_read_without_following_the_pointer(
    client: redis.Redis,
) -> None:
    cache = RedisCandidateCache(client, KeyLayout("t"), pointer_ttl_s=60)
    cache.publish("v1", _lists(5, "a"), {})
    cache.publish("v2", _lists(5, "b"), {})
    assert cache.get("u1", "v1")[0][0] == "a1-0", "the version a variant's bundle was published with"
    assert cache.get("u1", "v9")[0][0] == "b1-0", "an unknown version falls back to the pointer"
