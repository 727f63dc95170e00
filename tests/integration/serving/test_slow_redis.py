"""Redis slower than the read deadline (the resilience bench's slow_redis phase, in small): the
reads degrade within the deadline, stop waiting for Redis after a few misses, and do not open a
new connection per call (each call abandoned mid-reply drops its connection)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import redis
from recpipe.adapters.redis_candidates import RedisCandidateCache
from recpipe.config import RecommendSettings, load_settings
from recpipe.serving.reads import RequestReader, TrendingCache
from recpipe.serving.runtime import BREAKER_OPEN_S, aws_dependencies, read_runner
from recpipe_dev.bench.resilience import LatencyProxy

DEADLINE_MS = 15


@pytest.fixture()
def proxy(redis_url: str) -> Iterator[LatencyProxy]:
    port = redis.Redis.from_url(redis_url).connection_pool.connection_kwargs["port"]
    p = LatencyProxy(int(port))  # counts the connections opened through it
    yield p
    p.close()


def test_slow_redis_costs_neither_the_deadline_per_request_nor_a_connection_per_call(
    proxy: LatencyProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REDIS_URL", f"redis://127.0.0.1:{proxy.port}/0")
    monkeypatch.setenv("READ_TIMEOUT_MS", str(DEADLINE_MS))
    monkeypatch.delenv("REDIS_AUTH_SECRET_ARN", raising=False)
    settings = load_settings(RecommendSettings)
    deps = aws_dependencies(settings)
    assert deps.candidates is not None and deps.trending is not None
    reader = RequestReader(
        read_runner(), candidates=deps.candidates, sessions=deps.sessions, users=None,
        trending=TrendingCache(deps.trending), timeout_s=DEADLINE_MS / 1000,
    )  # fmt: skip
    cache = deps.candidates
    assert isinstance(cache, RedisCandidateCache)
    cache.publish("v1", [("u1", [("a", 1.0)])], {})
    # Healthy first (retried: the first connection through the proxy may miss 15 ms).
    for _ in range(20):
        if set(reader.read("u1", time.time(), budget_s=1.0).degraded) <= {"user_features"}:
            break
    healthy = reader.read("u1", time.time(), budget_s=1.0)
    assert healthy.candidates == [("a", 1.0)], healthy.failures

    proxy.delay_s = 4 * DEADLINE_MS / 1000  # every reply 60 ms late
    opened, ms = proxy.accepted, []
    for _ in range(40):  # 2.7 s at 15 requests/s (the bench's rate per worker)
        t0 = time.perf_counter()
        reads = reader.read("u1", time.time(), budget_s=0.035)
        ms.append((time.perf_counter() - t0) * 1000)
        # (trending may still answer from its one-second cache)
        assert {"candidate_cache", "session"} <= set(reads.degraded)
        time.sleep(1 / 15)
    new_connections = proxy.accepted - opened
    ms.sort()
    # Before the breakers: ~15 ms per request and one new connection per call (3 x 40 = 120).
    assert ms[len(ms) // 2] < 2.0, ms
    # Three misses per read before it opens, then at most one probe per read per interval.
    probes = 3 * (40 / 15 / BREAKER_OPEN_S + 1)
    assert new_connections <= 3 * 3 + probes, new_connections

    proxy.delay_s = 0.0  # healed: a probe closes each breaker within an interval or so
    deadline = time.monotonic() + 5 * BREAKER_OPEN_S
    while time.monotonic() < deadline:
        reads = reader.read("u1", time.time(), budget_s=0.035)
        if reads.candidates == [("a", 1.0)] and reads.session is not None:
            break
        time.sleep(0.05)
    assert reads.candidates == [("a", 1.0)], reads.failures
