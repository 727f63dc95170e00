"""The item table: item-side data that travels with the model bundle and lives in memory.

Column-oriented numpy arrays indexed by a dense item index, so feature assembly for hundreds of
candidates is a handful of vectorised gathers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

#: Dayparts for context popularity: night [0,6), morning [6,12), afternoon [12,18), evening [18,24).
N_DAYPARTS = 4
MAX_ITEM_CATEGORIES = 8


def daypart(hour: int) -> int:
    return hour // 6


@dataclass(slots=True)
class ItemTable:
    item_ids: list[str]
    titles: list[str]
    category_vocab: list[str]
    #: [n, MAX_ITEM_CATEGORIES] int32 indices into category_vocab, -1 = padding.
    category_ids: npt.NDArray[np.int32]
    #: [n] float32 in [0, 1]: log-scaled interaction count.
    popularity: npt.NDArray[np.float32]
    #: [n, N_DAYPARTS] float32 in [0, 1]: popularity within each daypart.
    daypart_popularity: npt.NDArray[np.float32]
    #: [n] float64 epoch seconds of the first interaction (or catalogue date).
    first_seen: npt.NDArray[np.float64]
    #: [n, d] float32, L2-normalised collaborative-filtering item factors.
    embeddings: npt.NDArray[np.float32]
    index: dict[str, int] = field(default_factory=dict)
    category_index: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.item_ids)
        for name in ("category_ids", "popularity", "daypart_popularity", "first_seen", "embeddings"):
            if len(getattr(self, name)) != n:
                raise ValueError(
                    f"item table column {name} has {len(getattr(self, name))} rows, expected {n}"
                )
        if len(self.titles) != n:
            raise ValueError(f"item table has {len(self.titles)} titles for {n} items")
        if not self.index:
            self.index = {item: i for i, item in enumerate(self.item_ids)}
        if len(self.index) != n:
            raise ValueError("item ids are not unique")
        if not self.category_index:
            self.category_index = {c: i for i, c in enumerate(self.category_vocab)}

    def __len__(self) -> int:
        return len(self.item_ids)

    def indices(self, item_ids: Sequence[str]) -> npt.NDArray[np.int32]:
        """Dense indices of the known items among `item_ids` (unknown ones are dropped)."""
        idx = self.index
        return np.fromiter((idx[i] for i in item_ids if i in idx), dtype=np.int32)

    def categories(self, i: int) -> list[str]:
        return [self.category_vocab[c] for c in self.category_ids[i] if c >= 0]

    def categories_of(self, item_id: str) -> list[str]:
        i = self.index.get(item_id)
        return [] if i is None else self.categories(i)
