"""Impressions leave the request path: buffered, written in batches by a background thread,
losses counted (never a blocked request, never a silent drop)."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

from recpipe.serving.impressions import ImpressionLog

ITEMS = [{"item_id": "a", "sources": ["cf"]}, {"item_id": "b", "sources": ["session", "trending"]}]


class Writer:
    def __init__(self, *, fail: bool = False, block: threading.Event | None = None) -> None:
        self.batches: list[list[Mapping[str, Any]]] = []
        self.fail = fail
        self.block = block

    def write(self, records: Sequence[Mapping[str, Any]]) -> list[tuple[Mapping[str, Any], str]]:
        if self.block is not None:
            self.block.wait(5)
        self.batches.append(list(records))
        return [(r, "firehose: ServiceUnavailableException") for r in records] if self.fail else []


def record(log: ImpressionLog, n: int) -> None:
    log.record(
        recommendation_id=f"r{n}",
        user_id="u1",
        model_version="v1",
        experiment="ab",
        variant="control",
        items=ITEMS,
    )


def test_served_lists_reach_the_writer_in_batches_from_the_background_thread() -> None:
    writer = Writer()
    log = ImpressionLog(writer, batch_size=100, flush_interval_s=0.05)
    for n in range(250):
        record(log, n)
    deadline = time.monotonic() + 5
    while log.written < 250 and time.monotonic() < deadline:
        time.sleep(0.01)
    log.close()
    stats = log.stats()
    assert {k: stats[k] for k in ("recorded", "written", "failed", "dropped", "buffered")} == {
        "recorded": 250, "written": 250, "failed": 0, "dropped": 0, "buffered": 0,
    }  # fmt: skip
    assert stats["flush_cpu_ms"] > 0
    assert max(len(b) for b in writer.batches) <= 100
    first = writer.batches[0][0]
    assert first["recommendation_id"] == "r0" and first["variant"] == "control"
    assert first["items"] == [
        {"item_id": "a", "position": 1, "sources": ["cf"]},
        {"item_id": "b", "position": 2, "sources": ["session", "trending"]},
    ]


def test_a_stuck_writer_never_blocks_a_request_and_overflow_is_counted() -> None:
    release = threading.Event()
    log = ImpressionLog(Writer(block=release), batch_size=10, flush_interval_s=0.01, max_buffer=100)
    time.sleep(0.05)
    t0 = time.perf_counter()
    for n in range(1000):
        record(log, n)
    # The writer is stuck for 5 s: a request that waited on it would show here.
    assert time.perf_counter() - t0 < 1.0
    assert log.dropped >= 1000 - 100 - 10  # buffer + the batch held by the stuck writer
    release.set()
    log.close()
    s = log.stats()
    assert s["written"] + s["dropped"] == 1000 and s["buffered"] == 0


def test_records_the_writer_refuses_are_counted_as_failed() -> None:
    log = ImpressionLog(Writer(fail=True), start=False)
    for n in range(3):
        record(log, n)
    assert log.flush() == 0
    assert log.stats()["failed"] == 3 and "ServiceUnavailable" in str(log.last_error)
