"""Retraining for the demo: the retrain workflow's own steps, in-process, on the local stack.

`recpipe.training.workflow.run_local` runs prepare -> train -> evaluate (gate) -> publish
candidates -> index content -> promote, exactly the state machine's path. Its dependencies come
from `recpipe.training.wiring.build_deps(Settings)`, so on the local stack the bundle goes to
the moto S3 model bucket, the SSM pointer names it, candidates go to Redis and the content
index to the in-process index: the handlers then load the model the way they do in AWS.

The only demo-specific piece is the data source: the catalogue the demo generated (or loaded
and moved to the present) is handed to `prepare` as an in-memory source.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any

from recpipe.demo.data import DemoData

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


def retrain(data: DemoData, *, quick: bool = False) -> RetrainOutcome:
    """Run the workflow against the stack the environment points at (Settings from env)."""
    from recpipe.config import load_settings
    from recpipe.training.pipeline import TrainParams
    from recpipe.training.wiring import build_deps
    from recpipe.training.workflow import RetrainError, run_local

    t0 = time.perf_counter()
    settings = load_settings()
    deps = build_deps(settings)

    def load(source: Any) -> tuple[Any, Any, dict[str, Any]]:
        return data.log, data.items, {"source": data.description, "error_count": 0}

    deps = replace(deps, loaders={**(deps.loaders or {}), SOURCE_KIND: load})
    params = TrainParams.tiny() if quick else TrainParams(max_eval_users=500)
    request = {"source": {"kind": SOURCE_KIND}, "params": params.to_dict()}
    try:
        out = run_local(deps, request, progress=True, execution=f"demo-{int(time.time())}")
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
    )
