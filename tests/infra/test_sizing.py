"""The deploy profiles carry the capacity their stated load needs (issue #16).

samconfig.toml's dev and prod profiles each state a load (`# sized-for: ...`); `recpipe sizing`
computes what that load needs from the measured figures; every parameter a profile deploys (its
overrides, else the template's default) must meet it. The [default] profile deploys the
template's defaults and is held to dev's load.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
from recpipe.redis_keys import SESSION_MAX_ITEMS
from recpipe_dev.sizing import (
    DYNAMODB_TABLE_MAX_WCU,
    SESSION_ENTRY_BYTES,
    SESSION_KEY_BYTES,
    Load,
    node_usable_gib,
    size,
)

ROOT = Path(__file__).resolve().parents[2]
SAMCONFIG = ROOT / "samconfig.toml"


def stated_loads() -> dict[str, Load]:
    """{profile: load} from the `# sized-for:` comment above each profile's first section."""
    loads: dict[str, Load] = {}
    pending: dict[str, str] | None = None
    for line in SAMCONFIG.read_text().splitlines():
        m = re.match(r"#\s*sized-for:\s*(.+)$", line)
        if m:
            pending = dict(kv.split("=", 1) for kv in m.group(1).split())
            continue
        section = re.match(r"\[(\w+)\.", line)
        if section and pending is not None:
            loads[section.group(1)] = Load(
                users=int(pending["users"]),
                items=int(pending["items"]),
                events_per_s=float(pending["events_per_s"]),
                candidates=int(pending["candidates"]),
                requests_per_s=float(pending["requests_per_s"]),
            )
            pending = None
    return loads


def deployed_parameters(template: dict[str, Any], profile: str) -> dict[str, str]:
    params = {k: str(v.get("Default", "")) for k, v in template["Parameters"].items()}
    overrides = tomllib.loads(SAMCONFIG.read_text())[profile]["deploy"]["parameters"]["parameter_overrides"]
    for item in [overrides] if isinstance(overrides, str) else overrides:
        for kv in item.split():
            key, value = kv.split("=", 1)
            params[key] = value
    return params


def test_dev_and_prod_state_their_load() -> None:
    assert set(stated_loads()) >= {"dev", "prod"}


@pytest.mark.parametrize(("profile", "load_of"), [("dev", "dev"), ("prod", "prod"), ("default", "dev")])
def test_profile_meets_the_sizing_for_its_load(template: dict[str, Any], profile: str, load_of: str) -> None:
    p = deployed_parameters(template, profile)
    load = stated_loads()[load_of]
    load = Load(**{**load.__dict__, "request_budget_ms": float(p["RequestBudgetMs"])})
    need = size(load)
    short: list[str] = []

    def at_least(name: str, have: float, wanted: float, why: str) -> None:
        if have < wanted:
            short.append(f"{name}={have:g} < {wanted:g} ({why})")

    shards = int(p["EventStreamShards"])
    at_least("EventStreamShards", shards, need["kinesis"]["EventStreamShards"], need["kinesis"]["why"])
    updater = need["feature_updater"]
    at_least(
        "EventStreamShards x FeatureUpdaterParallelization",
        shards * int(p["FeatureUpdaterParallelization"]),
        updater["concurrency"],
        updater["why"],
    )
    at_least(
        "FeatureUpdaterMemorySize",
        int(p["FeatureUpdaterMemorySize"]),
        updater["FeatureUpdaterMemorySize"],
        "one vCPU",
    )
    usable = node_usable_gib(p["CacheNodeType"])
    assert usable is not None, f"unknown CacheNodeType {p['CacheNodeType']} (add it to recpipe_dev.sizing)"
    at_least("CacheNodeType usable GiB", usable, need["redis"]["memory_gib"], need["redis"]["why"])
    rec = need["recommend_lambda"]
    at_least("RecommendMemorySize", int(p["RecommendMemorySize"]), rec["RecommendMemorySize"], "two bundles")
    if int(p["ProvisionedConcurrency"]) > 0:
        at_least(
            "ProvisionedConcurrencyMax",
            int(p["ProvisionedConcurrencyMax"]),
            rec["ProvisionedConcurrency"],
            rec["why"],
        )
    at_least("ApiThrottleRateLimit", int(p["ApiThrottleRateLimit"]), load.rps, "the API must admit the load")
    at_least(
        "DynamoDB on-demand table quota",
        DYNAMODB_TABLE_MAX_WCU,
        need["dynamodb"]["write_units_per_s"],
        need["dynamodb"]["why"],
    )
    assert not short, f"{profile} falls short of its stated load {load}:\n" + "\n".join(short)


def test_the_check_fails_a_profile_that_falls_short(template: dict[str, Any]) -> None:
    """The old defaults (1 shard, cache.t4g.micro) at prod's load are caught."""
    need = size(stated_loads()["prod"])
    assert need["kinesis"]["EventStreamShards"] > 1
    usable = node_usable_gib("cache.t4g.micro")
    assert usable is not None and usable < need["redis"]["memory_gib"]


def test_the_command_prints_the_table_and_names_its_figures(capsys: pytest.CaptureFixture[str]) -> None:
    from recpipe_dev.cli import main

    code = main(
        ["sizing", "--users", "1000000", "--items", "100000", "--events-per-s", "5000", "--candidates", "200"]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert re.search(r"EventStreamShards\s+7\b", out)
    assert "recpipe bench retrain --sizes 10M" in out and "recpipe bench stream" in out


def test_redis_holds_every_retained_candidate_version_and_the_live_state() -> None:
    """A publish gives the version it replaces PUBLISHED_RETENTION_DAYS as TTL: at the daily
    retrain that is 7 superseded versions beside the current one and the one being published.
    Sessions and trending (with one exactly-once marker per event) come on top."""
    load = stated_loads()["prod"]
    redis_need = size(load)["redis"]
    assert redis_need["candidate_versions"] == 9
    assert redis_need["sessions_gib"] > 0 and redis_need["trending_gib"] > 0
    parts = redis_need["candidates_gib"] + redis_need["sessions_gib"] + redis_need["trending_gib"]
    assert abs(redis_need["memory_gib"] - parts) < 0.02
    shorter = size(Load(**{**load.__dict__, "retention_days": 1.0}))["redis"]
    assert shorter["candidate_versions"] == 3 and shorter["memory_gib"] < redis_need["memory_gib"]
    # No more sessions than users, nor trending items than the catalogue, however high the rate.
    flood = size(Load(**{**load.__dict__, "events_per_s": 1e7}))["redis"]
    full_session = SESSION_KEY_BYTES.value + SESSION_MAX_ITEMS * SESSION_ENTRY_BYTES.value
    assert flood["sessions_gib"] <= load.users * full_session / 2**30 + 0.01


def test_the_command_takes_the_retention_and_retrain_rate(capsys: pytest.CaptureFixture[str]) -> None:
    from recpipe_dev.cli import main

    base = ["sizing", "--users", "200000", "--items", "20000", "--events-per-s", "500", "--candidates", "200"]
    assert main([*base, "--retention-days", "1"]) == 0
    assert "x 3 versions: publishing, current, 1 kept 1 days" in capsys.readouterr().out
    assert main([*base, "--retrains-per-day", "2"]) == 0
    assert "x 16 versions" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main([*base, "--retention-days", "0"])
