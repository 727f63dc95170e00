"""The impression line the request path writes is the v1 record the report reads back."""

from __future__ import annotations

import json

from recpipe.domain.impressions import impression_from_record, impression_line, impression_of

SERVED = [
    {"item_id": "a", "score": 0.9, "reason": "because you viewed x", "sources": ["cf", "session"]},
    {"item_id": "b", "score": 0.5, "reason": "popular now", "sources": ["trending"]},
    {"item_id": "c", "score": 0.1, "reason": "popular now"},
]
FIELDS = {
    "recommendation_id": "r1", "user_id": "u1", "ts": 1764878400.12345,
    "model_version": "v7", "experiment": "ab", "variant": "treatment",
}  # fmt: skip


def test_the_request_paths_line_equals_the_records_encoding() -> None:
    line = impression_line(**FIELDS, items=SERVED)  # type: ignore[arg-type]
    assert line == impression_of(**FIELDS, items=SERVED).to_line()  # type: ignore[arg-type]
    assert line.endswith(b"\n") and line.count(b"\n") == 1


def test_a_line_reads_back_as_the_served_list_best_first() -> None:
    raw = json.loads(impression_line(**FIELDS, items=SERVED))  # type: ignore[arg-type]
    assert raw["kind"] == "impression" and raw["v"] == 1 and raw["ts"] == 1764878400.123
    imp = impression_from_record(raw)
    assert [(i.item_id, i.position, i.sources) for i in imp.items] == [
        ("a", 1, ("cf", "session")), ("b", 2, ("trending",)), ("c", 3, ()),
    ]  # fmt: skip
    assert (imp.recommendation_id, imp.user_id, imp.variant) == ("r1", "u1", "treatment")
