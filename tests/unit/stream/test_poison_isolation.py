"""A poison record never takes other events or users down (issue #15, defect 2).

GIVEN a batch with records the API would now refuse (written by an old producer straight to the
stream) and a record whose fold fails
WHEN the updater processes it
THEN those records are reported to the failure queue, nothing is returned for retry, and every
other event, of the same user and of others, is applied.
"""

from __future__ import annotations

import json
from typing import Any

from recpipe.stream.updater import FeatureUpdater, StreamRecord
from recpipe_dev.testing.fakes_stream import (
    InMemoryFailureSink,
    InMemorySessionStore,
    InMemoryTrendingStore,
    InMemoryUserFeatureStore,
)

NOW = 1_764_010_000.0


def rec(n: int, **body: Any) -> StreamRecord:
    full = {"event_id": f"e{n}", "user_id": "u1", "item_id": "m1", "type": "view", "ts": NOW - 60, **body}
    return StreamRecord(str(1000 + n), json.dumps(full).encode(), full["user_id"], "shardId-0")


def test_unstorable_and_unfoldable_records_are_reported_and_the_rest_applied() -> None:
    def categories_of(item: str) -> tuple[str, ...]:
        if item == "cursed":
            raise ValueError("category table entry is corrupt")
        return ("Drama",)

    users, failures = InMemoryUserFeatureStore(), InMemoryFailureSink()
    updater = FeatureUpdater(
        users,
        InMemorySessionStore(),
        InMemoryTrendingStore(clock=lambda: NOW),
        failures,
        categories_of,
        clock=lambda: NOW,
    )
    batch = [
        rec(1),
        rec(2, ts=1e-200),  # DynamoDB cannot store it: the whole user's write used to fail
        rec(3, type="rating", value=-5),
        rec(4, schema_version=True),
        rec(5, item_id="cursed"),  # valid, but its fold fails
        rec(6, item_id="m2"),
        rec(7, user_id="u2"),
    ]
    result = updater.process(batch)
    assert result.failed == [] and result.applied == 3 and result.poison == 4
    assert users.items["u1"].counts == {"view": 2} and users.items["u2"].counts == {"view": 1}
    reported = {r["sequenceNumber"]: r["reason"] for r in failures.reports}
    assert sorted(reported) == ["1002", "1003", "1004", "1005"]
    assert "ts:" in reported["1002"] and "value" in reported["1003"]
    assert "schema_version" in reported["1004"] and "corrupt" in reported["1005"]
