"""The retrain workflow's steps, shared by the Step Functions task handlers, the SageMaker entry
point and `recpipe retrain` (which runs them in order, in-process).

Each step reads what the previous ones left in the run store (`runs/<run_id>/...`) and returns
a small JSON-able dict (Step Functions passes those along). Visibility is switched only in
`promote`, candidate pointer first and the model pointer last, so a run that fails anywhere
before leaves serving exactly as it was; every step can be re-run with the same effect.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import re
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from recpipe.adapters.archive import catalogue_lines, parse_catalogue
from recpipe.bundle import BundleError, load_bundle
from recpipe.compat import UTC
from recpipe.domain.catalogue import InteractionLog, ItemMeta
from recpipe.ports import ContentDoc, ContentIndexWriter, DependencyError, RetryableError
from recpipe.training.gate import DEFAULT_MARGIN, decide
from recpipe.training.runs import RunStore

LOG_FILE = "input/log.npz"
LOG_META = "input/log.json"
CATALOGUE_FILE = "input/catalogue.jsonl"
REQUEST_FILE = "request.json"
CANDIDATES_FILE = "candidates.npz"
CANDIDATES_META = "candidates.json"
TRAIN_REPORT = "train_report.json"
CONTENT_FILE = "content.jsonl"
DECISION_FILE = "decision.json"
HOLDOUT_FILE = "holdout.json.gz"
PROMOTED_FILE = "promoted.json"
DEFAULT_SHARD_SIZE = 20_000
logger = logging.getLogger(__name__)
#: Fewer interactions than this is a broken export, not a day of traffic.
MIN_INTERACTIONS = 100


class RetrainError(Exception):
    """A step cannot proceed (bad request, not enough data, missing artefact)."""


class ModelRegistry(Protocol):
    """ModelStore plus manifest reads (S3ModelStore, DirectoryModelStore)."""

    def current_version(self) -> str | None: ...

    def upload(self, bundle_dir: Path, version: str) -> None: ...

    def set_current(self, version: str) -> None: ...

    def manifest(self, version: str) -> dict[str, Any] | None: ...

    def fetch(self, version: str, dest: Path) -> Path: ...


class CandidateWriter(Protocol):
    def write_lists(self, version: str, lists: Iterable[tuple[str, Any]]) -> int: ...

    def commit(self, version: str, meta: Mapping[str, object]) -> bool: ...

    def version_meta(self, version: str) -> dict[str, Any] | None: ...


DataLoader = Callable[[Mapping[str, Any]], tuple[InteractionLog, list[ItemMeta], dict[str, Any]]]


@dataclass(slots=True)
class RetrainDeps:
    runs: RunStore
    models: ModelRegistry
    candidates: CandidateWriter | None = None
    content: ContentIndexWriter | None = None
    #: source kind -> loader (archive, movielens, synthetic)
    loaders: Mapping[str, DataLoader] | None = None
    notify: Callable[[str, str, str], str] | None = None
    #: maps the scoring/indexing roles inside OpenSearch FGAC before a publish (None: no OpenSearch)
    content_access: Callable[[], dict[str, str]] | None = None


# ---- interaction log files ---------------------------------------------------------------------
def save_log(log: InteractionLog, runs: RunStore, run_id: str) -> None:
    buf = io.BytesIO()
    np.savez(
        buf,
        users=log.users,
        items=log.items,
        ts=log.ts,
        types=log.types,
        values=log.values,
        devices=log.devices if log.devices is not None else np.zeros(0, np.int8),
    )
    runs.put_bytes(run_id, LOG_FILE, buf.getvalue())
    runs.put_bytes(
        run_id, LOG_META, json.dumps({"user_vocab": log.user_vocab, "item_vocab": log.item_vocab}).encode()
    )


def load_log(runs: RunStore, run_id: str) -> InteractionLog:
    meta = json.loads(runs.get_bytes(run_id, LOG_META))
    with np.load(io.BytesIO(runs.get_bytes(run_id, LOG_FILE)), allow_pickle=False) as a:
        devices = a["devices"]
        return InteractionLog(
            users=a["users"],
            items=a["items"],
            ts=a["ts"],
            types=a["types"],
            values=a["values"],
            user_vocab=list(meta["user_vocab"]),
            item_vocab=list(meta["item_vocab"]),
            devices=devices if len(devices) == len(a["users"]) else None,
        )


def load_catalogue(runs: RunStore, run_id: str) -> list[ItemMeta]:
    items, _ = parse_catalogue(runs.get_bytes(run_id, CATALOGUE_FILE).splitlines())
    return items


def _json(runs: RunStore, run_id: str, name: str) -> dict[str, Any]:
    return dict(json.loads(runs.get_bytes(run_id, name)))


def _put_json(runs: RunStore, run_id: str, name: str, body: Mapping[str, Any]) -> None:
    runs.put_bytes(run_id, name, json.dumps(body, indent=2, default=str).encode())


# ---- steps -------------------------------------------------------------------------------------------
def new_version(execution: str, now: datetime | None = None) -> str:
    now = now or datetime.now(UTC)
    digest = hashlib.sha256(execution.encode()).hexdigest()[:6]
    return f"{now:%Y%m%dT%H%M%SZ}-{digest}"


def prepare(
    deps: RetrainDeps,
    request: Mapping[str, Any],
    *,
    execution: str = "local",
    archive_bucket: str | None = None,
) -> dict[str, Any]:
    """Load the training window from the requested source and freeze it into the run store."""
    source = dict(request.get("source") or {"kind": "archive"})
    kind = str(source.get("kind", "archive"))
    if kind == "archive" and archive_bucket and "bucket" not in source:
        source["bucket"] = archive_bucket
    loader = (deps.loaders or {}).get(kind)
    if loader is None:
        raise RetrainError(f"unknown data source kind {kind!r} (known: {sorted(deps.loaders or {})})")
    version = str(request.get("version") or new_version(execution))
    if not re.fullmatch(r"[A-Za-z0-9._-]{1,64}", version):
        raise RetrainError(f"invalid version {version!r}")
    margin = float(request.get("gate_margin", DEFAULT_MARGIN))
    shard_size = int(request.get("shard_size", DEFAULT_SHARD_SIZE))
    if shard_size < 1 or not 0 <= margin <= 1:
        raise RetrainError("shard_size must be >= 1 and gate_margin within 0..1")
    log, items, report = loader(source)
    minimum = int(request.get("min_interactions", MIN_INTERACTIONS))
    if len(log) < minimum:
        raise RetrainError(f"only {len(log)} interactions in the training window (< {minimum}); not training")
    run_id = version
    save_log(log, deps.runs, run_id)
    deps.runs.put_bytes(run_id, CATALOGUE_FILE, catalogue_lines(items))
    _put_json(
        deps.runs, run_id, REQUEST_FILE, {**dict(request), "execution": execution, "import_report": report}
    )
    return {
        "run_id": run_id,
        "version": version,
        "training_job_name": re.sub(r"[^A-Za-z0-9-]", "-", f"recpipe-{version}")[:63],
        "gate_margin": margin,
        "shard_size": shard_size,
        "interactions": len(log),
        "users": len(log.user_vocab),
        "items": len(items),
        "import_errors": int(report.get("error_count", 0)),
    }


def train(deps: RetrainDeps, run_id: str, version: str, *, progress: bool = False) -> dict[str, Any]:
    """Train, upload the bundle (versioned, not yet live) and keep candidates/content for publishing."""
    from recpipe.training.pipeline import TrainParams, train_bundle

    if deps.runs.exists(run_id, TRAIN_REPORT) and deps.models.manifest(version) is not None:
        return {
            "run_id": run_id,
            "version": version,
            "metrics": _json(deps.runs, run_id, TRAIN_REPORT)["metrics"],
            "skipped": True,
        }
    request = _json(deps.runs, run_id, REQUEST_FILE)
    params = TrainParams.from_dict(request["params"]) if request.get("params") else TrainParams()
    log = load_log(deps.runs, run_id)
    items = load_catalogue(deps.runs, run_id)
    with tempfile.TemporaryDirectory(prefix="recpipe-train-") as tmp:
        result = train_bundle(log, items, Path(tmp), version=version, params=params, progress=progress)
        deps.models.upload(result.bundle_dir, version)
        deps.runs.put_file(run_id, CANDIDATES_FILE, result.candidates_path or Path(tmp) / CANDIDATES_FILE)
        deps.runs.put_file(
            run_id,
            CANDIDATES_META,
            (result.candidates_path or Path(tmp) / CANDIDATES_FILE).with_suffix(".json"),
        )
        bundle = load_bundle(result.bundle_dir)
        pop = dict(zip(bundle.items.item_ids, bundle.items.popularity.tolist(), strict=True))
        content = b"".join(
            json.dumps(
                {
                    "item_id": m.item_id,
                    "title": m.title,
                    "categories": list(m.categories),
                    "text": m.text,
                    "popularity": round(pop.get(m.item_id, 0.0), 5),
                }
            ).encode()
            + b"\n"
            for m in items
        )
        deps.runs.put_bytes(run_id, CONTENT_FILE, content)
        if result.holdout is not None:
            deps.runs.put_bytes(run_id, HOLDOUT_FILE, result.holdout.to_bytes())
        _put_json(
            deps.runs,
            run_id,
            TRAIN_REPORT,
            {
                "version": version,
                "metrics": result.metrics,
                "stages": result.stages,
                "users_with_candidates": len(result.candidates),
                "data_window": result.manifest.get("data_window"),
            },
        )
    return {"run_id": run_id, "version": version, "metrics": result.metrics}


def evaluate(
    deps: RetrainDeps,
    run_id: str,
    version: str,
    *,
    gate_margin: float = DEFAULT_MARGIN,
    shard_size: int = DEFAULT_SHARD_SIZE,
) -> dict[str, Any]:
    """Gate the new model against the live one; plan the candidate shards when publishing.

    The live bundle is fetched through the ModelStore and scored on this run's holdout with
    `holdout.evaluate_model`, the code that produced the new model's numbers. When the live model
    was trained past the holdout's start, both are scored only on what users did after the live
    window ended (neither model saw it). Only when the live bundle cannot be loaded does the
    gate fall back to the metric in the live manifest (measured on the live model's own, older
    window), and the decision says so."""
    from recpipe.training.holdout import Holdout, score

    report = _json(deps.runs, run_id, TRAIN_REPORT)
    live = deps.models.current_version()
    live_manifest = deps.models.manifest(live) if live else None
    record: dict[str, Any] = {
        "new_metrics": report["metrics"],
        "live_manifest_metrics": (live_manifest or {}).get("metrics"),
    }
    new_metrics: Mapping[str, Any] = report["metrics"]
    basis, note, live_metrics = "same_holdout", "", None
    if live is not None and live != version:
        holdout = (
            Holdout.from_bytes(deps.runs.get_bytes(run_id, HOLDOUT_FILE))
            if deps.runs.exists(run_id, HOLDOUT_FILE)
            else None
        )
        since: float | None = None
        live_end = ((live_manifest or {}).get("data_window") or {}).get("end")
        if holdout is not None and isinstance(live_end, int | float):
            # the live model trained on part of this holdout: scoring it there would favour it
            record["live_trained_on_holdout"] = bool(live_end >= holdout.t2)
            unseen = [u for u in holdout.users if any(t > live_end for _, t in u.relevant_after)]
            if live_end >= holdout.t2 and unseen and any(u.ranked for u in holdout.users):
                since = float(live_end)
                new_metrics = score(holdout, [u.ranked for u in holdout.users], since=since)
                note = f"only events after the live window ended, {len(unseen)} users"
            elif live_end >= holdout.t2:
                note = "every holdout event is inside the live model's window: whole holdout, favours the live model"
        record["holdout_since"] = since
        record["new_on_holdout"] = dict(new_metrics)
        live_metrics, failure = _live_on_holdout(deps, holdout, live, since)
        record["live_on_holdout"] = live_metrics
        if live_metrics is None:
            basis, note, live_metrics = "live_manifest", failure, (live_manifest or {}).get("metrics")
            new_metrics = report["metrics"]
    decision = decide(
        new_metrics,
        live_metrics,
        live_version=live,
        new_version=version,
        margin=gate_margin,
        basis=basis,
        basis_note=note,
        candidates_metrics=report["metrics"],
    )
    n_users = int(report.get("users_with_candidates", 0))
    shards = [
        {"run_id": run_id, "version": version, "shard": i, "lo": lo, "hi": min(lo + shard_size, n_users)}
        for i, lo in enumerate(range(0, n_users, shard_size))
    ]
    # "cf_order": the retrain found its learned ranker worse than the CF order and ships the
    # CF-order scorer in its place (pipeline._evaluate); reports from before that key: learned
    ranker_order = str(report["metrics"].get("ranker_order", "learned"))
    body = {
        **decision.to_dict(),
        **record,
        "ranker_order": ranker_order,
        "basis_note": note,
        "run_id": run_id,
        "version": version,
        "decided_at": time.time(),
    }
    _put_json(deps.runs, run_id, DECISION_FILE, body)
    return {
        **decision.to_dict(),
        "ranker_order": ranker_order,
        "basis_note": note,
        "live_on_holdout": record.get("live_on_holdout"),
        "shards": shards if decision.publish else [],
    }


def _live_on_holdout(
    deps: RetrainDeps, holdout: Any, live: str, since: float | None
) -> tuple[dict[str, Any] | None, str]:
    """(metrics of the live bundle on this run's holdout, "") or (None, why it could not be scored)."""
    from recpipe.training.holdout import evaluate_model

    if holdout is None:
        return None, "this run has no holdout file (no evaluable users)"
    with tempfile.TemporaryDirectory(prefix="recpipe-live-") as tmp:
        try:
            bundle = load_bundle(deps.models.fetch(live, Path(tmp) / live))
            ranker = bundle.ranker_path.read_bytes()
        except RetryableError:
            raise  # throttling/timeouts: the state's Retry, not a weaker comparison
        except (BundleError, DependencyError, OSError, ValueError, KeyError) as exc:
            return None, f"live bundle {live} could not be loaded ({type(exc).__name__}: {exc})"
        try:
            return evaluate_model(holdout, bundle.items, bundle.neighbours, ranker, since=since), ""
        except (ValueError, RuntimeError) as exc:  # e.g. a ranker the runtime refuses
            return None, f"live bundle {live} could not be scored ({type(exc).__name__}: {exc})"


_LOADED: dict[tuple[int, str], Any] = {}


def publish_candidates(
    deps: RetrainDeps, run_id: str, version: str, *, lo: int, hi: int, shard: int = 0
) -> dict[str, Any]:
    """Write one shard of candidate lists under the new version (invisible until promote)."""
    from recpipe.training.candidates import CandidateLists

    if deps.candidates is None:
        raise RetrainError("no candidate cache configured")
    if deps.candidates.version_meta(version) is not None:
        return {"shard": shard, "written": 0, "already_published": True}
    key = (id(deps.runs), run_id)
    lists = _LOADED.get(key)
    if lists is None:  # one download per warm container, not per shard
        _LOADED.clear()
        tmp = Path(tempfile.mkdtemp(prefix="recpipe-cands-"))
        deps.runs.get_file(run_id, CANDIDATES_META, tmp / "candidates.json")
        lists = _LOADED[key] = CandidateLists.load(
            deps.runs.get_file(run_id, CANDIDATES_FILE, tmp / "candidates.npz")
        )
    written = deps.candidates.write_lists(version, lists.encoded(lo, hi))
    return {"shard": shard, "written": written}


def index_content(deps: RetrainDeps, run_id: str, version: str) -> dict[str, Any]:
    if deps.content is None:
        return {"indexed": 0, "skipped": "no content index configured"}
    access: dict[str, str] = {}
    if deps.content_access is None:
        logger.info("content index access: no OpenSearch (OPENSEARCH_URL unset), role mapping skipped")
    else:  # before the publish: the writer's SigV4 requests are refused until its role is mapped
        access = deps.content_access()
    docs = []
    for line in deps.runs.get_bytes(run_id, CONTENT_FILE).splitlines():
        d = json.loads(line)
        docs.append(
            ContentDoc(
                d["item_id"],
                d["title"],
                tuple(d["categories"]),
                d.get("text", ""),
                float(d.get("popularity", 0.0)),
            )
        )
    return {"indexed": deps.content.publish(version, docs), "access": access}


def promote(deps: RetrainDeps, run_id: str, version: str) -> dict[str, Any]:
    """Candidate pointer, then the model pointer (last). Idempotent."""
    already = deps.models.current_version() == version
    if deps.candidates is not None:
        report = _json(deps.runs, run_id, TRAIN_REPORT)
        deps.candidates.commit(
            version,
            {"run_id": run_id, "model_version": version, "lists": report.get("users_with_candidates")},
        )
    deps.models.set_current(version)
    body = {"run_id": run_id, "version": version, "already_live": already, "promoted_at": time.time()}
    _put_json(deps.runs, run_id, PROMOTED_FILE, body)
    return body


def failure_message(state: Mapping[str, Any], execution: str) -> tuple[str, str]:
    """(subject, body) for the failure notification, naming the run and the error."""
    error = state.get("error") or {}
    run = state.get("run") or {}
    cause = str(error.get("Cause", ""))
    try:  # Lambda errors arrive as a JSON string in Cause
        parsed = json.loads(cause)
        cause = f"{parsed.get('errorType', '')}: {parsed.get('errorMessage', cause)}"
    except (ValueError, AttributeError):
        pass
    subject = f"recpipe retrain failed: {error.get('Error', 'unknown error')}"[:100]
    body = json.dumps(
        {
            "execution": execution,
            "version": run.get("version"),
            "error": error.get("Error"),
            "cause": cause[:2000],
        },
        indent=2,
    )
    return subject, body


def notify_failure(
    deps: RetrainDeps, topic_arn: str, execution: str, state: Mapping[str, Any]
) -> dict[str, Any]:
    subject, body = failure_message(state, execution)
    if deps.notify is None:
        raise RetrainError("no notifier configured")
    return {"message_id": deps.notify(topic_arn, subject, body), "subject": subject}


# ---- local, in-process run ------------------------------------------------------------------------------
def run_local(
    deps: RetrainDeps,
    request: Mapping[str, Any],
    *,
    progress: bool = False,
    execution: str = "local",
    archive_bucket: str | None = None,
) -> dict[str, Any]:
    """The state machine's path, in-process: what `recpipe retrain` does on the local stack."""
    out: dict[str, Any] = {}
    out["run"] = run = prepare(deps, request, execution=execution, archive_bucket=archive_bucket)
    out["training"] = train(deps, run["run_id"], run["version"], progress=progress)
    out["evaluation"] = ev = evaluate(
        deps, run["run_id"], run["version"], gate_margin=run["gate_margin"], shard_size=run["shard_size"]
    )
    if not ev["publish"]:
        return out
    shards = ev["shards"]
    if progress:
        from tqdm import tqdm

        shards = tqdm(shards, desc="publish candidates", unit="shard")
    out["published"] = [
        publish_candidates(deps, **{k: s[k] for k in ("run_id", "version", "lo", "hi", "shard")})
        for s in shards
    ]
    out["indexed"] = index_content(deps, run["run_id"], run["version"])
    out["promoted"] = promote(deps, run["run_id"], run["version"])
    return out


def archive_window(days: float, end: datetime | None = None) -> tuple[datetime, datetime]:
    end = end or datetime.now(UTC)
    return end - timedelta(days=days), end
