"""ModelStore: versioned bundles in S3 behind the SSM pointer parameter (and a directory twin).

    s3://<bucket>/bundles/<version>/manifest.json, ranker.tflite, items.npz, items.json, neighbours.npz
    SSM <pointer param> = <version>          (the only thing that makes a version live)
    SSM <experiment param> = experiment JSON  (optional traffic split between bundles; "none" = off)

Uploads put the manifest last, so a bundle with a manifest is complete; `set_current` refuses a
version whose manifest is not in the bucket; `fetch` verifies checksums and the feature spec
(bundle.load_bundle) in a scratch directory and only then moves it into place.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from recpipe.bundle import BUNDLE_FILES, MANIFEST, OPTIONAL_FILES, BundleError, load_bundle, read_manifest
from recpipe.domain.experiments import Experiment, parse_experiment
from recpipe.ports import DependencyError, RetryableError

BUNDLES_PREFIX = "bundles/"
#: SSM value meaning "no model yet" (the template creates the parameter before any training).
NO_VERSION = ("", "none", "-")
#: Local stack: file in a directory of versions naming the current one (serving reads it too).
LOCAL_POINTER = "CURRENT"
#: Local stack: file beside CURRENT holding the experiment definition (absent = no experiment).
LOCAL_EXPERIMENT = "EXPERIMENT"

_THROTTLING = {"Throttling", "ThrottlingException", "SlowDown", "RequestLimitExceeded", "ServiceUnavailable"}


def _error(service: str, exc: Exception) -> DependencyError:
    if isinstance(exc, ClientError):
        code = exc.response.get("Error", {}).get("Code", "")
        if code in _THROTTLING:
            return RetryableError(f"{service}: {code}")
        return DependencyError(f"{service}: {code or exc}")
    return RetryableError(f"{service}: {exc}")


class S3ModelStore:
    def __init__(
        self,
        s3: Any,
        ssm: Any,
        bucket: str,
        pointer_param: str,
        prefix: str = BUNDLES_PREFIX,
        *,
        experiment_param: str | None = None,
    ) -> None:
        self._s3 = s3
        self._ssm = ssm
        self.bucket = bucket
        self.pointer_param = pointer_param
        self.prefix = prefix
        self.experiment_param = experiment_param

    def key(self, version: str, name: str) -> str:
        return f"{self.prefix}{version}/{name}"

    # ---- pointer ------------------------------------------------------------------------------
    def _parameter(self, name: str) -> str | None:
        """An SSM parameter's value; None when it is missing or says "no version"."""
        try:
            value = self._ssm.get_parameter(Name=name)["Parameter"]["Value"]
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ParameterNotFound":
                return None
            raise _error("ssm", exc) from exc
        except BotoCoreError as exc:
            raise _error("ssm", exc) from exc
        value = str(value).strip()
        return None if value.lower() in NO_VERSION else value

    def current_version(self) -> str | None:
        return self._parameter(self.pointer_param)

    def set_current(self, version: str) -> None:
        """Point serving at `version`; refuses a version that is not completely uploaded."""
        if self.manifest(version) is None:
            raise BundleError(f"bundle {version} is not in s3://{self.bucket}/{self.prefix} (no manifest)")
        try:
            self._ssm.put_parameter(Name=self.pointer_param, Value=version, Type="String", Overwrite=True)
        except (ClientError, BotoCoreError) as exc:
            raise _error("ssm", exc) from exc

    # ---- experiment ---------------------------------------------------------------------------
    def current_experiment(self) -> Experiment | None:
        """The live traffic split, None when there is none (or no parameter is configured).
        A stored definition that does not parse raises ExperimentError (serving keeps the last
        good one)."""
        if not self.experiment_param:
            return None
        value = self._parameter(self.experiment_param)
        return None if value is None else parse_experiment(value)

    def set_experiment(self, experiment: Experiment | None) -> None:
        """Start (or replace) a split, or end it with None. Refuses a variant whose bundle is
        not completely uploaded."""
        if not self.experiment_param:
            raise BundleError("no experiment parameter configured (EXPERIMENT_PARAM)")
        if experiment is not None:
            for version in experiment.bundles:
                if self.manifest(version) is None:
                    raise BundleError(f"bundle {version} is not in s3://{self.bucket}/{self.prefix}")
        value = "none" if experiment is None else experiment.to_json()
        try:
            self._ssm.put_parameter(Name=self.experiment_param, Value=value, Type="String", Overwrite=True)
        except (ClientError, BotoCoreError) as exc:
            raise _error("ssm", exc) from exc

    # ---- bundles ------------------------------------------------------------------------------
    def versions(self) -> list[str]:
        """Every bundle version with a manifest in the bucket (complete uploads)."""
        out: list[str] = []
        try:
            pages = self._s3.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self.prefix, Delimiter="/"
            )
            for page in pages:
                for p in page.get("CommonPrefixes", []):
                    out.append(str(p["Prefix"])[len(self.prefix) :].rstrip("/"))
        except (ClientError, BotoCoreError) as exc:
            raise _error("s3", exc) from exc
        return [v for v in out if v and self.manifest(v) is not None]

    def manifest(self, version: str) -> dict[str, Any] | None:
        try:
            body = self._s3.get_object(Bucket=self.bucket, Key=self.key(version, MANIFEST))["Body"].read()
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound"):
                return None
            raise _error("s3", exc) from exc
        except BotoCoreError as exc:
            raise _error("s3", exc) from exc
        try:
            return dict(json.loads(body))
        except (ValueError, TypeError) as exc:
            raise BundleError(f"manifest of {version} is not JSON: {exc}") from None

    def upload(self, bundle_dir: Path, version: str) -> None:
        """Upload a verified bundle; data files first, manifest last. Re-uploading the same
        bundle is a no-op; a different bundle under an existing version is refused."""
        bundle = load_bundle(bundle_dir)  # never publish what serving would refuse
        if bundle.version != version:
            raise BundleError(f"bundle in {bundle_dir} is version {bundle.version}, not {version}")
        existing = self.manifest(version)
        if existing is not None:
            if existing.get("files") == bundle.manifest["files"]:
                return
            raise BundleError(f"version {version} already exists in S3 with other contents")
        try:
            for name in BUNDLE_FILES:
                self._s3.upload_file(str(bundle_dir / name), self.bucket, self.key(version, name))
            for name in OPTIONAL_FILES:
                if (bundle_dir / name).is_file():
                    self._s3.upload_file(str(bundle_dir / name), self.bucket, self.key(version, name))
            self._s3.upload_file(str(bundle_dir / MANIFEST), self.bucket, self.key(version, MANIFEST))
        except (ClientError, BotoCoreError) as exc:
            raise _error("s3", exc) from exc

    def _download_optional(self, version: str, name: str, dest: Path) -> None:
        try:
            self._s3.download_file(self.bucket, self.key(version, name), str(dest))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in ("404", "NoSuchKey", "NotFound"):
                raise

    def fetch(self, version: str, dest: Path) -> Path:
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=f".{version}-", dir=dest.parent))
        try:
            try:
                for name in (MANIFEST, *BUNDLE_FILES):
                    self._s3.download_file(self.bucket, self.key(version, name), str(scratch / name))
                for name in OPTIONAL_FILES:
                    self._download_optional(version, name, scratch / name)
            except ClientError as exc:
                code = exc.response.get("Error", {}).get("Code")
                if code in ("404", "NoSuchKey", "NotFound"):
                    raise BundleError(f"bundle {version} is incomplete in S3") from None
                raise _error("s3", exc) from exc
            except BotoCoreError as exc:
                raise _error("s3", exc) from exc
            load_bundle(scratch)  # checksums + feature spec before anyone sees it
            if dest.exists():
                shutil.rmtree(dest)
            os.replace(scratch, dest)
        finally:
            if scratch.exists():
                shutil.rmtree(scratch, ignore_errors=True)
        return dest


class DirectoryModelStore:
    """The same contract on a local directory of versions (`<root>/<version>/`, `<root>/CURRENT`):
    what RECPIPE_BUNDLE_DIR points the local stack's serving at."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def current_version(self) -> str | None:
        pointer = self.root / LOCAL_POINTER
        if not pointer.is_file():
            return None
        value = pointer.read_text().strip()
        return None if value.lower() in NO_VERSION else value

    def set_current(self, version: str) -> None:
        read_manifest(self.root / version)
        self._replace(LOCAL_POINTER, version + "\n")

    def _replace(self, name: str, text: str) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f".{name}.tmp"
        tmp.write_text(text)
        os.replace(tmp, self.root / name)  # atomic on POSIX

    def current_experiment(self) -> Experiment | None:
        path = self.root / LOCAL_EXPERIMENT
        if not path.is_file():
            return None
        value = path.read_text().strip()
        return None if value.lower() in NO_VERSION else parse_experiment(value)

    def set_experiment(self, experiment: Experiment | None) -> None:
        if experiment is not None:
            for version in experiment.bundles:
                read_manifest(self.root / version)
        self._replace(LOCAL_EXPERIMENT, "none\n" if experiment is None else experiment.to_json() + "\n")

    def versions(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and (p / MANIFEST).is_file())

    def manifest(self, version: str) -> dict[str, Any] | None:
        try:
            return read_manifest(self.root / version)
        except BundleError:
            return None

    def upload(self, bundle_dir: Path, version: str) -> None:
        bundle = load_bundle(bundle_dir)
        if bundle.version != version:
            raise BundleError(f"bundle in {bundle_dir} is version {bundle.version}, not {version}")
        target = self.root / version
        existing = self.manifest(version)
        if existing is not None:
            if existing.get("files") == bundle.manifest["files"]:
                return
            raise BundleError(f"version {version} already exists in {self.root} with other contents")
        self.root.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=f".{version}-", dir=self.root))
        for name in (*BUNDLE_FILES, MANIFEST):
            shutil.copy2(bundle_dir / name, scratch / name)
        for name in OPTIONAL_FILES:
            if (bundle_dir / name).is_file():
                shutil.copy2(bundle_dir / name, scratch / name)
        if target.exists():
            shutil.rmtree(target)
        os.replace(scratch, target)

    def fetch(self, version: str, dest: Path) -> Path:
        load_bundle(self.root / version)
        if Path(dest).resolve() != (self.root / version).resolve():
            shutil.copytree(self.root / version, dest, dirs_exist_ok=True)
        return Path(dest)
