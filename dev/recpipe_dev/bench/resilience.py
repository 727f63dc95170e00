"""`recpipe bench resilience`: the online path under faults, phase by phase, from one command.

Setup: a small synthetic shop trained with the real pipeline (recpipe_dev.testing.trained: ALS
candidates + a Keras ranker converted to TFLite), a throw-away redis-server holding the candidate
lists, a moto server standing in for DynamoDB (table from template.yaml), and a local TCP proxy in
front of Redis that can add latency. --workers processes each serve the real
`functions/recommend/app.py` through the local API (recpipe_dev.local.api_server), as concurrent
Lambda instances would, with the deployed budget (REQUEST_BUDGET_MS / READ_TIMEOUT_MS defaults
of template.yaml).

Load: open loop on loopback only, a fixed rate (--rate) of GET /recommendations for known users
(each has a CF list), spread over the workers; every phase runs a fixed time and stops by itself.

Phases (each: steady lead-in, the fault for --fault-s, then recovery until the phase ends):
  steady                  no fault
  redis_paused            SIGSTOP redis-server, SIGCONT after the fault
  redis_restarted_empty   redis-server killed and started empty on the same port
  dynamodb_paused         SIGSTOP the moto server
  slow_redis              the proxy delays every Redis reply past the read deadline
  corrupt_bundle          a new bundle version with a corrupt ranker is published (pointer switch)
  kinesis_puts_failing    the event stream is deleted (puts fail) and created again
In kinesis_puts_failing every 4th request is a POST /events of one event (IngestEventsFunction
in the same workers); for those, "degraded" means the event was not accepted (rejected with
"stream unavailable, retry"), and a good answer is a 202 that accepted it. The other phases send
recommendation requests only: the moto server is both DynamoDB and Kinesis, so pausing it would
also stall the event posts and mix two faults.
Per phase: requests, 5xx, p50/p95/p99 ms, degraded_share, cf_share (answers carrying CF
candidates), recovery_s (fault end -> first of 5 consecutive answers that are not degraded and
carry CF candidates again, as long as the steady phase had them), p50/p99 of the requests sent while
the fault lasted (fault_p50_ms, fault_p99_ms), the workers' CPU ms per request (the
product's own cost) and the connections the workers opened to Redis (through the proxy).

Stream (`--stream-events`, 0 = skip): users with a few events each plus heavy users with more
than 300, and poison records mixed in, on one shard; the real FeatureUpdater (transact mode)
writes through DynamoDBUserFeatureStore to the moto server. The shard is delivered in batches
the way Lambda's event source mapping does (checkpoint after a batch, resume from the lowest
failed record); the updater is "killed" mid-stream (a batch is written but not checkpointed, so
it is delivered again to a fresh updater), the moto server is paused in the middle of a batch
(writes time out: returned as failures, redelivered), the oldest events of the heavy users are
posted again (producer retries, new records), and finally the whole shard is delivered again
from TRIM_HORIZON. Stored features are compared with the ground truth: sent, accepted (valid),
applied (stored event counts), lost, double_applied, poison reported.
Not covered: Kinesis between the API and the updater in the stream part (the shard is simulated in
process; the local KinesisPoller is tested in tests/integration/stream).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ENV_NAME = "resil"
TABLE = "recpipe-resil-users"
PHASES = (
    "steady",
    "redis_paused",
    "redis_restarted_empty",
    "dynamodb_paused",
    "slow_redis",
    "corrupt_bundle",
    "kinesis_puts_failing",
)
STREAM = "recpipe-resil-events"
#: Every n-th request is a POST /events (one event) instead of a GET /recommendations.
EVENTS_EVERY = 4
#: template.yaml defaults: what a deployment runs.
REQUEST_BUDGET_MS = 35
READ_TIMEOUT_MS = 15
RECOVERED_AFTER = 5


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workers", type=int, default=2, help="API worker processes (Lambda instances)")
    parser.add_argument("--rate", type=float, default=30.0, help="requests per second (open loop)")
    parser.add_argument("--phase-s", type=float, default=14.0, help="length of each phase")
    parser.add_argument("--lead-s", type=float, default=3.0, help="seconds before the fault starts")
    parser.add_argument("--fault-s", type=float, default=5.0, help="how long each fault lasts")
    parser.add_argument("--phases", default=",".join(PHASES), help="comma list of phases to run")
    parser.add_argument("--work-dir", type=Path, default=None, help="keep the set-up here (default: temp)")
    parser.add_argument(
        "--stream-events", type=int, default=20_000, help="events of the stream part (0 = skip)"
    )
    parser.add_argument("--stream-users", type=int, default=2_000, help="users of the stream part")
    parser.add_argument("--json", dest="json_out", type=Path, help="also write the report here")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--ready-file", type=Path, default=None, help=argparse.SUPPRESS)


# ---- a TCP proxy that can delay replies ---------------------------------------------------------
class LatencyProxy:
    """127.0.0.1:port -> target; `delay_s` is added before each chunk sent back to the client."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.delay_s = 0.0
        #: Connections clients opened through the proxy (a timed-out Redis call drops its own).
        self.accepted = 0
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        self._stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True, name="proxy-accept").start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._sock.accept()
            except OSError:
                return
            self.accepted += 1
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=2)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            threading.Thread(target=self._pipe, args=(client, upstream, False), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, True), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, delayed: bool) -> None:
        try:
            while chunk := src.recv(65536):
                if delayed and self.delay_s:
                    time.sleep(self.delay_s)
                dst.sendall(chunk)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with suppress(OSError):
                    s.close()

    def close(self) -> None:
        self._stop.set()
        self._sock.close()


# ---- the worker: one local API process ------------------------------------------------------------
def serve(port: int, ready: Path) -> int:
    from recpipe_dev.local.api_server import LocalApi, LocalApiServer

    api = LocalApi()
    api.handler("recommend")  # init (bundle load, warm-up) before the first request
    api.handler("ingest_events")
    server = LocalApiServer(api, port=port)
    server.start()
    ready.write_text("ready")
    signal.sigwait({signal.SIGTERM, signal.SIGINT})
    server.stop()
    return 0


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# ---- load and measurement -------------------------------------------------------------------------
@dataclass(slots=True)
class Sample:
    sent: float
    ms: float
    status: int
    degraded: bool
    cf: bool
    degraded_names: tuple[str, ...] = ()
    events: bool = False


@dataclass
class Phase:
    name: str
    samples: list[Sample] = field(default_factory=list)
    fault_start: float = 0.0
    fault_end: float = 0.0
    cpu_s: float = 0.0
    redis_connections: int = 0


def _get(url: str, body: bytes | None = None) -> tuple[int, dict[str, Any]]:
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, {}
    except OSError:
        return 599, {}


def drive(
    urls: list[str],
    users: list[str],
    rate: float,
    seconds: float,
    *,
    phase: Phase,
    pool: ThreadPoolExecutor,
    events_every: int = 0,
) -> None:
    """Open loop: request n is sent at start + n / rate whatever the answers do; every
    `events_every`-th is a POST /events (0 = none)."""
    start = time.monotonic()
    n, futures = 0, []
    while (due := start + n / rate) < start + seconds:
        time.sleep(max(0.0, due - time.monotonic()))
        base, user = urls[n % len(urls)], users[n % len(users)]
        if events_every and n % events_every == events_every - 1:
            event = {
                "event_id": f"{phase.name}-{n}",
                "user_id": user,
                "item_id": "i1",
                "type": "view",
                "ts": time.time(),
            }
            url, data = f"{base}/events", json.dumps(event).encode()
        else:
            url, data = f"{base}/recommendations?user_id={user}&k=10", None

        def one(url: str = url, data: bytes | None = data) -> None:
            t0 = time.monotonic()
            status, body = _get(url, data)
            ms = (time.monotonic() - t0) * 1000
            if data is not None:
                refused = body.get("accepted") != 1
                phase.samples.append(
                    Sample(t0, ms, status, refused, False, ("events",) if refused else (), True)
                )
                return
            cf = any("cf" in i.get("sources", []) for i in body.get("items", []))
            names = tuple(body.get("degraded", ()))
            phase.samples.append(Sample(t0, ms, status, bool(names), cf, names))

        futures.append(pool.submit(one))
        n += 1
    for f in futures:
        f.result()


def pct(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    s = sorted(values)
    return round(s[min(len(s) - 1, int(q / 100 * len(s)))], 2)


def summarise(phase: Phase, cf_expected: bool) -> dict[str, Any]:
    ms = [s.ms for s in phase.samples]
    n = len(phase.samples)
    recovery: float | None = None
    if phase.fault_end:
        after = sorted((s for s in phase.samples if s.sent >= phase.fault_end), key=lambda s: s.sent)
        run = 0
        for s in after:
            if s.events:
                good = s.status == 202 and not s.degraded
            else:
                good = s.status == 200 and not s.degraded and (s.cf or not cf_expected)
            run = run + 1 if good else 0
            if run == RECOVERED_AFTER:
                recovery = round(
                    max(0.0, after[after.index(s) - RECOVERED_AFTER + 1].sent - phase.fault_end), 2
                )
                break
    # The fault window alone: the phase's figures mix it with the healthy lead-in and recovery.
    in_fault = [s.ms for s in phase.samples if phase.fault_start <= s.sent < phase.fault_end]
    return {
        "requests": n,
        "5xx": sum(s.status >= 500 for s in phase.samples),
        "p50_ms": pct(ms, 50),
        "p95_ms": pct(ms, 95),
        "p99_ms": pct(ms, 99),
        "fault_requests": len(in_fault),
        "fault_p50_ms": pct(in_fault, 50),
        "fault_p99_ms": pct(in_fault, 99),
        # Over the p99 goal (budget + 5 ms): how many, not just the second worst of ~150.
        "fault_over_goal": sum(ms > REQUEST_BUDGET_MS + 5 for ms in in_fault),
        "degraded_share": round(sum(s.degraded for s in phase.samples) / max(1, n), 3),
        # Of the recommendation answers.
        "cf_share": round(
            sum(s.cf for s in phase.samples) / max(1, sum(not s.events for s in phase.samples)), 3
        ),
        "recovery_s": recovery if phase.fault_end else 0.0,
        "cpu_ms_per_request": round(phase.cpu_s * 1000 / max(1, n), 2),
        "redis_connections": phase.redis_connections,
        "degraded_by": dict(Counter(d for s in phase.samples for d in s.degraded_names).most_common()),
    }


# ---- set-up ---------------------------------------------------------------------------------------
@contextmanager
def stack(work: Path, workers: int) -> Iterator[dict[str, Any]]:
    import boto3
    import redis
    from recpipe.adapters.redis_candidates import RedisCandidateCache
    from recpipe.redis_keys import KeyLayout

    from recpipe_dev.local.moto_server import MotoServer
    from recpipe_dev.local.redis_server import RedisServer, free_port
    from recpipe_dev.local.resources import USER_FEATURES_TABLE, dynamodb_create_args, load_template
    from recpipe_dev.testing.trained import trained_bundle

    with ExitStack() as es:
        print("training the bench shop (real pipeline) ...", flush=True)
        result = trained_bundle(work / "train", version="resil-v1")
        models = work / "models"
        (models / "resil-v1").mkdir(parents=True, exist_ok=True)
        for f in result.bundle_dir.iterdir():
            (models / "resil-v1" / f.name).write_bytes(f.read_bytes())
        (models / "CURRENT").write_text("resil-v1")
        redis_srv = RedisServer(work / "redis", port=free_port())
        redis_srv.start()
        es.callback(redis_srv.stop)
        proxy = LatencyProxy(redis_srv.port)
        es.callback(proxy.close)
        moto = es.enter_context(MotoServer(work / "moto.log"))
        env = {
            "AWS_ACCESS_KEY_ID": "bench",
            "AWS_SECRET_ACCESS_KEY": "bench",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_REGION": "us-east-1",
            "AWS_ENDPOINT_URL": moto.url,
            "ENV_NAME": ENV_NAME,
            "AUTH_MODE": "API_KEY",
            "CORS_ALLOW_ORIGIN": "*",
            "REDIS_URL": f"redis://127.0.0.1:{proxy.port}/0",
            "USER_FEATURES_TABLE": TABLE,
            "RECPIPE_BUNDLE_DIR": str(models),
            "EVENT_STREAM_NAME": STREAM,
            "MODEL_REFRESH_S": "1",
            "REQUEST_BUDGET_MS": str(REQUEST_BUDGET_MS),
            "READ_TIMEOUT_MS": str(READ_TIMEOUT_MS),
            "POWERTOOLS_METRICS_DISABLED": "true",
            "POWERTOOLS_METRICS_NAMESPACE": "recpipe-bench",
            "POWERTOOLS_TRACE_DISABLED": "true",
            "POWERTOOLS_LOG_LEVEL": "ERROR",
            "POWERTOOLS_SERVICE_NAME": "recpipe",
            "OPENBLAS_NUM_THREADS": "1",
        }
        ddb = boto3.client(
            "dynamodb",
            endpoint_url=moto.url,
            region_name="us-east-1",
            aws_access_key_id="bench",
            aws_secret_access_key="bench",
        )
        ddb.create_table(**dynamodb_create_args(load_template(), USER_FEATURES_TABLE, TABLE))
        kinesis = boto3.client(
            "kinesis",
            endpoint_url=moto.url,
            region_name="us-east-1",
            aws_access_key_id="bench",
            aws_secret_access_key="bench",
        )
        kinesis.create_stream(StreamName=STREAM, ShardCount=1)
        RedisCandidateCache(redis.Redis.from_url(redis_srv.url), KeyLayout(ENV_NAME)).publish(
            "resil-v1", result.candidates.items(), {"source": "bench"}
        )
        procs, urls = [], []
        for _ in range(workers):
            port = free_port()
            log = es.enter_context(open(work / f"worker-{port}.log", "wb"))
            ready = work / f"ready-{port}"
            ready.unlink(missing_ok=True)
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "recpipe_dev.bench.resilience",
                    "--serve",
                    "--port",
                    str(port),
                    "--ready-file",
                    str(ready),
                ],
                env={**os.environ, **env},
                stdout=log,
                stderr=log,
            )
            es.callback(_stop_worker, proc)
            procs.append((proc, ready))
            urls.append(f"http://127.0.0.1:{port}")
        deadline = time.monotonic() + 120
        for proc, ready in procs:
            while not ready.exists():
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"a worker failed to start; see {work}/worker-*.log")
                time.sleep(0.1)
        yield {
            "urls": urls,
            "pids": [p.pid for p, _ in procs],
            "redis": redis_srv,
            "proxy": proxy,
            "moto_pid": moto.pid,
            "models": models,
            "users": list(result.candidates.user_ids)[:200],
            "moto_url": moto.url,
            "kinesis": kinesis,
        }


def stream_part(ctx: dict[str, Any], n_events: int, n_users: int) -> dict[str, Any]:
    import random

    import boto3
    from botocore.config import Config
    from recpipe.adapters.dynamodb_users import DynamoDBUserFeatureStore
    from recpipe.stream.updater import FeatureUpdater, StreamRecord

    from recpipe_dev.testing.fakes_stream import (
        InMemoryFailureSink,
        InMemorySessionStore,
        InMemoryTrendingStore,
    )

    rnd = random.Random(15)
    now = time.time()
    heavy = max(1, n_users // 100)
    per_heavy = 350
    light_events = max(0, n_events - heavy * per_heavy)
    bodies: list[dict[str, Any]] = []
    for u in range(heavy):
        bodies += [{"user_id": f"h{u}", "n": k} for k in range(per_heavy)]
    for k in range(light_events):
        bodies.append({"user_id": f"l{rnd.randrange(n_users - heavy)}", "n": k})
    rnd.shuffle(bodies)
    events = [
        {
            "event_id": f"{b['user_id']}-{b['n']}",
            "user_id": b["user_id"],
            "item_id": f"i{rnd.randrange(500)}",
            "type": rnd.choice(["view", "view", "click", "add_to_cart"]),
            "ts": now - 3600 + i * 0.1,
        }
        for i, b in enumerate(bodies)
    ]
    truth: dict[str, int] = {}
    for e in events:
        truth[e["user_id"]] = truth.get(e["user_id"], 0) + 1
    shard: list[StreamRecord] = []

    def put(body: dict[str, Any] | bytes, key: str) -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        shard.append(StreamRecord(str(10**20 + len(shard)), data, key, "shardId-000000000000"))

    poison = 0
    for i, e in enumerate(events):
        put(e, e["user_id"])
        if i % 997 == 0:  # an old producer writing straight to the stream
            put({**e, "event_id": f"poison-{i}", "ts": 1e-200}, e["user_id"])
            put(b"\xff not json", e["user_id"])
            poison += 2
    cfg = Config(connect_timeout=0.5, read_timeout=0.5, retries={"max_attempts": 1})
    ddb = boto3.client(
        "dynamodb",
        endpoint_url=ctx["moto_url"],
        region_name="us-east-1",
        config=cfg,
        aws_access_key_id="bench",
        aws_secret_access_key="bench",
    )
    store = DynamoDBUserFeatureStore(ddb, TABLE)
    failures = InMemoryFailureSink()

    def updater() -> FeatureUpdater:  # a fresh Lambda environment
        return FeatureUpdater(
            store, InMemorySessionStore(), InMemoryTrendingStore(), failures, write_mode="transact"
        )

    stats = {"batches": 0, "redelivered_records": 0, "updater_restarts": 0, "pauses": 0}

    def deliver(
        records: list[StreamRecord], *, kill_at: int | None = None, pause_at: int | None = None
    ) -> None:
        u, pos, batch_no = updater(), 0, 0
        while pos < len(records):
            batch = records[pos : pos + 500]
            if pause_at is not None and batch_no == pause_at:
                pause(ctx["moto_pid"])
                threading.Timer(1.0, resume, (ctx["moto_pid"],)).start()
                stats["pauses"] += 1
            result = u.process(batch)
            stats["batches"] += 1
            batch_no += 1
            if kill_at is not None and batch_no == kill_at:
                u, kill_at = updater(), None  # written, never checkpointed: delivered again
                stats["updater_restarts"] += 1
                stats["redelivered_records"] += len(batch)
                continue
            if result.failed:
                first = next(i for i, r in enumerate(batch) if r.sequence_number == result.failed[0])
                stats["redelivered_records"] += len(batch) - first
                pos += first
                time.sleep(0.2)
            else:
                pos += len(batch)

    t0 = time.monotonic()
    deliver(list(shard), kill_at=7, pause_at=15)
    heavy_retries = [
        e for e in events if e["user_id"].startswith("h") and int(e["event_id"].rsplit("-", 1)[1]) < 20
    ]
    for e in heavy_retries:
        put(e, e["user_id"])
    deliver(shard[-len(heavy_retries) :])
    deliver(list(shard))  # a re-created mapping at TRIM_HORIZON
    wall = time.monotonic() - t0
    stored = store.get_many(list(truth))
    applied = {u: s.total_events for u, s in stored.items()}
    lost = sum(max(0, t - applied.get(u, 0)) for u, t in truth.items())
    double = sum(max(0, applied.get(u, 0) - t) for u, t in truth.items())
    sizes = sorted(len(s.applied) for s in stored.values())
    return {
        "sent": len(shard),
        "accepted": len(events),
        "users": len(truth),
        "heavy_users": heavy,
        "events_per_heavy_user": per_heavy,
        "producer_retries": len(heavy_retries),
        "applied": sum(applied.values()),
        "lost": lost,
        "double_applied": double,
        "poison_sent": poison,
        # One report per delivery: the TRIM_HORIZON pass and redeliveries report a record again.
        "poison_reports": len(failures.reports),
        "poison_reported": len({r["sequenceNumber"] for r in failures.reports}),
        **stats,
        "wall_s": round(wall, 1),
        "fingerprint_bytes_max": sizes[-1] if sizes else 0,
    }


def _process_tree(pid: int) -> list[int]:
    """`pid` and its descendants (the moto server's front end runs its app in child workers)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        for task in Path(f"/proc/{p}/task").glob("*/children"):
            todo += [int(c) for c in task.read_text().split()]
    return out


def pause(pid: int) -> None:
    for p in _process_tree(pid):
        os.kill(p, signal.SIGSTOP)


def resume(pid: int) -> None:
    for p in _process_tree(pid):
        os.kill(p, signal.SIGCONT)


def _stop_worker(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


def inject(name: str, ctx: dict[str, Any], fault_s: float) -> None:
    """The fault of phase `name`, lasting fault_s (returns when it is over)."""
    redis_srv = ctx["redis"]
    if name == "redis_paused":
        os.kill(redis_srv.pid, signal.SIGSTOP)
        time.sleep(fault_s)
        os.kill(redis_srv.pid, signal.SIGCONT)
    elif name == "redis_restarted_empty":
        port = redis_srv.port
        redis_srv.stop()
        redis_srv.port = port
        redis_srv.start()  # no persistence: empty
        time.sleep(fault_s)
    elif name == "dynamodb_paused":
        pause(ctx["moto_pid"])
        time.sleep(fault_s)
        resume(ctx["moto_pid"])
    elif name == "slow_redis":
        ctx["proxy"].delay_s = 4 * READ_TIMEOUT_MS / 1000
        time.sleep(fault_s)
        ctx["proxy"].delay_s = 0.0
    elif name == "kinesis_puts_failing":
        ctx["kinesis"].delete_stream(StreamName=STREAM, EnforceConsumerDeletion=True)
        time.sleep(fault_s)
        ctx["kinesis"].create_stream(StreamName=STREAM, ShardCount=1)
    elif name == "corrupt_bundle":
        models: Path = ctx["models"]
        bad = models / "resil-v2"
        bad.mkdir(exist_ok=True)
        for f in (models / "resil-v1").iterdir():
            (bad / f.name).write_bytes(f.read_bytes())
        manifest = json.loads((bad / "manifest.json").read_text())
        manifest["version"] = "resil-v2"
        (bad / "manifest.json").write_text(json.dumps(manifest))
        (bad / "ranker.tflite").write_bytes(b"\x00" * 64)  # checksum and flatbuffer both wrong
        (models / "CURRENT").write_text("resil-v2")
        time.sleep(fault_s)


def run(args: argparse.Namespace) -> int:
    if args.serve:
        return serve(args.port, args.ready_file)
    import tempfile

    phases = [p for p in args.phases.split(",") if p]
    unknown = set(phases) - set(PHASES)
    if unknown:
        raise SystemExit(f"unknown phase(s): {', '.join(sorted(unknown))}")
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="recpipe-resilience-"))
    report: dict[str, Any] = {
        "config": {
            "workers": args.workers,
            "rate_per_s": args.rate,
            "phase_s": args.phase_s,
            "fault_s": args.fault_s,
            "request_budget_ms": REQUEST_BUDGET_MS,
            "read_timeout_ms": READ_TIMEOUT_MS,
            "p99_goal_ms": REQUEST_BUDGET_MS + 5,
            "recovery_goal_s": 2.0,
        },
        "phases": {},
        "not_covered": ["kinesis_between_api_and_updater_in_the_stream_part"],
    }
    t_start = time.monotonic()
    with stack(work, args.workers) as ctx, ThreadPoolExecutor(64, thread_name_prefix="load") as pool:
        cf_expected = True
        for name in phases:
            phase = Phase(name)
            cpu0 = sum(_cpu_s(p) for p in ctx["pids"])
            accepted0 = ctx["proxy"].accepted
            fault = None
            if name != "steady":

                def later(name: str = name, phase: Phase = phase) -> None:
                    time.sleep(args.lead_s)
                    phase.fault_start = time.monotonic()
                    inject(name, ctx, args.fault_s)
                    phase.fault_end = time.monotonic()

                fault = threading.Thread(target=later, daemon=True)
                fault.start()
            every = EVENTS_EVERY if name == "kinesis_puts_failing" else 0
            drive(
                ctx["urls"], ctx["users"], args.rate, args.phase_s, phase=phase, pool=pool, events_every=every
            )
            if fault is not None:
                fault.join()
            phase.cpu_s = sum(_cpu_s(p) for p in ctx["pids"]) - cpu0
            phase.redis_connections = ctx["proxy"].accepted - accepted0
            summary = summarise(phase, cf_expected)
            if name == "steady":
                cf_expected = summary["cf_share"] > 0.5
            report["phases"][name] = summary
            print(f"{name:24s} {json.dumps(summary)}", flush=True)
        if args.stream_events:
            report["stream"] = stream_part(ctx, args.stream_events, args.stream_users)
            print(f"stream {json.dumps(report['stream'])}", flush=True)
    report["wall_s"] = round(time.monotonic() - t_start, 1)
    report["load_average"] = os.getloadavg()
    print_table(report)
    if args.json_out:
        args.json_out.write_text(json.dumps(report, indent=2))
    return 0


def print_table(report: dict[str, Any]) -> None:
    cols = (
        "requests",
        "5xx",
        "p50_ms",
        "p95_ms",
        "p99_ms",
        "fault_p50_ms",
        "fault_p99_ms",
        "fault_over_goal",
        "degraded_share",
        "cf_share",
        "recovery_s",
        "cpu_ms_per_request",
        "redis_connections",
    )
    print("\n" + " | ".join(["phase", *cols]))
    print(" | ".join(["---"] * (len(cols) + 1)))
    for name, s in report["phases"].items():
        print(" | ".join([name, *(str(s[c]) for c in cols)]))
    print(f"\nwall {report['wall_s']} s, load average {report['load_average']}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    sys.exit(run(parser.parse_args()))
