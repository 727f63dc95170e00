"""The local stack: a throw-away redis-server, a moto server standing in for AWS, and the
resources of `template.yaml` created in it. Used by `recpipe local up|down|status` and the demo.

`LocalStack.start()` owns its processes; `detach=True` (for `recpipe local up`) starts them in
their own session so they outlive the command, and the state file records their pids so that
`down` stops exactly what `up` started.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from recpipe_dev.local.moto_server import MotoServer, MotoUnavailable, child_pids, kill_leftovers
from recpipe_dev.local.redis_server import INSTALL_HINT, RedisServer, RedisUnavailable
from recpipe_dev.local.resources import (
    ARCHIVE_BUCKET,
    EVENT_STREAM,
    FAILURE_QUEUE,
    MODEL_BUCKET,
    RETRAIN_TOPIC,
    TEMPLATE,
    USER_FEATURES_TABLE,
    LocalNames,
    create_local_resources,
)

STATE_FILE = "local.json"
#: moto holds only throw-away in-memory state; its interpreter takes ~2 s to wind down on
#: SIGTERM, so it gets half a second before SIGKILL.
MOTO_STOP_S = 0.5
MODEL_POINTER = "ModelPointerParameter"
EXPERIMENT = "ExperimentParameter"
REGION = "us-east-1"
#: moto accepts any credentials; fixed ones keep a developer's real profile out of the way.
FAKE_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": REGION,
    "AWS_REGION": REGION,
}


class LocalStackError(RuntimeError):
    """Something the developer must fix (missing binary, busy port, stack already running)."""


class AlreadyRunning(LocalStackError):
    pass


def default_state_dir() -> Path:
    return Path(os.environ.get("RECPIPE_STATE_DIR", ".recpipe")).resolve()


@dataclass(slots=True)
class StackState:
    """What `up` started; persisted as `<state dir>/local.json`."""

    env_name: str
    redis_url: str
    redis_pid: int | None
    moto_url: str
    moto_pid: int | None
    resources: dict[str, str]
    environment: dict[str, str]
    started_at: float = field(default_factory=time.time)
    owner_pid: int = field(default_factory=os.getpid)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> StackState:
        return cls(**json.loads(text))


class _EndpointSession:
    """The slice of boto3.Session that resources.py uses, bound to the moto endpoint."""

    def __init__(self, endpoint_url: str) -> None:
        import boto3

        self._session = boto3.session.Session(
            aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION
        )
        self.endpoint_url = endpoint_url

    def client(self, service: str) -> Any:
        return self._session.client(service, endpoint_url=self.endpoint_url)  # type: ignore[call-overload]


def aws_session(endpoint_url: str) -> _EndpointSession:
    return _EndpointSession(endpoint_url)


def _alive(pid: int | None, marker: str) -> bool:
    """pid is running and is what we started (guards against a recycled pid)."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    cmdline = Path(f"/proc/{pid}/cmdline")
    if cmdline.exists():
        try:
            text = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            return False
        return marker in text
    return True  # no /proc (macOS): trust the pid


def _terminate(pid: int | None, marker: str, timeout: float = 5.0) -> bool:
    if not _alive(pid, marker):
        return False
    assert pid is not None
    workers = child_pids(pid)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid, marker):
            break
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)  # reap if it is our child
        time.sleep(0.05)
    else:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    kill_leftovers(workers)
    return True


def create_model_pointer(
    session: Any, template_path: Path, env_name: str, resource: str = MODEL_POINTER
) -> str:
    """An SSM parameter of template.yaml: the model pointer, or the experiment beside it (name
    with this env, initial value "none")."""
    from recpipe_dev.local.resources import load_template

    default = "/recpipe/${EnvName}/model/" + ("current" if resource == MODEL_POINTER else "experiment")
    res = load_template(template_path)["Resources"].get(resource)
    props = (res or {}).get("Properties", {})
    name = props.get("Name", default)
    if isinstance(name, dict):
        name = name.get("Fn::Sub", default)
    name = str(name).replace("${EnvName}", env_name)
    ssm = session.client("ssm")
    try:
        ssm.get_parameter(Name=name)
    except ssm.exceptions.ParameterNotFound:
        ssm.put_parameter(Name=name, Value=str(props.get("Value", "none")), Type="String")
    return name


def redis_ping(url: str, timeout: float = 1.0) -> bool:
    import redis

    try:
        client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except redis.RedisError:
        return False


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


class LocalStack:
    """Redis + moto server + template resources. Start, stop, and describe as env variables."""

    def __init__(
        self,
        state_dir: Path | None = None,
        *,
        env_name: str = "local",
        redis_url: str | None = None,
        detach: bool = False,
        template: Path = TEMPLATE,
    ) -> None:
        self.state_dir = (state_dir or default_state_dir()).resolve()
        self.env_name = env_name
        self.external_redis_url = redis_url
        self.detach = detach
        self.template = template
        self.state: StackState | None = None
        self._redis: RedisServer | None = None
        self._moto: MotoServer | None = None

    @property
    def state_path(self) -> Path:
        return self.state_dir / STATE_FILE

    def read_state(self) -> StackState | None:
        try:
            return StackState.from_json(self.state_path.read_text())
        except FileNotFoundError:
            return None
        except (ValueError, TypeError) as exc:
            raise LocalStackError(
                f"{self.state_path} is not a recpipe state file ({exc}); delete it"
            ) from None

    def running(self) -> StackState | None:
        """The recorded stack if any of its processes is still alive."""
        state = self.read_state()
        if state is None:
            return None
        if _alive(state.redis_pid, "redis-server") or _alive(state.moto_pid, "moto"):
            return state
        return None

    # ---- start / stop ------------------------------------------------------------------------
    def start(self, progress: Any = None) -> StackState:
        """Start everything; on any failure, stop what was started and raise LocalStackError."""
        running = self.running()
        if running is not None:
            raise AlreadyRunning(
                f"a local stack is already running (redis {running.redis_url}, moto {running.moto_url}, "
                f"started by pid {running.owner_pid}); stop it with `recpipe local down` "
                f"(state: {self.state_path})"
            )
        self.state_dir.mkdir(parents=True, exist_ok=True)
        try:
            redis_url, redis_pid = self._start_redis()
            _step(progress, "redis")
            moto_url, moto_pid = self._start_moto()
            _step(progress, "moto server")
            names = LocalNames(self.env_name)
            session = aws_session(moto_url)
            resources = create_local_resources(session, names, self.template)
            resources[MODEL_POINTER] = create_model_pointer(session, self.template, self.env_name)
            resources[EXPERIMENT] = create_model_pointer(session, self.template, self.env_name, EXPERIMENT)
            _step(progress, "resources")
        except BaseException:
            self.stop()
            raise
        environment = self._environment(redis_url, moto_url, resources)
        self.state = StackState(
            env_name=self.env_name,
            redis_url=redis_url,
            redis_pid=redis_pid,
            moto_url=moto_url,
            moto_pid=moto_pid,
            resources=resources,
            environment=environment,
        )
        self.state_path.write_text(self.state.to_json())
        return self.state

    def _start_redis(self) -> tuple[str, int | None]:
        if self.external_redis_url:
            if not redis_ping(self.external_redis_url):
                raise LocalStackError(f"REDIS_URL={self.external_redis_url} does not answer PING")
            return self.external_redis_url, None
        if shutil.which("redis-server") is None:
            raise LocalStackError(INSTALL_HINT)
        self._redis = RedisServer(self.state_dir / "redis", detach=self.detach)
        try:
            self._redis.start()
        except RedisUnavailable as exc:
            raise LocalStackError(str(exc)) from None
        return self._redis.url, self._redis.pid

    def _start_moto(self) -> tuple[str, int]:
        try:
            import moto.server  # noqa: F401
        except ImportError:
            raise LocalStackError(
                "moto server is not installed: run `.venv/bin/pip install 'moto[server]'` (or `make venv`)"
            ) from None
        self._moto = MotoServer(self.state_dir / "moto.log", detach=self.detach, env=FAKE_CREDENTIALS)
        try:
            url = self._moto.start()
        except MotoUnavailable as exc:
            raise LocalStackError(str(exc)) from None
        assert self._moto.pid is not None
        return url, self._moto.pid

    def _environment(self, redis_url: str, moto_url: str, resources: dict[str, str]) -> dict[str, str]:
        """The settings variables (recpipe/config.py) that point the handlers at this stack: the
        union of every function's (template.yaml gives each function only its own)."""
        return {
            "ENV_NAME": self.env_name,
            "AUTH_MODE": "API_KEY",
            "CORS_ALLOW_ORIGIN": "*",
            "REDIS_URL": redis_url,
            "AWS_ENDPOINT_URL": moto_url,
            "USER_FEATURES_TABLE": resources[USER_FEATURES_TABLE],
            "EVENT_STREAM_NAME": resources[EVENT_STREAM],
            "FAILURE_QUEUE_URL": resources[FAILURE_QUEUE],
            "MODEL_BUCKET": resources[MODEL_BUCKET],
            "ARCHIVE_BUCKET": resources[ARCHIVE_BUCKET],
            # No Firehose locally: the scoring function writes impression batches to the bucket.
            "IMPRESSION_ARCHIVE_BUCKET": resources[ARCHIVE_BUCKET],
            "RETRAIN_TOPIC_ARN": resources[RETRAIN_TOPIC],
            "MODEL_POINTER_PARAM": resources[MODEL_POINTER],
            "EXPERIMENT_PARAM": resources[EXPERIMENT],
            "CONTENT_INDEX_DIR": str(self.state_dir / "content-index"),
            "POWERTOOLS_SERVICE_NAME": "recpipe",
            "POWERTOOLS_METRICS_NAMESPACE": f"recpipe-{self.env_name}",
            "POWERTOOLS_TRACE_DISABLED": "true",
            **FAKE_CREDENTIALS,
        }

    def stop(self) -> None:
        """Stop what this object started, or (after `running()`) what the state file records."""
        if self._moto is not None:
            self._moto.stop(timeout=MOTO_STOP_S)
            self._moto = None
        if self._redis is not None:
            self._redis.stop()
            self._redis = None
        state = self.state or self.read_state()
        if state is not None:
            _terminate(state.moto_pid, "moto", timeout=MOTO_STOP_S)
            _terminate(state.redis_pid, "redis-server")
            with contextlib.suppress(FileNotFoundError):
                self.state_path.unlink()
        self.state = None

    # ---- health ------------------------------------------------------------------------------
    def health(self, state: StackState) -> dict[str, tuple[bool, str]]:
        """Component -> (healthy, detail)."""
        out: dict[str, tuple[bool, str]] = {}
        ok = redis_ping(state.redis_url)
        out["redis"] = (ok, f"{state.redis_url} ({'PONG' if ok else 'not answering'})")
        try:
            with urllib.request.urlopen(f"{state.moto_url}/moto-api/", timeout=1.0):
                moto_ok = True
        except OSError:
            moto_ok = False
        out["moto"] = (moto_ok, f"{state.moto_url} ({'up' if moto_ok else 'not answering'})")
        if moto_ok:
            out.update(self._resource_health(state))
        return out

    def _resource_health(self, state: StackState) -> dict[str, tuple[bool, str]]:
        from botocore.exceptions import BotoCoreError, ClientError

        session = aws_session(state.moto_url)
        checks = {
            USER_FEATURES_TABLE: lambda: session.client("dynamodb").describe_table(
                TableName=state.resources[USER_FEATURES_TABLE]
            ),
            EVENT_STREAM: lambda: session.client("kinesis").describe_stream_summary(
                StreamName=state.resources[EVENT_STREAM]
            ),
            MODEL_BUCKET: lambda: session.client("s3").head_bucket(Bucket=state.resources[MODEL_BUCKET]),
            FAILURE_QUEUE: lambda: session.client("sqs").get_queue_attributes(
                QueueUrl=state.resources[FAILURE_QUEUE], AttributeNames=["QueueArn"]
            ),
            MODEL_POINTER: lambda: session.client("ssm").get_parameter(Name=state.resources[MODEL_POINTER]),
        }
        out: dict[str, tuple[bool, str]] = {}
        for logical_id, check in checks.items():
            try:
                answer = check()
                detail = state.resources[logical_id]
                if logical_id == MODEL_POINTER:
                    detail += f" = {answer['Parameter']['Value']}"
                out[logical_id] = (True, detail)
            except (BotoCoreError, ClientError) as exc:
                out[logical_id] = (False, f"{state.resources[logical_id]}: {exc}")
        return out


def _step(progress: Any, name: str) -> None:
    if progress is not None:
        progress.set_postfix_str(name)
        progress.update(1)


def export_lines(environment: dict[str, str]) -> str:
    """`export K=V` lines for `eval "$(recpipe local env)"`."""
    import shlex

    return "\n".join(f"export {k}={shlex.quote(v)}" for k, v in sorted(environment.items()))
