"""The event schema is the contract between producers, the API, Kinesis and the updater."""

from __future__ import annotations

import pytest
from recpipe.domain.events import EventRejected, EventType, parse_event

NOW = 1_700_000_000.0


def _raw(**over: object) -> dict[str, object]:
    raw: dict[str, object] = {
        "event_id": "e-1",
        "user_id": "u-1",
        "item_id": "i-1",
        "type": "click",
        "ts": NOW,
    }
    raw.update(over)
    return raw


def test_a_valid_event_round_trips_through_its_record() -> None:
    event = parse_event(_raw(context={"device": "mobile"}), now=NOW)
    assert event.type is EventType.CLICK
    record = event.to_record()
    assert record["schema_version"] == 1
    assert parse_event(record, now=NOW) == event


@pytest.mark.parametrize(
    ("ts", "expected"),
    [(NOW, NOW), (int(NOW * 1000), NOW), ("2023-11-14T22:13:20Z", NOW), ("2023-11-14T23:13:20+01:00", NOW)],
)
def test_ts_accepts_epoch_seconds_milliseconds_and_zoned_iso(ts: object, expected: float) -> None:
    assert parse_event(_raw(ts=ts), now=NOW).ts == pytest.approx(expected)


@pytest.mark.parametrize(
    ("override", "reason"),
    [
        ({"user_id": ""}, "user_id"),
        ({"user_id": "has space"}, "user_id"),
        ({"type": "like"}, "type"),
        ({"ts": "yesterday"}, "ts"),
        ({"ts": "2023-11-14T22:13:20"}, "time zone"),
        ({"ts": True}, "ts"),
        ({"ts": NOW + 3600}, "future"),
        ({"colour": "red"}, "colour: unknown field"),
        ({"context": {"device": "toaster"}}, "context.device"),
        ({"context": {"mood": "happy"}}, "context.mood: unknown field"),
        ({"type": "rating"}, "needs a numeric 'value'"),
        ({"type": "rating", "value": 11}, "value: Input should be less than or equal to 10"),
        ({"schema_version": 2}, "schema_version"),
    ],
)
def test_invalid_events_are_rejected_with_a_precise_reason(override: dict[str, object], reason: str) -> None:
    with pytest.raises(EventRejected, match=reason):
        parse_event(_raw(**override), now=NOW)


def test_missing_fields_are_named() -> None:
    with pytest.raises(EventRejected) as info:
        parse_event({"event_id": "e"}, now=NOW)
    for name in ("user_id", "item_id", "type", "ts"):
        assert f"{name}: field required" in str(info.value)


def test_non_object_is_rejected() -> None:
    with pytest.raises(EventRejected, match="JSON object"):
        parse_event(["not", "an", "object"], now=NOW)


def test_rating_weight_scales_with_the_value() -> None:
    low = parse_event(_raw(type="rating", value=1.0), now=NOW)
    high = parse_event(_raw(type="rating", value=5.0), now=NOW)
    assert 0 < low.weight < high.weight
