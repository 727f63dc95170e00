"""Builds the stream path's services from settings (one place; handlers, poller and CLI share it)."""

from __future__ import annotations

import gc
import logging
import tempfile
from pathlib import Path
from typing import Any

from recpipe.adapters.dynamodb_users import DynamoDBUserFeatureStore
from recpipe.adapters.kinesis import KinesisEventPublisher
from recpipe.adapters.redis_session import RedisSessionStore, RedisTrendingStore
from recpipe.adapters.sqs import SqsFailureSink
from recpipe.clients import aws_client, redis_client
from recpipe.config import IngestSettings, ModelSettings, UpdaterSettings
from recpipe.ports import FailureSink, UserFeatureStore
from recpipe.redis_keys import KeyLayout
from recpipe.stream import dynamodb_codec
from recpipe.stream.categories import ItemCategories, local_bundle_locator, s3_bundle_locator
from recpipe.stream.ingest import EventIngestor
from recpipe.stream.state_cache import CachedUserFeatureStore
from recpipe.stream.updater import FeatureUpdater

logger = logging.getLogger(__name__)

#: The updater process's cycle-collector thresholds (CPython's default: 700, 10, 10). A batch
#: allocates ~100,000 short-lived containers that reference counting frees; at 700 the young
#: generation was collected ~6 times per batch and the user-state cache made each full
#: collection ~18 ms: ~8 % of the stream benchmark's wall time. A collection's cost is the
#: containers still alive when it runs: at 10,000 the young generation caught most of a batch's
#: records, events and states in flight (and the middle one again) before they were freed;
#: at 100,000 a collection runs about once a batch and sees mostly the states the cache keeps
#: (the collector's instructions per event: 117 M -> 44 M of ~1.9 G for 3,000 events, callgrind).
#: The updater's objects form no cycles; what cyclic garbage a library makes waits for at
#: most 100,000 allocations.
UPDATER_GC_THRESHOLDS = (100_000, 20, 20)


def settle_gc() -> None:
    """Once the updater is built: what the cold start made (SDK models, clients) is frozen out
    of full collections, and the collector runs less often (UPDATER_GC_THRESHOLDS)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*UPDATER_GC_THRESHOLDS)


def build_ingestor(settings: IngestSettings) -> EventIngestor:
    # One SDK attempt: KinesisEventPublisher retries (failed records only) within its budget.
    kinesis = aws_client("kinesis", settings, read_timeout_s=1.0, attempts=1)
    sessions = RedisSessionStore(
        # Not the online read deadline: read-your-writes is worth a slower write (and the TLS
        # handshake of a cold start), and a timeout only degrades to "session via the updater".
        redis_client(settings, timeout_s=0.25),
        KeyLayout(settings.env_name),
    )
    return EventIngestor(KinesisEventPublisher(kinesis, settings.event_stream_name), sessions)


#: Concurrent per-user conditional writes: a DynamoDB write is ~5 ms of waiting, so a batch of
#: 100 users written one by one would cap a shard below its own 1,000 records/s ingest limit.
UPDATER_WRITE_WORKERS = 16


#: Chunks of 100 users (one BatchGetItem + one transaction each) in flight at once in a large
#: batch: while one chunk waits on DynamoDB, the next is folded and encoded.
UPDATER_CHUNK_WORKERS = 3


def updater_dynamodb_client(settings: UpdaterSettings, *, write_workers: int = UPDATER_WRITE_WORKERS) -> Any:
    """The updater's one DynamoDB client (shared by all writer threads; botocore clients are
    thread-safe). One HTTP connection per writer thread (botocore's default pool holds 10).
    No client-side parameter validation: DynamoDBUserFeatureStore builds every request itself,
    DynamoDB validates them anyway, and walking a 100-item transaction's attribute tree was a
    quarter of the updater's botocore CPU (measured with cProfile in bench/stream.py).
    AttributeValues are (de)serialised by recpipe.stream.dynamodb_codec (same bytes, ~4x
    less CPU than botocore's shape walk)."""
    client = aws_client("dynamodb", settings, max_pool=max(10, write_workers), validate=False)
    dynamodb_codec.install(client)
    return client


def updater_user_store(settings: UpdaterSettings, dynamodb: Any) -> UserFeatureStore:
    """The updater's user features: DynamoDB, behind the state cache unless it is turned off."""
    return with_state_cache(DynamoDBUserFeatureStore(dynamodb, settings.user_features_table), settings)


def with_state_cache(store: UserFeatureStore, settings: UpdaterSettings) -> UserFeatureStore:
    """`store` behind the user-state cache (USER_STATE_CACHE_USERS; 0: the store itself)."""
    if settings.user_state_cache_users:
        return CachedUserFeatureStore(store, settings.user_state_cache_users)
    return store


def build_updater(settings: UpdaterSettings, *, write_workers: int = UPDATER_WRITE_WORKERS) -> FeatureUpdater:
    client = redis_client(settings, timeout_s=1.0)
    dynamodb = updater_dynamodb_client(settings, write_workers=write_workers)
    layout = KeyLayout(settings.env_name)
    failures: FailureSink = SqsFailureSink(aws_client("sqs", settings), settings.failure_queue_url)
    return FeatureUpdater(
        updater_user_store(settings, dynamodb),
        RedisSessionStore(client, layout),
        RedisTrendingStore(client, layout),
        failures,
        item_categories(settings),
        write_workers=write_workers,
        write_mode=settings.user_features_write_mode,
        chunk_workers=UPDATER_CHUNK_WORKERS,
    )


def item_categories(settings: ModelSettings) -> ItemCategories:
    if settings.bundle_dir:
        locate = local_bundle_locator(Path(settings.bundle_dir))
    else:
        bucket, pointer = settings.s3_pointer()
        # This process's own directory (a version name is unique only within one bucket).
        cache = Path(tempfile.mkdtemp(prefix="recpipe-items-"))
        locate = s3_bundle_locator(
            aws_client("ssm", settings),
            aws_client("s3", settings, read_timeout_s=10.0),
            pointer,
            bucket,
            cache,
        )
    return ItemCategories(locate, refresh_s=settings.model_refresh_s)
