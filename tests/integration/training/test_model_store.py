"""Bundles in S3 behind the SSM pointer (moto): complete-or-invisible, verified on fetch."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import boto3
import pytest
from recpipe.adapters.s3_models import DirectoryModelStore, S3ModelStore
from recpipe.bundle import RANKER, BundleError, load_bundle

BUCKET = "models"
PARAM = "/recpipe/test/model/current"


@pytest.fixture()
def store(aws: None) -> S3ModelStore:
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=BUCKET)
    return S3ModelStore(s3, boto3.client("ssm"), BUCKET, PARAM)


def test_upload_fetch_and_promote(store: S3ModelStore, bundle_dir: Path, tmp_path: Path) -> None:
    version = load_bundle(bundle_dir).version
    assert store.current_version() is None  # no parameter yet

    store.upload(bundle_dir, version)
    assert store.current_version() is None  # uploading is not promoting
    store.set_current(version)
    assert store.current_version() == version

    fetched = store.fetch(version, tmp_path / "cache" / version)
    assert load_bundle(fetched).manifest["files"] == load_bundle(bundle_dir).manifest["files"]
    assert store.manifest(version)["version"] == version  # type: ignore[index]


def test_reupload_is_a_noop_and_other_content_is_refused(
    store: S3ModelStore, bundle_dir: Path, tmp_path: Path
) -> None:
    version = load_bundle(bundle_dir).version
    store.upload(bundle_dir, version)
    store.upload(bundle_dir, version)

    other = tmp_path / "other"
    shutil.copytree(bundle_dir, other)
    manifest = json.loads((other / "manifest.json").read_text())
    (other / RANKER).write_bytes((other / RANKER).read_bytes() + b"\0")
    from recpipe.bundle import sha256_file

    manifest["files"][RANKER] = sha256_file(other / RANKER)
    (other / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="already exists"):
        store.upload(other, version)


def test_pointer_refuses_a_version_that_is_not_uploaded(store: S3ModelStore) -> None:
    with pytest.raises(BundleError, match="no manifest"):
        store.set_current("v-missing")
    assert store.current_version() is None


def test_a_tampered_bundle_is_refused_on_fetch(store: S3ModelStore, bundle_dir: Path, tmp_path: Path) -> None:
    version = load_bundle(bundle_dir).version
    store.upload(bundle_dir, version)
    boto3.client("s3").put_object(Bucket=BUCKET, Key=f"bundles/{version}/{RANKER}", Body=b"not a model")
    dest = tmp_path / "cache" / version
    with pytest.raises(BundleError, match="checksum"):
        store.fetch(version, dest)
    assert not dest.exists()  # nothing half-fetched is left where serving looks


def test_a_bundle_serving_would_refuse_is_never_uploaded(
    store: S3ModelStore, bundle_dir: Path, tmp_path: Path
) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(bundle_dir, broken)
    (broken / RANKER).write_bytes(b"garbage")
    with pytest.raises(BundleError):
        store.upload(broken, load_bundle(bundle_dir).version)


def test_directory_store_has_the_same_contract(bundle_dir: Path, tmp_path: Path) -> None:
    store = DirectoryModelStore(tmp_path / "bundles")
    version = load_bundle(bundle_dir).version
    with pytest.raises(BundleError):
        store.set_current(version)
    store.upload(bundle_dir, version)
    store.upload(bundle_dir, version)
    store.set_current(version)
    assert (tmp_path / "bundles" / "CURRENT").read_text().strip() == version
    assert store.current_version() == version
    assert load_bundle(tmp_path / "bundles" / version).version == version


def test_the_experiment_lives_beside_the_pointer_and_names_only_uploaded_bundles(
    aws: None, bundle_dir: Path
) -> None:
    from recpipe.domain.experiments import ExperimentError, parse_experiment

    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=BUCKET)
    ssm = boto3.client("ssm")
    store = S3ModelStore(s3, ssm, BUCKET, PARAM, experiment_param="/recpipe/test/model/experiment")
    version = load_bundle(bundle_dir).version
    store.upload(bundle_dir, version)
    assert store.versions() == [version]
    assert store.current_experiment() is None  # no parameter yet
    split = {"name": "ab", "salt": "s", "variants": [{"name": "a", "bundle": version, "weight": 1}]}
    with pytest.raises(BundleError, match="not in s3"):
        store.set_experiment(
            parse_experiment({**split, "variants": [{"name": "a", "bundle": "nope", "weight": 1}]})
        )
    store.set_experiment(parse_experiment(split))
    assert store.current_experiment() == parse_experiment(split)
    ssm.put_parameter(Name="/recpipe/test/model/experiment", Value="{oops", Type="String", Overwrite=True)
    with pytest.raises(ExperimentError):
        store.current_experiment()
    store.set_experiment(None)
    assert store.current_experiment() is None
    assert S3ModelStore(s3, ssm, BUCKET, PARAM).current_experiment() is None, "no parameter configured"
