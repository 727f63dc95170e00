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
import io
import json
import os
import sys
import tarfile
from collections.abc import Sequence
from pathlib import Path

#: The script-mode entry file SageMaker runs (HyperParameters.sagemaker_program).
PROGRAM = "recpipe_train.py"
#: Installed by the container before running PROGRAM (TensorFlow and boto3 are in the image).
REQUIREMENTS = (
    "implicit==0.7.3",
    "threadpoolctl>=3",
    "pydantic>=2.6,<3",
    "redis>=5,<9",
    "tqdm>=4.66",
    "aws-lambda-powertools>=3.0,<4",
)


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


def build_source_tarball(out: Path) -> Path:
    """The `${TrainingCodeUri}` object: recpipe_train.py + the recpipe package + requirements.txt.

    Upload it to s3://<ModelArtifactsBucket>/code/recpipe-training.tar.gz (the deploy does)."""
    import recpipe

    package = Path(recpipe.__file__).resolve().parent
    out.parent.mkdir(parents=True, exist_ok=True)

    def add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))

    with tarfile.open(out, "w:gz") as tar:
        add_bytes(
            tar,
            PROGRAM,
            b"import sys\nfrom recpipe.training.sagemaker_entry import main\n\nsys.exit(main())\n",
        )
        add_bytes(tar, "requirements.txt", ("\n".join(REQUIREMENTS) + "\n").encode())
        tar.add(package, arcname="recpipe", filter=lambda t: None if "__pycache__" in t.name else t)
    return out


if __name__ == "__main__":
    sys.exit(main())
