"""The SageMaker training entry point runs the same train step against S3 (moto)."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import boto3
import pytest
from recpipe.adapters.s3_models import S3ModelStore
from recpipe.bundle import load_bundle
from recpipe.training import sagemaker_entry, workflow
from recpipe.training.pipeline import TrainParams
from recpipe.training.runs import S3RunStore
from recpipe.training.sources import default_loaders
from recpipe_dev.synthetic import DEV_LOADERS

BUCKET = "sm-models"
PARAM = "/recpipe/sm/model/current"


def test_training_job_entry_point_uploads_a_bundle_but_does_not_promote(
    aws: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MODEL_POINTER_PARAM", PARAM)
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=BUCKET)
    runs = S3RunStore(s3, BUCKET)
    models = S3ModelStore(s3, boto3.client("ssm"), BUCKET, PARAM)
    deps = workflow.RetrainDeps(runs=runs, models=models, loaders={**default_loaders(), **DEV_LOADERS})
    source = {"kind": "synthetic", "n_users": 300, "n_items": 400, "n_interactions": 12000, "seed": 3}
    run = workflow.prepare(
        deps, {"source": source, "params": TrainParams.tiny().to_dict(), "version": "sm-v1"}
    )

    # what the container runs: python recpipe_train.py --run_id ... --version ... --bucket ...
    code = sagemaker_entry.main(
        [
            "--run_id",
            run["run_id"],
            "--version",
            "sm-v1",
            "--bucket",
            BUCKET,
            "--model-dir",
            str(tmp_path / "model"),
        ]
    )

    assert code == 0
    assert models.manifest("sm-v1") is not None
    assert models.current_version() is None  # promotion is the workflow's last step, not training's
    fetched = models.fetch("sm-v1", tmp_path / "fetched")
    assert load_bundle(fetched).version == "sm-v1"
    assert runs.exists(run["run_id"], workflow.CANDIDATES_FILE)
    assert json.loads((tmp_path / "model" / "train_result.json").read_text())["version"] == "sm-v1"


def test_source_tarball_has_the_program_the_package_and_requirements(tmp_path: Path) -> None:
    out = sagemaker_entry.build_source_tarball(tmp_path / "code.tar.gz")
    with tarfile.open(out) as tar:
        names = set(tar.getnames())
        program = tar.extractfile(sagemaker_entry.PROGRAM)
        assert program is not None and b"sagemaker_entry import main" in program.read()
    assert {
        "recpipe_train.py",
        "requirements.txt",
        "recpipe/training/sagemaker_entry.py",
        "recpipe/bundle.py",
    } <= names
    assert not any("__pycache__" in n for n in names)


def test_tarball_is_reproducible_byte_for_byte(tmp_path: Path) -> None:
    a = sagemaker_entry.build_source_tarball(tmp_path / "a.tar.gz").read_bytes()
    b = sagemaker_entry.build_source_tarball(tmp_path / "b.tar.gz").read_bytes()
    assert a == b


def test_prepare_uploads_the_training_code_once_and_again_only_when_it_changes(
    aws: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=BUCKET)
    uri = f"s3://{BUCKET}/code/recpipe-training.tar.gz"

    first = sagemaker_entry.publish_source_tarball(s3, uri)
    head = s3.head_object(Bucket=BUCKET, Key="code/recpipe-training.tar.gz")
    again = sagemaker_entry.publish_source_tarball(s3, uri)
    after = s3.head_object(Bucket=BUCKET, Key="code/recpipe-training.tar.gz")

    assert first["uploaded"] is True and again["uploaded"] is False
    assert head["Metadata"][sagemaker_entry.DIGEST_METADATA] == first["sha256"] == again["sha256"]
    assert after["ETag"] == head["ETag"] and after["LastModified"] == head["LastModified"]
    body = s3.get_object(Bucket=BUCKET, Key="code/recpipe-training.tar.gz")["Body"].read()
    (tmp_path / "code.tar.gz").write_bytes(body)
    with tarfile.open(tmp_path / "code.tar.gz") as tar:
        assert {"recpipe_train.py", "requirements.txt", "recpipe/training/sagemaker_entry.py"} <= set(
            tar.getnames()
        )

    # a stale object (other code, or uploaded by hand without the digest) is replaced
    s3.put_object(Bucket=BUCKET, Key="code/recpipe-training.tar.gz", Body=b"old code")
    replaced = sagemaker_entry.publish_source_tarball(s3, uri)
    assert replaced["uploaded"] is True
    assert s3.get_object(Bucket=BUCKET, Key="code/recpipe-training.tar.gz")["Body"].read() == body

    # the digest follows the package's content: a changed file means a new upload
    changed = [
        (n, d + b"# changed\n" if n == sagemaker_entry.PROGRAM else d)
        for n, d in sagemaker_entry._source_entries()
    ]
    assert sagemaker_entry.source_digest(changed) != first["sha256"]


def test_a_non_s3_training_code_uri_is_refused(aws: None) -> None:
    with pytest.raises(ValueError, match="s3://bucket/key"):
        sagemaker_entry.publish_source_tarball(boto3.client("s3"), "https://example.com/code.tgz")
