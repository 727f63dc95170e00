"""Traffic splits: deterministic, sticky assignment that follows the weights."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter

import pytest
from recpipe.domain.experiments import Assigner, ExperimentError, parse_experiment

SPLIT = {
    "name": "ranker-v2",
    "salt": "s1",
    "variants": [
        {"name": "control", "bundle": "v1", "weight": 95},
        {"name": "canary", "bundle": "v2", "weight": 5, "rules": {"diversity": 0.3}},
    ],
}


def test_assignment_follows_the_weights_within_one_percent_over_100k_users() -> None:
    for weights in ((95, 5), (50, 50), (70, 20, 10)):
        exp = parse_experiment(
            {
                "name": "w",
                "salt": "weights",
                "variants": [{"name": f"v{i}", "bundle": "b", "weight": w} for i, w in enumerate(weights)],
            }
        )
        assigner = Assigner(exp)
        counts = Counter(assigner.assign(f"user-{n}").name for n in range(100_000))
        for name, share in exp.split().items():
            # ±1 % of the weight in absolute share (95/5: 94-96 % and 4-6 %).
            assert abs(counts[name] / 100_000 - share) <= 0.01, (weights, dict(counts))


def test_assignment_is_the_same_in_another_process_and_changes_with_the_salt() -> None:
    users = [f"user-{n}" for n in range(2000)]
    here = [Assigner(parse_experiment(SPLIT)).assign(u).name for u in users]
    code = (
        "import json,sys\n"
        "from recpipe.domain.experiments import Assigner, parse_experiment\n"
        "spec, users = json.loads(sys.stdin.read())\n"
        "a = Assigner(parse_experiment(spec))\n"
        "print(json.dumps([a.assign(u).name for u in users]))\n"
    )
    # A different hash seed proves nothing depends on Python's per-process str hash.
    out = subprocess.run(
        [sys.executable, "-c", code],
        input=json.dumps([SPLIT, users]),
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONHASHSEED": "12345", "PYTHONPATH": ":".join(sys.path)},
    )
    assert json.loads(out.stdout) == here
    assert [Assigner(parse_experiment(SPLIT)).assign(u).name for u in users] == here, "sticky"
    reshuffled = Assigner(parse_experiment({**SPLIT, "salt": "s2"}))
    assert [reshuffled.assign(u).name for u in users] != here


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"variants": []}, "at least 1"),
        ({"salt": ""}, "salt"),
        ({"variants": [{"name": "a", "bundle": "v1", "weight": 0}]}, "weight"),
        ({"variants": [{"name": "a", "bundle": "../v1", "weight": 1}]}, "bundle"),
        (
            {
                "variants": [
                    {"name": "a", "bundle": "v1", "weight": 1},
                    {"name": "a", "bundle": "v2", "weight": 1},
                ]
            },
            "distinct",
        ),
        ({"variants": [{"name": "a", "bundle": "v1", "weight": 1, "rules": {"diversity": 2}}]}, "diversity"),
        ({"extra": 1}, "extra"),
    ],
)
def test_a_definition_that_cannot_be_served_is_refused_with_the_reason(change: dict, reason: str) -> None:
    with pytest.raises(ExperimentError, match=reason):
        parse_experiment({**SPLIT, **change})


def test_a_canary_is_a_95_5_split_and_names_its_bundles() -> None:
    exp = parse_experiment(json.dumps(SPLIT))
    assert exp.split() == {"control": 0.95, "canary": 0.05}
    assert exp.bundles == ["v1", "v2"]
    assert exp.variants[1].candidate_version == "v2"
    assert parse_experiment(exp.to_json()) == exp
