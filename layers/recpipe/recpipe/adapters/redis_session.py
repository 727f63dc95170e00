"""Session list and trending counters on Redis (the live state of the stream path).

Session (`sess:<user>`): a sorted set scored by event time whose members are
`encode_session_entry(item, type, ts)`. A sorted set rather than a list because the same
entry is written twice on purpose (synchronously by POST /events for read-your-writes, and
again by the feature updater so a Redis hiccup at ingest heals) and may be redelivered by
Kinesis: ZADD of an existing member is a no-op, late events land at their place in time, and
trimming by rank always drops the oldest. Bounded to SESSION_MAX_ITEMS, expires after
SESSION_TTL_S of inactivity.

Trending (`trend:<bucket>`): one sorted set per TRENDING_BUCKET_S bucket of event time,
item -> summed EVENT_WEIGHTS. `add_once` makes each event count once under redelivery with a
`SET NX` marker per event id in the same Lua script as the ZINCRBY (atomic: no window where
the marker exists but the count does not). Markers live as long as a bucket can be read, so a
redelivery after the marker expired falls into a bucket outside the window and is skipped.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence

import orjson
import redis

from recpipe.domain.events import MAX_FUTURE_SKEW_S
from recpipe.ports import DependencyError, RetryableError, SessionEntry, TrendingHit
from recpipe.redis_keys import (
    SESSION_MAX_ITEMS,
    SESSION_TTL_S,
    TRENDING_BUCKET_S,
    TRENDING_BUCKETS,
    TRENDING_HALF_LIFE_BUCKETS,
    TRENDING_TTL_S,
    KeyLayout,
    decode_session_entry,
    encode_session_entry,
    trending_bucket_of,
)

#: How long an event's trending marker is kept: the whole readable window plus clock skew.
TRENDING_MARKER_TTL_S = int(TRENDING_TTL_S + TRENDING_BUCKET_S + MAX_FUTURE_SKEW_S)
#: A combined top list is recomputed at most this often per bucket (cheap reads on the hot path).
TRENDING_TOP_TTL_S = 5


def _dependency_error(exc: redis.RedisError) -> DependencyError:
    if isinstance(exc, redis.TimeoutError | redis.ConnectionError):
        return RetryableError(f"redis: {exc}")
    return DependencyError(f"redis: {exc}")


# KEYS[i] = session key of user i; ARGV = max items, ttl, and a JSON array holding per user
# the flat list [score, member, score, member...] (strings, as redis-py would send them). One
# JSON argument instead of two per entry: redis-py packs each argument in Python, which was
# most of the client's CPU for a batch; cjson decodes the array in C. ZADD takes at most 100
# pairs at a time (Lua's unpack has a stack limit).
_APPEND_LUA = """
local max_items, ttl = tonumber(ARGV[1]), ARGV[2]
local entries = cjson.decode(ARGV[3])
for i = 1, #KEYS do
  local flat = entries[i]
  local pos, n = 1, #flat
  while pos <= n do
    local last = math.min(pos + 199, n)
    redis.call('ZADD', KEYS[i], unpack(flat, pos, last))
    pos = last + 1
  end
  -- Keep the newest max_items (rank 0 is the oldest).
  redis.call('ZREMRANGEBYRANK', KEYS[i], 0, -(max_items + 1))
  redis.call('EXPIRE', KEYS[i], ttl)
end
return #KEYS
"""


class RedisSessionStore:
    """SessionStore: the user's recent interactions, most recent first."""

    def __init__(self, client: redis.Redis, layout: KeyLayout | None = None) -> None:
        self._redis = client
        self._keys = layout or KeyLayout()
        self._append = client.register_script(_APPEND_LUA)

    def append(self, user_id: str, entries: Sequence[SessionEntry]) -> None:
        self.append_many({user_id: entries})

    def append_many(self, entries_by_user: Mapping[str, Sequence[SessionEntry]]) -> None:
        """Several users in one round trip (the updater writes a whole batch at once): one Lua
        script doing each user's ZADD + trim + EXPIRE. The same commands as a pipeline cost
        several times the client CPU (redis-py packs and parses 3 commands per user), and the
        script is atomic where the pipeline was not."""
        keys: list[str] = []
        entries_of: list[list[str]] = []
        for user_id, entries in entries_by_user.items():
            if not entries:
                continue
            # A dict, as ZADD of a mapping: an entry given twice is one member (the last score).
            members = {encode_session_entry(e.item_id, e.type, e.ts): e.ts for e in entries}
            keys.append(self._keys.session(user_id))
            # repr: the score text redis-py sends for a float.
            entries_of.append([x for member, score in members.items() for x in (repr(float(score)), member)])
        if not keys:
            return
        try:
            self._append(keys=keys, args=[SESSION_MAX_ITEMS, SESSION_TTL_S, orjson.dumps(entries_of)])
        except redis.RedisError as exc:
            raise _dependency_error(exc) from exc

    def recent(self, user_id: str, limit: int = 20) -> list[SessionEntry]:
        if limit <= 0:
            return []
        try:
            raw = self._redis.zrevrange(self._keys.session(user_id), 0, limit - 1)
        except redis.RedisError as exc:
            raise _dependency_error(exc) from exc
        out = []
        for member in raw:
            item_id, event_type, ts = decode_session_entry(member)
            out.append(SessionEntry(item_id=item_id, type=event_type, ts=ts))
        return out


# KEYS = the distinct bucket keys, then one marker key per hit; ARGV = bucket ttl, marker
# ttl, and a JSON array of [bucket key index, item, weight] per hit (weight as redis-py would
# send it). Returns how many hits were counted.
_ADD_ONCE_LUA = """
local hits = cjson.decode(ARGV[3])
local first_marker = #KEYS - #hits
local counted = 0
for i = 1, #hits do
  local hit = hits[i]
  if redis.call('SET', KEYS[first_marker + i], '1', 'NX', 'EX', ARGV[2]) then
    local bucket = KEYS[hit[1]]
    redis.call('ZINCRBY', bucket, hit[3], hit[2])
    redis.call('EXPIRE', bucket, ARGV[1])
    counted = counted + 1
  end
end
return counted
"""


class RedisTrendingStore:
    """TrendingStore, plus `add_once` for the updater (exactly-once per event id)."""

    def __init__(
        self,
        client: redis.Redis,
        layout: KeyLayout | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._redis = client
        self._keys = layout or KeyLayout()
        self._clock = clock
        self._add_once = self._redis.register_script(_ADD_ONCE_LUA)

    # ---- writes ------------------------------------------------------------------------------
    def add(self, weights: Mapping[tuple[int, str], float]) -> None:
        pipe = self._redis.pipeline(transaction=False)
        for (bucket, item_id), weight in weights.items():
            key = self._keys.trending_bucket(bucket)
            pipe.zincrby(key, weight, item_id)
            pipe.expire(key, TRENDING_TTL_S)
        try:
            pipe.execute()
        except redis.RedisError as exc:
            raise _dependency_error(exc) from exc

    def add_once(self, hits: Sequence[TrendingHit]) -> int:  # TrendingCounter
        """Count each hit whose event id was not counted before. Returns hits counted.

        Hits whose bucket is already outside the readable window are skipped: they could not
        change `top`, and their markers may have expired (see module docstring)."""
        oldest = trending_bucket_of(self._clock()) - TRENDING_BUCKETS
        live = [h for h in hits if trending_bucket_of(h.ts) > oldest]
        if not live:
            return 0
        buckets: dict[str, int] = {}  # key -> its 1-based index in KEYS
        payload = []
        for h in live:
            bucket = buckets.setdefault(
                self._keys.trending_bucket(trending_bucket_of(h.ts)), len(buckets) + 1
            )
            payload.append((bucket, h.item_id, repr(float(h.weight))))
        keys = [*buckets, *(self._keys.idempotency("trend", h.event_id) for h in live)]
        args = [TRENDING_TTL_S, TRENDING_MARKER_TTL_S, orjson.dumps(payload)]
        try:
            return int(self._add_once(keys=keys, args=args))
        except redis.RedisError as exc:
            raise _dependency_error(exc) from exc

    # ---- reads -------------------------------------------------------------------------------
    def top(self, now: float, n: int) -> list[tuple[str, float]]:
        if n <= 0:
            return []
        current = trending_bucket_of(now)
        top_key = self._keys.trending_bucket(current) + ":top"
        try:
            raw = self._redis.zrevrange(top_key, 0, n - 1, withscores=True)
            if not raw:
                buckets = [current - age for age in range(TRENDING_BUCKETS)]
                weights = {
                    self._keys.trending_bucket(b): math.pow(0.5, age / TRENDING_HALF_LIFE_BUCKETS)
                    for age, b in enumerate(buckets)
                }
                pipe = self._redis.pipeline(transaction=True)
                pipe.zunionstore(top_key, weights)
                pipe.zremrangebyscore(top_key, "-inf", 0)  # net-negative items are not trending
                pipe.expire(top_key, TRENDING_TOP_TTL_S)
                pipe.zrevrange(top_key, 0, n - 1, withscores=True)
                raw = pipe.execute()[-1]
        except redis.RedisError as exc:
            raise _dependency_error(exc) from exc
        if not raw:
            return []
        best = float(raw[0][1])
        return [
            (m.decode() if isinstance(m, bytes) else str(m), float(s) / best if best > 0 else 0.0)
            for m, s in raw
        ]
