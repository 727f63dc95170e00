"""SageMaker training entry point (prebuilt TensorFlow container, script mode).

The state machine's Train state starts a training job whose HyperParameters carry run_id,
version and bucket; the container runs `recpipe_train.py`, which calls `main()`. It runs the
same `workflow.train` step as the Lambda/local path: read the prepared run from
s3://<bucket>/runs/<run_id>/, train, upload the bundle to s3://<bucket>/bundles/<version>/
(not live: the Promote state moves the pointer), and leave candidates and content for the
publish states. The train report is also copied to SM_MODEL_DIR so the job's model artefact
names what it produced.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="recpipe_train")
    p.add_argument("--run_id", required=True)
    p.add_argument("--version", required=True)
    p.add_argument("--bucket", required=True)
    p.add_argument("--model-dir", default=os.environ.get("SM_MODEL_DIR"))
    args, _unknown = p.parse_known_args(argv)  # SageMaker adds its own flags
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    from recpipe.config import load_settings
    from recpipe.training import workflow
    from recpipe.training.wiring import build_deps

    settings = load_settings({**os.environ, "MODEL_BUCKET": args.bucket})
    deps = build_deps(settings, with_redis=False)
    out = workflow.train(deps, args.run_id, args.version, progress=True)
    if args.model_dir:
        Path(args.model_dir).mkdir(parents=True, exist_ok=True)
        (Path(args.model_dir) / "train_result.json").write_text(json.dumps(out, indent=2, default=str))
    print(json.dumps({"version": args.version, "metrics": out.get("metrics", {})}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
