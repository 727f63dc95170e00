"""Builds the online path from Settings, once per container (the handler's init phase)."""

from __future__ import annotations

import gc
import logging
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recpipe.bundle import bundle_candidates
from recpipe.clients import aws_client, opensearch_client, redis_client
from recpipe.config import ModelSettings, RecommendSettings
from recpipe.ports import (
    CandidateCache,
    CandidateCacheEmpty,
    ContentIndex,
    SessionStore,
    TrendingStore,
    UserFeatureStore,
)
from recpipe.redis_keys import KeyLayout
from recpipe.serving.candidate_restore import CandidateRestorer
from recpipe.serving.impressions import ImpressionLog
from recpipe.serving.model_provider import (
    BundleSource,
    LocalBundleSource,
    ModelEventSink,
    ModelProvider,
    StoreBundleSource,
)
from recpipe.serving.reads import (
    Bulkhead,
    CircuitBreakers,
    DeadlineRunner,
    RequestReader,
    TrendingCache,
)
from recpipe.serving.recommender import RecommendationResult, Recommender

logger = logging.getLogger(__name__)

#: Worker threads for the per-request reads (4 reads + the content index, with slack for
#: calls that outlived their deadline).
READ_WORKERS = 16
#: Calls in flight per dependency before new requests skip it (a hung dependency cannot
#: exhaust the pool).
BULKHEAD_LIMIT = 3
#: Socket timeouts of the online path's clients are at least this (see aws_dependencies).
SOCKET_TIMEOUT_FLOOR_S = 0.05
#: Failed or late calls in a row before a read is skipped, and for how long before it is
#: probed again (in the background). Three in a row is rare while healthy (the steady
#: phase's misses are isolated) and costs a failing dependency three deadlines, not one
#: per request. The probe reconnects, and a new connection's handshake can itself miss the
#: socket timeout (then the next probe is an interval later): with 0.5 s the bench's
#: slow_redis phase recovered in 1.0-1.3 s, so 0.25 s (4 probes/s per read per instance,
#: against one connection per read per request without the breakers).
BREAKER_THRESHOLD = 3
BREAKER_OPEN_S = 0.25
#: Threads started at init: the four reads and the content index of one request.
WARM_THREADS = 5
#: The user id /health reads (no user has it: the probe returns nothing).
HEALTH_PROBE_USER = "recpipe-health-probe"


@dataclass(slots=True)
class Dependencies:
    candidates: CandidateCache | None = None
    sessions: SessionStore | None = None
    users: UserFeatureStore | None = None
    trending: TrendingStore | None = None
    content: ContentIndex | None = None
    #: Cheap liveness probe per dependency for /health (name -> callable raising on failure).
    probes: dict[str, Callable[[], Any]] | None = None


@dataclass(slots=True)
class OnlinePath:
    recommender: Recommender
    models: ModelProvider
    probes: dict[str, Callable[[], Any]]
    settings: RecommendSettings
    init_ms: float = 0.0
    #: Part of init_ms spent warming up (first calls to each dependency, one request).
    warm_up_ms: float = 0.0
    #: Served lists go to the archive from here (None: not configured).
    impressions: ImpressionLog | None = None

    def log_impression(self, result: RecommendationResult) -> None:
        """Buffer the served list (no I/O here: a background thread writes batches)."""
        if self.impressions is not None and result.items:
            self.impressions.record(
                recommendation_id=result.recommendation_id,
                user_id=result.user_id,
                model_version=result.model_version,
                experiment=result.experiment,
                variant=result.variant,
                items=result.items,
            )

    def health(self, runner_timeout_s: float = 0.05) -> dict[str, Any]:
        """Model loaded and each dependency's status, each probe under a short deadline.

        /health is unauthenticated: it says *which* dependency is not answering (ok, empty,
        timeout, unavailable), never the error text (endpoints, hosts, bucket keys), which goes
        to the log instead. Any dependency not ok, or no model, makes the status degraded."""
        # Unguarded: /health must reach a dependency whose reads are skipped to say it is back.
        results, failures = self.recommender.runner.gather(dict(self.probes), runner_timeout_s, guarded=False)
        model = self.models.model
        deps = {name: "ok" for name in results}
        deps.update({name: health_word(reason) for name, reason in failures.items()})
        if failures or self.models.last_error:
            logger.warning("health: %s", {"failures": failures, "model_error": self.models.last_error})
        degraded = model is None or any(v != "ok" for v in deps.values())
        return {
            "status": "degraded" if degraded else "ok",
            "model_version": model.version if model else None,
            "model_error": "the last model load failed (see the function's log)"
            if self.models.last_error
            else None,
            "dependencies": deps,
        }


def health_word(reason: str) -> str:
    """A probe's failure as one word a client may see."""
    if reason.startswith(CandidateCacheEmpty.__name__):
        return "empty"
    if reason.startswith("timed out") or "Timeout" in reason.split(":", 1)[0]:
        return "timeout"
    return "unavailable"


def bundle_source(settings: ModelSettings) -> BundleSource:
    if settings.bundle_dir:
        return LocalBundleSource(Path(settings.bundle_dir))
    from recpipe.adapters.s3_models import S3ModelStore

    bucket, pointer = settings.s3_pointer()
    store = S3ModelStore(
        aws_client("s3", settings, read_timeout_s=10.0),
        aws_client("ssm", settings, read_timeout_s=1.0),
        bucket=bucket,
        pointer_param=pointer,
        experiment_param=settings.experiment_param,
    )
    # A directory of this process's own: a version name is only unique within one bucket, so a
    # copy left in /tmp by another process (another stack, a test) must never be taken for it.
    return StoreBundleSource(store, Path(tempfile.mkdtemp(prefix="recpipe-bundles-")))


def impression_log(settings: RecommendSettings) -> ImpressionLog | None:
    if settings.impression_stream_name:
        from recpipe.adapters.impressions import FirehoseImpressionWriter

        firehose = aws_client("firehose", settings, read_timeout_s=5.0)
        return ImpressionLog(
            FirehoseImpressionWriter(firehose, settings.impression_stream_name),
            flush_interval_s=settings.impression_flush_s,
        )
    if settings.impression_bucket:
        from recpipe.adapters.impressions import S3ImpressionWriter

        s3 = aws_client("s3", settings, read_timeout_s=5.0)
        return ImpressionLog(
            S3ImpressionWriter(s3, settings.impression_bucket), flush_interval_s=settings.impression_flush_s
        )
    return None


def content_index(settings: RecommendSettings, timeout_s: float) -> ContentIndex | None:
    if settings.opensearch_url and settings.content_index_alias:
        from recpipe.adapters.content_index import OpenSearchContentIndex

        client = opensearch_client(settings.opensearch_url, settings, timeout_s=timeout_s, max_retries=0)
        return OpenSearchContentIndex(client, settings.content_index_alias, timeout_s=timeout_s)
    if settings.content_index_dir:
        from recpipe.adapters.content_index import InProcessContentIndex

        # Built here (init); a newly published version is loaded off the request path.
        return InProcessContentIndex(
            Path(settings.content_index_dir), refresh_s=settings.model_refresh_s, background=True
        )
    return None


def aws_dependencies(settings: RecommendSettings) -> Dependencies:
    """Redis (candidates, sessions, trending), DynamoDB (user features), the content index."""
    from recpipe.adapters.dynamodb_users import DynamoDBUserFeatureStore
    from recpipe.adapters.redis_candidates import RedisCandidateCache
    from recpipe.adapters.redis_session import RedisSessionStore, RedisTrendingStore

    timeout_s = settings.read_timeout_ms / 1000.0
    layout = KeyLayout(settings.env_name)
    # Socket timeouts longer than the read deadline, for Redis as for DynamoDB: the deadline
    # bounds the request (DeadlineRunner), while a socket timeout drops the connection and the
    # next call must open one, whose handshake (TCP, TLS, AUTH, HELLO: several round trips, each
    # under the socket timeout) could itself not finish within one deadline on a busy CPU: a
    # Redis breaker's probes then kept failing after Redis was back (docs/serving.md).
    socket_timeout_s = max(timeout_s, SOCKET_TIMEOUT_FLOOR_S)
    client = redis_client(settings, timeout_s=socket_timeout_s)
    # One SDK attempt: the request has no time for retries, the read degrades instead. The socket
    # read timeout is longer than the read deadline on purpose (above). Tried equal to the
    # deadline (so a late answer is not parsed during assembly): no clear gain measured, and
    # more reconnects (docs/serving.md).
    # No client-side parameter validation: the adapter builds every request itself, and it
    # costs CPU on the request path.
    ddb = aws_client("dynamodb", settings, read_timeout_s=socket_timeout_s, attempts=1, validate=False)
    candidates = RedisCandidateCache(client, layout)
    # Eventually consistent reads: half the cost, and the session carries the fresh signal.
    users = DynamoDBUserFeatureStore(ddb, settings.user_features_table, consistent_read=False)
    return Dependencies(
        candidates=candidates,
        sessions=RedisSessionStore(client, layout),
        users=users,
        trending=RedisTrendingStore(client, layout),
        content=content_index(settings, timeout_s),
        probes={
            "redis": client.ping,
            "candidate_cache": candidates.require_version,
            # A GetItem of a key no user has: reachability and permissions, no data returned.
            "user_features": lambda: users.get(HEALTH_PROBE_USER),
        },
    )


def attach_restorer(
    cache: CandidateCache | None, models: ModelProvider, on_event: ModelEventSink | None
) -> CandidateRestorer | None:
    """Let a cache that can say it is empty restore itself from the served bundle's lists."""
    if cache is None or not all(hasattr(cache, a) for a in ("on_empty", "try_lock", "unlock", "publish")):
        return None

    def lists_of() -> tuple[str, Any] | None:
        model = models.model
        rows = bundle_candidates(model.bundle.path) if model is not None else None
        return None if model is None or rows is None else (model.version, rows)

    restorer = CandidateRestorer(cache, lists_of, on_event=on_event)  # type: ignore[arg-type]
    cache.on_empty = restorer.trigger  # type: ignore[attr-defined]
    return restorer


def read_runner() -> DeadlineRunner:
    """The pool, bulkheads and circuit breakers the per-request reads run on."""
    executor = ThreadPoolExecutor(max_workers=READ_WORKERS, thread_name_prefix="recpipe-read")
    runner = DeadlineRunner(
        executor, Bulkhead(BULKHEAD_LIMIT), CircuitBreakers(BREAKER_THRESHOLD, BREAKER_OPEN_S)
    )
    # Start the read threads now (init is not billed against a request's deadline).
    for f in [executor.submit(time.sleep, 0.002) for _ in range(WARM_THREADS)]:
        f.result()
    return runner


def build_online_path(
    settings: RecommendSettings,
    *,
    dependencies: Dependencies | None = None,
    source: BundleSource | None = None,
    on_model_event: ModelEventSink | None = None,
    background_refresh: bool = True,
    warm: bool = True,
    impressions: ImpressionLog | None = None,
) -> OnlinePath:
    t0 = time.perf_counter()
    deps = dependencies if dependencies is not None else aws_dependencies(settings)
    runner = read_runner()
    timeout_s = settings.read_timeout_ms / 1000.0
    models = ModelProvider(
        source if source is not None else bundle_source(settings),
        refresh_s=settings.model_refresh_s,
        warm_sizes=(settings.max_candidates,),
        background=background_refresh,
        on_event=on_model_event,
    )
    models.current()  # load at init, not on the first request
    attach_restorer(deps.candidates, models, on_model_event)
    reader = RequestReader(
        runner,
        candidates=deps.candidates,
        sessions=deps.sessions,
        users=deps.users,
        trending=TrendingCache(deps.trending) if deps.trending is not None else None,
        timeout_s=timeout_s,
    )
    recommender = Recommender(
        models,
        reader,
        runner,
        content=deps.content,
        max_candidates=settings.max_candidates,
        budget_s=settings.request_budget_ms / 1000.0,
        read_timeout_s=timeout_s,
        exclude_seen=settings.exclude_seen,
    )
    t_warm = time.perf_counter()
    if warm:
        # The first request must not pay first-call costs (connections, lazy SDK set-up, the
        # first search and inference) inside its deadline: pay them here, as init.
        failed = recommender.warm_up()
        if failed:
            logger.warning("warm-up: dependencies not reachable at init: %s", failed)
    warm_up_ms = (time.perf_counter() - t_warm) * 1000.0
    # Everything built so far lives as long as the container: move it out of the collector's
    # reach, so a full collection does not walk a 100k-item catalogue in the middle of a request.
    gc.collect()
    gc.freeze()
    return OnlinePath(
        recommender=recommender,
        models=models,
        probes=dict(deps.probes or {}),
        settings=settings,
        init_ms=(time.perf_counter() - t0) * 1000.0,
        warm_up_ms=warm_up_ms,
        impressions=impressions if impressions is not None else impression_log(settings),
    )
