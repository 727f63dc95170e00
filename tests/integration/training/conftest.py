"""One really trained run shared by the training integration tests (a few seconds of TF)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest
from recpipe.domain.catalogue import InteractionLog, ItemMeta
from recpipe.training.history import Snapshot
from recpipe.training.pipeline import TrainParams, TrainResult, train_bundle
from recpipe_dev.testing.trained import small_shop

#: Snapshots kept for the parity test: examples with a live session and trending items.
KEEP_SNAPSHOTS = 4


@dataclass
class TrainedRun:
    log: InteractionLog
    items: list[ItemMeta]
    result: TrainResult
    snapshots: list[Snapshot] = field(default_factory=list)


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> TrainedRun:
    log, items = small_shop()
    snapshots: list[Snapshot] = []

    def keep(s: Snapshot) -> None:
        if len(snapshots) < KEEP_SNAPSHOTS and s.session and (s.candidates.trending > 0).any() and s.features:
            snapshots.append(s)

    result = train_bundle(
        log,
        items,
        tmp_path_factory.mktemp("trained"),
        version="it-v1",
        params=TrainParams.tiny(),
        on_snapshot=keep,
    )
    return TrainedRun(log, items, result, snapshots)


@pytest.fixture()
def bundle_dir(trained_run: TrainedRun) -> Path:
    return trained_run.result.bundle_dir
