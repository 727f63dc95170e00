"""Retraining for the demo: the retrain workflow's own steps, in-process, on the local stack.

`recpipe.training.workflow.run_local` runs prepare -> train -> evaluate (gate) -> publish
candidates -> index content -> promote, exactly the state machine's path. Its dependencies come
from `recpipe.training.wiring.build_deps(RetrainSettings)`, so on the local stack the bundle goes to
the moto S3 model bucket, the SSM pointer names it, candidates go to Redis and the content
index to the in-process index: the handlers then load the model the way they do in AWS.

The data source: for the generated shop, the history is first written to the archive bucket
in Firehose's layout and `prepare` reads it from there (the production path); MovieLens (decades
of history, thousands of day partitions) is handed to `prepare` in memory.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, replace
from typing import Any

from recpipe_dev.demo.data import DemoData

SOURCE_KIND = "demo"


class RetrainFailed(RuntimeError):
    pass


@dataclass(slots=True)
class RetrainOutcome:
    version: str
    published: bool
    candidate_lists: int
    documents: int
    metrics: dict[str, Any]
    gate_reason: str
    seconds: float
    interactions: int = 0
    source: str = ""


def retrain(
    data: DemoData,
    *,
    quick: bool = False,
    archive_days: float | None = None,
    gate_margin: float | None = None,
) -> RetrainOutcome:
    """Run the workflow against the stack the environment points at (RetrainSettings from env).

    With `archive_days`, `prepare` reads that window from the event archive bucket (seeded by
    `recpipe_dev.demo.archive`), as in AWS; otherwise the demo's data is handed over in memory."""
    from recpipe.config import RetrainSettings, load_settings
    from recpipe.training.pipeline import TrainParams
    from recpipe.training.wiring import build_deps
    from recpipe.training.workflow import RetrainError, run_local

    t0 = time.perf_counter()
    settings = load_settings(RetrainSettings)
    deps = build_deps(settings)

    def load(source: Any) -> tuple[Any, Any, dict[str, Any]]:
        return data.log, data.items, {"source": data.description, "error_count": 0}

    loaders = {**(deps.loaders or {}), SOURCE_KIND: load}
    if archive_days is not None:
        from recpipe.clients import batch_aws_client as aws_client
        from recpipe.training.sources import archive_loader

        # Bound to the archive bucket explicitly: the default loader reads the model bucket.
        loaders["archive"] = archive_loader(aws_client("s3", settings), os.environ["ARCHIVE_BUCKET"])
    deps = replace(deps, loaders=loaders)
    params = TrainParams.tiny() if quick else TrainParams(max_eval_users=500)
    source: dict[str, Any] = {"kind": SOURCE_KIND}
    if archive_days is not None:
        source = {"kind": "archive", "days": archive_days}
    request: dict[str, Any] = {"source": source, "params": params.to_dict()}
    if gate_margin is not None:  # the experiment step publishes a second model whatever its score
        request["gate_margin"] = gate_margin
    try:
        out = run_local(
            deps,
            request,
            progress=True,
            execution=f"demo-{int(time.time())}",
            archive_bucket=os.environ.get("ARCHIVE_BUCKET"),
        )
    except RetrainError as exc:
        raise RetrainFailed(str(exc)) from None
    evaluation = out["evaluation"]
    return RetrainOutcome(
        version=out["run"]["version"],
        published=bool(evaluation.get("publish")),
        candidate_lists=sum(int(p.get("written", 0)) for p in out.get("published", [])),
        documents=int((out.get("indexed") or {}).get("indexed", 0)),
        metrics=dict(out["training"].get("metrics") or {}),
        gate_reason=str(evaluation.get("reason", "")),
        seconds=time.perf_counter() - t0,
        interactions=int(out["run"].get("interactions", 0)),
        source=str(source["kind"]),
    )
