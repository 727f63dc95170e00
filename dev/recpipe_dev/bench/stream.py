"""`recpipe bench stream`: feature-updater throughput and event freshness on the local stack.

Throughput: N synthetic events (Zipf items, several per user, event mix like a shop, UUID event
ids) delivered as Kinesis Lambda events in batches of --batch-size (default: the template's
FeatureUpdaterBatchSize) through `records_from_lambda_event` + `FeatureUpdater.process`,
against a throw-away redis-server and moto DynamoDB. Each user starts with --history events
already folded into its stored state (default 300: the state at its steady-state size), so the
run measures a shop's returning users, not first visits. Runs, each on its own users and from an
empty user table and Redis: once with the real DynamoDB adapter per --write-modes (transact:
TransactWriteItems of up to 100 users per request; item: one conditional PutItem per user on
--write-workers threads); once without the user-state cache (every user read); once with an
in-memory store behind the same cache that still encodes/decodes every item (the updater's own
ceiling, i.e. what one process does when the database is not the limit); and the first write
mode at --extra-batch-sizes. The load average at start and end is recorded: the development
box is shared. The updater process's CPU time is reported too: moto spends its CPU in this
process (in-process mode) or in its own (server mode), so events per updater CPU-second is the
figure that transfers to DynamoDB. In server mode the moto server's and redis-server's CPU per
event are recorded as well (from /proc), which says where a run's time went.

Freshness: for each of --freshness events, time from calling the POST /events handler to
(a) the event in the user's session list, read through SessionStore — the read the
recommendation handler does (measured this way, not through functions/recommend, so the figure
is the stream path's own), and (b) the user's DynamoDB features containing the event, delivered
by the KinesisPoller running in a background thread.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import io
import json
import os
import random
import socket
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[3]
TYPES = (
    ["view"] * 70
    + ["click"] * 15
    + ["add_to_cart"] * 8
    + ["remove_from_cart"] * 2
    + ["purchase"] * 3
    + ["rating"] * 2
)
GENRES = [f"genre-{i}" for i in range(24)]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--events", type=int, default=20_000, help="events for the throughput run")
    parser.add_argument("--users", type=int, default=0, help="distinct users (default events/20)")
    parser.add_argument("--items", type=int, default=5_000)
    parser.add_argument(
        "--history",
        type=int,
        default=300,
        help="events already folded into each user's stored state before the timed run (0 = new "
        "users); with 50 recent items the state is near its steady-state size",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=0,
        help="records per Lambda batch (default: the template's FeatureUpdaterBatchSize)",
    )
    parser.add_argument("--write-workers", type=int, default=16, help="concurrent per-user writes")
    parser.add_argument(
        "--extra-batch-sizes",
        default="100",
        help="also run the first write mode with these records per batch, comma-separated "
        "(FeatureUpdaterBatchSize is a deploy parameter; '' = none)",
    )
    parser.add_argument(
        "--chunk-workers",
        type=int,
        default=0,
        help="chunks of 100 users in flight at once (default: the updater's UPDATER_CHUNK_WORKERS)",
    )
    parser.add_argument(
        "--write-modes",
        default="transact,item",
        help="USER_FEATURES_WRITE_MODE values to run against DynamoDB, comma-separated; the first "
        "is the headline events_per_s (transact: TransactWriteItems of up to 100 users; item: "
        "one PutItem per user)",
    )
    parser.add_argument("--freshness", type=int, default=200, help="events timed for freshness (0 = skip)")
    parser.add_argument(
        "--aws",
        choices=["server", "inprocess"],
        default="server",
        help="moto as a separate moto_server process (default) or in-process mock_aws",
    )
    parser.add_argument(
        "--no-recommend",
        dest="recommend",
        action="store_false",
        help="skip POST -> GET /recommendations freshness (it trains a tiny bundle: ~20 s of TensorFlow)",
    )
    parser.add_argument(
        "--moto-transactions",
        choices=["touched-items", "as-is"],
        default="touched-items",
        help="server mode: the local stack's moto (TransactWriteItems rollback copies the items it "
        "touches; see recpipe_dev.local.moto_app) or moto as-is (copies the whole table per item)",
    )
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", dest="json_out", help="write the report here")


# ---- stats -----------------------------------------------------------------------------------------
def percentiles(samples_ms: Sequence[float]) -> dict[str, float]:
    a = np.asarray(samples_ms, dtype=np.float64)
    if not len(a):
        return {"n": 0}
    return {
        "n": len(a),
        "p50_ms": round(float(np.percentile(a, 50)), 3),
        "p95_ms": round(float(np.percentile(a, 95)), 3),
        "p99_ms": round(float(np.percentile(a, 99)), 3),
        "max_ms": round(float(a.max()), 3),
        "mean_ms": round(float(a.mean()), 3),
    }


def progress(it: Sequence[Any], desc: str) -> Any:
    try:
        from tqdm import tqdm

        return tqdm(it, desc=desc, unit="batch", file=sys.stderr, leave=False)
    except ImportError:  # tqdm is a training/dev extra
        return it


# ---- environment -----------------------------------------------------------------------------------
@contextmanager
def patched_env(**values: str) -> Iterator[None]:
    """Set environment variables for the run and restore them after (the CLI may run in-process)."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def process_cpu_s(pid: int | None) -> float | None:
    """User + system CPU seconds of a process and its direct children (granian's worker), from
    /proc; None where that is not available."""
    if pid is None:
        return None
    try:
        from recpipe_dev.local.moto_server import child_pids

        total = 0
        for p in (pid, *child_pids(pid)):
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime (clock ticks)
        return total / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


#: CPU probes of the other processes doing the work: name -> CPU seconds so far.
SERVER_CPU: dict[str, Callable[[], float | None]] = {}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


#: The local stack's moto server (recpipe_dev.local.moto_app): TransactWriteItems' rollback copies
#: the items it touches (moto as-is deep-copies the whole table per transaction item, O(table)
#: where DynamoDB is O(items), and puts the copies back on cancellation, undoing other clients'
#: writes). `--moto-transactions as-is` runs moto's own transactions.
@contextmanager
def moto_backend(mode: str, *, touched_items: bool = True) -> Iterator[str]:
    """Yields a description; sets AWS_ENDPOINT_URL in server mode."""
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    if mode == "inprocess":
        from moto import mock_aws

        with patched_env(AWS_ENDPOINT_URL=""), mock_aws():
            os.environ.pop("AWS_ENDPOINT_URL")
            yield "moto in-process (mock_aws): DynamoDB/Kinesis CPU is spent in the updater process"
        return
    from recpipe_dev.local.moto_server import MotoServer

    transactions = "touched-items" if touched_items else "as-is"
    log = Path(tempfile.gettempdir()) / f"recpipe-bench-stream-moto-{os.getpid()}.log"
    with (
        MotoServer(log, env={"RECPIPE_MOTO_TRANSACTIONS": transactions}) as server,
        patched_env(AWS_ENDPOINT_URL=server.url),
    ):
        SERVER_CPU["moto_server"] = lambda: process_cpu_s(server.pid)
        note = (
            "; TransactWriteItems rollback copies the items it touches (moto as-is copies "
            "the whole table per item)"
            if touched_items
            else "; moto transactions as-is"
        )
        yield f"moto server at {server.url} (separate process, HTTP via {server.front}){note}"


@dataclass
class Workload:
    lambda_events: list[dict[str, Any]]
    categories: dict[str, tuple[str, ...]]
    n_events: int
    n_users: int
    #: Per user, the events folded into its stored state before the run (`seed_history`).
    history: dict[str, list[dict[str, Any]]]


def make_workload(
    n: int,
    users: int,
    items: int,
    batch_size: int,
    seed: int,
    *,
    prefix: str = "bench",
    history: int = 0,
) -> Workload:
    rng = random.Random(seed)
    np_rng = np.random.default_rng(seed)
    item_rank = np.minimum(np_rng.zipf(1.3, size=n + users * history), items) - 1
    user_ids = [f"{prefix}-u{rng.randrange(users)}" for _ in range(n)]
    now = time.time()

    def body(i: int, user: str, ts: float) -> dict[str, Any]:
        type_ = rng.choice(TYPES)
        out: dict[str, Any] = {
            # Producers' ids are typically UUIDs: their size is what a user's state carries.
            "event_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            "user_id": user,
            "item_id": f"m{int(item_rank[i])}",
            "type": type_,
            "ts": ts,
            "schema_version": 1,
        }
        if type_ == "rating":
            out["value"] = rng.choice([2.0, 3.5, 4.0, 5.0])
        return out

    records = []
    for i in range(n):
        b = body(i, user_ids[i], now - (n - i) * 0.01)
        seq = f"{49600000000000000000000000000000000000000000000000 + i}"
        records.append(
            {
                "kinesis": {
                    "partitionKey": b["user_id"],
                    "sequenceNumber": seq,
                    "data": base64.b64encode(json.dumps(b).encode()).decode(),
                },
                "eventID": f"shardId-000000000000:{seq}",
                "eventSourceARN": "arn:aws:kinesis:us-east-1:000000000000:stream/bench",
            }
        )
    batches = [{"Records": records[s : s + batch_size]} for s in range(0, n, batch_size)]
    categories = {f"m{i}": tuple(rng.sample(GENRES, rng.randint(1, 3))) for i in range(items)}
    # Earlier events of the run's users, one a minute before the run's first.
    past = {}
    for k, user in enumerate(sorted(set(user_ids))):
        first = n + k * history
        past[user] = [body(first + j, user, now - n * 0.01 - (history - j) * 60.0) for j in range(history)]
    return Workload(batches, categories, n, len(set(user_ids)), past)


def seed_history(workload: Workload, store: Any) -> int:
    """The users' states after their history, written before the run through `store` (the
    plain store, not the updater's cache: the run starts as a new process would). Returns the
    mean encoded size of a state in bytes."""
    from recpipe.adapters.dynamodb_users import encode_item
    from recpipe.domain.events import parse_event
    from recpipe.domain.user import apply_event

    if not any(workload.history.values()):
        return 0
    sizes, writes = [], []
    for bodies in workload.history.values():
        state = None
        for b in bodies:
            event = parse_event(b, now=b["ts"])
            state = apply_event(state, event, workload.categories.get(event.item_id, ()))
        if state is not None:
            item = encode_item(state)
            sizes.append(sum(len(v.get("B", b"")) for v in item.values()))
            writes.append((state, 0))
    for start in range(0, len(writes), 100):
        out = store.put_many(writes[start : start + 100])
        bad = [u for u, got in out.items() if isinstance(got, Exception)]
        if bad:
            raise RuntimeError(f"seeding history: {len(bad)} users not written ({out[bad[0]]})")
    return round(sum(sizes) / len(sizes)) if sizes else 0


class SerialisingUserStore:
    """In-memory UserFeatureStore that still encodes and decodes every item like DynamoDB."""

    def __init__(self) -> None:
        from recpipe.adapters.dynamodb_users import decode_item, encode_item

        self._encode, self._decode = encode_item, decode_item
        self._items: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()

    def get(self, user_id: str) -> Any:
        item = self._items.get(user_id)
        return None if item is None else self._decode(item)

    def get_many(self, user_ids: Sequence[str]) -> dict[str, Any]:
        return {u: self._decode(self._items[u]) for u in user_ids if u in self._items}

    def put(self, features: Any, expected_version: int) -> Any:
        from dataclasses import replace

        from recpipe.ports import ConflictError

        stored = replace(features, version=expected_version + 1)
        item = self._encode(stored)
        with self._lock:
            current = self._items.get(features.user_id)
            if (int(current["version"]["N"]) if current else 0) != expected_version:
                raise ConflictError(features.user_id)
            self._items[features.user_id] = item
        return stored

    def put_many(self, writes: Sequence[tuple[Any, int]]) -> dict[str, Any]:
        from recpipe.ports import ConflictError

        out: dict[str, Any] = {}
        for features, expected_version in writes:
            try:
                out[features.user_id] = self.put(features, expected_version)
            except ConflictError as exc:
                out[features.user_id] = exc
        return out


def run_updater(workload: Workload, updater: Any, label: str, write_mode: str) -> dict[str, Any]:
    from recpipe.stream.updater import records_from_lambda_event
    from recpipe.stream.wiring import settle_gc

    # As functions/update_features does after building its updater (the workloads held here
    # are frozen along with it: they are the benchmark's, not the updater's).
    settle_gc()
    batch_ms = []
    failed = writes = 0
    servers0 = {name: probe() for name, probe in SERVER_CPU.items()}
    wall0, cpu0 = time.perf_counter(), time.process_time()
    for event in progress(workload.lambda_events, label):
        t0 = time.perf_counter()
        result = updater.process(records_from_lambda_event(event))
        batch_ms.append((time.perf_counter() - t0) * 1000)
        failed += len(result.failed)
        writes += result.users_written
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    # The other processes' CPU over the run (the moto server, redis-server): with the updater's
    # own, where one event's CPU goes. Clock-tick resolution (10 ms): fine over a whole run.
    servers = {}
    for name, probe in SERVER_CPU.items():
        before, after = servers0[name], probe()
        if before is not None and after is not None:
            servers[f"{name}_cpu_s"] = round(after - before, 2)
            servers[f"{name}_cpu_us_per_event"] = round((after - before) / workload.n_events * 1e6, 1)
    return {
        "write_mode": write_mode,
        "events": workload.n_events,
        "users": workload.n_users,
        "failed_records": failed,
        # One conditional write per user per batch: the figure that sets DynamoDB's share.
        "user_writes": writes,
        "events_per_user_write": round(workload.n_events / writes, 2) if writes else None,
        "wall_s": round(wall, 3),
        "events_per_s": round(workload.n_events / wall, 1),
        "updater_cpu_s": round(cpu, 3),
        "events_per_cpu_s": round(workload.n_events / cpu, 1) if cpu > 0 else None,
        "updater_cpu_us_per_event": round(cpu / workload.n_events * 1e6, 1),
        **servers,
        "batch_latency_ms": percentiles(batch_ms),
        **state_cache_report(updater),
    }


def state_cache_report(updater: Any) -> dict[str, Any]:
    stats = getattr(updater.users, "stats", None)
    if stats is None:
        return {"user_state_cache": None}
    looked_up = stats.hits + stats.misses
    return {
        "user_state_cache": {
            "hits": stats.hits,
            "misses": stats.misses,
            "hit_rate": round(stats.hits / looked_up, 4) if looked_up else None,
            "evictions": stats.evictions,
            "invalidations": stats.invalidations,
        }
    }


# ---- main ------------------------------------------------------------------------------------------
def run(args: argparse.Namespace) -> int:
    import boto3
    import redis
    from recpipe.adapters.dynamodb_users import DynamoDBUserFeatureStore
    from recpipe.adapters.redis_session import RedisSessionStore, RedisTrendingStore
    from recpipe.config import UpdaterSettings, load_settings
    from recpipe.redis_keys import KeyLayout
    from recpipe.stream.updater import FeatureUpdater

    from recpipe_dev.local.redis_server import RedisServer
    from recpipe_dev.local.resources import (
        EVENT_STREAM,
        FAILURE_QUEUE,
        MODEL_BUCKET,
        USER_FEATURES_TABLE,
        LocalNames,
        create_local_resources,
        updater_batch_size,
    )
    from recpipe_dev.testing.fakes_stream import InMemoryFailureSink

    users = args.users or max(1, args.events // 20)
    args.batch_size = args.batch_size or updater_batch_size()
    batch_sizes = [int(b) for b in args.extra_batch_sizes.split(",") if b.strip()]
    modes = [m.strip() for m in args.write_modes.split(",") if m.strip()]
    if not modes or any(m not in ("transact", "item") for m in modes):
        raise SystemExit(f"--write-modes: expected transact and/or item, got {args.write_modes!r}")

    def workload_of(prefix: str, batch_size: int) -> Workload:
        # Every run has its own users (prefix), so each starts from its own history only.
        return make_workload(
            args.events, users, args.items, batch_size, args.seed, prefix=prefix, history=args.history
        )

    workloads = {m: workload_of(f"bench-{m}", args.batch_size) for m in modes}
    workload = workloads[modes[0]]
    report: dict[str, Any] = {
        "benchmark": "stream",
        "config": {
            "events": args.events,
            "users": users,
            "items": args.items,
            "history_events_per_user": args.history,
            "batch_size": args.batch_size,
            "extra_batch_sizes": batch_sizes,
            "write_workers": args.write_workers,
            "write_modes": modes,
            "freshness_events": args.freshness,
            "seed": args.seed,
        },
        "targets": {"events_per_s": 5000, "freshness_session_p99_ms": 50},
        # The box is shared: the load when the run started (and ended, below) frames the figures.
        "load_average_1_5_15_start": [round(x, 2) for x in os.getloadavg()],
        "cpu_count": os.cpu_count(),
    }
    with ExitStack() as stack:
        redis_srv = stack.enter_context(RedisServer(Path(stack.enter_context(tempfile.TemporaryDirectory()))))
        SERVER_CPU["redis_server"] = lambda: process_cpu_s(redis_srv.pid)
        stack.callback(SERVER_CPU.clear)
        report["aws_backend"] = stack.enter_context(
            moto_backend(args.aws, touched_items=args.moto_transactions == "touched-items")
        )
        client = redis.Redis.from_url(redis_srv.url)
        report["redis"] = f"throw-away redis-server {client.info()['redis_version']}"
        names = create_local_resources(boto3.session.Session(), LocalNames("bench"))
        stack.enter_context(
            patched_env(
                ENV_NAME="bench",
                REDIS_URL=redis_srv.url,
                USER_FEATURES_TABLE=names[USER_FEATURES_TABLE],
                EVENT_STREAM_NAME=names[EVENT_STREAM],
                FAILURE_QUEUE_URL=names[FAILURE_QUEUE],
                MODEL_BUCKET=names[MODEL_BUCKET],
                # No model is published in this run: the updater finds no pointer and folds
                # events without item categories, as a deployment before its first retrain.
                MODEL_POINTER_PARAM="/recpipe/bench/model/current",
                AUTH_MODE="API_KEY",
                CORS_ALLOW_ORIGIN="*",
                POWERTOOLS_TRACE_DISABLED="true",
                POWERTOOLS_METRICS_NAMESPACE="recpipe-bench",
                POWERTOOLS_LOG_LEVEL="WARNING",
            )
        )
        layout = KeyLayout("bench")
        categories = workload.categories.get
        from recpipe.stream.wiring import (
            UPDATER_CHUNK_WORKERS,
            updater_dynamodb_client,
            updater_user_store,
            with_state_cache,
        )

        chunk_workers = args.chunk_workers or UPDATER_CHUNK_WORKERS
        report["config"]["chunk_workers"] = chunk_workers

        def updater_with(store: Any, write_workers: int, write_mode: str) -> FeatureUpdater:
            return FeatureUpdater(
                store,
                RedisSessionStore(client, layout),
                RedisTrendingStore(client, layout),
                InMemoryFailureSink(),
                lambda item: categories(item, ()),
                # Transactions carry a chunk's users in one request: no writer threads needed.
                write_workers=write_workers if write_mode == "item" else 1,
                write_mode=write_mode,
                chunk_workers=chunk_workers,
            )

        # The updater's own client and store (build_updater), so what is measured is what runs:
        # the state cache included (USER_STATE_CACHE_USERS). A fresh store (empty cache) per run.
        updater_settings = load_settings(UpdaterSettings)
        ddb = updater_dynamodb_client(updater_settings, write_workers=args.write_workers)
        cache_users = updater_settings.user_state_cache_users
        report["config"]["user_state_cache_users"] = cache_users

        def store() -> Any:
            return updater_user_store(updater_settings, ddb)

        # History goes in through the plain store: each run's cache starts empty, as in a new process.
        plain = DynamoDBUserFeatureStore(ddb, names[USER_FEATURES_TABLE])

        def reset_stores() -> None:
            # Each run starts from an empty user table and Redis. Otherwise the moto server
            # holds every earlier run's items (moto never frees an Item it built), and each
            # garbage collection walks them all, so later runs would be slower than earlier
            # ones for a reason that has nothing to do with the updater.
            client.flushdb()
            boto3.client("dynamodb").delete_table(TableName=names[USER_FEATURES_TABLE])
            create_local_resources(boto3.session.Session(), LocalNames("bench"))

        by_mode = report["updater_dynamodb_by_write_mode"] = {}
        for mode in modes:
            state_bytes = seed_history(workloads[mode], plain)
            report["config"].setdefault("mean_state_bytes", state_bytes)
            by_mode[mode] = run_updater(
                workloads[mode],
                updater_with(store(), args.write_workers, mode),
                f"updater (moto DynamoDB, {mode})",
                mode,
            )
            reset_stores()
        report["updater_dynamodb"] = by_mode[modes[0]]
        if cache_users:
            # Every user read from DynamoDB in every batch: the figure for a process that has
            # not seen its users recently (a cold start, or more active users than the cache).
            wl = workload_of(f"bench-{modes[0]}-nc", args.batch_size)
            seed_history(wl, plain)
            report["updater_dynamodb_without_state_cache"] = run_updater(
                wl,
                updater_with(plain, args.write_workers, modes[0]),
                f"updater (moto DynamoDB, {modes[0]}, no state cache)",
                modes[0],
            )
            reset_stores()
        in_memory = SerialisingUserStore()
        seed_history(workload, in_memory)
        report["updater_in_memory_store"] = run_updater(
            workload,
            # Behind the same state cache as the DynamoDB store: the updater as it runs, with a
            # database that costs nothing.
            updater_with(with_state_cache(in_memory, updater_settings), 1, modes[0]),
            f"updater (in-memory, {modes[0]})",
            modes[0],
        )
        report["events_per_s"] = report["updater_dynamodb"]["events_per_s"]
        report["events_per_s_in_memory_store"] = report["updater_in_memory_store"]["events_per_s"]
        report["events_per_cpu_s"] = report["updater_dynamodb"]["events_per_cpu_s"]
        # FeatureUpdaterBatchSize is a deploy parameter: the first write mode again at the other
        # batch sizes, each on its own users (same events per user overall, more per batch).
        by_batch = report["updater_dynamodb_by_batch_size"] = {
            str(args.batch_size): report["updater_dynamodb"]
        }
        for size in batch_sizes:
            if str(size) in by_batch:
                continue
            wl = workload_of(f"bench-{modes[0]}-b{size}", size)
            seed_history(wl, plain)
            by_batch[str(size)] = run_updater(
                wl,
                updater_with(store(), args.write_workers, modes[0]),
                f"updater (moto DynamoDB, {modes[0]}, batch {size})",
                modes[0],
            )
            by_batch[str(size)]["batch_size"] = size
            reset_stores()

        if args.freshness:
            # The handlers print CloudWatch EMF metrics on stdout: keep the report readable.
            with contextlib.redirect_stdout(io.StringIO()):
                session_ms, ddb_ms = measure_freshness(args.freshness, names, client, layout)
            report["freshness_session_ms"] = percentiles(session_ms)
            report["freshness_dynamodb_ms"] = percentiles(ddb_ms)
            report["freshness_session_read"] = (
                "SessionStore.recent (the recommendation handler's session read)"
            )
            if args.recommend and (ROOT / "functions" / "recommend" / "app.py").is_file():
                with contextlib.redirect_stdout(io.StringIO()):
                    rec_ms, misses, bundle_note = measure_recommendation_freshness(
                        args.freshness, Path(stack.enter_context(tempfile.TemporaryDirectory()))
                    )
                report["freshness_recommendation_ms"] = percentiles(rec_ms)
                report["freshness_recommendation_first_get_misses"] = misses
                report["freshness_recommendation_setup"] = bundle_note

    report["load_average_1_5_15_end"] = [round(x, 2) for x in os.getloadavg()]
    print_report(report)
    if args.json_out:
        Path(args.json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json_out).write_text(json.dumps(report, indent=2))
    return 0


def measure_freshness(
    n: int, names: dict[str, str], client: Any, layout: Any
) -> tuple[list[float], list[float]]:
    import importlib.util

    from recpipe.adapters.dynamodb_users import DynamoDBUserFeatureStore
    from recpipe.adapters.redis_session import RedisSessionStore
    from recpipe.clients import aws_client
    from recpipe.config import UpdaterSettings, load_settings

    from recpipe_dev.local.poller import KinesisPoller, PollerContext
    from recpipe_dev.local.resources import EVENT_STREAM, USER_FEATURES_TABLE, updater_batch_size

    def load(name: str) -> Any:
        spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "functions" / name / "app.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    ingest, update = load("ingest_events"), load("update_features")
    template = json.loads((ROOT / "events" / "ingest_single.json").read_text())
    sessions = RedisSessionStore(client, layout)
    users = DynamoDBUserFeatureStore(
        aws_client("dynamodb", load_settings(UpdaterSettings)), names[USER_FEATURES_TABLE]
    )
    poller = KinesisPoller(
        aws_client("kinesis", load_settings(UpdaterSettings)),
        names[EVENT_STREAM],
        update.handler,
        batch_size=updater_batch_size(),
        starting_position="LATEST",
        idle_sleep_s=0.002,
    )
    poller.start()
    session_ms: list[float] = []
    ddb_ms: list[float] = []
    warmup = 10  # cold start: handler imports, connections, the poller's first iterators
    try:
        for i in progress(list(range(n + warmup)), "freshness"):
            user = f"fresh-u{i % 20}"
            body = {
                "event_id": f"fresh-{i}-{time.time_ns()}",
                "user_id": user,
                "item_id": f"m{i}",
                "type": "click",
                "ts": time.time(),
            }
            event = dict(template, body=json.dumps(body))
            t0 = time.perf_counter()
            resp = ingest.handler(
                event, PollerContext(deadline=time.monotonic() + 10, function_name="ingest")
            )
            if resp["statusCode"] != 202 or json.loads(resp["body"])["accepted"] != 1:
                raise RuntimeError(f"event not accepted: {resp}")
            item, event_id = str(body["item_id"]), str(body["event_id"])
            wait_until(lambda: any(e.item_id == item for e in sessions.recent(user, 5)), 5.0)  # noqa: B023
            t_session = time.perf_counter()
            wait_until(
                lambda: (state := users.get(user)) is not None and state.has_applied(event_id),  # noqa: B023
                30.0,
                pause_s=0.002,
            )
            if i >= warmup:
                session_ms.append((t_session - t0) * 1000)
                ddb_ms.append((time.perf_counter() - t0) * 1000)
    finally:
        poller.stop()
    return session_ms, ddb_ms


def measure_recommendation_freshness(n: int, work_dir: Path) -> tuple[list[float], int, str]:
    """POST a view, then GET /recommendations through the recommend handler until the answer
    shows it: an item recommended "because you viewed <that item>" (a session neighbour).
    Each event uses a new user so the session holds exactly that one view."""
    import importlib.util

    from recpipe.bundle import load_bundle

    from recpipe_dev.local.poller import PollerContext
    from recpipe_dev.testing.trained import trained_bundle

    trained = trained_bundle(work_dir, version="bench-v1")
    bundle = load_bundle(trained.bundle_dir)
    items = bundle.items
    anchors = [i for i in range(len(items)) if len(bundle.neighbours.of(i)[0]) >= 5][:50]
    env = {
        "RECPIPE_BUNDLE_DIR": str(trained.bundle_dir),
        # k = pool size: every candidate is in the answer, whatever the tiny model's ranking.
        "MAX_CANDIDATES": "100",
        # The local stack's deadlines (deployed: 15/35 ms) on a shared machine.
        "READ_TIMEOUT_MS": "100",
        "REQUEST_BUDGET_MS": "300",
    }
    note = (
        f"recommend handler, bundle trained by recpipe_dev.testing.trained ({len(items)} items), "
        "GET k=100 with MAX_CANDIDATES=100, READ_TIMEOUT_MS=100, REQUEST_BUDGET_MS=300"
    )
    with patched_env(**env):

        def load(name: str) -> Any:
            spec = importlib.util.spec_from_file_location(
                f"bench_rec_{name}", ROOT / "functions" / name / "app.py"
            )
            assert spec is not None and spec.loader is not None
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            return module

        ingest, recommend = load("ingest_events"), load("recommend")
        post_tpl = json.loads((ROOT / "events" / "ingest_single.json").read_text())
        samples: list[float] = []
        misses = 0
        warmup = 5
        for n_event in progress(list(range(n + warmup)), "freshness via /recommendations"):
            anchor = anchors[n_event % len(anchors)]
            user = f"rec-u{n_event}-{time.time_ns()}"
            body = {
                "event_id": f"rec-{user}",
                "user_id": user,
                "item_id": items.item_ids[anchor],
                "type": "view",
                "ts": time.time(),
            }
            get = {
                "resource": "/recommendations",
                "path": "/recommendations",
                "httpMethod": "GET",
                "headers": {},
                "multiValueHeaders": {},
                "queryStringParameters": {"user_id": user, "k": "100"},
                "multiValueQueryStringParameters": None,
                "requestContext": {
                    "requestId": f"bench-{n_event}",
                    "resourcePath": "/recommendations",
                    "httpMethod": "GET",
                    "stage": "bench",
                },
                "body": None,
                "isBase64Encoded": False,
            }
            wanted = f"because you viewed {items.titles[anchor]}"
            t0 = time.perf_counter()
            resp = ingest.handler(
                dict(post_tpl, body=json.dumps(body)), PollerContext(time.monotonic() + 10, "ingest")
            )
            if resp["statusCode"] != 202:
                raise RuntimeError(f"event not accepted: {resp}")
            for attempt in range(100):
                out = recommend.handler(get, PollerContext(time.monotonic() + 10, "recommend"))
                if any(i["reason"] == wanted for i in json.loads(out["body"]).get("items", [])):
                    break
                if attempt == 0 and n_event >= warmup:
                    misses += 1
            else:
                raise TimeoutError(f"{wanted!r} never appeared for {user}")
            if n_event >= warmup:
                samples.append((time.perf_counter() - t0) * 1000)
    return samples, misses, note


def wait_until(check: Callable[[], bool], timeout_s: float, pause_s: float = 0.0) -> None:
    deadline = time.perf_counter() + timeout_s
    while not check():
        if time.perf_counter() > deadline:
            raise TimeoutError(f"not visible within {timeout_s} s")
        if pause_s:
            time.sleep(pause_s)


def print_report(r: dict[str, Any]) -> None:
    print(f"stream benchmark — {r['aws_backend']}; {r['redis']}")
    c = r["config"]
    print(
        f"workload: {c['events']} events, {c['users']} users with {c['history_events_per_user']} "
        f"events of history each (state ~{c['mean_state_bytes']} bytes), {c['items']} items, "
        f"batch {c['batch_size']}, {c['write_workers']} write workers (item mode); "
        f"load average {r['load_average_1_5_15_start']} -> {r['load_average_1_5_15_end']} "
        f"on {r['cpu_count']} CPUs"
    )
    print(
        f"{'updater run':<34}{'events/s':>10}{'ev/cpu-s':>10}{'batch p50':>11}{'p95':>9}{'p99':>9}"
        f"{'CPU us/event: updater':>23}{'moto':>6}{'redis':>7}"
    )
    runs = [(u, f"moto DynamoDB, {m}") for m, u in r["updater_dynamodb_by_write_mode"].items()]
    first = c["write_modes"][0]
    runs += [
        (u, f"moto DynamoDB, {first}, batch {size}")
        for size, u in r.get("updater_dynamodb_by_batch_size", {}).items()
        if size != str(c["batch_size"])
    ]
    if "updater_dynamodb_without_state_cache" in r:
        runs.append((r["updater_dynamodb_without_state_cache"], f"moto DynamoDB, {first}, no cache"))
    runs.append((r["updater_in_memory_store"], "in-memory store (ceiling)"))
    for u, label in runs:
        b = u["batch_latency_ms"]
        cache = u.get("user_state_cache")
        print(
            f"{label:<34}{u['events_per_s']:>10.0f}{u['events_per_cpu_s'] or 0:>10.0f}"
            f"{b['p50_ms']:>9.1f}ms{b['p95_ms']:>7.1f}ms{b['p99_ms']:>7.1f}ms"
            f"{u['updater_cpu_us_per_event']:>23.0f}{u.get('moto_server_cpu_us_per_event', 0):>6.0f}"
            f"{u.get('redis_server_cpu_us_per_event', 0):>7.0f}"
            + (
                f"  state cache hit rate {cache['hit_rate']:.0%}"
                if cache and cache["hit_rate"] is not None
                else ""
            )
        )
    for key, label in (
        ("freshness_session_ms", "POST -> session visible"),
        ("freshness_recommendation_ms", "POST -> in /recommendations"),
        ("freshness_dynamodb_ms", "POST -> DynamoDB features"),
    ):
        if key in r:
            f = r[key]
            print(
                f"{label:<28}p50 {f['p50_ms']:.1f} ms  p95 {f['p95_ms']:.1f} ms  p99 {f['p99_ms']:.1f} ms  (n={f['n']})"
            )
