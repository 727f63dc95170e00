"""Catalogue and interaction-log types shared by importers, the synthetic generator, training
and evaluation. Interactions are columnar with integer codes so 10M rows fit comfortably."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from recpipe.domain.events import Device, Event, EventContext, EventType

#: Order of type codes in InteractionLog.types.
EVENT_TYPE_CODES: tuple[EventType, ...] = tuple(EventType)
TYPE_CODE = {t: i for i, t in enumerate(EVENT_TYPE_CODES)}
#: Order of device codes in InteractionLog.devices.
DEVICES: tuple[Device, ...] = ("web", "mobile", "tablet", "tv", "other")


@dataclass(frozen=True, slots=True)
class ItemMeta:
    item_id: str
    title: str
    categories: tuple[str, ...] = ()
    text: str = ""
    #: When the item entered the catalogue (epoch s); None = unknown (first interaction is used).
    created_ts: float | None = None


@dataclass(slots=True)
class InteractionLog:
    """Columnar interactions. users/items are codes into `user_vocab` / `item_vocab`."""

    users: npt.NDArray[np.int32]
    items: npt.NDArray[np.int32]
    ts: npt.NDArray[np.float64]
    types: npt.NDArray[np.uint8]
    #: Rating value, NaN for non-rating events.
    values: npt.NDArray[np.float32]
    user_vocab: list[str]
    item_vocab: list[str]
    #: Optional per-row device code into DEVICES (-1 = unknown).
    devices: npt.NDArray[np.int8] | None = None
    _user_index: dict[str, int] = field(default_factory=dict, repr=False)
    _item_index: dict[str, int] = field(default_factory=dict, repr=False)

    def __len__(self) -> int:
        return len(self.users)

    @property
    def user_index(self) -> dict[str, int]:
        if not self._user_index:
            self._user_index = {u: i for i, u in enumerate(self.user_vocab)}
        return self._user_index

    @property
    def item_index(self) -> dict[str, int]:
        if not self._item_index:
            self._item_index = {u: i for i, u in enumerate(self.item_vocab)}
        return self._item_index

    def take(self, rows: npt.NDArray[np.int64] | npt.NDArray[np.bool_]) -> InteractionLog:
        """Rows selected by index or mask; vocabularies are shared (codes stay valid)."""
        return InteractionLog(
            users=self.users[rows],
            items=self.items[rows],
            ts=self.ts[rows],
            types=self.types[rows],
            values=self.values[rows],
            user_vocab=self.user_vocab,
            item_vocab=self.item_vocab,
            devices=None if self.devices is None else self.devices[rows],
        )

    def sorted_by_time(self) -> InteractionLog:
        return self.take(np.argsort(self.ts, kind="stable"))

    def event(self, row: int) -> Event:
        """Row `row` as a schema Event with a deterministic event_id (replays are idempotent)."""
        value = float(self.values[row])
        device: Device | None = None
        if self.devices is not None and self.devices[row] >= 0:
            device = DEVICES[int(self.devices[row])]
        # model_construct: a log's rows were validated where the log was built (the loaders, the
        # archive's ingest); validating again per row was most of a replay's cost per event.
        return Event.model_construct(
            event_id=f"log-{self.user_vocab[self.users[row]]}-{self.item_vocab[self.items[row]]}-{int(self.ts[row] * 1000)}-{int(self.types[row])}",
            user_id=self.user_vocab[self.users[row]],
            item_id=self.item_vocab[self.items[row]],
            type=EVENT_TYPE_CODES[int(self.types[row])],
            ts=float(self.ts[row]),
            value=None if np.isnan(value) else value,
            context=EventContext.model_construct(device=device) if device else None,
        )

    def events(self) -> Iterator[Event]:
        for row in range(len(self)):
            yield self.event(row)

    @classmethod
    def from_rows(
        cls,
        rows: Sequence[tuple[str, str, float, EventType, float | None]],
        devices: Sequence[str | None] | None = None,
    ) -> InteractionLog:
        """Build from (user_id, item_id, ts, type, value) tuples (small data, tests)."""
        user_index: dict[str, int] = {}
        item_index: dict[str, int] = {}
        users = np.fromiter((user_index.setdefault(r[0], len(user_index)) for r in rows), np.int32, len(rows))
        items = np.fromiter((item_index.setdefault(r[1], len(item_index)) for r in rows), np.int32, len(rows))
        dev_codes = None
        if devices is not None:
            dev_codes = np.asarray([DEVICES.index(d) if d in DEVICES else -1 for d in devices], np.int8)
        return cls(
            users=users,
            items=items,
            ts=np.asarray([r[2] for r in rows], np.float64),
            types=np.asarray([TYPE_CODE[EventType(r[3])] for r in rows], np.uint8),
            values=np.asarray([np.nan if r[4] is None else r[4] for r in rows], np.float32),
            user_vocab=list(user_index),
            item_vocab=list(item_index),
            devices=dev_codes,
        )
