"""The X-Ray SDK (imported by Powertools' Tracer) creates its UDP emitter socket at import time;
no packet is ever sent. Import it once before sockets are disabled for each test."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session", autouse=True)
def _xray_sdk_imported() -> None:
    import aws_xray_sdk.core  # noqa: F401
