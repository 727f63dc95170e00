"""`recpipe bench live-memory` (the Redis figures `recpipe sizing` uses) runs on a small population
and reports every figure it names."""

from __future__ import annotations

import json
from pathlib import Path

from recpipe_dev.cli import main as cli_main


def test_bench_live_memory_writes_its_figures(tmp_path: Path) -> None:
    out = tmp_path / "live-memory.json"
    # 300 items: past 128, so the trending bucket has the skiplist encoding a busy shop's has.
    code = cli_main(["bench", "live-memory", "--users", "200", "--items", "300", "--json", str(out)])
    report = json.loads(out.read_text())
    assert code == 0
    for name in ("session_key_bytes", "session_entry_bytes", "trending_entry_bytes", "trending_marker_bytes"):
        assert report[name] > 0, name
    # A full session (50 entries) costs its key plus 50 entries, as the split says (rounded).
    split = report["session_key_bytes"] + 50 * report["session_entry_bytes"]
    assert abs(report["session_full_key_used_memory"] - split) < 3
