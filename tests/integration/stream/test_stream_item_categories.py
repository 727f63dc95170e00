"""The updater's item categories come from the current bundle's item table, locally or via the
SSM pointer + S3, and a broken bundle keeps the previous table."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import boto3
from recpipe.bundle import ITEMS_JSON, ITEMS_NPZ, MANIFEST
from recpipe.stream.categories import ItemCategories, local_bundle_locator, s3_bundle_locator


def test_local_versions_directory_follows_the_current_pointer(tmp_path: Path, write_items: Any) -> None:
    write_items(tmp_path / "v1", "v1", {"m1": ["Drama"], "m2": ["Comedy", "Drama"]})
    write_items(tmp_path / "v2", "v2", {"m1": ["Horror"]})
    (tmp_path / "CURRENT").write_text("v1\n")
    clock = [0.0]
    categories = ItemCategories(local_bundle_locator(tmp_path), refresh_s=60, clock=lambda: clock[0])
    assert categories("m2") == ("Comedy", "Drama") and categories("unknown") == ()
    (tmp_path / "CURRENT").write_text("v2")
    assert categories("m1") == ("Drama",)  # not re-checked before refresh_s
    clock[0] = 61
    assert categories("m1") == ("Horror",) and categories.version == "v2"
    (tmp_path / "v3").mkdir()  # a broken bundle: the last good table stays
    (tmp_path / "CURRENT").write_text("v3")
    clock[0] = 200
    assert categories("m1") == ("Horror",) and categories.version == "v2"


def test_no_bundle_means_no_categories(tmp_path: Path) -> None:
    assert ItemCategories(local_bundle_locator(tmp_path))("m1") == ()
    assert ItemCategories(None)("m1") == ()


def test_the_ssm_pointer_and_s3_bundle(aws: None, tmp_path: Path, write_items: Any) -> None:
    s3, ssm = boto3.client("s3"), boto3.client("ssm")
    s3.create_bucket(Bucket="models")
    write_items(tmp_path / "src", "2026-01-01", {"m1": ["Drama", "War"]})
    for name in (ITEMS_JSON, ITEMS_NPZ, MANIFEST):
        s3.upload_file(str(tmp_path / "src" / name), "models", f"bundles/2026-01-01/{name}")
    locate = s3_bundle_locator(ssm, s3, "/recpipe/test/model", "models", tmp_path / "cache")
    assert locate() is None  # no pointer yet
    ssm.put_parameter(Name="/recpipe/test/model", Value="none", Type="String")
    assert locate() is None  # the pointer before the first promotion
    ssm.put_parameter(Name="/recpipe/test/model", Value="2026-01-01", Type="String", Overwrite=True)
    categories = ItemCategories(locate)
    assert categories("m1") == ("Drama", "War") and categories.version == "2026-01-01"
    assert (tmp_path / "cache" / "2026-01-01" / MANIFEST).is_file()
