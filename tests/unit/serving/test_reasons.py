"""Reasons are the most personal true statement about a candidate."""

from __future__ import annotations

from recpipe.domain.features import Source
from recpipe.serving.reasons import reason, source_names
from serving_catalogue import make_items

ITEMS = make_items()


def r(flags: int, anchor: int = -1, **kw: object) -> str:
    return reason(flags, anchor=anchor, items=ITEMS, item=5, daypart=3, **kw)  # type: ignore[arg-type]


def test_reasons_in_order_of_how_personal_they_are() -> None:
    assert r(Source.SESSION | Source.CF, anchor=2) == "because you viewed Item 2"
    assert r(Source.SESSION, anchor=2, anchor_in_cart=True) == "because you added Item 2 to your cart"
    assert r(Source.CF | Source.TRENDING) == "similar to your interests"
    assert r(Source.CONTENT, content_from_context=True) == "related to what you are browsing"
    assert r(Source.CONTENT) == "popular in books"
    assert r(Source.TRENDING | Source.POPULAR) == "popular now"
    assert r(Source.POPULAR) == "popular this evening"


def test_source_names() -> None:
    assert source_names(Source.CF | Source.TRENDING | Source.POPULAR) == ["cf", "trending", "popular"]
    assert source_names(0) == []
