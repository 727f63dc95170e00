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
import gzip
import hashlib
import io
import json
import os
import re
import sys
import tarfile
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

#: The script-mode entry file SageMaker runs (HyperParameters.sagemaker_program).
PROGRAM = "recpipe_train.py"
#: Installed by the container before running PROGRAM. TensorFlow, numpy, scipy and boto3 are in
#: the image (tests/training_container/image-packages.txt); export_tflite verifies the model in
#: the serving interpreter, so the job needs the Lambda layer's runtime too.
REQUIREMENTS = (
    "tflite-runtime==2.14.0",
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
    from recpipe.config import TrainingJobSettings, load_settings
    from recpipe.training import workflow
    from recpipe.training.wiring import build_deps

    # The job's Environment (retrain.asl.json) names the environment, bucket and pointer.
    settings = load_settings(TrainingJobSettings, {**os.environ, "MODEL_BUCKET": args.bucket})
    deps = build_deps(settings)
    out = workflow.train(deps, args.run_id, args.version, progress=True)
    if args.model_dir:
        Path(args.model_dir).mkdir(parents=True, exist_ok=True)
        (Path(args.model_dir) / "train_result.json").write_text(json.dumps(out, indent=2, default=str))
    print(json.dumps({"version": args.version, "metrics": out.get("metrics", {})}))
    return 0


#: Object metadata key holding `source_digest()` of the uploaded tarball.
DIGEST_METADATA = "recpipe-source-sha256"


def _source_entries() -> list[tuple[str, bytes]]:
    """(name in the tarball, bytes), sorted: the program, requirements and the installed package."""
    import recpipe

    package = Path(recpipe.__file__).resolve().parent
    files = sorted(
        p
        for p in package.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix not in {".pyc", ".pyo"}
    )
    return [
        (PROGRAM, b"import sys\nfrom recpipe.training.sagemaker_entry import main\n\nsys.exit(main())\n"),
        ("requirements.txt", ("\n".join(REQUIREMENTS) + "\n").encode()),
        *((f"recpipe/{p.relative_to(package).as_posix()}", p.read_bytes()) for p in files),
    ]


def source_digest(entries: Sequence[tuple[str, bytes]] | None = None) -> str:
    """sha256 over names and contents: equal code gives an equal digest, whatever the file times."""
    h = hashlib.sha256()
    for name, data in entries if entries is not None else _source_entries():
        h.update(name.encode() + b"\0" + str(len(data)).encode() + b"\0" + data)
    return h.hexdigest()


def build_source_tarball(out: Path) -> Path:
    """The `${TrainingCodeUri}` object: recpipe_train.py + the recpipe package + requirements.txt.

    Byte-for-byte reproducible (sorted entries, zero times/owners, gzip without a timestamp)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with (
        out.open("wb") as raw,
        gzip.GzipFile(filename="", fileobj=raw, mode="wb", mtime=0) as gz,
        tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        for name, data in _source_entries():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tar.addfile(info, io.BytesIO(data))
    return out


def publish_source_tarball(s3: Any, uri: str) -> dict[str, Any]:
    """Upload the tarball to `uri` (s3://bucket/key) unless the object there has the same digest.

    Called by the Prepare step (the installed layer is the code to train with), so a deploy
    needs no manual upload and a re-run with unchanged code writes nothing."""
    match = re.fullmatch(r"s3://([^/]+)/(.+)", uri)
    if match is None:
        raise ValueError(f"training code URI must be s3://bucket/key, got {uri!r}")
    bucket, key = match.groups()
    entries = _source_entries()
    digest = source_digest(entries)
    try:
        head = s3.head_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") not in {"404", "NoSuchKey", "NotFound"}:
            raise
        head = None
    if head is not None and head.get("Metadata", {}).get(DIGEST_METADATA) == digest:
        return {"uri": uri, "sha256": digest, "uploaded": False}
    with tempfile.TemporaryDirectory(prefix="recpipe-code-") as tmp:
        path = build_source_tarball(Path(tmp) / "recpipe-training.tar.gz")
        s3.put_object(
            Bucket=bucket,
            Key=key,
            Body=path.read_bytes(),
            ContentType="application/gzip",
            Metadata={DIGEST_METADATA: digest},
        )
    return {"uri": uri, "sha256": digest, "uploaded": True}


if __name__ == "__main__":
    sys.exit(main())
