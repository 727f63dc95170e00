"""The demo's feedback-loop step: a 50/50 experiment between two bundles, simulated clicks, the
per-variant report from the archive, and a rollback.

Runs after the scenario, against the same local stack and HTTP API: a second retrain publishes
a second version (the first stays restorable), `recpipe experiment start` semantics put both
live, visitors ask for recommendations and click some of them (POST /events with the
recommendation id), the impressions (written by the scoring function) and the events (written by
the local Firehose stand-in) are read back from the archive bucket and joined, and
`recpipe rollback` returns everything to the first version.

The clicks are simulated with the same rule for both variants (position-biased, 30 % of lists
get a click): the report's difference is noise, and its interval should say so.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

from recpipe_dev.demo.scenario import Scenario

VISITORS = 120
CLICK_RATE = 0.3


def wait_for(predicate: Any, timeout_s: float, step_s: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(step_s)


def run_experiment_step(scenario: Scenario, *, first: str, second: str, env: dict[str, str]) -> bool:
    """Returns whether the step's checks held (recorded in scenario.results too)."""
    import boto3
    from recpipe.adapters.feedback_archive import S3Objects
    from recpipe.domain.experiments import parse_experiment
    from recpipe.training.release import published_versions, rollback

    from recpipe_dev.commands.experiment import build_report, model_store, print_report
    from recpipe_dev.commands.rollback import release_deps
    from recpipe_dev.demo.scenario import event

    out, check, client = scenario.out, scenario._check, scenario.client
    first_check = len(scenario.results)
    rng = random.Random(scenario.seed + 17)
    store = model_store()
    exp = parse_experiment(
        {
            "name": "demo-ab",
            "salt": f"demo-{int(time.time())}",
            "variants": [
                {"name": "control", "bundle": first, "weight": 50},
                {"name": "treatment", "bundle": second, "weight": 50},
            ],
            "started_at": time.time(),
        }
    )
    store.set_experiment(exp)
    out(f"   experiment demo-ab: control={first} 50%, treatment={second} 50% (beside the model pointer)")
    users = scenario.data.log.user_vocab
    probe = users[0]

    def live() -> bool:
        status, body = client.recommend(probe, scenario.k)
        return status == 200 and isinstance(body, dict) and body.get("experiment") == "demo-ab"

    check(
        "experiment_live", bool(wait_for(live, 30)), "serving picked the split up at its next pointer check"
    )
    started = datetime.now(UTC)
    seen: Counter[str] = Counter()
    clicks: Counter[str] = Counter()
    models: dict[str, set[str]] = {}
    for n in range(VISITORS):
        user = users[rng.randrange(len(users))]
        status, body = client.recommend(user, scenario.k)
        if status != 200 or not isinstance(body, dict) or not body.get("items"):
            continue
        variant = str(body.get("variant"))
        seen[variant] += 1
        models.setdefault(variant, set()).add(str(body.get("model_version")))
        if rng.random() < CLICK_RATE:
            pos = min(int(rng.expovariate(0.5)), len(body["items"]) - 1)  # earlier positions likelier
            item = body["items"][pos]["item_id"]
            click = event(user, item, "click", offset=n * 0.001)
            click["context"]["recommendation_id"] = body["recommendation_id"]
            status, _ = client.post_events([click])
            clicks[variant] += int(status == 202)
    out(
        "   "
        + ", ".join(
            f"{v}: {seen[v]} lists from {sorted(models[v])}, {clicks[v]} clicked" for v in sorted(seen)
        )
    )
    check(
        "experiment_split",
        set(seen) == {"control", "treatment"} and models == {"control": {first}, "treatment": {second}},
        "each variant served by its own bundle, sticky per user",
    )
    s3 = boto3.session.Session(region_name=env["AWS_REGION"]).client(
        "s3", endpoint_url=env["AWS_ENDPOINT_URL"]
    )
    source = S3Objects(s3, env["ARCHIVE_BUCKET"])

    def report() -> dict[str, Any] | None:
        body = build_report(
            source,
            start=started - timedelta(minutes=1),
            end=datetime.now(UTC),
            experiment="demo-ab",
            window_s=3600.0,
            touch="last",
        )
        last["body"] = body
        got = {v: body["variants"].get(v, {}).get("ctr", {}).get("successes", -1) for v in seen}
        shown = {v: body["variants"].get(v, {}).get("exposures", {}).get("impressions", 0) for v in seen}
        # The probes that waited for the split are impressions too: at least what was counted here.
        return body if got == dict(clicks) and all(shown[v] >= seen[v] for v in seen) else None

    last: dict[str, Any] = {}

    out("   waiting for impressions (scoring function) and clicks (Firehose stand-in) in the archive ...")
    body = wait_for(report, 40, step_s=1.0)
    if body is None:
        if last.get("body"):
            print_report(last["body"])
        check("experiment_report", False, "the archive did not hold every impression and click within 40 s")
    else:
        print_report(body)
        check(
            "experiment_report",
            True,
            "per-variant exposures and clicks in the report equal what was served and clicked",
        )
    out("\n   rolling back to the first version (model, candidate lists, content index)")
    models_store, candidates, content = release_deps()
    result = rollback(models_store, candidates, content, to=first, log=lambda line: out(f"     {line}"))
    for v in published_versions(models_store, candidates, content):
        out(
            f"     {v.version:<32} live={'*' if v.live else ' '} candidates {v.candidates:<18} restorable {v.restorable}"
        )

    def back() -> bool:
        status, body = client.recommend(probe, scenario.k)
        return status == 200 and body.get("model_version") == first and body.get("variant") is None

    ok = bool(wait_for(back, 30))
    check(
        "rollback",
        ok and result["experiment_ended"] == "demo-ab",
        f"{result['from']} -> {result['to']} in {result['took_ms']} ms; serving answers with {first}, no experiment",
    )
    mine = scenario.results[first_check:]
    held = sum(r.ok for r in mine)
    out(f"\n{held}/{len(mine)} experiment checks held")
    return held == len(mine)
