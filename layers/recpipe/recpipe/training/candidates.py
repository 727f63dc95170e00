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
        id_w = ids.dtype.itemsize
        width = id_w + SCORE_WIDTH + 2
        n_cols = self.item_codes.shape[1]
        # One record per user: "[" then n_cols fixed-width pairs '["id",' score '],'
        pair = np.dtype([("id", f"V{id_w}"), ("whole", "V4"), ("frac", "V8")])
        row = np.dtype([("open", "V1"), ("pairs", pair, (n_cols,))])
        for start in range(lo, hi, block):
            stop = min(start + block, hi)
            items = self.item_codes[start:stop]
            n_valid = (items >= 0).sum(axis=1)
            rows = np.empty(stop - start, row)
            rows["open"] = np.void(b"[")
            pairs = rows["pairs"]
            pairs["id"] = ids[np.maximum(items, 0)]
            whole, frac = _score_parts(self.scores[start:stop])
            pairs["whole"] = _WHOLE[whole]
            pairs["frac"] = _FRAC_TAIL[frac]
            flat = rows.view(np.uint8).reshape(stop - start, row.itemsize)
            ends = 1 + n_valid * width  # the last pair's "," becomes the list's closing "]"
            keep = np.flatnonzero(n_valid > 0)
            flat[keep, ends[keep] - 1] = ord("]")
            raw = flat.tobytes()
            size = row.itemsize
            users = self.user_ids
            for r, end in zip(keep.tolist(), ends[keep].tolist(), strict=True):
                off = r * size
                yield users[start + r], raw[off : off + end]

    def _id_fragments(self) -> npt.NDArray[np.void]:
        """[n_items] fixed-size records '["<id>"' + spaces + ','."""
        frags = [json.dumps(i).encode() for i in self.item_ids]
        w = max((len(f) for f in frags), default=2) + 2
        out = np.full((len(frags), w), ord(" "), np.uint8)
        for k, f in enumerate(frags):
            out[k, 0] = ord("[")
            out[k, 1 : 1 + len(f)] = np.frombuffer(f, np.uint8)
        out[:, -1] = ord(",")
        return out.view(f"V{w}")[:, 0]

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


def _digit_tables() -> tuple[npt.NDArray[np.void], npt.NDArray[np.void]]:
    """5-character records of every fraction 00000..99999, and 4-character records of every
    integer part -999..999 (index = value + 999) plus "-0" (index _NEG_ZERO), right-aligned,
    no leading zeros (JSON)."""
    frac = np.arange(100_000)
    frac_chars = np.stack([48 + (frac // 10**k) % 10 for k in range(4, -1, -1)], axis=1).astype(np.uint8)
    text = b"".join(str(v).rjust(4).encode() for v in range(-999, 1000)) + b"  -0"
    whole = np.frombuffer(text, np.uint8)
    return frac_chars.view("V5")[:, 0], whole.reshape(-1, 4).view("V4")[:, 0]


_FRAC, _WHOLE = _digit_tables()
#: ".ddddd]," for every fraction: the rest of a pair after its integer part, in one gather.
_FRAC_TAIL = (
    np.concatenate(
        [
            np.full((100_000, 1), ord("."), np.uint8),
            _FRAC.view(np.uint8).reshape(-1, 5),
            np.tile(np.frombuffer(b"],", np.uint8), (100_000, 1)),
        ],
        axis=1,
    )
    .copy()
    .view("V8")[:, 0]
)
_NEG_ZERO = 1999


def _score_parts(scores: npt.NDArray[np.float32]) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]:
    """Indices into _WHOLE and _FRAC of each score rounded to 5 decimals (clipped to ±999.99999).
    A negative score keeps its sign even when its integer part is 0 (-0.5 -> "  -0" + ".50000")."""
    q = np.rint(np.clip(scores.astype(np.float64), -_MAX_SCORE, _MAX_SCORE) * 1e5).astype(np.intp)
    whole, frac = np.divmod(np.abs(q), 100_000)
    return np.where(q < 0, np.where(whole == 0, _NEG_ZERO, 999 - whole), 999 + whole), frac


def _score_chars(scores: npt.NDArray[np.float32]) -> npt.NDArray[np.uint8]:
    """Scores as right-aligned JSON numbers with 5 decimals, e.g. b'   0.12345', b'  -1.50000'."""
    whole, frac = _score_parts(scores)
    out = np.empty((*scores.shape, SCORE_WIDTH), np.uint8)
    out[..., :4] = _WHOLE[whole].view(np.uint8).reshape(*scores.shape, 4)
    out[..., 4] = ord(".")
    out[..., 5:] = _FRAC[frac].view(np.uint8).reshape(*scores.shape, 5)
    return out
