"""Where a retrain run keeps its artefacts between steps: `runs/<run_id>/<name>` in the model
bucket (AWS, local stack on moto) or under a directory (`recpipe retrain --work-dir`)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, Protocol

from botocore.exceptions import BotoCoreError, ClientError

from recpipe.ports import DependencyError, RetryableError

RUNS_PREFIX = "runs/"


class RunArtefactMissing(Exception):
    """A step asked for an artefact an earlier step did not produce."""


class RunStore(Protocol):
    def put_file(self, run_id: str, name: str, path: Path) -> None: ...

    def get_file(self, run_id: str, name: str, dest: Path) -> Path: ...

    def put_bytes(self, run_id: str, name: str, data: bytes) -> None: ...

    def get_bytes(self, run_id: str, name: str) -> bytes: ...

    def exists(self, run_id: str, name: str) -> bool: ...


class S3RunStore:
    def __init__(self, s3: Any, bucket: str, prefix: str = RUNS_PREFIX) -> None:
        self._s3 = s3
        self.bucket = bucket
        self.prefix = prefix

    def key(self, run_id: str, name: str) -> str:
        return f"{self.prefix}{run_id}/{name}"

    def _wrap(self, exc: Exception, run_id: str, name: str) -> Exception:
        if isinstance(exc, ClientError):
            code = exc.response.get("Error", {}).get("Code", "")
            if code in ("404", "NoSuchKey", "NotFound"):
                return RunArtefactMissing(f"run {run_id} has no {name}")
            return DependencyError(f"s3 {self.key(run_id, name)}: {code}")
        return RetryableError(f"s3 {self.key(run_id, name)}: {exc}")

    def put_file(self, run_id: str, name: str, path: Path) -> None:
        try:
            self._s3.upload_file(str(path), self.bucket, self.key(run_id, name))
        except (ClientError, BotoCoreError) as exc:
            raise self._wrap(exc, run_id, name) from exc

    def get_file(self, run_id: str, name: str, dest: Path) -> Path:
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._s3.download_file(self.bucket, self.key(run_id, name), str(dest))
        except (ClientError, BotoCoreError) as exc:
            raise self._wrap(exc, run_id, name) from exc
        return dest

    def put_bytes(self, run_id: str, name: str, data: bytes) -> None:
        try:
            self._s3.put_object(Bucket=self.bucket, Key=self.key(run_id, name), Body=data)
        except (ClientError, BotoCoreError) as exc:
            raise self._wrap(exc, run_id, name) from exc

    def get_bytes(self, run_id: str, name: str) -> bytes:
        try:
            return bytes(self._s3.get_object(Bucket=self.bucket, Key=self.key(run_id, name))["Body"].read())
        except (ClientError, BotoCoreError) as exc:
            raise self._wrap(exc, run_id, name) from exc

    def exists(self, run_id: str, name: str) -> bool:
        try:
            self._s3.head_object(Bucket=self.bucket, Key=self.key(run_id, name))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise self._wrap(exc, run_id, name) from exc
        return True


class DirectoryRunStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path(self, run_id: str, name: str) -> Path:
        return self.root / run_id / name

    def put_file(self, run_id: str, name: str, path: Path) -> None:
        target = self.path(run_id, name)
        target.parent.mkdir(parents=True, exist_ok=True)
        if Path(path).resolve() != target.resolve():
            shutil.copyfile(path, target)

    def get_file(self, run_id: str, name: str, dest: Path) -> Path:
        src = self.path(run_id, name)
        if not src.is_file():
            raise RunArtefactMissing(f"run {run_id} has no {name}")
        dest.parent.mkdir(parents=True, exist_ok=True)
        if src.resolve() != Path(dest).resolve():
            shutil.copyfile(src, dest)
        return dest

    def put_bytes(self, run_id: str, name: str, data: bytes) -> None:
        target = self.path(run_id, name)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, target)

    def get_bytes(self, run_id: str, name: str) -> bytes:
        src = self.path(run_id, name)
        if not src.is_file():
            raise RunArtefactMissing(f"run {run_id} has no {name}")
        return src.read_bytes()

    def exists(self, run_id: str, name: str) -> bool:
        return self.path(run_id, name).is_file()
