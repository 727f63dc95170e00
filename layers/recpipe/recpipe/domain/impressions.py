"""The impression record: one served list, as the archive keeps it (contract v1).

    {"kind": "impression", "v": 1, "recommendation_id", "user_id", "ts", "model_version",
     "experiment", "variant", "items": [{"item_id", "position", "sources": [...]}, ...]}

Positions start at 1. Events that carry `context.recommendation_id` are joined to it
(recpipe.domain.attribution). Impressions live in the archive bucket under `impressions/`,
beside the events, partitioned by hour like them. On the wire and in the archive a record is
one line of compact JSON ending in a newline (`impression_line`); objects hold many lines.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

IMPRESSIONS_PREFIX = "impressions/"
KIND = "impression"
VERSION = 1


@dataclass(frozen=True, slots=True)
class ShownItem:
    item_id: str
    position: int
    sources: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Impression:
    recommendation_id: str
    user_id: str
    ts: float
    model_version: str | None
    experiment: str | None
    variant: str | None
    items: tuple[ShownItem, ...]

    def to_record(self) -> dict[str, Any]:
        return {
            "kind": KIND,
            "v": VERSION,
            "recommendation_id": self.recommendation_id,
            "user_id": self.user_id,
            "ts": round(self.ts, 3),
            "model_version": self.model_version,
            "experiment": self.experiment,
            "variant": self.variant,
            "items": [
                {"item_id": i.item_id, "position": i.position, "sources": list(i.sources)} for i in self.items
            ],
        }

    def to_line(self) -> bytes:
        return encode_line(self.to_record())


_encode = json.JSONEncoder(separators=(",", ":")).encode


def encode_line(record: Mapping[str, Any]) -> bytes:
    """One archive line: compact JSON and a newline."""
    return (_encode(record) + "\n").encode()


class ImpressionRejected(ValueError):
    pass


def impression_from_record(raw: Mapping[str, Any]) -> Impression:
    """Parse an archived record; ImpressionRejected names what is wrong."""
    try:
        if raw.get("kind") != KIND:
            raise ImpressionRejected(f"not an impression (kind={raw.get('kind')!r})")
        items = tuple(
            ShownItem(str(i["item_id"]), int(i["position"]), tuple(str(s) for s in i.get("sources", ())))
            for i in raw["items"]
        )
        return Impression(
            recommendation_id=str(raw["recommendation_id"]),
            user_id=str(raw["user_id"]),
            ts=float(raw["ts"]),
            model_version=None if raw.get("model_version") is None else str(raw["model_version"]),
            experiment=None if raw.get("experiment") is None else str(raw["experiment"]),
            variant=None if raw.get("variant") is None else str(raw["variant"]),
            items=items,
        )
    except ImpressionRejected:
        raise
    except (KeyError, TypeError, ValueError) as exc:
        raise ImpressionRejected(f"malformed impression: {type(exc).__name__}: {exc}") from None


def impression_of(
    *,
    recommendation_id: str,
    user_id: str,
    ts: float,
    model_version: str | None,
    experiment: str | None,
    variant: str | None,
    items: Sequence[Mapping[str, Any]],
) -> Impression:
    """From a served response's fields (items as in the API response, best first)."""
    return Impression(
        recommendation_id=recommendation_id,
        user_id=user_id,
        ts=ts,
        model_version=model_version,
        experiment=experiment,
        variant=variant,
        items=tuple(
            ShownItem(str(item["item_id"]), pos, tuple(item.get("sources", ())))
            for pos, item in enumerate(items, start=1)
        ),
    )


def impression_line(
    *,
    recommendation_id: str,
    user_id: str,
    ts: float,
    model_version: str | None,
    experiment: str | None,
    variant: str | None,
    items: Sequence[Mapping[str, Any]],
) -> bytes:
    """The archive line of a served list, built straight from the response's fields: what the
    request path pays per impression (one small dict, one C-encoder call; no intermediate
    objects). Equal to `impression_of(...).to_line()`."""
    return encode_line(
        {
            "kind": KIND,
            "v": VERSION,
            "recommendation_id": recommendation_id,
            "user_id": user_id,
            "ts": round(ts, 3),
            "model_version": model_version,
            "experiment": experiment,
            "variant": variant,
            "items": [
                {"item_id": str(item["item_id"]), "position": pos, "sources": list(item.get("sources", ()))}
                for pos, item in enumerate(items, start=1)
            ],
        }
    )
