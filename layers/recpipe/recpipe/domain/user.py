"""User features: the state the stream path maintains and the online path reads.

Pure domain code. The same `apply_event` runs in the Kinesis feature updater and in training's
history replay, so the features a model learns from are the ones it is served.

Decayed values are kept as (value, reference time) pairs. Folding an event in at time `ts` is
commutative: an event that arrives late (older `ts`) is decayed to the reference time instead
of moving it backwards, so out-of-order delivery gives the same state as in-order delivery.
"""

from __future__ import annotations

import hashlib
import math
import struct
from array import array
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from itertools import repeat
from operator import itemgetter
from typing import Any, NamedTuple

from recpipe.domain.events import Event, EventType

AFFINITY_HALF_LIFE_S = 7 * 24 * 3600.0
MAX_RECENT = 50
MAX_PURCHASED = 200
MAX_CART = 100
MAX_CATEGORIES = 64
#: Exactly-once has two halves (docs/stream.md, Exactly once):
#: - a Kinesis redelivery or replay brings back a record at or below the user's high-water mark
#:   on that shard (`marks`): a no-op in O(1) state, for any user size and any retention;
#: - a producer retry (the same event_id on a new record) and a re-drive from the failure queue
#:   (records Lambda skipped while later ones moved the mark on) are caught by the fingerprints
#:   of the events applied in the last DEDUP_WINDOW_S (processing time), at most
#:   MAX_APPLIED_IDS. The window is at least the stream's retention (template.yaml, checked by
#:   a test), so every record that can still be re-read for a re-drive is covered.
DEDUP_WINDOW_S = 48 * 3600
#: Application times are kept per bucket of this many seconds (rounded up: kept a bit longer).
APPLIED_BUCKET_S = 600
#: Hard bound on remembered fingerprints (16 KB): only a flood of more than this many events in
#: one window (a bot) shortens the retry window, never the redelivery guarantee.
MAX_APPLIED_IDS = 2048
#: Shards a user keeps a high-water mark for: the current one and the parents/children of
#: recent reshards (Lambda finishes a parent shard before its children; the smallest mark,
#: the oldest shard, is dropped first).
MAX_SHARD_MARKS = 16
FINGERPRINT_BYTES = 8

_LN2 = math.log(2.0)
_TS = itemgetter(1)  # Interaction.ts
#: EventType -> its plain string (what states store): `member.value` is a Python-level
#: descriptor call, a dict lookup is not.
_TYPE_NAME: dict[EventType, str] = {t: t.value for t in EventType}
_CART_TYPES = frozenset({EventType.ADD_TO_CART, EventType.REMOVE_FROM_CART, EventType.PURCHASE})


def event_fingerprint(event_id: str) -> bytes:
    """8-byte fingerprint of an event id: what a user's state remembers instead of the id.

    Producers' ids are often UUIDs (36 characters): 256 of them were ~2/3 of a steady-state
    user's item (~9.5 of 14.5 KB of JSON, incompressible). Eight bytes each make the dedup
    memory ~2 KB. Two distinct ids of one user collide with probability ~256 / 2**64 per event
    (~1e-17): far below anything else that can lose an event."""
    return hashlib.blake2b(event_id.encode(), digest_size=FINGERPRINT_BYTES).digest()


def holds_fingerprint(packed: bytes, fingerprint: bytes) -> bool:
    """`fingerprint` is one of the FINGERPRINT_BYTES-long fingerprints concatenated in `packed`."""
    # bytes.find scans in C, where comparing a tuple of 256 ints is one Python step each;
    # a match counts only where a fingerprint starts.
    at = packed.find(fingerprint)
    while at >= 0:
        if at % FINGERPRINT_BYTES == 0:
            return True
        at = packed.find(fingerprint, at + 1)
    return False


#: Decayed values below this are zero: a number DynamoDB can store (1e-130 and up) and far
#: below anything that can change a ranking.
_NEGLIGIBLE = 1e-100


def decay(value: float, dt: float, half_life: float = AFFINITY_HALF_LIFE_S) -> float:
    out = value * math.exp(-_LN2 * dt / half_life)
    return out if abs(out) >= _NEGLIGIBLE else 0.0


class StreamPosition(NamedTuple):
    """Where a record sits in the stream: Kinesis sequence numbers grow within a shard, and a
    user's records share one shard (partition key = user_id)."""

    shard_id: str
    sequence_number: str


def _seq(position: StreamPosition) -> int | None:
    n = position.sequence_number
    return int(n) if n.isdigit() and position.shard_id else None


def behind_mark(marks: Mapping[str, str], position: StreamPosition) -> bool:
    """The record at `position` is at or below the user's high-water mark on its shard."""
    seq = _seq(position)
    mark = marks.get(position.shard_id)
    return seq is not None and mark is not None and seq <= int(mark)


def _advance(marks: Mapping[str, str], position: StreamPosition | None) -> Mapping[str, str]:
    if position is None or (seq := _seq(position)) is None:
        return marks
    mark = marks.get(position.shard_id)
    if mark is not None and int(mark) >= seq:
        return marks
    out = dict(marks)
    out[position.shard_id] = position.sequence_number
    if len(out) > MAX_SHARD_MARKS:
        del out[min(out, key=lambda k: int(out[k]))]
    return out


def _remember(
    applied: bytes, runs: tuple[tuple[int, int], ...], fingerprint: bytes, at: float, now: float | None
) -> tuple[bytes, tuple[tuple[int, int], ...]]:
    """Append `fingerprint` (applied at `at`), then forget those applied before the window
    (when there is a processing time `now`) and any beyond MAX_APPLIED_IDS, oldest first.
    `runs` are (applied-at bucket, count) pairs, oldest first: at most one per
    APPLIED_BUCKET_S, not one per event."""
    t = -(-int(at) // APPLIED_BUCKET_S) * APPLIED_BUCKET_S
    runs = (*runs[:-1], (t, runs[-1][1] + 1)) if runs and runs[-1][0] == t else (*runs, (t, 1))
    applied += fingerprint
    drop, kept = 0, list(runs)
    while now is not None and kept and kept[0][0] < t - DEDUP_WINDOW_S:
        drop += kept.pop(0)[1]
    excess = len(applied) // FINGERPRINT_BYTES - drop - MAX_APPLIED_IDS
    while excess > 0:
        at, n = kept[0]
        cut = min(n, excess)
        drop, excess = drop + cut, excess - cut
        if cut == n:
            kept.pop(0)
        else:
            kept[0] = (at, n - cut)
    if drop:
        applied = applied[drop * FINGERPRINT_BYTES :]
        runs = tuple(kept)
    return applied, runs


class Interaction(NamedTuple):
    # A tuple, not a frozen dataclass: a state holds up to 50 and decoding one builds them all
    # (a frozen dataclass's __init__ makes one object.__setattr__ call per field).
    item_id: str
    ts: float
    type: str


@dataclass(frozen=True, slots=True)
class UserFeatures:
    user_id: str
    #: Most recent first, at most MAX_RECENT.
    recent: tuple[Interaction, ...] = ()
    #: category -> (decayed value at ref_ts, ref_ts)
    affinity: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    counts: Mapping[str, int] = field(default_factory=dict)
    #: item -> (ts of the last cart operation, in cart after it)
    cart_ops: Mapping[str, tuple[float, bool]] = field(default_factory=dict)
    #: item -> ts of the last purchase
    purchased: Mapping[str, float] = field(default_factory=dict)
    first_seen: float | None = None
    last_seen: float | None = None
    #: `event_fingerprint`s of the events applied in the last DEDUP_WINDOW_S (at most
    #: MAX_APPLIED_IDS), concatenated, oldest first (bytes, not a tuple: checked with one C
    #: scan and stored as they are).
    applied: bytes = b""
    #: When `applied`'s fingerprints were applied: (epoch second, count) runs, oldest first.
    #: (The time is the end of an APPLIED_BUCKET_S bucket.)
    applied_runs: tuple[tuple[int, int], ...] = ()
    #: shard id -> highest sequence number applied from it (decimal string, as Kinesis has it).
    marks: Mapping[str, str] = field(default_factory=dict)
    #: Optimistic-concurrency version, maintained by the store adapter.
    version: int = 0

    # ---- reads used by the online path -------------------------------------------------
    @property
    def cart(self) -> frozenset[str]:
        return frozenset(i for i, (_, in_cart) in self.cart_ops.items() if in_cart)

    def has_applied(self, event_id: str) -> bool:
        return holds_fingerprint(self.applied, event_fingerprint(event_id))

    @property
    def total_events(self) -> int:
        return sum(self.counts.values())

    def affinity_at(self, now: float, half_life: float = AFFINITY_HALF_LIFE_S) -> dict[str, float]:
        """Category affinity decayed to `now` (never grown for a `now` before the reference)."""
        return {c: decay(v, max(0.0, now - ref), half_life) for c, (v, ref) in self.affinity.items()}

    def at_version(self, version: int) -> UserFeatures:
        """This state at another `version` (what a store returns after a write): one
        constructor call, where dataclasses.replace inspects every field first."""
        return UserFeatures(
            self.user_id,
            self.recent,
            self.affinity,
            self.counts,
            self.cart_ops,
            self.purchased,
            self.first_seen,
            self.last_seen,
            self.applied,
            self.applied_runs,
            self.marks,
            version,
        )

    # ---- serialisation (plain JSON types; the DynamoDB adapter maps floats to Decimal) -----
    def document(self) -> dict[str, Any]:
        """The state without user_id, version and applied, as JSON-ready values (pairs as
        tuples, which JSON writes as arrays): what the DynamoDB adapter compresses."""
        return {
            "recent": list(map(tuple, self.recent)),
            "affinity": dict(self.affinity),
            "counts": dict(self.counts),
            "cart_ops": dict(self.cart_ops),
            "purchased": dict(self.purchased),
            "first_seen": self.first_seen,
            "last_seen": self.last_seen,
            "applied_runs": list(map(list, self.applied_runs)),
            "marks": dict(self.marks),
        }

    def to_item(self) -> dict[str, Any]:
        n = len(self.applied) // FINGERPRINT_BYTES
        return {
            "user_id": self.user_id,
            **self.document(),
            # Unsigned 64-bit numbers (each fingerprint read little-endian).
            "applied": list(struct.unpack(f"<{n}Q", self.applied)),
            "version": self.version,
        }

    def columns(self) -> dict[str, Any]:
        """`document()`'s content with every collection as parallel columns of scalars
        (recent: [item ids, times, types]; a mapping: [keys, values...]), JSON-ready.
        `from_columns` rebuilds a state from it with C-level map/zip calls, where the nested
        pairs of `document()` take a Python step per element: decoding is what the updater
        spends most on for a user it has not cached (docs/stream.md, Storage layouts)."""
        return {
            "recent": list(zip(*self.recent, strict=True)) or [(), (), ()],
            "affinity": [list(self.affinity), *(list(zip(*self.affinity.values(), strict=True)) or [(), ()])],
            "counts": [list(self.counts), list(self.counts.values())],
            "cart_ops": [list(self.cart_ops), *(list(zip(*self.cart_ops.values(), strict=True)) or [(), ()])],
            "purchased": [list(self.purchased), list(self.purchased.values())],
            "first_seen": self.first_seen,
            "last_seen": self.last_seen,
            "applied_runs": list(zip(*self.applied_runs, strict=True)) or [(), ()],
            "marks": [list(self.marks), list(self.marks.values())],
        }

    @classmethod
    def from_columns(
        cls, body: Mapping[str, Any], user_id: str, version: int, applied: bytes
    ) -> UserFeatures:
        """From `columns()`'s form plus what is stored beside it. Columns are checked in C
        (strings by joining them, integers by packing them, numbers by float()): a value of
        the wrong type, columns of unequal length, a wrong number of columns or fingerprint
        runs that do not add up raise ValueError."""
        if not isinstance(applied, bytes) or len(applied) % FINGERPRINT_BYTES:
            raise ValueError("applied: not a whole number of fingerprints")
        n_applied = len(applied) // FINGERPRINT_BYTES
        items, times, types = _cols(body, "recent", 3, "s", "f", "s")
        cats, values, refs = _cols(body, "affinity", 3, "s", "f", "f")
        cart_items, cart_times, in_cart = _cols(body, "cart_ops", 3, "s", "f", "b")
        run_ends, run_counts = _cols(body, "applied_runs", 2, "i", "i")
        if sum(run_counts) != n_applied or (run_counts and min(run_counts) <= 0):
            raise ValueError(f"applied_runs: counts do not add up to the {n_applied} fingerprints")
        count_keys, count_values = _cols(body, "counts", 2, "s", "i")
        purchased_items, purchased_times = _cols(body, "purchased", 2, "s", "f")
        shards, sequence_numbers = _cols(body, "marks", 2, "s", "s")
        return cls(
            user_id=user_id,
            recent=tuple(map(_tuple_new, repeat(Interaction), zip(items, times, types, strict=True))),
            affinity=dict(zip(cats, zip(values, refs, strict=True), strict=True)),
            counts=dict(zip(count_keys, count_values, strict=True)),
            cart_ops=dict(zip(cart_items, zip(cart_times, in_cart, strict=True), strict=True)),
            purchased=dict(zip(purchased_items, purchased_times, strict=True)),
            first_seen=_opt_float(body.get("first_seen")),
            last_seen=_opt_float(body.get("last_seen")),
            applied=applied,
            applied_runs=tuple(zip(run_ends, run_counts, strict=True)),
            marks=dict(zip(shards, sequence_numbers, strict=True)),
            version=version,
        )

    @classmethod
    def from_item(cls, item: Mapping[str, Any]) -> UserFeatures:
        """From `to_item()`'s form, or `document()`'s plus user_id, version and applied as the
        packed bytes."""
        return cls(
            user_id=str(item["user_id"]),
            recent=tuple([Interaction(str(i), float(t), str(e)) for i, t, e in item.get("recent", [])]),
            affinity={str(c): (float(v), float(r)) for c, (v, r) in item.get("affinity", {}).items()},
            counts={str(k): int(v) for k, v in item.get("counts", {}).items()},
            cart_ops={str(i): (float(t), bool(c)) for i, (t, c) in item.get("cart_ops", {}).items()},
            purchased={str(i): float(t) for i, t in item.get("purchased", {}).items()},
            first_seen=_opt_float(item.get("first_seen")),
            last_seen=_opt_float(item.get("last_seen")),
            applied=(applied := _applied_of(item)),
            applied_runs=_runs_of(item, len(applied) // FINGERPRINT_BYTES),
            marks={str(k): str(v) for k, v in item.get("marks", {}).items()},
            version=int(item.get("version", 0)),
        )


#: Builds an Interaction from an (item_id, ts, type) tuple in one C call (calling the class runs
#: the NamedTuple's Python __new__).
_tuple_new = tuple.__new__


def _is_sequence(c: object) -> bool:
    return isinstance(c, list | tuple)


#: The identities of True and False: every bool is one of the two objects.
_BOOLS = frozenset({id(True), id(False)})


def _cols(body: Mapping[str, Any], name: str, n: int, *kinds: str) -> list[Any]:
    """`body[name]`: n columns, each checked (and numbers made floats) by its kind: "s" strings,
    "f" numbers, "i" integers, "b" booleans."""
    cols = body[name]
    # Lists as JSON gives them, or columns() as it is.
    if not isinstance(cols, list | tuple) or len(cols) != n or not all(map(_is_sequence, cols)):
        raise ValueError(f"{name}: expected {n} columns")
    out = []
    for col, kind in zip(cols, kinds, strict=True):
        try:
            if kind == "s":
                "".join(col)  # TypeError unless every value is a str
            elif kind == "f":
                out.append(list(map(float, col)))
                continue
            elif kind == "i":
                array("q", col)  # TypeError unless every value is an integer
            elif not _BOOLS.issuperset(map(id, col)):
                raise TypeError("not a boolean")
        except (TypeError, ValueError, OverflowError) as exc:
            raise ValueError(f"{name}: {exc}") from None
        out.append(col)
    return out


def _opt_float(v: Any) -> float | None:
    return None if v is None else float(v)


def _runs_of(item: Mapping[str, Any], n: int) -> tuple[tuple[int, int], ...]:
    runs = tuple((int(t), int(c)) for t, c in item.get("applied_runs", []))
    if sum(c for _, c in runs) == n and all(c > 0 for _, c in runs):
        return runs
    if "applied_runs" in item:
        raise ValueError(f"applied_runs: counts do not add up to the {n} fingerprints")
    # Items written before the window: their fingerprints count as applied at last_seen.
    last = item.get("last_seen")
    return ((int(float(last or 0)), n),) if n else ()


def _applied_of(item: Mapping[str, Any]) -> bytes:
    applied = item.get("applied")
    if isinstance(applied, bytes):
        if len(applied) % FINGERPRINT_BYTES:
            raise ValueError(f"applied: {len(applied)} bytes is not a whole number of fingerprints")
        return applied
    if applied is not None:
        try:
            return struct.pack(f"<{len(applied)}Q", *map(int, applied))
        except struct.error as exc:  # a number outside 0..2**64-1
            raise ValueError(f"applied: {exc}") from None
    # Items written before fingerprints kept the ids themselves.
    return b"".join(event_fingerprint(str(e)) for e in item.get("applied_event_ids", []))


def apply_event(
    state: UserFeatures | None,
    event: Event,
    categories: Sequence[str] = (),
    *,
    half_life: float = AFFINITY_HALF_LIFE_S,
    position: StreamPosition | None = None,
    now: float | None = None,
    redrive: bool = False,
) -> UserFeatures:
    """Fold one event into a user's features. Applying an already-applied event is a no-op:
    a record at or below the user's mark on its shard, or an event_id applied within the
    window. `position`: where the record came from (None outside the stream, e.g. training's
    history replay); `now`: processing time, for the window (None: no window, only the bound,
    as for a one-pass replay of history). `redrive`: the record comes back from the failure
    queue, where Lambda sent it after its retries while the user's later records may have moved
    the mark past it: only the fingerprints decide."""
    if state is None:
        state = UserFeatures(user_id=event.user_id)
    if event.user_id != state.user_id:
        raise ValueError(f"event for user {event.user_id!r} applied to {state.user_id!r}")
    if position is not None and not redrive and behind_mark(state.marks, position):
        return state
    fingerprint = event_fingerprint(event.event_id)
    if holds_fingerprint(state.applied, fingerprint):
        # A producer retry. Its record still moves the mark, so that a redelivery of it after
        # the fingerprint has left the window stays a no-op.
        marks = _advance(state.marks, position)
        if marks is state.marks:
            return state
        return replace(state, marks=marks)

    ts, item = event.ts, event.item_id

    kind = event.type
    type_name = _TYPE_NAME[kind]
    new, recent = _tuple_new(Interaction, (item, ts, type_name)), state.recent
    # Newest first. The usual event is newer than all (or older than all): no sort needed.
    if not recent or ts > recent[0].ts:
        recent = (new, *recent)
    elif ts < recent[-1].ts:
        recent = (*recent, new)
    else:
        # reverse=True keeps the order of equal times as key=-ts did (sort is stable).
        recent = tuple(sorted((*recent, new), key=_TS, reverse=True))
    counts = dict(state.counts)
    counts[type_name] = counts.get(type_name, 0) + 1

    affinity = state.affinity
    if categories:
        affinity = dict(affinity)
        share = event.weight / len(categories)
        for cat in categories:
            value, ref = affinity.get(cat, (0.0, ts))
            if ts >= ref:
                affinity[cat] = (decay(value, ts - ref, half_life) + share, ts)
            else:
                affinity[cat] = (value + decay(share, ref - ts, half_life), ref)
        if len(affinity) > MAX_CATEGORIES:
            now = max(r for _, r in affinity.values())
            keep = sorted(affinity, key=lambda c: -decay(affinity[c][0], now - affinity[c][1], half_life))
            affinity = {c: affinity[c] for c in keep[:MAX_CATEGORIES]}

    # States are immutable: a mapping this event leaves alone is shared, not copied.
    cart_ops, purchased = state.cart_ops, state.purchased
    if kind in _CART_TYPES:
        # Last writer by event time wins, so a late add_to_cart cannot resurrect a removed item.
        cart_ops = dict(cart_ops)
        last = cart_ops.get(item)
        if last is None or ts >= last[0]:
            cart_ops[item] = (ts, kind is EventType.ADD_TO_CART)
        cart_ops = _bounded_latest(cart_ops, MAX_CART, key=lambda v: v[0])
    if kind is EventType.PURCHASE:
        purchased = dict(purchased)
        purchased[item] = max(ts, purchased.get(item, ts))
        purchased = _bounded_latest(purchased, MAX_PURCHASED, key=lambda v: v)

    applied, runs = _remember(
        state.applied, state.applied_runs, fingerprint, event.ts if now is None else now, now
    )
    # Every field spelled out: dataclasses.replace re-inspects the fields on each call.
    return UserFeatures(
        user_id=state.user_id,
        recent=recent[:MAX_RECENT],
        affinity=affinity,
        counts=counts,
        cart_ops=cart_ops,
        purchased=purchased,
        first_seen=ts if state.first_seen is None else min(state.first_seen, ts),
        last_seen=ts if state.last_seen is None else max(state.last_seen, ts),
        applied=applied,
        applied_runs=runs,
        marks=_advance(state.marks, position),
        version=state.version,
    )


def apply_events(
    state: UserFeatures | None,
    events: Iterable[Event],
    categories_of: Mapping[str, Sequence[str]] | None = None,
    *,
    half_life: float = AFFINITY_HALF_LIFE_S,
) -> UserFeatures | None:
    for ev in events:
        cats = categories_of.get(ev.item_id, ()) if categories_of is not None else ()
        state = apply_event(state, ev, cats, half_life=half_life)
    return state


def _bounded_latest(d: dict[str, Any], limit: int, key: Any) -> dict[str, Any]:
    if len(d) <= limit:
        return d
    keep = sorted(d, key=lambda k: key(d[k]), reverse=True)[:limit]
    return {k: d[k] for k in keep}
