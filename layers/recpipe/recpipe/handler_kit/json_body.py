"""The one JSON body parser of the HTTP routes: whatever a client sends, a precise 400.

`json.loads` alone lets three things through to a 500/502: nesting deeper than the parser's
recursion limit (RecursionError), integers of more than 4,300 digits (a ValueError that is not
a JSONDecodeError) and the non-JSON constants NaN/Infinity, which Python accepts and no store
can hold. No Powertools imports, so request parsing stays usable without Lambda.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, NoReturn

from recpipe.handler_kit.errors import ApiError

#: Refused code for nesting beyond the parser's limit (counted as Refused_<code> by api_resolver).
TOO_DEEP = "too_deeply_nested"


def _refuse_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not a JSON number")


def loads(
    raw: str | bytes,
    *,
    invalid_code: str = "invalid_json",
    error: Callable[[int, str, str], ApiError] = ApiError,
) -> Any:
    """Parse a request body or raise `error(400, code, message)` (the route's ApiError):
    `invalid_code` for malformed JSON, TOO_DEEP for nesting beyond the parser's limit."""
    try:
        return json.loads(raw, parse_constant=_refuse_constant)
    except RecursionError:
        raise error(400, TOO_DEEP, "request body is nested too deeply to be a valid request") from None
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError is a ValueError
        raise error(400, invalid_code, f"request body is not valid JSON: {exc}") from None
