"""User features folded from events: idempotent, order-independent, bounded."""

from __future__ import annotations

import itertools
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from recpipe.domain.events import Event, EventType
from recpipe.domain.user import (
    AFFINITY_HALF_LIFE_S,
    MAX_APPLIED_IDS,
    MAX_RECENT,
    UserFeatures,
    apply_event,
    apply_events,
    event_fingerprint,
    holds_fingerprint,
)

T0 = 1_700_000_000.0
CATS = {"i1": ["jazz"], "i2": ["rock"], "i3": ["jazz", "blues"]}


def ev(
    n: int, item: str, typ: EventType = EventType.CLICK, ts: float = T0, value: float | None = None
) -> Event:
    return Event(event_id=f"e{n}", user_id="u", item_id=item, type=typ, ts=ts, value=value)


def test_a_duplicate_event_changes_nothing() -> None:
    once = apply_event(None, ev(1, "i1"), CATS["i1"])
    twice = apply_event(once, ev(1, "i1"), CATS["i1"])
    assert twice == once
    assert once.counts == {"click": 1}


def test_affinity_halves_after_one_half_life() -> None:
    state = apply_event(None, ev(1, "i1"), CATS["i1"])
    now = T0 + AFFINITY_HALF_LIFE_S
    assert state.affinity_at(now)["jazz"] == pytest.approx(state.affinity_at(T0)["jazz"] / 2)


def test_out_of_order_delivery_gives_the_same_decayed_state() -> None:
    events = [
        ev(1, "i1", ts=T0),
        ev(2, "i3", ts=T0 + 86400),
        ev(3, "i2", EventType.PURCHASE, ts=T0 + 3 * 86400),
    ]
    reference = apply_events(None, events, CATS)
    assert reference is not None
    now = T0 + 5 * 86400
    for perm in itertools.permutations(events):
        other = apply_events(None, perm, CATS)
        assert other is not None
        got, want = other.affinity_at(now), reference.affinity_at(now)
        assert got.keys() == want.keys()
        for cat in want:
            assert got[cat] == pytest.approx(want[cat], rel=1e-9)
        assert [r.item_id for r in other.recent] == [r.item_id for r in reference.recent]
        assert other.purchased == reference.purchased
        assert (other.first_seen, other.last_seen) == (reference.first_seen, reference.last_seen)


def test_cart_follows_event_time_not_arrival_order() -> None:
    add = ev(1, "i1", EventType.ADD_TO_CART, ts=T0)
    remove = ev(2, "i1", EventType.REMOVE_FROM_CART, ts=T0 + 10)
    in_order = apply_events(None, [add, remove])
    late_add = apply_events(None, [remove, add])
    assert in_order is not None and late_add is not None
    assert in_order.cart == late_add.cart == frozenset()
    bought = apply_events(
        None, [add, ev(3, "i2", EventType.ADD_TO_CART, ts=T0 + 1), ev(4, "i2", EventType.PURCHASE, ts=T0 + 2)]
    )
    assert bought is not None
    assert bought.cart == frozenset({"i1"})
    assert "i2" in bought.purchased


def test_recent_items_are_bounded_and_newest_first() -> None:
    state = apply_events(None, [ev(n, f"i{n}", ts=T0 + n) for n in range(MAX_RECENT + 10)])
    assert state is not None
    assert len(state.recent) == MAX_RECENT
    assert state.recent[0].item_id == f"i{MAX_RECENT + 9}"


def test_item_round_trip_preserves_everything() -> None:
    state = apply_events(
        None,
        [ev(1, "i1"), ev(2, "i2", EventType.ADD_TO_CART), ev(3, "i3", EventType.RATING, value=4.5)],
        CATS,
    )
    assert state is not None
    assert UserFeatures.from_item(state.to_item()) == state


def test_columns_round_trip_preserves_everything_and_check_their_values() -> None:
    events = [ev(1, "i1"), ev(2, "i2", EventType.ADD_TO_CART), ev(3, "i3", EventType.PURCHASE, ts=T0 + 0.1)]
    state = apply_events(None, events, CATS)
    assert state is not None and state.cart_ops and state.purchased and state.applied_runs
    body = state.columns()
    read = UserFeatures.from_columns(body, "u", state.version, state.applied)
    assert read == state
    assert UserFeatures.from_columns(UserFeatures(user_id="v").columns(), "v", 0, b"") == UserFeatures(
        user_id="v"
    )
    for name, column, bad in (
        ("recent", 0, 7),  # an item id that is not a string
        ("recent", 1, "soon"),  # a time that is not a number
        ("counts", 1, 1.5),  # a count that is not an integer
        ("cart_ops", 2, "yes"),  # in-cart that is not a boolean
    ):
        broken = {k: [list(c) for c in v] if isinstance(v, list) else v for k, v in body.items()}
        broken[name][column][0] = bad
        with pytest.raises(ValueError, match=name):
            UserFeatures.from_columns(broken, "u", 0, state.applied)
    with pytest.raises(ValueError, match="applied_runs"):
        UserFeatures.from_columns(body, "u", 0, state.applied[:-8])
    short = dict(body, recent=[list(c) for c in body["recent"]])
    short["recent"][1].pop()
    with pytest.raises(ValueError):
        UserFeatures.from_columns(short, "u", 0, state.applied)


def test_event_fingerprints_are_stable_across_releases() -> None:
    # Stored states hold these numbers: changing the function would let every event still
    # within Kinesis retention be applied a second time after a deploy.
    assert event_fingerprint("e1").hex() == "1b5d5e51f54f0f04"
    assert event_fingerprint("0b7c6f5e-2f7e-4f8e-9a52-1d2c3b4a5e6f").hex() == "657ef5b83855c1ef"
    # Written out as numbers (to_item), each is read little-endian.
    assert apply_event(None, ev(1, "i1")).to_item()["applied"] == [292540415853092123]


def test_applied_events_are_remembered_as_fingerprints_up_to_the_bound() -> None:
    state = apply_events(None, [ev(n, f"i{n}", ts=T0 + n) for n in range(MAX_APPLIED_IDS + 5)])
    assert state is not None
    assert state.applied == b"".join(event_fingerprint(f"e{n}") for n in range(5, MAX_APPLIED_IDS + 5))
    assert state.has_applied(f"e{MAX_APPLIED_IDS + 4}") and not state.has_applied("e4")
    assert apply_event(state, ev(MAX_APPLIED_IDS + 4, "other")) is state


def test_a_fingerprint_counts_only_where_a_fingerprint_starts() -> None:
    fp = event_fingerprint("e1")
    straddling = event_fingerprint("x")[:3] + fp + event_fingerprint("y")[3:]  # fp at offset 3
    assert fp in straddling and not holds_fingerprint(straddling, fp)
    assert holds_fingerprint(straddling + fp, fp) and not holds_fingerprint(b"", fp)


@pytest.mark.parametrize("applied", [[-1], [2**64], b"\x00" * 7])
def test_fingerprints_that_cannot_be_are_refused(applied: object) -> None:
    item = apply_event(None, ev(1, "i1")).to_item()
    item["applied"] = applied
    with pytest.raises(ValueError, match="applied"):
        UserFeatures.from_item(item)


def test_a_state_stored_with_event_ids_still_deduplicates() -> None:
    state = apply_events(None, [ev(1, "i1"), ev(2, "i2")], CATS)
    assert state is not None
    legacy = state.to_item()
    del legacy["applied"]
    legacy["applied_event_ids"] = ["e1", "e2"]  # the layout before fingerprints
    read = UserFeatures.from_item(legacy)
    assert read == state
    assert apply_event(read, ev(2, "i2"), CATS["i2"]) is read


def test_event_for_another_user_is_refused() -> None:
    state = apply_event(None, ev(1, "i1"))
    other = Event(event_id="x", user_id="v", item_id="i1", type=EventType.VIEW, ts=T0)
    with pytest.raises(ValueError, match="applied to"):
        apply_event(state, other)


@settings(max_examples=50, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from(["i1", "i2", "i3"]), st.integers(0, 10**6)), min_size=1, max_size=12),
    st.randoms(),
)
def test_any_order_and_any_redelivery_give_the_same_affinity(
    rows: list[tuple[str, int]], rnd: object
) -> None:
    events = [ev(n, item, ts=T0 + dt) for n, (item, dt) in enumerate(rows)]
    shuffled = events + events[: len(events) // 2]  # redeliveries
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    a = apply_events(None, events, CATS)
    b = apply_events(None, shuffled, CATS)
    assert a is not None and b is not None
    now = T0 + 2 * 10**6
    for cat, value in a.affinity_at(now).items():
        assert b.affinity_at(now)[cat] == pytest.approx(value, rel=1e-9)
    assert a.counts == b.counts


def test_at_version_changes_only_the_version() -> None:
    state = apply_events(None, [ev(1, "i1"), ev(2, "i2", EventType.PURCHASE)], CATS)
    assert state is not None
    assert state.at_version(7) == replace(state, version=7)
