"""`recpipe experiment report` over an archive directory: per-variant figures and the JSON file."""

from __future__ import annotations

import json
import time
from pathlib import Path

from recpipe.adapters.archive import archive_key
from recpipe.domain.events import Event, EventContext, EventType
from recpipe.domain.impressions import IMPRESSIONS_PREFIX, Impression, ShownItem
from recpipe_dev.cli import main

NOW = time.time() - 600


def write_lines(root: Path, key: str, records: list[dict[str, object]]) -> None:
    path = root / key
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def test_report_prints_and_writes_per_variant_ctr_with_intervals(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    impressions, events = [], []
    for n in range(200):
        variant = "control" if n % 2 else "treatment"
        imp = Impression(f"r{n}", f"u{n}", NOW + n, "v1", "ab", variant, (ShownItem(f"i{n}", 1, ("cf",)),))
        impressions.append(imp.to_record())
        # treatment: every 2nd list clicked; control: every 10th
        if (variant == "treatment" and n % 4 == 0) or (variant == "control" and n % 20 == 1):
            events.append(
                Event(
                    event_id=f"e{n}", user_id=f"u{n}", item_id=f"i{n}", type=EventType.CLICK, ts=NOW + n + 1,
                    context=EventContext(recommendation_id=f"r{n}"),
                ).to_record()
            )  # fmt: skip
    write_lines(tmp_path, archive_key(NOW, "a.jsonl", IMPRESSIONS_PREFIX), impressions)
    write_lines(tmp_path, archive_key(NOW, "b.jsonl"), events)
    out = tmp_path / "report.json"
    argv = ["experiment", "report", "--archive-dir", str(tmp_path), "--experiment", "ab", "--json", str(out)]
    assert main(argv) == 0
    body = json.loads(out.read_text())
    assert body["variants"]["control"]["ctr"]["rate"] == 0.1
    assert body["variants"]["treatment"]["ctr"]["rate"] == 0.5
    assert body["variants"]["treatment"]["exposures"] == {"impressions": 100, "users": 100}
    diff = body["differences"]["treatment - control"]["ctr"]
    assert diff["difference"] == 0.4 and diff["significant"] and diff["ci95"][0] > 0.25
    printed = capsys.readouterr().out
    assert "treatment" in printed and "50.00%" in printed and "significant" in printed
