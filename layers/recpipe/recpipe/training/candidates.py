"""Per-user candidate lists as written by training and read by the publish step (numpy only:
the publish Lambda has no scipy/implicit).

Publishing hundreds of thousands of 200-item lists is dominated by JSON encoding, so
`encoded()` builds the values of a whole block of users with numpy: every (item, score) pair
is a fixed-width JSON fragment, padded with insignificant whitespace, which
`keys.decode_candidates` reads exactly like `keys.encode_candidates`' output (same ids, scores
rounded to 5 decimals).
"""

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

    def encoded(
        self, lo: int = 0, hi: int | None = None, *, block: int = 2048
    ) -> Iterator[tuple[str, bytes]]:
        """(user_id, JSON value) for rows lo..hi, skipping users with no candidates."""
        hi = len(self.user_ids) if hi is None else min(hi, len(self.user_ids))
        ids = self._id_fragments()
        width = ids.shape[1] + SCORE_WIDTH + 2  # id fragment, score, "]" and ","
        for start in range(lo, hi, block):
            stop = min(start + block, hi)
            items = self.item_codes[start:stop]
            valid = items >= 0
            n_valid = valid.sum(axis=1)
            n = stop - start
            # one row per user: "[" then fixed-width pairs, each ending in ","
            flat = np.empty((n, 1 + items.shape[1] * width), np.uint8)
            flat[:, 0] = ord("[")
            pairs = flat[:, 1:].reshape(n, items.shape[1], width)
            pairs[:, :, : ids.shape[1]] = ids[np.maximum(items, 0)]
            pairs[:, :, ids.shape[1] : ids.shape[1] + SCORE_WIDTH] = _score_chars(self.scores[start:stop])
            pairs[:, :, -2] = ord("]")
            pairs[:, :, -1] = ord(",")
            ends = 1 + n_valid * width  # the last pair's "," becomes the list's closing "]"
            rows = np.flatnonzero(n_valid > 0)
            flat[rows, ends[rows] - 1] = ord("]")
            raw = flat.tobytes()
            row_len = flat.shape[1]
            users = self.user_ids
            for r, end in zip(rows.tolist(), ends[rows].tolist(), strict=True):
                off = r * row_len
                yield users[start + r], raw[off : off + end]

    def _id_fragments(self) -> npt.NDArray[np.uint8]:
        """[n_items, w] bytes of '["<id>",' padded with spaces before the comma."""
        frags = [json.dumps(i).encode() for i in self.item_ids]
        w = max((len(f) for f in frags), default=2) + 2
        out = np.full((len(frags), w), ord(" "), np.uint8)
        for k, f in enumerate(frags):
            out[k, 0] = ord("[")
            out[k, 1 : 1 + len(f)] = np.frombuffer(f, np.uint8)
        out[:, -1] = ord(",")
        return out

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


#: Characters of a formatted score: sign/spaces, up to 3 integer digits, ".", 5 decimals.
SCORE_WIDTH = 10
_MAX_SCORE = 999.99999


def _score_chars(scores: npt.NDArray[np.float32]) -> npt.NDArray[np.uint8]:
    """Scores as right-aligned JSON numbers with 5 decimals, e.g. b'   0.12345', b'  -1.50000'."""
    q = np.rint(np.clip(scores.astype(np.float64), -_MAX_SCORE, _MAX_SCORE) * 1e5).astype(np.int32)
    neg = q < 0
    a = np.abs(q)
    out = np.full((*q.shape, SCORE_WIDTH), ord(" "), np.uint8)
    for k in range(5):  # decimals, right to left
        a, digit = np.divmod(a, 10)
        out[..., SCORE_WIDTH - 1 - k] = digit + 48
    out[..., SCORE_WIDTH - 6] = ord(".")
    n_digits = 1 + (a >= 10) + (a >= 100)
    for k in range(4):  # integer digits right to left, then the sign; no leading zeros (JSON)
        a, digit = np.divmod(a, 10)
        pos = SCORE_WIDTH - 7 - k
        out[..., pos] = np.where(
            k < n_digits, digit + 48, np.where(neg & (k == n_digits), ord("-"), ord(" "))
        )
    return out
