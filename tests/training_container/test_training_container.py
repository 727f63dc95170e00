"""The retrain's training job runs in the container the template names (issue #16).

SageMaker runs the Train state's job in the prebuilt TensorFlow image: its own Python and
packages, plus what the source tarball's requirements.txt installs at start-up. This test builds
that environment (the image's Python from pyenv, the packages in image-packages.txt, then the
tarball's requirements.txt, as the training toolkit does), lays out /opt/ml the way the toolkit
does (code in /opt/ml/code, hyperparameters as `--name value` arguments and in SM_HPS, the
Train state's Environment, SM_* variables, one directory per input channel), runs the program
against a moto server, and checks that the bundle it uploads loads and ranks in the serving
runtime of this (the Lambda's) environment.

`make test-training-container`; the environment is cached in .cache/training-container/ (keyed
on image-packages.txt and requirements.txt), so only the first run downloads TensorFlow.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import numpy as np
import pytest
from recpipe.adapters.s3_models import S3ModelStore
from recpipe.bundle import load_bundle
from recpipe.config import RecommendSettings, load_settings
from recpipe.serving.model_provider import LocalBundleSource
from recpipe.serving.request import parse_query
from recpipe.serving.runtime import Dependencies, build_online_path
from recpipe.training import sagemaker_entry, workflow
from recpipe.training.pipeline import TrainParams
from recpipe.training.runs import S3RunStore
from recpipe.training.sources import default_loaders
from recpipe_dev.local.moto_server import MotoServer
from recpipe_dev.local.resources import load_template
from recpipe_dev.synthetic import DEV_LOADERS
from recpipe_dev.testing.fakes_candidates import InMemoryCandidateCache
from recpipe_dev.testing.fakes_stream import (
    InMemorySessionStore,
    InMemoryTrendingStore,
    InMemoryUserFeatureStore,
)
from recpipe_dev.testing.settings import function_env

ROOT = Path(__file__).resolve().parents[2]
IMAGE_PACKAGES = Path(__file__).with_name("image-packages.txt")
CACHE = ROOT / ".cache" / "training-container"
BUCKET = "container-models"
PARAM = "/recpipe/container/model/current"
VERSION = "container-v1"
#: The job's wall-clock allowance here (the state machine gives SageMaker 2 h).
JOB_TIMEOUT_S = 900


def image_pins() -> tuple[str, list[str]]:
    """(python major.minor, pip requirement lines) from image-packages.txt."""
    lines = [ln.split("#")[0].strip() for ln in IMAGE_PACKAGES.read_text().splitlines()]
    lines = [ln for ln in lines if ln]
    python = [ln.split("==")[1] for ln in lines if ln.startswith("python==")]
    assert len(python) == 1, "image-packages.txt names the image's Python once (python==3.x)"
    return python[0], [ln for ln in lines if not ln.startswith("python==")]


def template_image() -> str:
    return str(load_template()["Parameters"]["TrainingImage"]["Default"])


def test_the_pinned_packages_are_the_image_the_template_names() -> None:
    """image-packages.txt and template.yaml cannot drift: the tag names TF and Python."""
    tag = template_image().rsplit(":", 1)[1]
    match = re.match(r"(\d+\.\d+\.\d+)-cpu-py(\d)(\d+)", tag)
    assert match, f"TrainingImage tag {tag!r} is not a tensorflow-training CPU tag"
    tf_version, major, minor = match.groups()
    python, pins = image_pins()
    assert python == f"{major}.{minor}"
    assert f"tensorflow-cpu=={tf_version}" in pins
    # the tag's TensorFlow is the one the project trains with locally (pyproject's train extra)
    assert f'"tensorflow-cpu=={tf_version}"' in (ROOT / "pyproject.toml").read_text()


def find_python(version: str) -> str:
    """An interpreter of the image's Python: TRAINING_CONTAINER_PYTHON, pyenv, or on PATH."""
    override = os.environ.get("TRAINING_CONTAINER_PYTHON")
    if override:
        return override
    pyenv = shutil.which("pyenv")
    if pyenv:
        root = Path(
            subprocess.run([pyenv, "root"], capture_output=True, text=True, check=True).stdout.strip()
        )
        found = sorted(
            root.glob(f"versions/{version}.*/bin/python{version}"),
            key=lambda p: int(p.parts[-3].rsplit(".", 1)[1]),
        )
        if found:
            return str(found[-1])
    on_path = shutil.which(f"python{version}")
    if on_path:
        return on_path
    pytest.fail(f"Python {version} (the training image's) not found: `pyenv install {version}`")


def pip(env_dir: Path, *args: str) -> None:
    subprocess.run(
        [
            str(env_dir / "bin" / "python"),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            *args,
        ],
        check=True,
    )


@pytest.fixture(scope="session")
def code_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The source tarball the Prepare step uploads, unpacked as the toolkit does (/opt/ml/code)."""
    tmp = tmp_path_factory.mktemp("code")
    tarball = sagemaker_entry.build_source_tarball(tmp / "sourcedir.tar.gz")
    code = tmp / "opt" / "ml" / "code"
    with tarfile.open(tarball) as tar:
        tar.extractall(code, filter="data")
    return code


@pytest.fixture(scope="session")
def image_env(code_dir: Path) -> Path:
    """A virtualenv with the image's Python and packages plus the tarball's requirements.txt."""
    python, pins = image_pins()
    requirements = (code_dir / "requirements.txt").read_text()
    key = hashlib.sha256(IMAGE_PACKAGES.read_bytes() + b"\0" + requirements.encode()).hexdigest()[:16]
    env_dir = CACHE / f"py{python}-{key}"
    if (env_dir / ".complete").is_file():
        return env_dir
    shutil.rmtree(env_dir, ignore_errors=True)
    env_dir.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([find_python(python), "-m", "venv", str(env_dir)], check=True)
    pip(env_dir, *pins)  # the image
    pip(env_dir, "-r", str(code_dir / "requirements.txt"))  # what the toolkit installs at start-up
    (env_dir / ".complete").write_text(requirements)
    return env_dir


@pytest.fixture(scope="session")
def moto_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = MotoServer(tmp_path_factory.mktemp("moto") / "moto.log")
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


def train_state() -> dict[str, Any]:
    asl = json.loads((ROOT / "statemachines" / "retrain.asl.json").read_text())
    return dict(asl["States"]["Train"]["Parameters"])


def job_request(run_id: str) -> dict[str, Any]:
    """The Train state's request with the values Step Functions would substitute here."""
    params = train_state()
    hps = {k.removesuffix(".$"): v for k, v in params["HyperParameters"].items()}
    hps.update(run_id=run_id, version=VERSION, bucket=BUCKET)
    env = {
        k: v.replace("${EnvName}", "container").replace("${ModelBucket}", BUCKET)
        for k, v in params["Environment"].items()
    }
    env["MODEL_POINTER_PARAM"] = PARAM
    channels = [c["ChannelName"] for c in params.get("InputDataConfig", [])]
    return {"hyperparameters": hps, "environment": env, "channels": channels}


def sagemaker_environment(opt_ml: Path, request: dict[str, Any]) -> tuple[list[str], dict[str, str]]:
    """argv and environment of the user program, laid out as the SageMaker training toolkit does."""
    hps = request["hyperparameters"]
    user_hps = {k: v for k, v in hps.items() if not k.startswith("sagemaker_")}
    for sub in ("model", "output/data", "input/config", "input/data"):
        (opt_ml / sub).mkdir(parents=True, exist_ok=True)
    (opt_ml / "input/config/hyperparameters.json").write_text(json.dumps(hps))
    (opt_ml / "input/config/resourceconfig.json").write_text(
        json.dumps({"current_host": "algo-1", "hosts": ["algo-1"]})
    )
    env = {
        # a clean environment: nothing of this (the Lambda) environment's Python leaks in
        "PATH": "/usr/bin:/bin",
        "HOME": str(opt_ml.parent),
        "LANG": "C.UTF-8",
        "PYTHONUNBUFFERED": "1",
        "SM_MODEL_DIR": str(opt_ml / "model"),
        "SM_OUTPUT_DATA_DIR": str(opt_ml / "output/data"),
        "SM_OUTPUT_DIR": str(opt_ml / "output"),
        "SM_INPUT_DIR": str(opt_ml / "input"),
        "SM_INPUT_CONFIG_DIR": str(opt_ml / "input/config"),
        "SM_CHANNELS": json.dumps(request["channels"]),
        "SM_HPS": json.dumps(user_hps),
        "SM_USER_ARGS": json.dumps([a for k, v in user_hps.items() for a in (f"--{k}", str(v))]),
        "SM_MODULE_NAME": hps["sagemaker_program"].removesuffix(".py"),
        "SM_MODULE_DIR": hps["sagemaker_submit_directory"],
        "SM_CURRENT_HOST": "algo-1",
        "SM_HOSTS": json.dumps(["algo-1"]),
        "SM_NUM_CPUS": str(os.cpu_count() or 1),
        "SM_NUM_GPUS": "0",
        "TRAINING_JOB_NAME": "recpipe-container-test",
        **{f"SM_HP_{k.upper()}": str(v) for k, v in user_hps.items()},
        **request["environment"],
    }
    for channel in request["channels"]:
        (opt_ml / "input/data" / channel).mkdir(parents=True, exist_ok=True)
        env[f"SM_CHANNEL_{channel.upper()}"] = str(opt_ml / "input/data" / channel)
    argv = [hps["sagemaker_program"], *json.loads(env["SM_USER_ARGS"])]
    return argv, env


def test_the_training_job_runs_in_the_image_and_its_bundle_serves(
    image_env: Path, code_dir: Path, moto_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a prepared run in S3 (the Prepare step, here in the Lambda's environment)
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_url)
    s3, ssm = boto3.client("s3"), boto3.client("ssm")
    s3.create_bucket(Bucket=BUCKET)
    models = S3ModelStore(s3, ssm, BUCKET, PARAM)
    deps = workflow.RetrainDeps(
        runs=S3RunStore(s3, BUCKET), models=models, loaders={**default_loaders(), **DEV_LOADERS}
    )
    source = {"kind": "synthetic", "n_users": 300, "n_items": 400, "n_interactions": 12000, "seed": 3}
    run = workflow.prepare(
        deps, {"source": source, "params": TrainParams.tiny().to_dict(), "version": VERSION}
    )

    # WHEN the container runs the Train state's job: `python recpipe_train.py --run_id ...`
    opt_ml = tmp_path / "opt" / "ml"
    argv, env = sagemaker_environment(opt_ml, job_request(run["run_id"]))
    env.update(
        AWS_ENDPOINT_URL=moto_url,
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_REGION="us-east-1",
    )
    t0 = time.monotonic()
    job = subprocess.run(
        [str(image_env / "bin" / "python"), *argv],
        check=False,
        cwd=code_dir,
        env=env,
        capture_output=True,
        text=True,
        timeout=JOB_TIMEOUT_S,
    )
    took = time.monotonic() - t0
    assert job.returncode == 0, (
        f"training job failed ({took:.0f}s):\n{job.stdout[-4000:]}\n{job.stderr[-6000:]}"
    )
    print(
        f"\ntraining job in the image's environment: {took:.1f}s; last line: {job.stdout.strip().splitlines()[-1]}"
    )

    # THEN it ran on the image's Python, wrote its report, and uploaded (not promoted) the bundle
    python, _ = image_pins()
    version_out = subprocess.run(
        [str(image_env / "bin" / "python"), "-c", "import sys;print('%d.%d' % sys.version_info[:2])"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert version_out.stdout.strip() == python
    report = json.loads((opt_ml / "model" / "train_result.json").read_text())
    assert report["version"] == VERSION
    assert models.current_version() is None
    bundle_dir = models.fetch(VERSION, tmp_path / "fetched")

    # AND the bundle loads (hashes, feature spec) and ranks in the serving runtime (tflite-runtime)
    bundle = load_bundle(bundle_dir)
    assert bundle.version == VERSION
    items = bundle.items.item_ids
    cache = InMemoryCandidateCache()
    cache.publish("c1", [("user-1", [(items[i], 1.0 - i / 100) for i in range(30)])], {})
    online = build_online_path(
        load_settings(RecommendSettings, function_env(READ_TIMEOUT_MS="500", REQUEST_BUDGET_MS="2000")),
        dependencies=Dependencies(
            candidates=cache,
            sessions=InMemorySessionStore(),
            users=InMemoryUserFeatureStore(),
            trending=InMemoryTrendingStore(),
        ),
        source=LocalBundleSource(bundle_dir),
        background_refresh=False,
    )
    result = online.recommender.recommend(parse_query({"user_id": "user-1", "k": "10"}))
    assert result.model_version == VERSION and result.degraded == []
    assert len(result.items) == 10
    scores = np.array([item["score"] for item in result.items], dtype=np.float64)
    assert np.isfinite(scores).all() and len(set(scores.round(6).tolist())) > 1


#: Run in the image's environment: train a small list ranker, wrap it in the CF-order scorer
#: (what a retrain ships when its ranker loses to the CF order) and export both with the
#: image's Keras and TensorFlow.
CF_ORDER_JOB = """
import sys
from pathlib import Path
import numpy as np
from recpipe.domain.features import N_FEATURES
from recpipe.training.ranker import RankerParams, cf_order_scorer, export_tflite, train_list_ranker
rng = np.random.default_rng(0)
xs = [rng.random((20, N_FEATURES), dtype=np.float32) for _ in range(100)]
ys = [np.eye(20, dtype=np.float32)[int(np.argmax(x[:, 0]))] for x in xs]
model, _ = train_list_ranker(xs, ys, RankerParams(hidden=(8,), epochs=1))
probe = np.concatenate(xs)[:64]
Path(sys.argv[1]).write_bytes(export_tflite(cf_order_scorer(model), probe))
"""


def test_the_cf_order_scorer_exports_in_the_image(image_env: Path, code_dir: Path, tmp_path: Path) -> None:
    from recpipe.domain.features import FEATURE_NAMES, N_FEATURES
    from recpipe.training.ranker import tflite_scores

    out = tmp_path / "cf_order.tflite"
    job = subprocess.run(
        [str(image_env / "bin" / "python"), "-c", CF_ORDER_JOB, str(out)],
        check=False,
        cwd=code_dir,
        capture_output=True,
        text=True,
        timeout=JOB_TIMEOUT_S,
    )
    assert job.returncode == 0, f"{job.stdout[-2000:]}\n{job.stderr[-4000:]}"
    # the image's model, in this (the Lambda's) runtime: the CF candidates first, in CF order
    x = np.random.default_rng(1).random((30, N_FEATURES), dtype=np.float32)
    cf = np.arange(30) < 12
    x[:, FEATURE_NAMES.index("src_cf")] = cf
    x[:, FEATURE_NAMES.index("cf_rank")] = np.where(cf, 1.0 / (1.0 + np.arange(30)), 0.0)
    order = np.argsort(-tflite_scores(out.read_bytes(), x), kind="stable")
    assert order[:12].tolist() == list(range(12))
