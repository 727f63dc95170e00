"""The HTTP API's one error type. No Powertools or AWS imports: domain-facing request parsing
raises it, the handler kit turns it into a response."""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """A request refused as a whole: `status` (4xx), a stable machine-readable `code`, and a
    message that names what is wrong (the field, the limit)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    def body(self) -> dict[str, Any]:
        """The one error body of every route: {"error": {"code", "message"}}."""
        return {"error": {"code": self.code, "message": self.message}}
