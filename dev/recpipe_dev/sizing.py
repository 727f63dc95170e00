"""Capacity guide: what a load needs, from the figures the benchmarks measured (issue #16).

Each `Figure` names where it comes from: the command and report key that measured it, or the
AWS quota or product documentation it is. `recpipe sizing` prints the table; the infra test
tests/infra/test_sizing.py runs it for the load each samconfig.toml profile states and fails
when the template's values fall short. Re-run the named command and update the figure when the
code it measures changes.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from recpipe.adapters.redis_session import TRENDING_MARKER_TTL_S
from recpipe.redis_keys import (
    PUBLISHED_RETENTION_S,
    SESSION_MAX_ITEMS,
    SESSION_TTL_S,
    TRENDING_BUCKET_S,
    TRENDING_TTL_S,
)


@dataclass(frozen=True)
class Figure:
    value: float
    unit: str
    source: str


# ---- measured by this project's benchmarks ---------------------------------------------------------
#: Redis memory of one candidate-list entry, key and list overhead shared out (used_memory after
#: publishing / lists / entries per list). Synthetic ids ("u123456", "m12345").
CANDIDATE_ENTRY_BYTES = Figure(
    26.2,
    "bytes of Redis per candidate in a user's list",
    "recpipe bench retrain --sizes 10M: publish.redis_used_memory_mib 902.0 for 180,703 lists of "
    "top_n 200 (bench/results/retrain.json)",
)
#: A live session (sorted set `sess:<user>`, TTL SESSION_TTL_S): a fixed part per user key plus
#: one entry per event in it (RedisSessionStore.append_many, as the updater and ingest write).
SESSION_KEY_BYTES = Figure(
    152.2,
    "bytes of Redis per live session key (key, sorted set, expiry)",
    "recpipe bench live-memory: session_key_bytes (bench/results/live-memory.json; used_memory "
    "after 20,000 one-entry sessions)",
)
SESSION_ENTRY_BYTES = Figure(
    56.9,
    "bytes of Redis per session entry",
    "recpipe bench live-memory: session_entry_bytes (bench/results/live-memory.json; used_memory "
    "of 20,000 sessions of 50 entries less one-entry sessions)",
)
#: One item in one trending bucket (sorted set `trend:<bucket>`, skiplist encoding past 128).
TRENDING_ENTRY_BYTES = Figure(
    105.0,
    "bytes of Redis per item per trending bucket",
    "recpipe bench live-memory: trending_entry_bytes (bench/results/live-memory.json; MEMORY "
    "USAGE of a 20,000-item bucket)",
)
#: The exactly-once marker RedisTrendingStore.add_once sets per event id (SET NX EX
#: TRENDING_MARKER_TTL_S): one key per event for the whole trending window.
TRENDING_MARKER_BYTES = Figure(
    104.0,
    "bytes of Redis per trending event marker (key, value, expiry)",
    "recpipe bench live-memory: trending_marker_bytes (bench/results/live-memory.json; MEMORY "
    "USAGE of sample markers, above used_memory's 88.9 B per add_once hit)",
)
#: A returning user's stored state (DynamoDB item) at its steady-state size.
USER_STATE_BYTES = Figure(
    3512,
    "bytes per user state (DynamoDB item, 256 applied event ids)",
    "recpipe bench stream: config.mean_state_bytes (bench/results/stream.json)",
)
#: The feature updater's own CPU per event (deployed defaults: batch 500, transact writes, state
#: cache), measured in the updater process, so independent of the DynamoDB stand-in's speed.
UPDATER_CPU_US_PER_EVENT = Figure(
    383.4,
    "updater CPU microseconds per event",
    "recpipe bench stream: headline.updater_cpu_us_per_event (100,000 Zipf users; 383.4 on the "
    "2026-12-04 VM at load average 4-7; 130.1 on the 2026-12-05 VM, about 3.5x faster per stage, "
    "in bench/results/stream.json: planning keeps the slower VM's figure)",
)
#: Events per conditional user write at the deployed batch size (several events of one user in a
#: batch are folded into one write).
EVENTS_PER_USER_WRITE = Figure(
    1.46,
    "events per DynamoDB user write (batch 500)",
    "recpipe bench stream: updater_dynamodb.events_per_user_write (bench/results/stream.json)",
)
#: Share of the updater's user-state reads served by its in-memory cache on a busy shard.
STATE_CACHE_HIT_RATE = Figure(
    0.6155,
    "user-state cache hit rate",
    "recpipe bench stream: headline.user_state_cache_hit_rate (bench/results/stream.json; the cache "
    "held 7,475 of its 20,000 users at the start, so a long-running shard's is higher)",
)
#: One Kinesis record (the ingest API writes one per event).
EVENT_RECORD_BYTES = Figure(
    159,
    "bytes per Kinesis record",
    "recpipe bench stream: config.mean_record_bytes (bench/results/stream.json)",
)
#: Scoring Lambda resident memory: a fixed part plus the bundle's in-memory item data.
SERVING_BASE_RSS_MB = Figure(
    114.0,
    "MB resident in the scoring Lambda before item data",
    "recpipe bench serving: rss_mb_by_catalogue 10,000 -> 121.5 MB, 100,000 -> 188.8 MB "
    "(bench/results/serving.json), intercept",
)
SERVING_BYTES_PER_ITEM = Figure(
    748,
    "bytes of scoring Lambda memory per catalogue item",
    "recpipe bench serving: rss_mb_by_catalogue, slope from 10,000 to 100,000 items",
)

# ---- AWS quotas and product settings ----------------------------------------------------------------
KINESIS_RECORDS_PER_SHARD = Figure(
    1000, "records/s written per shard", "Kinesis Data Streams quota (per-shard write)"
)
KINESIS_BYTES_PER_SHARD = Figure(
    1_048_576, "bytes/s written per shard", "Kinesis Data Streams quota (per-shard write)"
)
LAMBDA_MB_PER_VCPU = Figure(1769, "MB of Lambda memory per vCPU", "AWS Lambda documentation")
DYNAMODB_ON_DEMAND_INITIAL_WCU = Figure(
    4000,
    "write units/s a new on-demand table serves at once",
    "DynamoDB documentation (on-demand initial throughput)",
)
DYNAMODB_ON_DEMAND_INITIAL_RCU = Figure(
    12000,
    "read units/s a new on-demand table serves at once",
    "DynamoDB documentation (on-demand initial throughput)",
)
#: ElastiCache keeps 25 % of a node for replication buffers and overhead (default parameter group).
ELASTICACHE_RESERVED_SHARE = 0.25
#: Node memory (GiB) of the node types worth considering, smallest first (ElastiCache docs).
CACHE_NODE_GIB: dict[str, float] = {
    "cache.t4g.micro": 0.5,
    "cache.t4g.small": 1.37,
    "cache.t4g.medium": 3.09,
    "cache.m7g.large": 6.38,
    "cache.r7g.large": 13.07,
    "cache.r7g.xlarge": 26.32,
    "cache.r7g.2xlarge": 52.82,
    "cache.r7g.4xlarge": 105.81,
    "cache.r7g.8xlarge": 209.55,
}

# ---- planning margins (choices, not measurements) -----------------------------------------------------
#: Plan shards and updaters for this share of their limit: bursts and a shard's hot users.
SHARD_UTILISATION = 0.8
#: Updater CPU busy share planned: the rest is waiting on DynamoDB and Redis round trips.
UPDATER_CPU_UTILISATION = 0.5
#: Target-tracking utilisation of the scoring Lambda's provisioned concurrency (template: 70 %).
PROVISIONED_UTILISATION = 0.7
#: Smallest scoring Lambda: 0.58 vCPU, where the measured compute p99 (2.8 ms at 500 candidates
#: on a full core, recpipe bench serving) stays well inside the 35 ms request budget.
RECOMMEND_MIN_MB = 1024
#: DynamoDB on-demand per-table throughput quota (default; raise it with a quota request).
DYNAMODB_TABLE_MAX_WCU = 40_000
#: Highest ParallelizationFactor Lambda allows per shard.
MAX_PARALLELIZATION = 10


#: Candidate versions in Redis at the peak of a publish: the one being written, the current one
#: and every superseded one still within its retention. A publish gives the version it replaces
#: the retention (PUBLISHED_RETENTION_DAYS) as TTL and drops it from the version registry, so
#: nothing but that TTL bounds how many are kept (recpipe.adapters.redis_candidates._switch): at
#: one retrain a day (template RetrainSchedule) and 7 days, 7 superseded versions.
def candidate_versions_held(retention_days: float, retrains_per_day: float) -> int:
    return 2 + math.ceil(retention_days * retrains_per_day)


@dataclass(frozen=True)
class Load:
    users: int
    items: int
    events_per_s: float
    #: Candidates in each user's CF list (TrainParams.top_n; the online path ranks up to
    #: MAX_CANDIDATES including session neighbours and trending).
    candidates: int
    #: Recommendation requests per second; by default one per event (each page view posts a view
    #: event and asks for recommendations).
    requests_per_s: float | None = None
    #: The scoring Lambda answers within this (template RequestBudgetMs), so it bounds a
    #: request's duration.
    request_budget_ms: float = 35.0
    #: PUBLISHED_RETENTION_DAYS: superseded candidate versions stay in Redis this long.
    retention_days: float = PUBLISHED_RETENTION_S / 86400
    #: Retrains (candidate publishes) per day: the template's RetrainSchedule runs daily.
    retrains_per_day: float = 1.0

    @property
    def rps(self) -> float:
        return self.events_per_s if self.requests_per_s is None else self.requests_per_s


def _round_up(value: float, step: int) -> int:
    return int(math.ceil(value / step) * step)


def size(load: Load) -> dict[str, Any]:
    """What `load` needs: {section: {value, unit, why}}, plus the figures used."""
    e = load.events_per_s
    # Kinesis: records and bytes, each within SHARD_UTILISATION of the shard's write quota.
    by_records = e / (KINESIS_RECORDS_PER_SHARD.value * SHARD_UTILISATION)
    by_bytes = e * EVENT_RECORD_BYTES.value / (KINESIS_BYTES_PER_SHARD.value * SHARD_UTILISATION)
    shards = max(1, math.ceil(max(by_records, by_bytes)))

    # Updater: one vCPU per invocation (memory 1769 MB), busy UPDATER_CPU_UTILISATION of the time.
    updater_vcpu = e * UPDATER_CPU_US_PER_EVENT.value / 1e6
    invocations = max(1, math.ceil(updater_vcpu / UPDATER_CPU_UTILISATION))
    parallelization = math.ceil(invocations / shards)
    if parallelization > MAX_PARALLELIZATION:  # more shards instead
        shards = math.ceil(invocations / MAX_PARALLELIZATION)
        parallelization = math.ceil(invocations / shards)

    # DynamoDB (on demand): conditional writes of whole states; transactions cost twice.
    wcu_per_write = math.ceil(USER_STATE_BYTES.value / 1024) * 2
    user_writes = e / EVENTS_PER_USER_WRITE.value
    wcu = user_writes * wcu_per_write
    rcu_per_read = math.ceil(USER_STATE_BYTES.value / 4096)  # strongly consistent
    updater_reads = user_writes * (1 - STATE_CACHE_HIT_RATE.value)
    serving_reads = load.rps * rcu_per_read * 0.5  # eventually consistent GetItem
    rcu = updater_reads * rcu_per_read + serving_reads
    storage_gib = load.users * USER_STATE_BYTES.value / 2**30

    # Redis: every user's list in each version held, plus the live state. Sessions: one entry
    # per event of the last SESSION_TTL_S, at most SESSION_MAX_ITEMS per user, at worst each
    # event another user's. Trending: the bucket being written plus those within their TTL
    # (refreshed by every hit, so it runs from a bucket's end) and the combined top list, each
    # up to every item; plus one marker per event of the marker TTL.
    versions = candidate_versions_held(load.retention_days, load.retrains_per_day)
    version_bytes = load.users * load.candidates * CANDIDATE_ENTRY_BYTES.value
    session_events = e * SESSION_TTL_S
    session_keys = min(load.users, session_events)
    session_entries = min(load.users * SESSION_MAX_ITEMS, session_events)
    session_bytes = session_keys * SESSION_KEY_BYTES.value + session_entries * SESSION_ENTRY_BYTES.value
    bucket_items = min(load.items, e * TRENDING_BUCKET_S)
    live_buckets = TRENDING_TTL_S // TRENDING_BUCKET_S + 1 + 1
    markers = e * TRENDING_MARKER_TTL_S
    trending_bytes = (
        live_buckets * bucket_items * TRENDING_ENTRY_BYTES.value + markers * TRENDING_MARKER_BYTES.value
    )
    redis_need_gib = (version_bytes * versions + session_bytes + trending_bytes) / 2**30
    node = next(
        (n for n, gib in CACHE_NODE_GIB.items() if gib * (1 - ELASTICACHE_RESERVED_SHARE) >= redis_need_gib),
        None,
    )

    # Scoring Lambda: memory for two bundles (a refresh loads the new one beside the old), at
    # least RECOMMEND_MIN_MB; concurrency = requests in flight at the request budget.
    rss_mb = SERVING_BASE_RSS_MB.value + load.items * SERVING_BYTES_PER_ITEM.value / 1e6
    bundle_mb = load.items * SERVING_BYTES_PER_ITEM.value / 1e6
    recommend_mb = max(RECOMMEND_MIN_MB, _round_up(rss_mb + bundle_mb + 128, 64))
    in_flight = load.rps * load.request_budget_ms / 1000
    provisioned = math.ceil(in_flight / PROVISIONED_UTILISATION)

    return {
        "load": asdict(load) | {"requests_per_s": load.rps},
        "kinesis": {
            "EventStreamShards": shards,
            "why": f"{e:,.0f} records/s (1 per event, ~{EVENT_RECORD_BYTES.value:.0f} B) at "
            f"{SHARD_UTILISATION:.0%} of {KINESIS_RECORDS_PER_SHARD.value:,.0f} records/s and 1 MiB/s per shard",
        },
        "feature_updater": {
            "FeatureUpdaterMemorySize": int(LAMBDA_MB_PER_VCPU.value),
            "FeatureUpdaterParallelization": parallelization,
            "concurrency": shards * parallelization,
            "vcpu_busy": round(updater_vcpu, 2),
            "why": f"{UPDATER_CPU_US_PER_EVENT.value:.0f} us CPU/event x {e:,.0f} events/s = "
            f"{updater_vcpu:.2f} vCPU, planned at {UPDATER_CPU_UTILISATION:.0%} busy per 1-vCPU invocation",
        },
        "dynamodb": {
            "write_units_per_s": round(wcu),
            "read_units_per_s": round(rcu),
            "storage_gib": round(storage_gib, 2),
            "on_demand_initial_ok": wcu <= DYNAMODB_ON_DEMAND_INITIAL_WCU.value
            and rcu <= DYNAMODB_ON_DEMAND_INITIAL_RCU.value,
            "within_table_quota": wcu <= DYNAMODB_TABLE_MAX_WCU,
            "why": f"{user_writes:,.0f} user writes/s x {wcu_per_write} WCU (transaction, "
            f"{USER_STATE_BYTES.value:.0f} B state); reads: updater cache misses + {load.rps:,.0f} GetItem/s",
        },
        "redis": {
            "memory_gib": round(redis_need_gib, 2),
            "CacheNodeType": node,
            "candidate_versions": versions,
            "candidates_gib": round(version_bytes * versions / 2**30, 2),
            "sessions_gib": round(session_bytes / 2**30, 2),
            "trending_gib": round(trending_bytes / 2**30, 2),
            "why": f"candidates {version_bytes * versions / 2**30:.2f} GiB ({load.users:,} lists x "
            f"{load.candidates} x {CANDIDATE_ENTRY_BYTES.value} B x {versions} versions: publishing, "
            f"current, {versions - 2} kept {load.retention_days:g} days at {load.retrains_per_day:g} "
            f"retrains/day) + sessions {session_bytes / 2**30:.2f} GiB ({session_keys:,.0f} keys, "
            f"{session_entries:,.0f} entries of the last {SESSION_TTL_S // 60} min) + trending "
            f"{trending_bytes / 2**30:.2f} GiB ({live_buckets} sorted sets x {bucket_items:,.0f} items, "
            f"{markers:,.0f} event markers of {TRENDING_MARKER_TTL_S} s), within "
            f"{1 - ELASTICACHE_RESERVED_SHARE:.0%} of node memory",
        },
        "recommend_lambda": {
            "RecommendMemorySize": recommend_mb,
            "rss_mb": round(rss_mb),
            "ProvisionedConcurrency": provisioned,
            "why": f"{load.rps:,.0f} requests/s x {load.request_budget_ms:.0f} ms budget = "
            f"{in_flight:.1f} in flight at {PROVISIONED_UTILISATION:.0%} utilisation (the "
            f"ProvisionedConcurrencyMax that auto scaling must reach)",
        },
        "figures": {name: asdict(fig) for name, fig in FIGURES.items()},
    }


FIGURES: dict[str, Figure] = {
    "candidate_entry_bytes": CANDIDATE_ENTRY_BYTES,
    "user_state_bytes": USER_STATE_BYTES,
    "updater_cpu_us_per_event": UPDATER_CPU_US_PER_EVENT,
    "events_per_user_write": EVENTS_PER_USER_WRITE,
    "state_cache_hit_rate": STATE_CACHE_HIT_RATE,
    "event_record_bytes": EVENT_RECORD_BYTES,
    "session_key_bytes": SESSION_KEY_BYTES,
    "session_entry_bytes": SESSION_ENTRY_BYTES,
    "trending_entry_bytes": TRENDING_ENTRY_BYTES,
    "trending_marker_bytes": TRENDING_MARKER_BYTES,
    "serving_base_rss_mb": SERVING_BASE_RSS_MB,
    "serving_bytes_per_item": SERVING_BYTES_PER_ITEM,
    "kinesis_records_per_shard": KINESIS_RECORDS_PER_SHARD,
    "kinesis_bytes_per_shard": KINESIS_BYTES_PER_SHARD,
    "lambda_mb_per_vcpu": LAMBDA_MB_PER_VCPU,
    "dynamodb_on_demand_initial_wcu": DYNAMODB_ON_DEMAND_INITIAL_WCU,
    "dynamodb_on_demand_initial_rcu": DYNAMODB_ON_DEMAND_INITIAL_RCU,
}


def node_usable_gib(node_type: str) -> float | None:
    gib = CACHE_NODE_GIB.get(node_type)
    return None if gib is None else gib * (1 - ELASTICACHE_RESERVED_SHARE)


def format_table(report: dict[str, Any]) -> str:
    ld = report["load"]
    k, u, d, r, s = (
        report["kinesis"],
        report["feature_updater"],
        report["dynamodb"],
        report["redis"],
        report["recommend_lambda"],
    )
    rows = [
        ("EventStreamShards", str(k["EventStreamShards"]), k["why"]),
        (
            "FeatureUpdaterMemorySize",
            f"{u['FeatureUpdaterMemorySize']} MB",
            "one vCPU: the updater is CPU-bound",
        ),
        (
            "FeatureUpdaterParallelization",
            f"{u['FeatureUpdaterParallelization']} (concurrency {u['concurrency']})",
            u["why"],
        ),
        (
            "DynamoDB (on demand)",
            f"{d['write_units_per_s']:,} WCU/s, {d['read_units_per_s']:,} RCU/s, {d['storage_gib']} GiB",
            d["why"]
            + (
                ""
                if d["on_demand_initial_ok"]
                else "; above a new on-demand table's initial throughput: pre-warm"
            ),
        ),
        (
            "CacheNodeType",
            f"{r['CacheNodeType'] or 'none fits: shard the cache'} ({r['memory_gib']} GiB)",
            r["why"],
        ),
        (
            "RecommendMemorySize",
            f"{s['RecommendMemorySize']} MB (RSS ~{s['rss_mb']} MB)",
            "two bundles + runtime",
        ),
        ("ProvisionedConcurrency", str(s["ProvisionedConcurrency"]), s["why"]),
    ]
    width = max(len(a) for a, _, _ in rows)
    vwidth = max(len(b) for _, b, _ in rows)
    out = [
        f"load: {ld['users']:,} users, {ld['items']:,} items, {ld['events_per_s']:,.0f} events/s, "
        f"{ld['candidates']} candidates per user, {ld['requests_per_s']:,.0f} requests/s",
        "",
    ]
    out += [f"{a:<{width}}  {b:<{vwidth}}  {c}" for a, b, c in rows]
    out += ["", "figures used:"]
    out += [f"  {name} = {f['value']:g} {f['unit']} [{f['source']}]" for name, f in report["figures"].items()]
    return "\n".join(out)
