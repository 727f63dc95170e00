"""`recpipe demo`: start everything, train, serve, play the scenario, stop everything.

Order: refuse early (lock, port, redis-server) -> local stack -> catalogue -> retrain ->
handlers (cold start) -> Kinesis poller -> HTTP server -> scenario -> wait for Ctrl-C (or exit
with the scenario's verdict under --once). Whatever was started is stopped on the way out,
on an error, Ctrl-C, SIGTERM, or interpreter exit.
"""

from __future__ import annotations

import atexit
import contextlib
import io
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from recpipe_dev.local.stack import LocalStack, LocalStackError, default_state_dir, port_free

EXIT_OK = 0
EXIT_CHECKS_FAILED = 1
EXIT_CANNOT_START = 2
LOCK_FILE = "demo.lock"


@dataclass(frozen=True, slots=True)
class DemoOptions:
    once: bool = False
    movielens: Path | None = None
    host: str = "127.0.0.1"
    port: int = 3000
    users: int = 3000
    items: int = 2000
    events: int = 200_000
    seed: int = 0
    quick: bool = False
    requests: int = 200
    state_dir: Path | None = None
    verbose: bool = False
    #: Hand the generated history to `prepare` in memory instead of through the archive bucket.
    no_archive: bool = False
    #: Skip the feedback-loop step (second retrain, 50/50 experiment, report, rollback).
    no_experiment: bool = False


class DemoLock:
    """`<state>/demo.lock` holding the pid: a second demo refuses while the first one lives."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.held = False

    def holder(self) -> int | None:
        try:
            pid = int(self.path.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        if pid == os.getpid():
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None  # stale lock from a killed demo
        except PermissionError:
            return pid
        cmdline = Path(f"/proc/{pid}/cmdline")
        if (
            cmdline.exists()
            and b"recpipe" not in cmdline.read_bytes()
            and b"demo" not in cmdline.read_bytes()
        ):
            return None  # pid recycled by an unrelated process
        return pid

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        pid = self.holder()
        if pid is not None:
            raise LocalStackError(
                f"a demo is already running (pid {pid}, lock {self.path}). Open its page, stop it with "
                f"Ctrl-C in its terminal (or `kill {pid}`), then run `make demo` again."
            )
        self.path.write_text(str(os.getpid()))
        self.held = True

    def release(self) -> None:
        if self.held:
            with contextlib.suppress(FileNotFoundError):
                if self.path.read_text().strip() == str(os.getpid()):
                    self.path.unlink()
            self.held = False


class Cleanup:
    """Stop callbacks run once, last started first (also from atexit and signal handlers)."""

    def __init__(self) -> None:
        self._steps: list[tuple[str, Callable[[], None]]] = []
        self._lock = threading.Lock()

    def push(self, name: str, step: Callable[[], None]) -> None:
        self._steps.append((name, step))

    def run(self) -> None:
        with self._lock:
            while self._steps:
                name, step = self._steps.pop()
                t0 = time.perf_counter()
                try:
                    step()
                except Exception as exc:  # keep stopping the rest
                    print(f"  (stopping {name} failed: {exc})", file=sys.stderr)
                if time.perf_counter() - t0 > 1.0:
                    print(f"  (stopping {name} took {time.perf_counter() - t0:.1f} s)", file=sys.stderr)


def _say(text: str) -> None:
    print(text, flush=True)


def run_demo(opts: DemoOptions) -> int:
    state_dir = (opts.state_dir or default_state_dir()).resolve()
    cleanup = Cleanup()
    atexit.register(cleanup.run)
    stop = threading.Event()
    serving = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        # While serving, Ctrl-C ends the wait loop; during set-up (or a second Ctrl-C) it unwinds
        # at once. Either way `finally` stops everything that was started.
        if stop.is_set() or not serving.is_set():
            raise KeyboardInterrupt
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        return _run(opts, state_dir, cleanup, stop, serving)
    except LocalStackError as exc:
        print(f"\nrecpipe demo: {exc}", file=sys.stderr)
        return EXIT_CANNOT_START
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    finally:
        _say(
            "\nstopping: " + ", ".join(name for name, _ in reversed(cleanup._steps)) if cleanup._steps else ""
        )
        cleanup.run()
        for s, handler in previous.items():
            signal.signal(s, handler)


def _run(
    opts: DemoOptions, state_dir: Path, cleanup: Cleanup, stop: threading.Event, serving: threading.Event
) -> int:
    from tqdm import tqdm

    demo_dir = state_dir / "demo"
    lock = DemoLock(state_dir / LOCK_FILE)
    lock.acquire()
    cleanup.push("lock", lock.release)
    if not port_free(opts.port, opts.host):
        raise LocalStackError(
            f"port {opts.port} on {opts.host} is busy (another demo or `sam local start-api`?). "
            f"Stop that program (`lsof -i :{opts.port}` shows it) or pick another port: "
            f"make demo ARGS='--port {opts.port + 1}'"
        )

    _say("== starting the local stack (redis-server, moto server, template resources)")
    stack = LocalStack(demo_dir, env_name="demo", redis_url=None)
    if stack.running() is not None:
        stack.stop()  # leftovers of a demo that was killed with -9: its lock was stale
    with tqdm(total=3, desc="local stack", unit="step") as bar:
        state = stack.start(progress=bar)
    cleanup.push("local stack", stack.stop)
    _say(f"   redis {state.redis_url}   moto {state.moto_url}")

    env = dict(state.environment)
    # No RECPIPE_BUNDLE_DIR: bundles go to the (moto) S3 model bucket behind the SSM pointer,
    # and the handlers load them from there, as in AWS.
    os.environ.pop("RECPIPE_BUNDLE_DIR", None)
    env.update(
        # moto answers DynamoDB calls over local HTTP in milliseconds, not the sub-millisecond
        # of the real service, and the laptop may be busy: looser deadlines than the deployed
        # defaults keep the story about recommendations, not timeouts (override via env).
        READ_TIMEOUT_MS=os.environ.get("READ_TIMEOUT_MS", "100"),
        REQUEST_BUDGET_MS=os.environ.get("REQUEST_BUDGET_MS", "300"),
        MODEL_REFRESH_S="5",
        # Impressions reach the archive within a second, so the experiment step's report sees them.
        IMPRESSION_FLUSH_S="1",
        TF_CPP_MIN_LOG_LEVEL="2",
        # The terminal tells the story; handler logs and EMF metrics only with --verbose.
        POWERTOOLS_LOG_LEVEL="INFO" if opts.verbose else "ERROR",
        POWERTOOLS_METRICS_DISABLED="false" if opts.verbose else "true",
    )
    # The handlers read Settings from the environment at import: set it before loading them.
    os.environ.update(env)
    _say(
        f"   read deadline {env['READ_TIMEOUT_MS']} ms, request budget {env['REQUEST_BUDGET_MS']} ms "
        "(deployed defaults 15/35 ms; READ_TIMEOUT_MS / REQUEST_BUDGET_MS override)"
    )

    _say("\n== loading the catalogue")
    from recpipe_dev.demo import data as demo_data

    if opts.movielens is not None:
        data = demo_data.movielens(opts.movielens)
    else:
        with tqdm(total=1, desc="generate shop", unit="catalogue") as bar:
            data = demo_data.synthetic(opts.users, opts.items, opts.events, seed=opts.seed)
            bar.update(1)
    _say(f"   {data.description}")

    archive_days = None
    if opts.movielens is None and not opts.no_archive:
        from recpipe_dev.demo.archive import window_days, write_archive

        _say("\n== seeding the event archive (what Firehose would have written to S3)")
        t0 = time.perf_counter()
        objects = write_archive(_aws(env, "s3"), env["ARCHIVE_BUCKET"], data)
        archive_days = window_days(data, time.time())
        _say(
            f"   {objects} objects in s3://{env['ARCHIVE_BUCKET']}/events/ and catalogue/items.jsonl "
            f"({time.perf_counter() - t0:.1f} s)"
        )

    _say("\n== retraining (prepare -> train -> evaluate -> publish candidates -> index content -> promote)")
    from recpipe_dev.demo.retraining import RetrainFailed, retrain

    try:
        # In a child process, as the workflow runs apart from serving in AWS: TensorFlow's memory
        # and threads never enter the process that serves requests (and it exits promptly).
        with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
            outcome = pool.submit(retrain, data, quick=opts.quick, archive_days=archive_days).result()
    except RetrainFailed as exc:
        raise LocalStackError(f"retraining failed: {exc}") from None
    except BrokenProcessPool:
        raise LocalStackError("the retraining process died (see its output above)") from None
    m = outcome.metrics
    _say(f"   prepare read {outcome.interactions:,} interactions from the {outcome.source} source")
    _say(
        f"   model {outcome.version} in {outcome.seconds:.1f} s ({outcome.gate_reason}): "
        f"{outcome.candidate_lists:,} candidate lists, {outcome.documents:,} documents indexed; holdout "
        f"ndcg@10 ranked {m.get('ndcg@10', float('nan')):.4f} vs CF {m.get('cf_ndcg@10', float('nan')):.4f} "
        f"vs popular {m.get('popular_ndcg@10', float('nan')):.4f}"
    )

    _say("\n== loading the handlers (the functions' cold start)")
    from recpipe_dev.local.api_server import HandlerMissing, LambdaContext, LocalApi, load_handler

    api = LocalApi()
    missing = api.missing()
    if missing:
        raise LocalStackError("these handlers are not built yet, the API cannot run: " + ", ".join(missing))
    updater = None
    cold: dict[str, float] = {}
    with contextlib.redirect_stdout(io.StringIO()) if not opts.verbose else contextlib.nullcontext():
        # One harmless invocation each: the import and first calls are the functions' cold start
        # (and Powertools' one-off ColdStart metric line stays out of the story). A GET for a
        # user nobody knows warms the model and the content index, as provisioned concurrency would.
        for function in tqdm(("recommend", "ingest_events", "update_features"), desc="handlers", unit="fn"):
            t0 = time.perf_counter()
            if function == "update_features":
                try:
                    updater = load_handler("update_features")
                except HandlerMissing as exc:
                    _say(f"   stream path not available: {exc}")
                    continue
                updater({"Records": []}, LambdaContext("update_features"))
            elif function == "recommend":
                api.invoke("GET", "/health", {}, {}, None)
                api.invoke("GET", "/recommendations", {"user_id": ["demo-warmup"]}, {}, None)
            else:
                api.invoke("POST", "/events", {}, {}, b"{}")
            cold[function] = 1000 * (time.perf_counter() - t0)
    _say("   cold start: " + ", ".join(f"{f} {ms:.0f} ms" for f, ms in cold.items()))

    poller = None
    if updater is not None:
        poller = _start_poller(env, updater)
        cleanup.push("Kinesis poller", poller.stop)
    from recpipe_dev.local.firehose import start_archive_poller

    # The event archive's Firehose (Kinesis -> S3 events/), which the experiment report reads.
    archiver = start_archive_poller(env)
    cleanup.push("Firehose stand-in", archiver.stop)

    from recpipe_dev.demo.server import DemoInfo, demo_server

    info = DemoInfo(
        data,
        outcome.version,
        stream_totals=(lambda: asdict(poller.totals)) if poller is not None else lambda: None,
    )
    server = demo_server(info, api, opts.host, opts.port)
    server.start()
    cleanup.push("HTTP server", server.stop)
    _say(
        f"\n== serving the API and the page on {server.url}/  (GET /recommendations, POST /events, GET /health)"
    )

    from recpipe_dev.demo.scenario import ApiClient, Scenario

    scenario = Scenario(
        ApiClient(server.url),
        data,
        outcome.version,
        stream_check=_stream_check(env) if poller is not None else None,
        load_requests=opts.requests,
        seed=opts.seed,
        out=_say,
    )
    ok = scenario.run()
    if not opts.no_experiment:
        ok = _experiment_step(data, scenario, outcome.version, env, archive_days) and ok
    if opts.once:
        return EXIT_OK if ok else EXIT_CHECKS_FAILED
    _say(f"\nthe demo is running: open {server.url}/ in a browser. Ctrl-C stops everything.")
    serving.set()
    while not stop.wait(0.5):
        pass
    return EXIT_OK


def _experiment_step(
    data: Any, scenario: Any, first: str, env: dict[str, str], archive_days: float | None
) -> bool:
    """Second version, 50/50 experiment, clicks, report, rollback (recpipe_dev.demo.experiment)."""
    from recpipe_dev.demo.experiment import run_experiment_step
    from recpipe_dev.demo.retraining import RetrainFailed, retrain

    _say("\n== 8. an experiment: a second model against the first, 50/50, then a rollback")
    try:
        with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
            # Published whatever the gate says: the experiment is what decides now.
            second = pool.submit(
                retrain, data, quick=True, archive_days=archive_days, gate_margin=1.0
            ).result()
    except (RetrainFailed, BrokenProcessPool) as exc:
        scenario._check("experiment", False, f"second retrain failed: {exc}")
        return False
    _say(f"   second model {second.version} published ({second.seconds:.1f} s); {first} stays restorable")
    return run_experiment_step(scenario, first=first, second=second.version, env=env)


def _aws(env: dict[str, str], service: str) -> Any:
    import boto3

    return boto3.session.Session(region_name=env["AWS_REGION"]).client(
        service, endpoint_url=env["AWS_ENDPOINT_URL"]
    )  # type: ignore[call-overload]


def _start_poller(env: dict[str, str], handler: Any) -> Any:
    import boto3

    from recpipe_dev.local.poller import KinesisPoller
    from recpipe_dev.local.resources import updater_batch_size

    session = boto3.session.Session(region_name=env["AWS_REGION"])
    endpoint = env["AWS_ENDPOINT_URL"]
    poller = KinesisPoller(
        session.client("kinesis", endpoint_url=endpoint),
        env["EVENT_STREAM_NAME"],
        handler,
        sqs=session.client("sqs", endpoint_url=endpoint),
        failure_queue_url=env["FAILURE_QUEUE_URL"],
        batch_size=updater_batch_size(),
        starting_position="LATEST",
    )
    poller.start()
    return poller


def _stream_check(env: dict[str, str]) -> Callable[[str], str | None]:
    """Reads the user's features as the updater stored them in DynamoDB (None until written)."""
    import boto3
    from recpipe.adapters.dynamodb_users import DynamoDBUserFeatureStore

    client = boto3.session.Session(region_name=env["AWS_REGION"]).client(
        "dynamodb", endpoint_url=env["AWS_ENDPOINT_URL"]
    )
    store = DynamoDBUserFeatureStore(client, env["USER_FEATURES_TABLE"])

    def check(user_id: str) -> str | None:
        features = store.get(user_id)
        if features is None or features.total_events < 7:
            return None
        top = sorted(features.affinity_at(time.time()).items(), key=lambda kv: -kv[1])[:2]
        return (
            f"{features.total_events} events folded into {user_id}'s features (version {features.version}); "
            f"cart {sorted(features.cart)}; top affinity " + ", ".join(f"{c} {v:.1f}" for c, v in top)
        )

    return check
