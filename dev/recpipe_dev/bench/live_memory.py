"""`recpipe bench live-memory`: Redis bytes of the stream path's live state, for `recpipe sizing`.

Writes through the runtime's own adapters (RedisSessionStore.append_many, RedisTrendingStore
.add_once, as the updater does) into a throw-away redis-server and reads what it costs:
- a session: fixed bytes per user key plus bytes per entry, from used_memory after S users with
  one entry each and after S users with SESSION_MAX_ITEMS each (keys carry their TTL, so the
  expiry table's share is in the figure);
- trending: bytes per item in one bucket's sorted set (MEMORY USAGE), and bytes per event of
  the exactly-once marker `add_once` sets for every event id (the larger of used_memory net of
  the bucket and MEMORY USAGE of sample markers).
MEMORY USAGE (SAMPLES 0: every element) of sample keys is reported beside the used_memory
figures as a cross-check. Ids are shaped like the benchmarks' ("u123456", "m12345", UUID event
ids) under the prod key prefix.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--users", type=int, default=20_000, help="session keys written")
    parser.add_argument(
        "--items", type=int, default=20_000, help="items in the trending bucket (one hit each)"
    )
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", dest="json_out", help="write the report here")


def run(args: argparse.Namespace) -> int:
    import redis
    from recpipe.adapters.redis_session import RedisSessionStore, RedisTrendingStore
    from recpipe.ports import SessionEntry, TrendingHit
    from recpipe.redis_keys import SESSION_MAX_ITEMS, KeyLayout, trending_bucket_of

    from recpipe_dev.local.redis_server import RedisServer

    rng = random.Random(args.seed)
    layout = KeyLayout("prod")
    types = ["view", "click", "add_to_cart", "purchase"]
    now = time.time()
    users = [f"u{100_000 + u}" for u in range(args.users)]

    def used(client: redis.Redis) -> int:
        return int(client.info("memory")["used_memory"])

    def sample_usage(client: redis.Redis, keys: list[str]) -> float:
        sizes = [int(client.memory_usage(k, samples=0) or 0) for k in keys]
        return sum(sizes) / len(sizes)

    report: dict[str, Any] = {"benchmark": "live-memory", "users": args.users, "items": args.items}
    with tempfile.TemporaryDirectory() as tmp, RedisServer(Path(tmp)) as server:
        client = redis.Redis.from_url(server.url)
        report["redis"] = f"throw-away redis-server {client.info()['redis_version']}"
        sessions = RedisSessionStore(client, layout)

        def write_sessions(entries_per_user: int) -> int:
            client.flushall()
            before = used(client)
            for start in range(0, len(users), 500):
                sessions.append_many(
                    {
                        u: [
                            SessionEntry(f"m{rng.randrange(10_000, 99_999)}", rng.choice(types), now - k)
                            for k in range(entries_per_user)
                        ]
                        for u in users[start : start + 500]
                    }
                )
            return used(client) - before

        one = write_sessions(1)
        full = write_sessions(SESSION_MAX_ITEMS)
        entry = (full - one) / (args.users * (SESSION_MAX_ITEMS - 1))
        report["session_entry_bytes"] = round(entry, 1)
        report["session_key_bytes"] = round(one / args.users - entry, 1)
        report["session_full_key_memory_usage"] = round(
            sample_usage(client, [layout.session(u) for u in users[:200]]), 1
        )
        report["session_full_key_used_memory"] = round(full / args.users, 1)

        client.flushall()
        trending = RedisTrendingStore(client, layout, clock=lambda: now)
        before = used(client)
        hits = [
            TrendingHit(str(uuid.UUID(int=rng.getrandbits(128), version=4)), f"m{i}", now, 1.0)
            for i in range(args.items)
        ]
        for start in range(0, len(hits), 500):
            trending.add_once(hits[start : start + 500])
        total = used(client) - before
        bucket = layout.trending_bucket(trending_bucket_of(now))
        zset = int(client.memory_usage(bucket, samples=0) or 0)
        report["trending_entry_bytes"] = round(zset / args.items, 1)
        report["trending_marker_used_memory"] = round((total - zset) / args.items, 1)
        report["trending_marker_memory_usage"] = round(
            sample_usage(client, [layout.idempotency("trend", h.event_id) for h in hits[:200]]), 1
        )
        # The two disagree by allocator rounding and the expiry table: size with the larger.
        report["trending_marker_bytes"] = max(
            report["trending_marker_used_memory"], report["trending_marker_memory_usage"]
        )
    print(
        f"live-state memory ({report['redis']}): session {report['session_key_bytes']} B per key + "
        f"{report['session_entry_bytes']} B per entry (a full key: {report['session_full_key_used_memory']} B "
        f"used_memory, {report['session_full_key_memory_usage']} B MEMORY USAGE); trending "
        f"{report['trending_entry_bytes']} B per item per bucket, {report['trending_marker_bytes']} B per "
        f"event marker (used_memory {report['trending_marker_used_memory']} B, MEMORY USAGE "
        f"{report['trending_marker_memory_usage']} B)"
    )
    if args.json_out:
        Path(args.json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json_out).write_text(json.dumps(report, indent=2))
    return 0
