"""`sam validate --lint` (the SAM translator plus cfn-lint) accepts the template with no finding."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from infra_contract import ROOT, TEMPLATE_PATH


def _sam() -> str | None:
    beside_python = Path(sys.executable).parent / "sam"
    return str(beside_python) if beside_python.exists() else shutil.which("sam")


def test_sam_validate_lint_reports_nothing() -> None:
    sam = _sam()
    if sam is None:
        pytest.skip("the sam CLI is not installed (pip install aws-sam-cli, part of the dev extra)")
    env = {**os.environ, "SAM_CLI_TELEMETRY": "0"}
    # Offline: cfn-lint and the SAM translator need no AWS call, but a region must be set.
    env.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    result = subprocess.run(
        [sam, "validate", "--lint", "--template", str(TEMPLATE_PATH)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "is a valid SAM Template" in output
