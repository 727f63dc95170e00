"""The demo's lock file and shutdown order."""

from __future__ import annotations

import os
from pathlib import Path

from recpipe_dev.demo.runner import Cleanup, DemoLock


def test_lock_is_taken_and_released_by_its_owner(tmp_path: Path) -> None:
    lock = DemoLock(tmp_path / "demo.lock")
    lock.acquire()
    assert (tmp_path / "demo.lock").read_text() == str(os.getpid())
    lock.release()
    assert not (tmp_path / "demo.lock").exists()


def test_a_stale_lock_from_a_dead_process_is_taken_over(tmp_path: Path) -> None:
    (tmp_path / "demo.lock").write_text(str(2**22 + 4321))  # above pid_max on common systems
    lock = DemoLock(tmp_path / "demo.lock")
    lock.acquire()
    assert lock.held


def test_cleanup_stops_in_reverse_order_once_and_survives_failures() -> None:
    done: list[str] = []
    cleanup = Cleanup()
    cleanup.push("stack", lambda: done.append("stack"))

    def broken() -> None:
        raise RuntimeError("already gone")

    cleanup.push("poller", broken)
    cleanup.push("server", lambda: done.append("server"))
    cleanup.run()
    cleanup.run()
    assert done == ["server", "stack"]
