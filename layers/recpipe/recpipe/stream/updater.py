"""The feature updater: Kinesis records -> DynamoDB user features + Redis session/trending.

Exactly-once in effect, record by record:
- DynamoDB: one conditional write per user per batch (optimistic concurrency on
  `UserFeatures.version`); with write_mode="transact" a chunk's users are committed together
  in TransactWriteItems requests (one round trip per 100 users, each Put still conditional on
  the version read). The event ids folded into a user's state travel in the same item
  (`marks`: the highest sequence number applied per shard; `applied`: fingerprints of the events
  applied in the last DEDUP_WINDOW_S, docs/stream.md), so the dedup check and the state change are
  one atomic write: a redelivered event is a no-op and a lost race is re-read and re-applied.
  (A separate idempotency table would need a second write that can succeed while the first
  fails; keeping the ids in the item makes the write itself safe under replay.)
- Trending: `add_once` marks each event id with SET NX in the same Lua script as the ZINCRBY.
- Session: sorted-set members are the entries themselves, so rewriting one is a no-op.
Because session and trending writes are idempotent per event, they run alongside the DynamoDB
writes (for every valid event) instead of after them.

Failure handling: a record that can never succeed (not JSON, schema-invalid) is reported to
the failure sink and *not* returned as a failure, so it does not block the shard forever.
Throttling/timeouts (RetryableError, DependencyError) return that user's records as batch item
failures; when the invocation is about to time out the remaining users are returned unprocessed.
Lambda checkpoints before the lowest failed sequence number, so everything after it is
redelivered too: harmless, because every write above is idempotent.
"""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import orjson

from recpipe.domain.events import Event, EventRejected, parse_event
from recpipe.domain.user import StreamPosition, UserFeatures, apply_event
from recpipe.ports import (
    BatchUserFeatureWriter,
    ConflictError,
    DependencyError,
    FailureSink,
    SessionWriter,
    TrendingCounter,
    TrendingHit,
    UserFeatureStore,
)
from recpipe.stream.ingest import session_entries

#: Users whose features are read in one BatchGetItem.
USERS_PER_READ = 100
#: Re-read-and-re-apply attempts after losing an optimistic-concurrency race.
MAX_CONFLICT_RETRIES = 3
#: Below this much invocation time left, the rest of the batch is returned unprocessed.
MIN_REMAINING_MS = 3000
#: Bytes of a poison record's payload copied into its failure report.
POISON_PREVIEW_BYTES = 2048
#: "item": one PutItem per user, run on `write_workers` threads. "transact": TransactWriteItems
#: (the store's put_many), 100 users per request — fewer round trips, 2x write units.
WRITE_MODES = ("item", "transact")


@dataclass(frozen=True, slots=True)
class StreamRecord:
    """One Kinesis record as the updater needs it (from a Lambda event, the poller or replay)."""

    sequence_number: str
    data: bytes
    partition_key: str = ""
    shard_id: str = ""
    stream_arn: str = ""


@dataclass(slots=True)
class UpdateResult:
    #: Sequence numbers to return as batchItemFailures, in record order.
    failed: list[str] = field(default_factory=list)
    poison: int = 0
    applied: int = 0
    duplicates: int = 0
    users_written: int = 0
    conflicts: int = 0
    retryable: int = 0
    unprocessed: int = 0
    trending_counted: int = 0

    def batch_response(self) -> dict[str, list[dict[str, str]]]:
        return {"batchItemFailures": [{"itemIdentifier": s} for s in self.failed]}


#: A user's outcome: its counts, the error to return its records for, or None (out of time).
_Outcome = UpdateResult | DependencyError | None


@dataclass(slots=True)
class _UserWork:
    events: list[Event] = field(default_factory=list)
    sequence_numbers: list[str] = field(default_factory=list)
    positions: list[StreamPosition] = field(default_factory=list)
    #: Records of this user that cannot be folded (sequence number -> reason): reported, skipped.
    poison: dict[str, str] = field(default_factory=dict)
    redrive: bool = False


def decode_record(record: StreamRecord, *, now: float) -> Event:
    try:
        raw = orjson.loads(record.data)
    except orjson.JSONDecodeError as exc:
        raise EventRejected(f"record data is not JSON: {exc}") from None
    event = parse_event(raw, now=now)
    if record.partition_key and record.partition_key != event.user_id:
        # Producers partition by user so one user's events are ordered on one shard.
        raise EventRejected(f"partition key {record.partition_key!r} is not the event's user_id")
    return event


def poison_report(record: StreamRecord, reason: str) -> dict[str, Any]:
    preview = record.data[:POISON_PREVIEW_BYTES]
    return {
        "kind": "poison_record",
        "reason": reason,
        "shardId": record.shard_id,
        "sequenceNumber": record.sequence_number,
        "partitionKey": record.partition_key,
        "streamArn": record.stream_arn,
        "data_b64": base64.b64encode(preview).decode(),
        "truncated": len(record.data) > POISON_PREVIEW_BYTES,
    }


class FeatureUpdater:
    def __init__(
        self,
        users: UserFeatureStore,
        sessions: SessionWriter,
        trending: TrendingCounter,
        failures: FailureSink,
        categories_of: Callable[[str], Sequence[str]] = lambda _item: (),
        *,
        min_remaining_ms: int = MIN_REMAINING_MS,
        write_workers: int = 1,
        write_mode: str = "item",
        chunk_workers: int = 1,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if write_mode not in WRITE_MODES:
            raise ValueError(f"unknown write mode {write_mode!r} (expected one of {WRITE_MODES})")
        self._batch_writer: BatchUserFeatureWriter | None = None
        if write_mode == "transact":
            if not hasattr(users, "put_many"):
                raise TypeError(f"{type(users).__name__} has no put_many: cannot use write_mode='transact'")
            self._batch_writer = users  # type: ignore[assignment]
        self._users = users
        self._sessions = sessions
        self._trending = trending
        self._failures = failures
        self._categories_of = categories_of
        self._min_remaining_ms = min_remaining_ms
        self._clock = clock
        self._executor = (
            ThreadPoolExecutor(write_workers, thread_name_prefix="user-writes") if write_workers > 1 else None
        )
        self._chunk_executor = (
            ThreadPoolExecutor(chunk_workers, thread_name_prefix="user-chunks") if chunk_workers > 1 else None
        )
        self._live_executor = ThreadPoolExecutor(1, thread_name_prefix="live-state")

    @property
    def users(self) -> UserFeatureStore:
        return self._users

    def redrive(self, records: Sequence[StreamRecord]) -> UpdateResult:
        """`process` for records re-read for a failure-queue message (`recpipe replay`)."""
        return self.process(records, redrive=True)

    def process(
        self,
        records: Sequence[StreamRecord],
        remaining_ms: Callable[[], int] | None = None,
        *,
        redrive: bool = False,
    ) -> UpdateResult:
        result = UpdateResult()
        failed: set[str] = set()
        work: dict[str, _UserWork] = {}
        poison: list[tuple[StreamRecord, str]] = []
        now = self._clock()
        for record in records:
            try:
                event = decode_record(record, now=now)
            except EventRejected as exc:
                poison.append((record, str(exc)))
                continue
            w = work.setdefault(event.user_id, _UserWork(redrive=redrive))
            w.events.append(event)
            w.sequence_numbers.append(record.sequence_number)
            w.positions.append(StreamPosition(record.shard_id, record.sequence_number))

        if poison:
            result.poison = len(poison)
            try:
                self._failures.report([poison_report(r, reason) for r, reason in poison])
            except DependencyError:
                # Not reported yet: keep them on the stream rather than lose them.
                failed.update(r.sequence_number for r, _ in poison)

        # Session and trending writes are idempotent per event (sorted-set members, SET NX
        # markers), so they need not wait for the DynamoDB writes: they run alongside them, and
        # a record redelivered because its user's write failed still counts once.
        live = self._live_executor.submit(self._write_live_state, list(work.values())) if work else None

        folded_poison: list[tuple[str, str]] = []
        users = list(work)
        chunks = [users[start : start + USERS_PER_READ] for start in range(0, len(users), USERS_PER_READ)]
        for outcomes in self._run_chunks(chunks, work, remaining_ms):
            for u, outcome in outcomes:
                if outcome is None:  # skipped: out of time
                    failed.update(work[u].sequence_numbers)
                    result.unprocessed += len(work[u].sequence_numbers)
                    continue
                if isinstance(outcome, DependencyError):
                    failed.update(work[u].sequence_numbers)
                    result.retryable += len(work[u].sequence_numbers)
                    continue
                for name in ("applied", "duplicates", "conflicts", "users_written"):
                    setattr(result, name, getattr(result, name) + getattr(outcome, name))
                folded_poison.extend(work[u].poison.items())

        if folded_poison:
            by_seq = {r.sequence_number: r for r in records}
            result.poison += len(folded_poison)
            try:
                self._failures.report([poison_report(by_seq[s], reason) for s, reason in folded_poison])
            except DependencyError:
                failed.update(s for s, _ in folded_poison)

        if live is not None:
            try:
                result.trending_counted += live.result()
            except DependencyError:
                for w in work.values():  # redelivered, so the session/trending write is retried
                    again = [s for s in w.sequence_numbers if s not in failed]
                    failed.update(again)
                    result.retryable += len(again)

        result.failed = [r.sequence_number for r in records if r.sequence_number in failed]
        return result

    def _run_chunks(
        self,
        chunks: list[list[str]],
        work: Mapping[str, _UserWork],
        remaining_ms: Callable[[], int] | None,
    ) -> Iterator[list[tuple[str, _Outcome]]]:
        """Each chunk's read-fold-write, in chunk order. With chunk workers, up to that many
        chunks are in flight at once: their users are distinct (a user's events are all in one
        chunk), so while one chunk waits on DynamoDB another is folded and encoded."""
        if self._chunk_executor is None or len(chunks) == 1:
            for i, chunk in enumerate(chunks):
                if remaining_ms is not None and remaining_ms() < self._min_remaining_ms:
                    yield [(u, None) for c in chunks[i:] for u in c]
                    return
                yield self._run_chunk(chunk, work, remaining_ms)
            return

        def run(chunk: list[str]) -> list[tuple[str, _Outcome]]:
            if remaining_ms is not None and remaining_ms() < self._min_remaining_ms:
                return [(u, None) for u in chunk]
            return self._run_chunk(chunk, work, remaining_ms)

        yield from self._chunk_executor.map(run, chunks)

    def _run_chunk(
        self, chunk: list[str], work: Mapping[str, _UserWork], remaining_ms: Callable[[], int] | None
    ) -> list[tuple[str, _Outcome]]:
        try:
            states = self._users.get_many(chunk)
        except DependencyError as exc:
            return [(u, exc) for u in chunk]
        return self._apply_all(chunk, states, work, remaining_ms)

    def _apply_all(
        self,
        chunk: list[str],
        states: Mapping[str, UserFeatures],
        work: Mapping[str, _UserWork],
        remaining_ms: Callable[[], int] | None,
    ) -> list[tuple[str, _Outcome]]:
        """Per-user read-modify-write; users are independent items, so they run concurrently
        (the calls are I/O bound: ~5 ms each in DynamoDB, a batch has up to 100s of users).
        The time budget is checked per user: slow, retried writes can eat a whole chunk's time."""
        if self._batch_writer is not None:
            return self._apply_batched(self._batch_writer, chunk, states, work, remaining_ms)

        def one(u: str) -> tuple[str, _Outcome]:
            if remaining_ms is not None and remaining_ms() < self._min_remaining_ms:
                return u, None
            outcome = UpdateResult()
            try:
                self._apply(u, states.get(u), work[u], outcome)
            except DependencyError as exc:
                return u, exc
            return u, outcome

        if self._executor is None or len(chunk) == 1:
            return [one(u) for u in chunk]
        return list(self._executor.map(one, chunk))

    def _apply_batched(
        self,
        writer: BatchUserFeatureWriter,
        chunk: list[str],
        states: Mapping[str, UserFeatures],
        work: Mapping[str, _UserWork],
        remaining_ms: Callable[[], int] | None,
    ) -> list[tuple[str, _Outcome]]:
        """The chunk's users folded and written in one put_many (one transaction per 100 users);
        the users that lost a write race are re-read together and re-applied, as in `_apply`."""
        current: dict[str, UserFeatures | None] = {u: states.get(u) for u in chunk}
        outcomes = {u: UpdateResult() for u in chunk}
        final: dict[str, UpdateResult | DependencyError] = {}
        todo = chunk
        for attempt in range(MAX_CONFLICT_RETRIES + 1):
            if remaining_ms is not None and remaining_ms() < self._min_remaining_ms:
                break  # the users left in `todo` are returned unprocessed
            writes: list[tuple[UserFeatures, int]] = []
            fresh_of: dict[str, int] = {}
            for u in todo:
                state = current[u]
                new, fresh = self._fold(state, work[u])
                if new is state or new is None:
                    outcomes[u].duplicates += len(work[u].events)
                    final[u] = outcomes[u]
                    continue
                writes.append((new, state.version if state else 0))
                fresh_of[u] = fresh
            if not writes:
                break
            try:
                written = writer.put_many(writes)
            except DependencyError as exc:
                final.update((u, exc) for u in fresh_of)
                break
            conflicted = []
            for u, fresh in fresh_of.items():
                got = written.get(u, DependencyError(f"user {u}: no outcome for the write"))
                o = outcomes[u]
                if isinstance(got, ConflictError):
                    o.conflicts += 1
                    if attempt == MAX_CONFLICT_RETRIES:
                        final[u] = DependencyError(f"user {u}: lost {attempt + 1} write races")
                    else:
                        conflicted.append(u)
                elif isinstance(got, DependencyError):
                    final[u] = got
                else:
                    o.applied += fresh
                    o.duplicates += len(work[u].events) - fresh
                    o.users_written += 1
                    final[u] = o
            if not conflicted:
                break
            try:
                reread = self._users.get_many(conflicted)
            except DependencyError as exc:
                final.update((u, exc) for u in conflicted)
                break
            current.update((u, reread.get(u)) for u in conflicted)
            todo = conflicted
        return [(u, final.get(u)) for u in chunk]

    def _apply(self, user_id: str, state: UserFeatures | None, w: _UserWork, result: UpdateResult) -> None:
        events = w.events
        for attempt in range(MAX_CONFLICT_RETRIES + 1):
            new, fresh = self._fold(state, w)
            if new is state or new is None:
                result.duplicates += len(events)
                return
            try:
                self._users.put(new, expected_version=state.version if state else 0)
            except ConflictError:
                result.conflicts += 1
                if attempt == MAX_CONFLICT_RETRIES:
                    raise DependencyError(f"user {user_id}: lost {attempt + 1} write races") from None
                state = self._users.get(user_id)
                continue
            result.applied += fresh
            result.duplicates += len(events) - fresh
            result.users_written += 1
            return

    def _fold(self, state: UserFeatures | None, w: _UserWork) -> tuple[UserFeatures | None, int]:
        """The user's records folded in stream order; returns the new state (the same object
        when nothing changed) and how many events were applied. A record that still fails to
        fold (input validation should make that impossible) is set aside in `w.poison` and its
        user's other records go on."""
        fresh = 0
        now = self._clock()
        for event, position, seq in zip(w.events, w.positions, w.sequence_numbers, strict=True):
            before = state
            try:
                state = apply_event(
                    state,
                    event,
                    self._categories_of(event.item_id),
                    position=position,
                    now=now,
                    redrive=w.redrive,
                )
            except (ValueError, ArithmeticError, TypeError) as exc:
                w.poison[seq] = f"cannot fold event {event.event_id!r}: {exc}"
                continue
            # A producer retry only moves the shard mark: changed, not applied.
            fresh += state is not before and (before is None or state.applied is not before.applied)
        return state, fresh

    def _write_live_state(self, work: list[_UserWork]) -> int:
        """Session entries and trending hits of the batch's valid events; returns hits counted."""
        events = [e for w in work for e in w.events]
        self._sessions.append_many(session_entries(events, now=self._clock()))
        hits = [TrendingHit(e.event_id, e.item_id, e.ts, e.weight) for e in events]
        return self._trending.add_once(hits)


def records_from_lambda_event(event: Mapping[str, Any]) -> list[StreamRecord]:
    """Records of a Kinesis-triggered Lambda event (base64 data, as AWS delivers it)."""
    out = []
    for rec in event.get("Records", []):
        kinesis = rec["kinesis"]
        event_id = str(rec.get("eventID", ""))
        out.append(
            StreamRecord(
                sequence_number=str(kinesis["sequenceNumber"]),
                # base64.b64decode's own decoding, without its Python wrapper (one call per record)
                data=binascii.a2b_base64(kinesis["data"]),
                partition_key=str(kinesis.get("partitionKey", "")),
                shard_id=event_id.split(":", 1)[0],
                stream_arn=str(rec.get("eventSourceARN", "")),
            )
        )
    return out
