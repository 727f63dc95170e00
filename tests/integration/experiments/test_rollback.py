"""Rollback: model, candidate lists and content index back to the previous (or named) version,
with requests running all the while; no request ever pairs one version's bundle with another
version's lists or content index."""

from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path

import pytest
import redis
from recpipe.adapters.content_index import InProcessContentIndex, InProcessContentIndexWriter
from recpipe.adapters.redis_candidates import RedisCandidateCache
from recpipe.adapters.s3_models import DirectoryModelStore
from recpipe.bundle import load_bundle
from recpipe.config import RecommendSettings, load_settings
from recpipe.domain.experiments import parse_experiment
from recpipe.ports import ContentDoc
from recpipe.redis_keys import KeyLayout
from recpipe.serving.model_provider import LocalBundleSource
from recpipe.serving.request import parse_body
from recpipe.serving.runtime import Dependencies, build_online_path
from recpipe.training.release import RollbackError, published_versions, rollback
from recpipe_dev.cli import main
from recpipe_dev.testing.settings import function_env
from recpipe_dev.testing.trained import trained_bundle

USERS = [f"ru{n}" for n in range(30)]
#: Users without lists: their answers come from the content index (cold start).
NEW_USERS = [f"new{n}" for n in range(30)]
ENV = "rb"


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return trained_bundle(tmp_path_factory.mktemp("trained"), version="base").bundle_dir


class Published:
    """Two published versions (v1 then v2, v2 live) of bundle, candidate lists and content."""

    def __init__(self, root: Path, trained: Path, client: redis.Redis) -> None:
        self.models = DirectoryModelStore(root / "bundles")
        self.content = InProcessContentIndexWriter(root / "content")
        self.cache = RedisCandidateCache(client, KeyLayout(ENV), pointer_ttl_s=0)
        ids = load_bundle(trained).items.item_ids
        # Each version's lists hold its own items: a response shows which lists it was given.
        self.items = {"v1": set(ids[0::2][:200]), "v2": set(ids[1::2][:200])}
        for n, version in enumerate(("v1", "v2")):
            out = root / "staging" / version
            shutil.copytree(trained, out)
            manifest = json.loads((out / "manifest.json").read_text())
            manifest.update(version=version, created=f"2026-12-0{n + 1}T00:00:00Z")
            (out / "manifest.json").write_text(json.dumps(manifest))
            self.models.upload(out, version)
            mine = sorted(self.items[version])
            self.cache.publish(
                version, [(u, [(i, 1.0 - j / 100) for j, i in enumerate(mine[:40])]) for u in USERS], {}
            )
            self.content.publish(version, [ContentDoc(i, i, ("c",)) for i in mine[:20]])
            self.models.set_current(version)


@pytest.fixture()
def published(tmp_path: Path, trained: Path, redis_url: str) -> Published:
    return Published(tmp_path, trained, redis.Redis.from_url(redis_url))


def test_versions_lists_what_can_be_restored(published: Published, redis_url: str) -> None:
    versions = published_versions(published.models, published.cache, published.content)
    assert [(v.version, v.live, v.restorable) for v in versions] == [("v2", True, True), ("v1", False, True)]
    assert versions[1].candidates.startswith("expires in 16") and versions[0].candidates == "kept"
    # Lists gone (retention over): listed, but not restorable, and rollback refuses it.
    client = redis.Redis.from_url(redis_url)
    client.delete(*client.keys(KeyLayout(ENV).candidate_version_pattern("v1")))
    (v1,) = [
        v
        for v in published_versions(published.models, published.cache, published.content)
        if v.version == "v1"
    ]
    assert (v1.candidates, v1.restorable) == ("expired or missing", False)
    with pytest.raises(RollbackError, match="no restorable version older than 'v2'"):
        rollback(published.models, published.cache, published.content)
    assert published.models.current_version() == "v2" and published.cache.current_version() == "v2"


def test_rollback_under_concurrent_requests_never_mixes_two_versions(
    published: Published, redis_url: str
) -> None:
    settings = load_settings(
        RecommendSettings,
        function_env(ENV_NAME=ENV, MAX_CANDIDATES="100", READ_TIMEOUT_MS="500", REQUEST_BUDGET_MS="2000", MODEL_REFRESH_S="0"),
    )  # fmt: skip
    reader_cache = RedisCandidateCache(redis.Redis.from_url(redis_url), KeyLayout(ENV))
    # Re-reads its pointer on every search (refresh_s=0), loading in the background like serving.
    content = InProcessContentIndex(published.content.root, refresh_s=0, background=True)
    online = build_online_path(
        settings,
        dependencies=Dependencies(candidates=reader_cache, content=content),
        source=LocalBundleSource(published.models.root),
        background_refresh=False,  # every request re-reads the pointer: the widest window for a mix
    )
    published.models.set_experiment(parse_experiment(
        {"name": "ab", "salt": "s", "variants": [{"name": "a", "bundle": "v2", "weight": 1}]}
    ))  # fmt: skip
    seen: list[tuple[str | None, set[str]]] = []
    seen_content: list[tuple[str | None, set[str]]] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def ask(worker: int) -> None:
        n = 0
        while not stop.is_set():
            try:
                cold = n % 2 == 1
                user = (NEW_USERS if cold else USERS)[(worker * 7 + n) % len(USERS)]
                r = online.recommender.recommend(parse_body(json.dumps({"user_id": user, "k": 100})))
                if cold:
                    items = {i["item_id"] for i in r.items if "content" in i["sources"]}
                    seen_content.append((r.model_version, items))
                else:
                    seen.append((r.model_version, {i["item_id"] for i in r.items if "cf" in i["sources"]}))
            except BaseException as exc:
                errors.append(exc)
            n += 1

    def slow_switches(line: str) -> None:
        # Widen the moments between the switches (candidates, content, then model pointer):
        # a request that reads any artefact by its own pointer is then caught mixing versions.
        time.sleep(0.3)

    threads = [threading.Thread(target=ask, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    time.sleep(1.0)
    result = rollback(published.models, published.cache, published.content, log=slow_switches)
    time.sleep(1.0)
    stop.set()
    for t in threads:
        t.join()
    assert not errors
    assert result["to"] == "v1" and result["experiment_ended"] == "ab"
    versions = [v for v, _ in seen]
    assert "v2" in versions and "v1" in versions and versions[-1] == "v1"
    with_cf = [(v, cf) for v, cf in seen if cf]
    # k = the pool size: every CF candidate a request was given is in its answer.
    assert len(with_cf) > len(seen) * 0.9, "CF lists reached the answers"
    assert {v for v, _ in with_cf} == {"v1", "v2"}
    mixed = [
        (v, sorted(cf - published.items[str(v)])[:3])
        for v, cf in with_cf
        if not cf <= published.items[str(v)]
    ]
    assert not mixed, mixed[:5]
    # The same for the content index: cold-start answers come from the served version's index.
    with_content = [(v, c) for v, c in seen_content if c]
    assert len(with_content) > len(seen_content) * 0.9, "content candidates reached the answers"
    assert {v for v, _ in with_content} == {"v1", "v2"}
    mixed_content = [
        (v, sorted(c - published.items[str(v)])[:3])
        for v, c in with_content
        if not c <= published.items[str(v)]
    ]
    assert not mixed_content, mixed_content[:5]
    assert published.cache.current_version() == "v1" and published.content.current_version() == "v1"
    assert published.models.current_experiment() is None


def test_rollback_and_versions_commands(published: Published, redis_url: str, monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    for key, value in {
        "ENV_NAME": ENV,
        "REDIS_URL": redis_url,
        "RECPIPE_BUNDLE_DIR": str(published.models.root),
        "CONTENT_INDEX_DIR": str(published.content.root),
    }.items():
        monkeypatch.setenv(key, value)
    assert main(["versions"]) == 0
    assert "v1" in capsys.readouterr().out
    assert main(["rollback", "--to", "nope"]) == 1
    assert "not published" in capsys.readouterr().err
    assert main(["rollback"]) == 0
    assert "rolled back v2 -> v1" in capsys.readouterr().out
    assert main(["rollback", "--to", "v2"]) == 0, "and forward again: v2 was retained"
    assert published.models.current_version() == "v2" and published.cache.current_version() == "v2"
