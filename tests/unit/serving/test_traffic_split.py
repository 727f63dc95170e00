"""Traffic splits in the online path: several bundles live at once, each user sticky to a
variant, the variant's candidate lists and rules, and the variant named in every response."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from recpipe.adapters.s3_models import DirectoryModelStore
from recpipe.config import RecommendSettings, load_settings
from recpipe.domain.experiments import Assigner, parse_experiment
from recpipe.serving.model_provider import LocalBundleSource
from recpipe.serving.request import parse_body
from recpipe.serving.runtime import Dependencies, build_online_path
from recpipe_dev.testing.fakes_candidates import InMemoryCandidateCache
from recpipe_dev.testing.fakes_stream import InMemorySessionStore, InMemoryUserFeatureStore
from recpipe_dev.testing.settings import function_env

SPLIT = {
    "name": "ab",
    "salt": "s",
    "variants": [
        {"name": "control", "bundle": "v1", "weight": 50},
        {"name": "treatment", "bundle": "v2", "weight": 50},
    ],
}


def online(root: Path, cache: InMemoryCandidateCache) -> Any:
    settings = load_settings(
        RecommendSettings, function_env(MAX_CANDIDATES="60", READ_TIMEOUT_MS="200", REQUEST_BUDGET_MS="400")
    )
    deps = Dependencies(candidates=cache, sessions=InMemorySessionStore(), users=InMemoryUserFeatureStore())
    return build_online_path(
        settings, dependencies=deps, source=LocalBundleSource(root), background_refresh=False
    )


def test_each_user_gets_the_bundle_and_candidate_lists_of_their_variant(
    make_bundle: Any, tmp_path: Path
) -> None:
    root = tmp_path / "bundles"
    make_bundle("v1", root=root)
    make_bundle("v2", root=root)
    store = DirectoryModelStore(root)
    store.set_current("v1")
    store.set_experiment(parse_experiment(SPLIT))
    users = [f"u{n}" for n in range(40)]
    cache = InMemoryCandidateCache()
    # Lists published with each bundle (same version name): v1 knows i3, v2 knows i4.
    cache.publish("v1", [(u, [("i3", 0.99)]) for u in users], {})
    cache.publish("v2", [(u, [("i4", 0.99)]) for u in users], {})
    path = online(root, cache)
    assert path.models.loaded_versions() == ["v1", "v2"]
    assigner = Assigner(parse_experiment(SPLIT))
    seen = set()
    for user in users:
        response = path.recommender.recommend(
            parse_body(json.dumps({"user_id": user, "k": 50}))
        ).to_response()
        expected = assigner.assign(user)
        seen.add(expected.name)
        assert (response["variant"], response["experiment"]) == (expected.name, "ab")
        assert response["model_version"] == expected.bundle
        cf = {i["item_id"] for i in response["items"] if "cf" in i["sources"]}
        assert cf == {"i3" if expected.bundle == "v1" else "i4"}, (user, response["model_version"], cf)
    assert seen == {"control", "treatment"}


def test_without_an_experiment_the_response_names_no_variant(make_bundle: Any, tmp_path: Path) -> None:
    root = tmp_path / "bundles"
    make_bundle("v1", root=root)
    DirectoryModelStore(root).set_current("v1")
    response = online(root, InMemoryCandidateCache()).recommender.recommend(parse_body('{"user_id": "u1"}'))
    assert (response.variant, response.experiment, response.model_version) == (None, None, "v1")


def test_a_split_whose_bundle_does_not_load_is_not_applied_and_can_end(
    make_bundle: Any, tmp_path: Path
) -> None:
    root = tmp_path / "bundles"
    make_bundle("v1", root=root)
    make_bundle("v2", root=root)
    store = DirectoryModelStore(root)
    store.set_current("v1")
    store.set_experiment(parse_experiment(SPLIT))
    (root / "v2" / "ranker.tflite").write_bytes(b"corrupt")  # fails its checksum at load
    path = online(root, InMemoryCandidateCache())
    assert path.models.experiment is None, "never half-applied"
    assert path.models.select("anyone").variant is None
    assert "v2" in path.models.failed_versions
    # A definition that does not parse leaves what is being served alone.
    make_bundle("v3", root=root)
    store.set_experiment(
        parse_experiment({**SPLIT, "variants": [{"name": "a", "bundle": "v3", "weight": 1}]})
    )
    path.models.refresh()
    assert path.models.select("anyone").variant == "a"
    (root / "EXPERIMENT").write_text("{not json")
    path.models.refresh()
    assert path.models.select("anyone").variant == "a" and "invalid experiment" in str(path.models.last_error)
    store.set_experiment(None)
    path.models.refresh()
    assert path.models.select("anyone").variant is None and path.models.loaded_versions() == ["v1"]


def test_a_variant_rule_applies_unless_the_request_sets_it(make_bundle: Any, tmp_path: Path) -> None:
    from recpipe.domain.experiments import VariantRules
    from recpipe.serving.experiments import with_variant_rules

    rules = VariantRules(diversity=0.4)
    assert with_variant_rules(parse_body('{"user_id": "u"}'), rules).diversity == 0.4
    assert with_variant_rules(parse_body('{"user_id": "u", "diversity": 0.0}'), rules).diversity == 0.0
