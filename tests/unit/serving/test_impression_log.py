"""Impressions leave the request path: buffered, written in batches by a background thread,
losses counted (never a blocked request, never a silent drop)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from recpipe.serving.impressions import ImpressionLog

ITEMS = [{"item_id": "a", "sources": ["cf"]}, {"item_id": "b", "sources": ["session", "trending"]}]


class Writer:
    def __init__(self, *, fail: bool = False, block: threading.Event | None = None) -> None:
        self.batches: list[list[dict[str, Any]]] = []
        self.fail = fail
        self.block = block

    def write(self, lines: Sequence[bytes]) -> list[tuple[bytes, str]]:
        if self.block is not None:
            self.block.wait(5)
        assert all(line.endswith(b"\n") and line.count(b"\n") == 1 for line in lines)
        self.batches.append([json.loads(line) for line in lines])
        return [(line, "firehose: ServiceUnavailableException") for line in lines] if self.fail else []


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
    assert not log.writing() and 1 <= stats["flushes"] <= len(writer.batches)
    assert log.flush_cpu_s > 0, (
        "the flushes' CPU is counted (the rounded stat can read 0.0 on a fast machine)"
    )
    assert max(len(b) for b in writer.batches) <= 200, "a call takes at most twice the wake-up size"
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
    assert log.dropped >= 1000 - 100 - 20  # buffer + the call held by the stuck writer (<= 2 x 10)
    release.set()
    log.close()
    s = log.stats()
    assert s["written"] + s["dropped"] == 1000 and s["buffered"] == 0


def test_while_writes_are_held_a_due_flush_waits_and_runs_on_release() -> None:
    writer = Writer()
    log = ImpressionLog(writer, batch_size=5, flush_interval_s=0.01)
    with log.writes_held():
        for n in range(20):
            record(log, n)  # wakes the thread
        time.sleep(0.1)
        assert writer.batches == [] and log.stats()["buffered"] == 20 and log.writing()
    deadline = time.monotonic() + 5
    while log.written < 20 and time.monotonic() < deadline:
        time.sleep(0.01)
    log.close()
    assert [len(b) for b in writer.batches] == [10, 10], "written on release, 2 x batch_size per call"


def test_records_the_writer_refuses_are_counted_as_failed() -> None:
    log = ImpressionLog(Writer(fail=True), start=False)
    for n in range(3):
        record(log, n)
    assert log.flush() == 0
    assert log.stats()["failed"] == 3 and "ServiceUnavailable" in str(log.last_error)


# A process with impressions buffered (the periodic flush is minutes away) that is sent SIGTERM,
# as Lambda does at shutdown: argv = output file, seconds the writer takes.
_CHILD = """
import json, sys, time
from recpipe.serving.impressions import ImpressionLog, flush_on_shutdown

class FileWriter:
    def write(self, records):
        time.sleep(float(sys.argv[2]))
        with open(sys.argv[1], "ab") as f:
            f.writelines(records)
        return []

log = ImpressionLog(FileWriter(), flush_interval_s=300)
log.record(recommendation_id="r1", user_id="u1", model_version="v1", experiment=None,
           variant=None, items=[{"item_id": "a", "sources": ["cf"]}])
flush_on_shutdown(log, timeout_s=0.25)
print("ready", flush=True)
time.sleep(60)
"""


def _sigterm_child(tmp_path: Path, write_s: float) -> tuple[int, float, Path]:
    out = tmp_path / "impressions.jsonl"
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(out), str(write_s)], stdout=subprocess.PIPE, text=True
    )
    assert child.stdout is not None and child.stdout.readline().strip() == "ready"
    t0 = time.monotonic()
    child.send_signal(signal.SIGTERM)
    code = child.wait(10)
    return code, time.monotonic() - t0, out


def test_sigterm_writes_the_buffered_impressions_then_ends_the_process(tmp_path: Path) -> None:
    code, _, out = _sigterm_child(tmp_path, 0.0)
    assert code == -signal.SIGTERM, "the process still ends the way SIGTERM ends it"
    written = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["recommendation_id"] for r in written] == ["r1"]


def test_the_shutdown_flush_is_bounded_in_time(tmp_path: Path) -> None:
    code, elapsed, out = _sigterm_child(tmp_path, 5.0)  # an archive that hangs
    assert code == -signal.SIGTERM
    assert elapsed < 2.0, "ends within the bound (Lambda's SIGKILL comes ~300 ms after SIGTERM)"
    assert not out.exists()


def test_a_flush_writes_what_was_buffered_when_it_started_not_what_arrives_during_it() -> None:
    class Slow(Writer):
        def write(self, lines: Sequence[bytes]) -> list[tuple[bytes, str]]:
            for n in range(3):  # requests served while the write is in flight
                record(log, 100 + len(self.batches) * 10 + n)
            return super().write(lines)

    writer = Slow()
    log = ImpressionLog(writer, start=False, batch_size=100)
    for n in range(5):
        record(log, n)
    assert log.flush() == 5
    assert [len(b) for b in writer.batches] == [5], "one call, not one more per handful that arrived"
    assert log.stats()["buffered"] == 3
    assert log.flush() == 3 and log.stats()["buffered"] == 3
