"""`recpipe bench serving`: the recommendation handler's latency per candidate count and per
stage, its cold-start initialisation and its resident memory, on the local stack.

Setup (cached under --cache-dir, keyed by the shop's parameters): a synthetic shop
(recpipe_dev.synthetic) of --items items, trained once with recpipe.training.pipeline
.train_bundle (ALS candidates + a Keras ranker converted to TFLite). A throw-away redis-server
holds the candidate lists (RedisCandidateCache.publish), live sessions and trending (the stream
path's stores); a moto server in its own process stands in for DynamoDB (table from
template.yaml, user features written with DynamoDBUserFeatureStore from the users' replayed
history). The bundle is read from a local directory (RECPIPE_BUNDLE_DIR), not from S3.

Measurement: each candidate count runs in a fresh worker process, like a fresh Lambda
container: it imports functions/recommend/app.py (timed: imports + bundle load + verification +
smoke inference + ranker allocation = init), then calls handler() with API Gateway REST events
(GET /recommendations, k=10, known users that have a CF list, stored features and a session),
--warmup untimed then --requests timed, one at a time. Latency is the wall time of handler()
(routing, validation, the concurrent reads, candidates, assembly, inference, rules, logging,
metrics). Stages come from the RecommendationResult of each request. Logs and EMF metrics are
written as in Lambda (to /dev/null here). Cold-start (unknown) users are measured separately
at the largest candidate count. Memory: the worker's VmRSS after its requests (and VmHWM), for
bundles of each --rss-catalogues size.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[3]
ENV_NAME = "bench"
TABLE = "recpipe-bench-users"
MAX_SAMPLES = 2000
STAGES = ("reads", "candidates", "assembly", "inference", "rules")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--candidates", default="100,500,1000", help="comma list of pool sizes (MAX_CANDIDATES)"
    )
    parser.add_argument("--requests", type=int, default=1000, help="timed requests per candidate count")
    parser.add_argument("--warmup", type=int, default=100, help="untimed requests first (per worker)")
    parser.add_argument("--items", type=int, default=100_000, help="catalogue size of the latency runs")
    parser.add_argument(
        "--rss-catalogues",
        default="10000,50000,100000",
        help="catalogue sizes for the memory runs ('' = skip)",
    )
    parser.add_argument(
        "--no-redis-tls",
        dest="redis_tls",
        action="store_false",
        help="plain TCP to Redis (deployed: TLS; AUTH is always on)",
    )
    parser.add_argument("--users", type=int, default=20_000, help="users in the synthetic shop")
    parser.add_argument(
        "--interactions", type=int, default=600_000, help="interactions in the synthetic shop"
    )
    parser.add_argument(
        "--bench-users", type=int, default=1000, help="users with stored features and a session"
    )
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument(
        "--read-timeout-ms",
        type=float,
        help="READ_TIMEOUT_MS for the handler (default: RecommendSettings' default)",
    )
    parser.add_argument(
        "--budget-ms", type=float, help="REQUEST_BUDGET_MS for the handler (default: RecommendSettings')"
    )
    parser.add_argument("--init-runs", type=int, default=3, help="fresh processes timed for initialisation")
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=Path(tempfile.gettempdir()) / "recpipe-bench-serving",
        help="bundle cache",
    )
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument(
        "--experiments",
        action="store_true",
        help="only the feedback-loop figures: p99 with impressions off/on (interleaved, at the "
        "largest --candidates) and resident memory with two bundles live (a 50/50 split)",
    )
    parser.add_argument("--json", dest="json_out", type=Path, help="write the report here")
    parser.add_argument("--worker", nargs=2, metavar=("CONFIG", "OUT"), help=argparse.SUPPRESS)


# ---- statistics ------------------------------------------------------------------------------
def summary(samples: Sequence[float], wall_s: float | None = None) -> dict[str, float]:
    import numpy as np

    a = np.asarray(samples, dtype=np.float64)
    out = {
        "n": len(a),
        "p50_ms": round(float(np.percentile(a, 50)), 4),
        "p95_ms": round(float(np.percentile(a, 95)), 4),
        "p99_ms": round(float(np.percentile(a, 99)), 4),
        "max_ms": round(float(a.max()), 4),
        "mean_ms": round(float(a.mean()), 4),
    }
    if wall_s:
        out["requests_per_s"] = round(len(a) / wall_s, 1)
    return out


# ---- setup: trained bundle (cached) ----------------------------------------------------------------
def shop_key(args: argparse.Namespace, n_items: int) -> str:
    """Cache key of a trained shop: its parameters and the feature spec (a bundle trained by an
    older spec is refused by the loader, so it must not be reused)."""
    from recpipe.domain.features import feature_spec_hash
    from recpipe.training.pipeline import TrainParams

    # a bundle of another factor or embedding size is another shop
    p = TrainParams()
    shape = f"k{p.factors}-e{p.embedding_factors or p.factors}"
    return (
        f"shop-{n_items}i-{args.users}u-{args.interactions}x-s{args.seed}-f{feature_spec_hash()[:8]}-{shape}"
    )


def trained_shop(args: argparse.Namespace, n_items: int) -> Path:
    """Directory with `bundle/` (a trained bundle) and `candidates.npz`; trained once."""
    out = args.cache_dir / shop_key(args, n_items)
    if (out / "bundle" / "manifest.json").is_file() and (out / "done").is_file():
        return out
    from recpipe.training.pipeline import TrainParams, train_bundle

    from recpipe_dev.synthetic import generate

    print(f"training a bundle on {n_items:,} items (cached in {out}) ...", flush=True)
    t0 = time.perf_counter()
    log, items = generate(args.users, n_items, args.interactions, seed=args.seed)
    # the model shapes a deployment serves (ALS factors: the item embeddings the handler holds and
    # multiplies) are the defaults; only training-side sample sizes are cut for the bench's time
    params = TrainParams(max_examples=4000, max_replay_users=3000, max_eval_users=500)
    train_bundle(log, items, out, version=f"bench-{n_items}", params=params, progress=True)
    (out / "done").write_text(f"{time.perf_counter() - t0:.1f} s\n")
    return out


# ---- setup: the local stack --------------------------------------------------------------------
@contextmanager
def moto_server(workdir: Path) -> Iterator[tuple[str, str]]:
    """The local stack's moto server (recpipe_dev.local.moto_server): (url, HTTP front end)."""
    from recpipe_dev.local.moto_server import MotoServer

    with MotoServer(workdir / "moto.log") as server:
        yield server.url, server.front


def populate(args: argparse.Namespace, shop: Path, redis_url: str, moto_url: str) -> dict[str, Any]:
    """Candidate lists, sessions, trending (Redis) and user features (DynamoDB) for the bench users."""
    import numpy as np
    import redis
    from recpipe.adapters.dynamodb_users import DynamoDBUserFeatureStore
    from recpipe.adapters.redis_candidates import RedisCandidateCache
    from recpipe.adapters.redis_session import RedisSessionStore, RedisTrendingStore
    from recpipe.bundle import load_bundle
    from recpipe.domain.user import apply_events
    from recpipe.ports import SessionEntry
    from recpipe.redis_keys import KeyLayout, trending_bucket_of
    from recpipe.training.candidates import CandidateLists

    from recpipe_dev.local.resources import USER_FEATURES_TABLE, dynamodb_create_args, load_template
    from recpipe_dev.local.stack import aws_session
    from recpipe_dev.synthetic import generate

    t0 = time.perf_counter()
    layout = KeyLayout(ENV_NAME)
    client = redis.Redis.from_url(redis_url)
    candidates = CandidateLists.load(shop / "candidates.npz")
    RedisCandidateCache(client, layout).publish("bench-c1", candidates.items(), {"source": "bench"})
    bundle = load_bundle(shop / "bundle")
    items = bundle.items
    log, _ = generate(args.users, len(items), args.interactions, seed=args.seed)
    with_cf = [u for u, _ in candidates.items()]
    rng = np.random.default_rng(args.seed)
    users = sorted(rng.choice(with_cf, size=min(args.bench_users, len(with_cf)), replace=False).tolist())
    codes = np.asarray([log.user_index[u] for u in users], np.int32)
    sub = log.take(np.isin(log.users, codes)).sorted_by_time()
    by_user: dict[str, list[Any]] = {}
    for ev in sub.events():
        by_user.setdefault(ev.user_id, []).append(ev)
    cats = {i: items.categories(n) for n, i in enumerate(items.item_ids)}
    ddb = aws_session(moto_url).client("dynamodb")
    ddb.create_table(**dynamodb_create_args(load_template(), USER_FEATURES_TABLE, TABLE))
    store = DynamoDBUserFeatureStore(ddb, TABLE)
    sessions = RedisSessionStore(client, layout)
    now = time.time()
    for u in users:
        events = by_user.get(u, [])
        state = apply_events(None, events, cats)
        if state is not None:
            store.put(state, expected_version=0)
        # The user's last few interactions, replayed as if they happened in the last minutes.
        recent = events[-5:]
        sessions.append(
            u,
            [
                SessionEntry(e.item_id, e.type.value, now - 60 * (len(recent) - j))
                for j, e in enumerate(recent)
            ],
        )
    top = np.argsort(-items.popularity)[:200]
    bucket = trending_bucket_of(now)
    RedisTrendingStore(client, layout).add(
        {(bucket, items.item_ids[i]): float(200 - r) for r, i in enumerate(top)}
    )
    client.close()
    return {"users": users, "setup_s": round(time.perf_counter() - t0, 1)}


def dependency_baseline(users: Sequence[str], redis_url: str, moto_url: str, n: int = 300) -> dict[str, Any]:
    """Latency of the single reads the handler makes, called directly (no handler around them)."""
    import redis
    from recpipe.adapters.dynamodb_users import DynamoDBUserFeatureStore
    from recpipe.adapters.redis_candidates import RedisCandidateCache
    from recpipe.adapters.redis_session import RedisSessionStore
    from recpipe.redis_keys import KeyLayout

    from recpipe_dev.local.stack import aws_session

    client = redis.Redis.from_url(redis_url)
    layout = KeyLayout(ENV_NAME)
    ddb = aws_session(moto_url).client("dynamodb")
    calls: dict[str, Callable[[str], Any]] = {
        "dynamodb_get_item": DynamoDBUserFeatureStore(ddb, TABLE, consistent_read=False).get,
        "redis_candidate_list": RedisCandidateCache(client, layout).get,
        "redis_session": RedisSessionStore(client, layout).recent,
    }
    out = {}
    for name, fn in calls.items():
        fn(users[0])
        lat = []
        for i in range(n):
            t = time.perf_counter()
            fn(users[i % len(users)])
            lat.append((time.perf_counter() - t) * 1000.0)
        out[name] = summary(lat)
    client.close()
    return out


def content_dir_for(shop: Path) -> Path:
    """The in-process content index of the shop (what the retrain workflow publishes locally)."""
    out = shop / "content"
    if (out / "CURRENT").is_file():
        return out
    from recpipe.adapters.content_index import InProcessContentIndexWriter
    from recpipe.bundle import load_bundle
    from recpipe.ports import ContentDoc

    items = load_bundle(shop / "bundle").items
    InProcessContentIndexWriter(out).publish(
        "bench",
        (
            ContentDoc(i, items.titles[n], tuple(items.categories(n)), popularity=float(items.popularity[n]))
            for n, i in enumerate(items.item_ids)
        ),
    )
    return out


# ---- the worker: one fresh process = one cold container -------------------------------------------
def rss_mb() -> tuple[float, float]:
    status = Path("/proc/self/status").read_text().splitlines()
    fields = {line.split(":")[0]: line.split()[1] for line in status if line.startswith(("VmRSS", "VmHWM"))}
    return int(fields["VmRSS"]) / 1024.0, int(fields["VmHWM"]) / 1024.0


def worker(config_path: str, out_path: str) -> int:
    t_start = time.perf_counter()
    import importlib.util

    cfg = json.loads(Path(config_path).read_text())
    os.environ.update(cfg["env"])
    if cfg.get("in_process"):
        return in_process_worker(cfg, out_path)
    # Logs and metrics are produced as in Lambda; here they go nowhere.
    devnull = open(os.devnull, "w")  # noqa: SIM115 - lives as long as the process
    sys.stdout = devnull
    t0, cpu0 = time.perf_counter(), time.process_time()
    spec = importlib.util.spec_from_file_location(
        "recommend_app", ROOT / "functions" / "recommend" / "app.py"
    )
    assert spec is not None and spec.loader is not None
    app = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(app)
    init_ms = (time.perf_counter() - t0) * 1000.0
    # CPU time too: on a shared machine wall time includes waiting for a core.
    init_cpu_ms = (time.process_time() - cpu0) * 1000.0
    model = app.online.models.model
    result: dict[str, Any] = {
        "init_ms": round(init_ms, 1),
        "init_cpu_ms": round(init_cpu_ms, 1),
        "since_process_start_ms": round((time.perf_counter() - t_start) * 1000.0, 1),
        "bundle_load_ms": round(model.load_ms, 1) if model else None,
        "warm_up_ms": round(app.online.warm_up_ms, 1),
        "model_version": model.version if model else None,
        "ready_at": time.time(),
    }
    if cfg.get("init_only"):
        result["rss_mb"], result["rss_peak_mb"] = rss_mb()
        Path(out_path).write_text(json.dumps(result))
        return 0

    timings: list[dict[str, float]] = []
    degraded: dict[str, int] = {}
    #: Per request: answered as a cold start, and with content-index candidates in its pool.
    paths: list[tuple[bool, bool]] = []
    real = app.online.recommender.recommend

    #: Per request: whether any dependency was degraded (skipped or late).
    degraded_flags: list[bool] = []

    def observed(request: Any) -> Any:
        r = real(request)
        timings.append(r.timings)
        degraded_flags.append(bool(r.degraded))
        paths.append((bool(r.cold_start), r.source_counts.get("content", 0) > 0))
        for d in r.degraded:
            # "name: reason" with numbers stripped, so equal causes count together.
            why = "".join(ch for ch in r.failures.get(d, "")[:60] if not ch.isdigit())
            key = f"{d}: {why}"
            degraded[key] = degraded.get(key, 0) + 1
        return r

    app.online.recommender.recommend = observed
    # The impression's cost on the request path: the append the handler makes per request
    # (wall and thread CPU; the wrapper's own two clock reads are charged to it).
    record_ms: list[float] = []
    record_cpu_ms: list[float] = []
    log = app.online.impressions
    if log is not None:
        real_record = log.record

        def timed_record(**fields: Any) -> None:
            t, c = time.perf_counter(), time.thread_time()
            real_record(**fields)
            record_cpu_ms.append((time.thread_time() - c) * 1000.0)
            record_ms.append((time.perf_counter() - t) * 1000.0)

        log.record = timed_record
    template = json.loads((ROOT / "events" / "recommend_get.json").read_text())

    class Context:
        function_name = "recpipe-bench-recommend"
        memory_limit_in_mb = 1024
        invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:recpipe-bench-recommend"
        aws_request_id = "bench"

        def get_remaining_time_in_millis(self) -> int:
            return 5000

    ctx = Context()
    devices = ("web", "mobile", "tablet")

    def send(i: int, user: str, tag: str) -> float:
        """One GET /recommendations through handler(); its wall time in ms."""
        event = dict(template)
        q = {"user_id": user, "k": str(cfg["k"]), "device": devices[i % 3]}
        event["queryStringParameters"] = q
        event["multiValueQueryStringParameters"] = {key: [v] for key, v in q.items()}
        event["requestContext"] = {**template["requestContext"], "requestId": f"{tag}-{i}"}
        t = time.perf_counter()
        resp = app.handler(event, ctx)
        ms = (time.perf_counter() - t) * 1000.0
        if resp["statusCode"] != 200:
            raise RuntimeError(f"request {i} answered {resp['statusCode']}: {resp['body'][:300]}")
        return ms

    def drive(users: Sequence[str], n: int, tag: str) -> tuple[list[float], list[dict[str, float]], float]:
        timings.clear()
        paths.clear()
        t_all = time.perf_counter()
        latencies = [send(i, users[i % len(users)], tag) for i in range(n)]
        return latencies, list(timings), time.perf_counter() - t_all

    users = cfg["users"]
    drive(users, cfg["warmup"], "warm")
    degraded.clear()
    if cfg.get("impression_arms"):
        assert log is not None, "impression arms need the impression log configured"
        record_ms.clear()
        record_cpu_ms.clear()

        def send_staged(i: int, user: str, tag: str) -> tuple[float, dict[str, float]]:
            ms = send(i, user, tag)
            stages = dict(timings[-1]) if timings else {}
            stages["degraded"] = float(degraded_flags[-1]) if degraded_flags else 0.0
            return ms, stages

        result["impression_arms"] = impression_arms(
            app.online,
            log,
            send_staged,
            users,
            per_arm=cfg["requests"],
            block=cfg["impression_arms"]["block"],
        )
        result["impression_arms"]["record_call"] = {
            "wall_ms": summary(record_ms),
            "cpu_ms": summary(record_cpu_ms),
            "cpu_ms_total": round(sum(record_cpu_ms), 3),
        }
        result["degraded"] = dict(degraded)
        Path(out_path).write_text(json.dumps(result))
        return 0
    lat, stages, wall = drive(users, cfg["requests"], "req")
    result["known"] = {"latencies": lat, "stages": stages, "wall_s": wall, "degraded": dict(degraded)}
    if cfg.get("cold_requests"):
        degraded.clear()
        cold_users = [f"bench-new-{i}" for i in range(cfg["cold_requests"])]
        lat, stages, wall = drive(cold_users, cfg["cold_requests"], "cold")
        result["cold"] = {
            "latencies": lat,
            "stages": stages,
            "wall_s": wall,
            "degraded": dict(degraded),
            "answered_as_cold_start": sum(c for c, _ in paths),
            "with_content_index_candidates": sum(x for _, x in paths),
        }
    result["rss_mb"], result["rss_peak_mb"] = rss_mb()
    result["loaded_versions"] = app.online.models.loaded_versions()
    impressions = app.online.impressions
    if impressions is not None:
        impressions.close()  # after the timed requests: what the background thread delivered
        result["impressions"] = impressions.stats()
        result["impression_record_ms"] = summary(record_ms)
    Path(out_path).write_text(json.dumps(result))
    return 0


def impression_arms(
    online: Any,
    log: Any,
    send: Callable[[int, str, str], tuple[float, dict[str, float]]],
    users: Sequence[str],
    *,
    per_arm: int,
    block: int,
) -> dict[str, Any]:
    """Requests with impressions on and off, in alternating blocks of one process and stack.

    A repetition is three blocks of `block` requests next to each other in time: "on", "off" and
    "control", a second off block (an A/A comparison: what the same design reports between two
    identical arms, i.e. the machine's noise). Off is always in the middle; on comes first in
    even repetitions and last in odd ones (control the other way), so a drift in machine load
    cancels. On: the handler logs every served list and the log's thread writes on its own
    timer, as deployed; a block whose last request ends while a write runs is extended (requests
    still logging) until that write ends. Off: nothing is logged and writes are held
    (ImpressionLog.writes_held): a flush that falls due then starts with the next on block, as
    one that falls due while Lambda has the container frozen starts with the next invocation.
    So every write, and the interpreter lock it holds, falls inside on blocks; flushes come when
    500 lines wait or IMPRESSION_FLUSH_S of the whole run's time has passed (at most three times
    the deployed rate per logged request: the other blocks' time counts). Warm-up impressions are written
    before the first block (that first flush also opens the writer's connection)."""
    cpu0 = time.thread_time()
    warm = log.flush()
    warm_flush = {"lines": warm, "cpu_ms": round((time.thread_time() - cpu0) * 1000.0, 3)}
    stats0 = dict(log.stats())
    writer = log.writer
    calls0, records0 = getattr(writer, "calls", None), getattr(writer, "records_sent", None)
    retries0 = getattr(writer, "retries", 0)
    # Each writer call (inside the log's write lock, so never while writes are held): when it
    # ran (perf_counter, as the requests), its thread CPU and its lines.
    flushes: list[tuple[float, float, float, int]] = []
    real_write = writer.write

    def timed_write(lines: Sequence[bytes]) -> list[tuple[bytes, str]]:
        t, c = time.perf_counter(), time.thread_time()
        failed: list[tuple[bytes, str]] = real_write(lines)
        flushes.append((t, time.perf_counter(), (time.thread_time() - c) * 1000.0, len(lines)))
        return failed

    writer.write = timed_write
    reps: list[dict[str, Any]] = []
    i = 0

    Request = tuple[float, float, dict[str, float]]

    def run(n: int, tag: str) -> list[Request]:
        """n requests: (start, wall ms, stage ms) each."""
        nonlocal i
        out = []
        for _ in range(n):
            t = time.perf_counter()
            out.append((t, *send(i, users[i % len(users)], tag)))
            i += 1
        return out

    def on_block() -> list[Request]:
        online.impressions = log
        lat = run(block, "on")
        while log.writing():
            lat += run(1, "on")
        online.impressions = None
        return lat

    def off_block(n: int) -> list[Request]:
        with log.writes_held():
            return run(n, "off")

    online.impressions = None
    tail = 0
    try:
        while sum(len(r["on"]) for r in reps) < per_arm:
            if len(reps) % 2 == 0:
                on = on_block()
                off = off_block(len(on))
                control = off_block(len(on))
            else:
                control = off_block(block)
                off = off_block(block)
                on = on_block()
            first = "on" if len(reps) % 2 == 0 else "control"
            reps.append({"first": first, "on": on, "off": off, "control": control})
        # What the last on blocks left buffered is written now, from another thread, while the
        # last on block goes on (without logging) until that write ends.
        final = threading.Thread(target=log.flush, name="bench-final-flush")
        final.start()
        while final.is_alive():
            reps[-1]["on"] += run(1, "on-final")
            tail += 1
        final.join()
    finally:
        online.impressions = log
        writer.write = real_write
    left = log.stats()["buffered"]
    stats1 = log.stats()
    log_delta = {
        k: stats1[k] - stats0.get(k, 0) for k in ("recorded", "written", "failed", "dropped", "flushes")
    }

    def stage_medians(requests: Sequence[Request]) -> dict[str, float]:
        import numpy as np

        if not requests:
            return {}
        reads = [st.get("reads", 0.0) for _, _, st in requests]
        compute = [sum(st.get(k, 0.0) for k in STAGES[1:]) for _, _, st in requests]
        return {
            "n": len(requests),
            "degraded_requests": int(sum(st.get("degraded", 0.0) for _, _, st in requests)),
            "wall_ms_p50": round(float(np.median([ms for _, ms, _ in requests])), 3),
            "reads_ms_p50": round(float(np.median(reads)), 3),
            "compute_ms_p50": round(float(np.median(compute)), 3),
        }

    on_all = [q for r in reps for q in r["on"]]
    overlapping = [
        q for q in on_all if any(f0 < q[0] + q[1] / 1000.0 and q[0] < f1 for f0, f1, _, _ in flushes)
    ]
    # Do flushes make dependencies degrade (a read late or skipped)? Degraded on-arm requests
    # that started within 0.5 s after a writer call started, against the rest of the on arm.
    starts = sorted(f0 for f0, _, _, _ in flushes)
    near = [q for q in on_all if any(f0 <= q[0] + q[1] / 1000.0 and q[0] <= f0 + 0.5 for f0 in starts)]
    near_ids = {id(q) for q in near}
    rest = [q for q in on_all if id(q) not in near_ids]

    def degraded_share(requests: Sequence[Request]) -> dict[str, float]:
        n = sum(1 for _, _, st in requests if st.get("degraded"))
        return {"requests": len(requests), "degraded": n, "share": round(n / max(1, len(requests)), 5)}

    degraded_near_flushes = {
        "what": "degraded on-arm requests (a dependency late or skipped) within 0.5 s after a writer call "
        "started, against the other on-arm requests and the off arm",
        "within_0_5_s_after_a_flush": degraded_share(near),
        "other_on_arm": degraded_share(rest),
        "off_arm": degraded_share([q for r in reps for q in r["off"]]),
    }
    out: dict[str, Any] = {
        "repetitions": [
            {"first": r["first"], **{arm: [q[1] for q in r[arm]] for arm in ("on", "off", "control")}}
            for r in reps
        ],
        "warm_up_flush": warm_flush,
        "final_flush_requests": tail,
        "log": log_delta,
        "left_buffered_at_end": left,
        "flushes": [
            {"lines": n, "cpu_ms": round(c, 3), "wall_ms": round((f1 - f0) * 1000.0, 3)}
            for f0, f1, c, n in flushes
        ],
        "requests_overlapping_a_flush_ms": [round(q[1], 3) for q in overlapping],
        "stages_overlapping_a_flush": stage_medians(overlapping),
        "stages_on_arm": stage_medians(on_all),
        "stages_off_arm": stage_medians([q for r in reps for q in r["off"]]),
        "degraded_near_flushes": degraded_near_flushes,
        "flush_cpu_ms": round(stats1["flush_cpu_ms"] - stats0["flush_cpu_ms"], 3),
    }
    if calls0 is not None:
        out["writer"] = {
            "calls": writer.calls - calls0,
            "records_sent": writer.records_sent - records0,
            "retries": writer.retries - retries0,
            "last_retry_reason": writer.last_retry_reason,
        }
    return out


def two_bundle_dir(shop: Path, workdir: Path) -> Path:
    """A directory of versions holding the shop's bundle twice (two versions, separate copies
    in memory once loaded) and a 50/50 experiment between them, as a canary deployment has."""
    from recpipe.adapters.s3_models import DirectoryModelStore
    from recpipe.domain.experiments import parse_experiment

    root = workdir / "two-bundles"
    for version in ("bench-a", "bench-b"):
        out = root / version
        out.mkdir(parents=True, exist_ok=True)
        for f in (shop / "bundle").iterdir():
            if f.name != "manifest.json" and not (out / f.name).exists():
                (out / f.name).symlink_to(f)
        manifest = json.loads((shop / "bundle" / "manifest.json").read_text())
        (out / "manifest.json").write_text(json.dumps({**manifest, "version": version}))
    store = DirectoryModelStore(root)
    store.set_current("bench-a")
    store.set_experiment(
        parse_experiment(
            {
                "name": "bench",
                "salt": "bench",
                "variants": [
                    {"name": "control", "bundle": "bench-a", "weight": 50},
                    {"name": "treatment", "bundle": "bench-b", "weight": 50},
                ],
            }
        )
    )
    return root


def arm_differences(
    reps: Sequence[dict[str, Any]], arm: str, base: str, per_arm: dict[str, dict[str, float]]
) -> dict[str, Any]:
    """p50/p95/p99 of `arm` minus those of `base`: pooled, per repetition (median, min, max) and a
    95 % interval from the repetitions resampled with replacement (each keeps its blocks
    together), 2,000 times."""
    import numpy as np

    out: dict[str, Any] = {}
    rng = np.random.default_rng(0)
    picks = [rng.integers(0, len(reps), len(reps)) for _ in range(2000)]
    for q, pct in (("p50", 50), ("p95", 95), ("p99", 99)):
        per_rep = [round(float(np.percentile(r[arm], pct) - np.percentile(r[base], pct)), 3) for r in reps]
        boot = [
            float(
                np.percentile(np.concatenate([reps[j][arm] for j in pick]), pct)
                - np.percentile(np.concatenate([reps[j][base] for j in pick]), pct)
            )
            for pick in picks
        ]
        out[f"{q}_change_ms"] = round(per_arm[arm][f"{q}_ms"] - per_arm[base][f"{q}_ms"], 3)
        out[f"{q}_change_ms_bootstrap_95ci"] = [round(float(np.percentile(boot, p)), 3) for p in (2.5, 97.5)]
        out[f"{q}_change_ms_per_repetition"] = per_rep
        out[f"{q}_change_ms_per_repetition_median_min_max"] = [
            round(float(np.median(per_rep)), 3), min(per_rep), max(per_rep),
        ]  # fmt: skip
    return out


def impression_report(res: dict[str, Any], block: int) -> dict[str, Any]:
    """Per-arm percentiles, the on-off differences per repetition and their spread, and the
    product's CPU per impression, from one impression_arms worker."""
    import numpy as np

    arms = res["impression_arms"]
    reps = arms["repetitions"]
    pooled = {arm: [x for r in reps for x in r[arm]] for arm in ("on", "off", "control")}
    per_arm = {arm: summary(lat) for arm, lat in pooled.items()}
    change = arm_differences(reps, "on", "off", per_arm)
    control = arm_differences(reps, "control", "off", per_arm)
    log = arms["log"]
    written = max(1, log["written"])
    record_cpu = arms["record_call"]["cpu_ms_total"]
    flush_cpu = arms["flush_cpu_ms"]
    flushes = arms["flushes"]
    overlapping = arms["requests_overlapping_a_flush_ms"]
    hi = change["p99_change_ms_bootstrap_95ci"][1]
    # What flushes can do to the p99 at most: they slow only the requests they overlap (a share
    # s of the on arm); even if each of those moved above the 99th percentile, the on arm's p99
    # would be the off arm's (99 / (1 - s))th percentile, plus the append every request pays.
    share = len(overlapping) / max(1, per_arm["on"]["n"])
    off_all = np.asarray(pooled["off"])  # the tail of the requests a flush did not touch
    bound = (
        float(np.percentile(off_all, min(100.0, 99.0 / (1.0 - share))) - np.percentile(off_all, 99.0))
        + arms["record_call"]["wall_ms"]["mean_ms"]
    )
    return {
        "design": "one worker process and stack; repetitions of three adjacent blocks of "
        f"{block} requests: on (impressions logged; the block runs on while a write it started is "
        "running), off, and control (off again: an A/A check); off in the middle, on first in even "
        "repetitions and last in odd ones; during off and control blocks nothing is logged and the log's "
        "writes are held, so every flush runs inside on blocks (a flush due meanwhile starts with the "
        "next on block, as after a Lambda freeze); flushes come when 500 lines wait or "
        "IMPRESSION_FLUSH_S of the whole run's time has passed (at most three times the deployed rate "
        "per logged request)",
        "writer": "FirehoseImpressionWriter (PutRecordBatch, lines packed into records) to moto's Firehose, "
        "which writes to the archive bucket in the same moto server that answers the DynamoDB reads",
        "repetitions": len(reps),
        "per_arm": {
            "impressions_on": per_arm["on"],
            "impressions_off": per_arm["off"],
            "control_impressions_off_again": per_arm["control"],
        },
        **change,
        "a_a_control": {
            "what": "the same differences between the control arm and the off arm (both without impressions, "
            "interleaved the same way): what this design reports when there is no difference, i.e. the "
            "machine's noise at this load",
            **control,
        },
        "p99_change_target_ms": 0.5,
        "p99_change_within_target": change["p99_change_ms"] <= 0.5,
        "p99_change_bootstrap_upper_within_target": hi <= 0.5,
        "p99_change_bound_from_flush_overlap_ms": {
            "what": "the most the flushes can move the p99 by: requests overlapping a flush are a share s of "
            "the on arm, so at worst the on arm's p99 is the off arm's (99 / (1 - s))th percentile; plus the "
            "mean append every logged request pays",
            "share_overlapping": round(share, 5),
            "bound_ms": round(bound, 3),
        },
        "record_call_on_request_path": {
            "what": "ImpressionLog.record in the handler (encode the line, append it), per logged request",
            **arms["record_call"],
        },
        "cpu_per_impression_ms": {
            "what": "the product's own CPU: record (request path, the line's encoding) and the background "
            "flushes (packing, PutRecordBatch through boto3: serialisation, signing, HTTP, response), "
            "per impression",
            "record": round(record_cpu / max(1, log["recorded"]), 4),
            "flush": round(flush_cpu / written, 4),
            "total": round(record_cpu / max(1, log["recorded"]) + flush_cpu / written, 4),
        },
        "flushes": {
            "what": "the log's flushes during the blocks and each writer call they made (packing + one "
            "PutRecordBatch): lines, thread CPU, wall time (the archive's answer included)",
            "count": log["flushes"],
            "cpu_ms_per_flush_mean": round(flush_cpu / max(1, log["flushes"]), 3),
            "writer_calls": len(flushes),
            "lines_per_call": [f["lines"] for f in flushes],
            "cpu_ms_per_call": [f["cpu_ms"] for f in flushes],
            "wall_ms_per_call": [f["wall_ms"] for f in flushes],
        },
        "requests_overlapping_a_flush": {
            "what": "on-arm requests whose wall time overlapped a background write, and their latency",
            "count": len(overlapping),
            "share_of_on_arm": round(len(overlapping) / max(1, per_arm["on"]["n"]), 5),
            "latencies_ms": overlapping,
            "on_arm_p50_ms": per_arm["on"]["p50_ms"],
            "stage_medians": {
                "what": "median wall, reads (the concurrent Redis/DynamoDB reads, moto included) and compute "
                "(candidates..rules) of the requests that overlapped a flush, of all on-arm and of all off-arm "
                "requests: where a flush's slowdown lands",
                "overlapping_a_flush": arms["stages_overlapping_a_flush"],
                "on_arm": arms["stages_on_arm"],
                "off_arm": arms["stages_off_arm"],
            },
        },
        "degraded_near_flushes": arms["degraded_near_flushes"],
        "log": log,
        "left_buffered_at_end": arms["left_buffered_at_end"],
        "final_flush_requests": arms["final_flush_requests"],
        "writer_calls": arms.get("writer"),
        "warm_up_flush": arms["warm_up_flush"],
        "degraded_requests": res.get("degraded", {}),
    }


def run_experiments(
    args: argparse.Namespace,
    *,
    shop: Path,
    users: list[str],
    base_env: dict[str, str],
    moto_url: str,
    workdir: Path,
) -> dict[str, Any]:
    """Impressions on/off in alternating blocks of one worker (impression_arms) and two bundles' RSS."""
    from recpipe_dev.local.stack import aws_session

    count = max(int(c) for c in args.candidates.split(",") if c)
    bucket, stream = "recpipe-bench-archive", "recpipe-bench-impressions"
    session = aws_session(moto_url)
    session.client("s3").create_bucket(Bucket=bucket)
    # The writer deployed in AWS (FirehoseImpressionWriter, PutRecordBatch) against moto's
    # Firehose, which writes each batch to the archive bucket as it arrives.
    session.client("firehose").create_delivery_stream(
        DeliveryStreamName=stream,
        DeliveryStreamType="DirectPut",
        ExtendedS3DestinationConfiguration={
            "BucketARN": f"arn:aws:s3:::{bucket}",
            "RoleARN": "arn:aws:iam::123456789012:role/recpipe-bench-firehose",
            "Prefix": "impressions/",
        },
    )
    cfg = {"users": users, "k": args.k, "warmup": args.warmup, "requests": args.requests, "cold_requests": 0}
    env = {**base_env, "MAX_CANDIDATES": str(count)}
    block = max(50, args.requests // 10)
    print(
        f"impressions on/off in alternating blocks of {block} requests, {args.requests} requests per arm ...",
        flush=True,
    )
    res = run_worker(
        {**cfg, "impression_arms": {"block": block}, "env": {**env, "IMPRESSION_STREAM_NAME": stream}},
        workdir,
        "imp-arms",
    )
    out: dict[str, Any] = {"candidates": count, "impressions": impression_report(res, block)}
    print("two bundles live (50/50) ...", flush=True)
    two = run_worker(
        {
            **cfg,
            "requests": 400,
            "warmup": 0,
            "env": {**env, "RECPIPE_BUNDLE_DIR": str(two_bundle_dir(shop, workdir))},
        },
        workdir,
        "two-bundles",
    )
    one = run_worker({**cfg, "requests": 400, "warmup": 0, "env": env}, workdir, "one-bundle")
    out["rss_two_bundles"] = {
        "catalogue_items": args.items,
        "loaded_versions": two["loaded_versions"],
        "rss_mb_two_bundles": round(two["rss_mb"], 1),
        "rss_peak_mb_two_bundles": round(two["rss_peak_mb"], 1),
        "rss_mb_one_bundle": round(one["rss_mb"], 1),
        "what": "worker RSS after 400 requests; the in-process content index (local only) is in both",
    }
    return out


def in_process_worker(cfg: dict[str, Any], out_path: str) -> int:
    """The Recommender alone with in-memory stores (recpipe_dev.testing fakes): the compute path
    without network reads, so its percentiles are the code's and the machine's, not moto's."""
    import numpy as np
    from recpipe.bundle import load_bundle
    from recpipe.config import RecommendSettings, load_settings
    from recpipe.domain.events import Event
    from recpipe.domain.user import apply_events
    from recpipe.ports import SessionEntry
    from recpipe.redis_keys import trending_bucket_of
    from recpipe.serving.model_provider import LocalBundleSource
    from recpipe.serving.request import parse_query
    from recpipe.serving.runtime import Dependencies, build_online_path
    from recpipe.training.candidates import CandidateLists

    from recpipe_dev.testing.fakes_candidates import InMemoryCandidateCache
    from recpipe_dev.testing.fakes_stream import (
        InMemorySessionStore,
        InMemoryTrendingStore,
        InMemoryUserFeatureStore,
    )

    shop = Path(cfg["shop"])
    source = LocalBundleSource(shop / "bundle")
    items = load_bundle(shop / "bundle").items
    lists = list(CandidateLists.load(shop / "candidates.npz").items())[: cfg["users"]]
    cache, users = InMemoryCandidateCache(), InMemoryUserFeatureStore()
    sessions, trending = InMemorySessionStore(), InMemoryTrendingStore()
    cache.publish("bench", lists, {})
    rng = np.random.default_rng(cfg["seed"])
    now = time.time()
    kinds = ["view"] * 6 + ["click", "click", "add_to_cart", "purchase"]
    for user_id, _ in lists:
        picks = rng.integers(0, len(items), 60).tolist()
        events = [
            Event(event_id=f"{user_id}-{j}", user_id=user_id, item_id=items.item_ids[i], type=kinds[j % 10], ts=now - 86400 + 60 * j)  # type: ignore[arg-type]
            for j, i in enumerate(picks)
        ]  # fmt: skip
        state = apply_events(None, events, {items.item_ids[i]: items.categories(i) for i in picks})
        assert state is not None
        users.items[user_id] = state
        sessions.append(user_id, [SessionEntry(e.item_id, e.type.value, now - 60 * (5 - n)) for n, e in enumerate(events[-5:])])  # fmt: skip
    top = np.argsort(-items.popularity)[:200]
    trending.add({(trending_bucket_of(now), items.item_ids[i]): float(200 - r) for r, i in enumerate(top)})
    settings = load_settings(
        RecommendSettings, {**cfg["env"], "READ_TIMEOUT_MS": "1000", "REQUEST_BUDGET_MS": "2000"}
    )
    deps = Dependencies(candidates=cache, sessions=sessions, users=users, trending=trending)
    recommender = build_online_path(
        settings, dependencies=deps, source=source, background_refresh=False
    ).recommender
    ids = [u for u, _ in lists]
    devices = ("web", "mobile", "tablet")
    requests = [
        parse_query({"user_id": ids[i % len(ids)], "k": str(cfg["k"]), "device": devices[i % 3]})
        for i in range(cfg["warmup"] + cfg["requests"])
    ]
    stages: list[dict[str, float]] = []
    cpu: list[float] = []
    for n, request in enumerate(requests):
        c0 = time.thread_time()
        result = recommender.recommend(request)
        if n >= cfg["warmup"]:
            cpu.append((time.thread_time() - c0) * 1000.0)
            stages.append(result.timings)
    Path(out_path).write_text(json.dumps({"stages": stages, "main_thread_cpu_ms": cpu}))
    return 0


def run_worker(config: dict[str, Any], workdir: Path, name: str) -> dict[str, Any]:
    cfg_path, out_path = workdir / f"{name}.json", workdir / f"{name}.out.json"
    cfg_path.write_text(json.dumps(config))
    t_spawn = time.time()
    proc = subprocess.run(
        [sys.executable, "-m", "recpipe_dev.bench.serving", "--worker", str(cfg_path), str(out_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        # The parent's path too: the worker must run the same code as the parent.
        env={
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        },
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"worker {name} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(out_path.read_text())
    if "ready_at" in result:
        result["process_ready_ms"] = round((result.pop("ready_at") - t_spawn) * 1000.0, 1)
    return result


def stage_summary(stages: Sequence[dict[str, float]]) -> dict[str, dict[str, float]]:
    out = {s: summary([t[s] for t in stages if s in t]) for s in STAGES if any(s in t for t in stages)}
    compute = [sum(t.get(s, 0.0) for s in STAGES[1:]) for t in stages]
    out["compute"] = summary(compute)
    return out


def bounded(samples: Sequence[float]) -> list[float]:
    step = max(1, len(samples) // MAX_SAMPLES)
    return [round(x, 4) for x in samples[::step][:MAX_SAMPLES]]


# ---- main ----------------------------------------------------------------------------------------
def run(args: argparse.Namespace) -> int:
    if args.worker:
        return worker(*args.worker)
    from recpipe_dev.local.redis_server import RedisServer

    counts = [int(c) for c in args.candidates.split(",") if c]
    rss_sizes = [int(c) for c in args.rss_catalogues.split(",") if c]
    args.cache_dir.mkdir(parents=True, exist_ok=True)
    shop = trained_shop(args, args.items)
    shops = {} if args.experiments else {n: trained_shop(args, n) for n in rss_sizes}
    report: dict[str, Any] = {
        "benchmark": "serving",
        "setup": {
            "catalogue_items": args.items,
            "shop_users": args.users,
            "shop_interactions": args.interactions,
            "bench_users": args.bench_users,
            "k": args.k,
            "requests": args.requests,
            "warmup": args.warmup,
            "bundle_source": "local directory (RECPIPE_BUNDLE_DIR)",
            "content_index": "in-process (CONTENT_INDEX_DIR)",
            "machine_cpus": os.cpu_count(),
            # The machine is shared: the 1/5/15-minute load averages when the run started.
            "load_average_start": [round(x, 2) for x in os.getloadavg()],
        },
        "by_candidates": {},
        "samples_ms": {},
    }
    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="recpipe-bench-serving-") as tmp:
        workdir = Path(tmp)
        # As ElastiCache is deployed: TLS (in-transit encryption, certificate verified against
        # the CA made at start-up) and AUTH, the token read from Secrets Manager by the handler.
        token = secrets.token_urlsafe(24)
        redis_srv = stack.enter_context(RedisServer(workdir / "redis", tls=args.redis_tls, password=token))
        redis_url = redis_srv.url
        moto_url, front = stack.enter_context(moto_server(workdir))
        report["setup"]["dynamodb"] = f"moto server in its own process (HTTP on localhost, {front})"
        report["setup"]["redis"] = (
            "throw-away redis-server, "
            + ("TLS (rediss://, verified)" if args.redis_tls else "plain TCP")
            + " + AUTH token from Secrets Manager (moto)"
        )
        from recpipe_dev.local.stack import aws_session

        secret_arn = (
            aws_session(moto_url)
            .client("secretsmanager")
            .create_secret(Name="recpipe-bench-redis-auth", SecretString=json.dumps({"password": token}))[
                "ARN"
            ]
        )
        print("populating Redis and DynamoDB ...", flush=True)
        pop = populate(args, shop, redis_url, moto_url)
        report["setup"]["populate_s"] = pop["setup_s"]
        report["dependencies_direct"] = dependency_baseline(pop["users"], redis_url, moto_url)
        base_env = {
            "ENV_NAME": ENV_NAME,
            "REDIS_URL": redis_srv.url_without_password,
            "REDIS_AUTH_SECRET_ARN": secret_arn,
            "AWS_ENDPOINT_URL": moto_url,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "USER_FEATURES_TABLE": TABLE,
            "AUTH_MODE": "API_KEY",
            "CORS_ALLOW_ORIGIN": "*",
            "RECPIPE_BUNDLE_DIR": str(shop / "bundle"),
            "CONTENT_INDEX_DIR": str(content_dir_for(shop)),
            "POWERTOOLS_TRACE_DISABLED": "true",
            "POWERTOOLS_SERVICE_NAME": "recommend",
            "POWERTOOLS_METRICS_NAMESPACE": "recpipe-bench",
        }
        if args.read_timeout_ms:
            base_env["READ_TIMEOUT_MS"] = str(args.read_timeout_ms)
        if args.budget_ms:
            base_env["REQUEST_BUDGET_MS"] = str(args.budget_ms)
        from recpipe.config import RecommendSettings, load_settings

        effective = load_settings(RecommendSettings, base_env)
        report["setup"]["read_timeout_ms"] = effective.read_timeout_ms
        report["setup"]["request_budget_ms"] = effective.request_budget_ms
        if args.experiments:
            report = {"benchmark": "serving-experiments", "setup": report["setup"]}
            report.update(
                run_experiments(
                    args, shop=shop, users=pop["users"], base_env=base_env, moto_url=moto_url, workdir=workdir
                )
            )
            report["setup"]["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
            print(json.dumps({k: v for k, v in report.items() if k != "setup"}, indent=2))
            if args.json_out:
                args.json_out.parent.mkdir(parents=True, exist_ok=True)
                args.json_out.write_text(json.dumps(report, indent=2) + "\n")
                print(f"report written to {args.json_out}")
            return 0
        for count in counts:
            cfg = {
                "env": {**base_env, "MAX_CANDIDATES": str(count)},
                "users": pop["users"],
                "k": args.k,
                "warmup": args.warmup,
                "requests": args.requests,
                # New users (no CF list, no features): the content index + popularity path.
                "cold_requests": max(50, args.requests // 5),
            }
            print(f"{count} candidates: {args.warmup} warm-up + {args.requests} requests ...", flush=True)
            res = run_worker(cfg, workdir, f"c{count}")
            known = res["known"]
            entry: dict[str, Any] = dict(summary(known["latencies"], known["wall_s"]))
            entry["stages"] = stage_summary(known["stages"])
            entry["degraded_requests"] = known["degraded"]
            entry["init_ms"] = res["init_ms"]
            entry["rss_mb"] = round(res["rss_mb"], 1)
            report["by_candidates"][str(count)] = entry
            report["samples_ms"][str(count)] = bounded(known["latencies"])
            if "cold" in res:
                cold = res["cold"]
                entry["cold_start_users"] = report["cold_start_users"] = {
                    "candidates": count,
                    **summary(cold["latencies"], cold["wall_s"]),
                    "stages": stage_summary(cold["stages"]),
                    "degraded_requests": cold["degraded"],
                    "answered_as_cold_start": cold["answered_as_cold_start"],
                    "with_content_index_candidates": cold["with_content_index_candidates"],
                }
        report["in_process"] = {
            "what": "Recommender with in-memory stores (no network reads), same bundle, one fresh "
            "process per count, OPENBLAS_NUM_THREADS=1 as in the handler; users with a CF list, "
            "60 random stored interactions and a 5-entry session; main_thread_cpu = thread CPU "
            "time of recommend() (wall minus preemption and waiting)",
            "by_candidates": {},
        }
        for count in counts:
            print(
                f"{count} candidates in-process: {args.warmup} warm-up + {args.requests} requests ...",
                flush=True,
            )
            cfg = {
                "env": {**base_env, "MAX_CANDIDATES": str(count), "OPENBLAS_NUM_THREADS": "1"},
                "in_process": True,
                "shop": str(shop),
                "users": args.bench_users,
                "k": args.k,
                "warmup": args.warmup,
                "requests": args.requests,
                "seed": args.seed,
            }
            res = run_worker(cfg, workdir, f"p{count}")
            report["in_process"]["by_candidates"][str(count)] = {
                "stages": stage_summary(res["stages"]),
                "main_thread_cpu": summary(res["main_thread_cpu_ms"]),
            }
        # Initialisation as deployed: no in-process content index (OpenSearch is a client only).
        init_env = {k: v for k, v in base_env.items() if k != "CONTENT_INDEX_DIR"}
        inits = [
            run_worker({"env": {**init_env, "MAX_CANDIDATES": "500"}, "init_only": True}, workdir, f"init{i}")
            for i in range(args.init_runs)
        ]
        report["init_ms"] = sorted(r["init_ms"] for r in inits)[len(inits) // 2]
        report["init"] = {
            "runs": [
                {
                    k: r[k]
                    for k in ("init_ms", "init_cpu_ms", "bundle_load_ms", "warm_up_ms", "process_ready_ms")
                }
                for r in inits
            ],
            "init_cpu_ms": sorted(r["init_cpu_ms"] for r in inits)[len(inits) // 2],
            "what": "import functions/recommend/app.py in a fresh process: imports + bundle load/verify + smoke "
            "inference + ranker allocation + warm-up (first call to each dependency, one cold-start request) "
            "(median of runs); process_ready_ms adds interpreter start",
            "with_in_process_content_index_ms": report["by_candidates"][str(counts[0])]["init_ms"]
            if counts
            else None,
        }
        report["rss_mb_by_catalogue"] = {}
        for n, shop_n in shops.items():
            env = {
                **base_env,
                "RECPIPE_BUNDLE_DIR": str(shop_n / "bundle"),
                "CONTENT_INDEX_DIR": str(content_dir_for(shop_n)),
            }
            print(f"memory with {n:,} items ...", flush=True)
            cfg = {"env": {**env, "MAX_CANDIDATES": "500"}, "users": pop["users"], "k": args.k, "warmup": 0,
                   "requests": 200}  # fmt: skip
            with_index = run_worker(cfg, workdir, f"rss{n}")
            env.pop("CONTENT_INDEX_DIR")
            without = run_worker({**cfg, "env": {**env, "MAX_CANDIDATES": "500"}}, workdir, f"rss{n}-noindex")
            report["rss_mb_by_catalogue"][str(n)] = {
                "rss_mb": round(without["rss_mb"], 1),
                "rss_peak_mb": round(without["rss_peak_mb"], 1),
                "rss_mb_with_in_process_content_index": round(with_index["rss_mb"], 1),
            }
    report["setup"]["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    print_report(report)
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps(report, indent=2) + "\n")
        print(f"report written to {args.json_out}")
    return 0


def print_report(report: dict[str, Any]) -> None:
    print(f"\nrecommendation handler (GET /recommendations, known users, k={report['setup']['k']})")
    print(f"{'candidates':>10} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'req/s':>8}   stage p99 ms")
    print(f"redis: {report['setup'].get('redis')}")
    for count, e in report["by_candidates"].items():
        st = "  ".join(
            f"{s} {e['stages'][s]['p99_ms']:.3f}" for s in (*STAGES, "compute") if s in e["stages"]
        )
        print(
            f"{count:>10} {e['p50_ms']:>8.3f} {e['p95_ms']:>8.3f} {e['p99_ms']:>8.3f} {e['requests_per_s']:>8.1f}   {st}"
        )
        c = e.get("cold_start_users")
        if c:
            print(
                f"{'cold':>10} {c['p50_ms']:>8.3f} {c['p95_ms']:>8.3f} {c['p99_ms']:>8.3f} {c['requests_per_s']:>8.1f}"
                f"   new users: {c['answered_as_cold_start']}/{c['n']} answered as cold start, "
                f"{c['with_content_index_candidates']} with content-index candidates"
            )
    for count, e in report.get("in_process", {}).get("by_candidates", {}).items():
        st, cpu = e["stages"], e["main_thread_cpu"]
        print(
            f"in-process (in-memory stores), {count} candidates: compute p50 {st['compute']['p50_ms']:.3f}  "
            f"p95 {st['compute']['p95_ms']:.3f}  p99 {st['compute']['p99_ms']:.3f} ms; main-thread CPU "
            f"p50 {cpu['p50_ms']:.3f}  p99 {cpu['p99_ms']:.3f} ms"
        )
    print(
        f"load average: start {report['setup']['load_average_start']}, end {report['setup']['load_average_end']}"
    )
    for name, d in report.get("dependencies_direct", {}).items():
        print(f"direct read {name}: p50 {d['p50_ms']:.3f}  p95 {d['p95_ms']:.3f}  p99 {d['p99_ms']:.3f} ms")
    print(
        f"initialisation (imports + bundle load): {report['init_ms']:.0f} ms  runs: {report['init']['runs']}"
    )
    for n, m in report.get("rss_mb_by_catalogue", {}).items():
        print(
            f"RSS with {int(n):>7,} items: {m['rss_mb']:.0f} MB (peak {m['rss_peak_mb']:.0f} MB; with in-process content index {m['rss_mb_with_in_process_content_index']:.0f} MB)"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="recpipe_dev.bench.serving")
    add_arguments(parser)
    sys.exit(run(parser.parse_args()))
