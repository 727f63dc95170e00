"""Per-user candidate lists as written by training and read by the publish step (numpy only:
the publish Lambda has no scipy/implicit)."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np
import numpy.typing as npt


class CandidateLists(Mapping[str, list[tuple[str, float]]]):
    """Per-user candidate lists as arrays (10M-interaction runs would not fit as Python lists);
    reads like a dict of user_id -> [(item_id, score), ...] best first."""

    def __init__(
        self,
        user_ids: list[str],
        items: npt.NDArray[np.int32],
        scores: npt.NDArray[np.float32],
        item_ids: list[str],
    ) -> None:
        self.user_ids = user_ids
        self.item_codes = items
        self.scores = scores
        self.item_ids = item_ids
        self._row = {u: i for i, u in enumerate(user_ids)}

    def __getitem__(self, user_id: str) -> list[tuple[str, float]]:
        return self.row(self._row[user_id])

    def row(self, r: int) -> list[tuple[str, float]]:
        ids = self.item_ids
        return [
            (ids[i], float(s))
            for i, s in zip(self.item_codes[r].tolist(), self.scores[r].tolist(), strict=True)
            if i >= 0
        ]

    def __iter__(self) -> Iterator[str]:
        return iter(self.user_ids)

    def __len__(self) -> int:
        return len(self.user_ids)

    def pairs(self, lo: int = 0, hi: int | None = None) -> Iterator[tuple[str, list[tuple[str, float]]]]:
        """(user_id, list) for rows lo..hi, skipping users with no candidates."""
        for r in range(lo, len(self.user_ids) if hi is None else min(hi, len(self.user_ids))):
            pairs = self.row(r)
            if pairs:
                yield self.user_ids[r], pairs

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as f:
            np.savez(f, items=self.item_codes, scores=self.scores)
        path.with_suffix(".json").write_text(
            json.dumps({"user_ids": self.user_ids, "item_ids": self.item_ids})
        )

    @classmethod
    def load(cls, path: Path) -> CandidateLists:
        meta = json.loads(path.with_suffix(".json").read_text())
        with np.load(path, allow_pickle=False) as arr:
            return cls(list(meta["user_ids"]), arr["items"], arr["scores"], list(meta["item_ids"]))
