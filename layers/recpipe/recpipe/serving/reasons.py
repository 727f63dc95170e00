"""Human-readable reasons: why an item is in the list, from where its candidate came from."""

from __future__ import annotations

from recpipe.domain.features import Source
from recpipe.domain.items import ItemTable

DAYPART_PHRASES = ("tonight", "this morning", "this afternoon", "this evening")
#: (bit, name) per source; plain ints because IntFlag arithmetic is slow on the hot path.
SOURCE_NAMES: tuple[tuple[int, str], ...] = (
    (int(Source.CF), "cf"),
    (int(Source.SESSION), "session"),
    (int(Source.TRENDING), "trending"),
    (int(Source.CONTENT), "content"),
    (int(Source.POPULAR), "popular"),
)
_SESSION, _CF, _CONTENT, _TRENDING = (
    int(Source.SESSION),
    int(Source.CF),
    int(Source.CONTENT),
    int(Source.TRENDING),
)


def source_names(flags: int) -> list[str]:
    return [name for flag, name in SOURCE_NAMES if flags & flag]


def reason(
    flags: int,
    *,
    anchor: int,
    items: ItemTable,
    item: int,
    daypart: int,
    anchor_in_cart: bool = False,
    content_from_context: bool = False,
) -> str:
    """The most specific true statement about a candidate, in order of how personal it is."""
    if flags & _SESSION and anchor >= 0:
        verb = "added" if anchor_in_cart else "viewed"
        suffix = " to your cart" if anchor_in_cart else ""
        return f"because you {verb} {items.titles[anchor]}{suffix}"
    if flags & _CF:
        return "similar to your interests"
    if flags & _CONTENT:
        if content_from_context:
            return "related to what you are browsing"
        cats = items.categories(item)
        return f"popular in {cats[0]}" if cats else "popular with everyone"
    if flags & _TRENDING:
        return "popular now"
    return f"popular {DAYPART_PHRASES[daypart % len(DAYPART_PHRASES)]}"
