"""DynamoDB items as they travel in JSON (tests of the codec and of the local moto server)."""

from __future__ import annotations

import base64
from typing import Any

#: One attribute of every DynamoDB type, with edge cases (empty string, non-ASCII, nesting).
ALL_TYPES_ITEM: dict[str, Any] = {
    "user_id": {"S": "u-\u00fc"},
    "empty": {"S": ""},
    "n": {"N": "-12.50"},
    "b": {"B": b"\x00\xffzlib"},
    "ss": {"SS": ["a", "b"]},
    "ns": {"NS": ["1", "2.5"]},
    "bs": {"BS": [b"\x01", b"\x02"]},
    "m": {"M": {"x": {"L": [{"N": "1"}, {"NULL": True}, {"BOOL": False}]}, "y": {"M": {}}}},
    "l": {"L": []},
    "t": {"BOOL": True},
    "z": {"NULL": True},
}


def wire_item(item: dict[str, Any]) -> dict[str, Any]:
    """An item of Python AttributeValues as sent on the wire: binary values as base64 text.
    Written out per type, independently of botocore and of recpipe's codec, so tests can
    compare both against it."""

    def conv(v: Any) -> Any:
        ((kind, value),) = v.items()
        if kind == "B":
            raw = value if isinstance(value, bytes) else value.encode()
            return {"B": base64.b64encode(raw).decode()}
        if kind == "BS":
            return {"BS": [base64.b64encode(x).decode() for x in value]}
        if kind == "M":
            return {"M": {k: conv(x) for k, x in value.items()}}
        if kind == "L":
            return {"L": [conv(x) for x in value]}
        return v

    return {k: conv(v) for k, v in item.items()}
