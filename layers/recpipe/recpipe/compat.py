"""Python 3.11 names on Python 3.10.

The Lambda functions run Python 3.11, but the SageMaker training image pinned by the template
(TensorFlow 2.16, the newest whose TFLite files tflite-runtime 2.14 reads) runs Python 3.10, and
the training job imports this same package. Code that both run imports these names from here.
"""

from __future__ import annotations

import sys
from datetime import timezone
from enum import Enum

if sys.version_info >= (3, 11):  # noqa: UP036 (ruff targets the Lambda's 3.11)
    from datetime import UTC
    from enum import StrEnum
    from typing import Self
else:  # pragma: no cover - exercised by tests/training_container on Python 3.10
    from typing_extensions import Self  # noqa: UP035

    UTC = timezone.utc  # noqa: UP017

    class StrEnum(str, Enum):  # noqa: UP042
        """3.11's StrEnum: members are their values in str() and format()."""

        def __str__(self) -> str:
            return str(self.value)

        def __format__(self, spec: str) -> str:
            return format(str(self.value), spec)


__all__ = ["UTC", "Self", "StrEnum"]
