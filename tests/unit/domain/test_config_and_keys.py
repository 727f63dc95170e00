from __future__ import annotations

import pytest
from recpipe.config import ConfigError, RecommendSettings, UpdaterSettings, load_settings
from recpipe.redis_keys import (
    KeyLayout,
    decode_candidates,
    decode_session_entry,
    encode_candidates,
    encode_session_entry,
)
from recpipe_dev.testing.settings import function_env


def test_settings_parse_and_fail_loudly_on_bad_values() -> None:
    def rec(**env: str) -> RecommendSettings:
        return load_settings(RecommendSettings, function_env(**env))

    def upd(**env: str) -> UpdaterSettings:
        return load_settings(UpdaterSettings, function_env(**env))

    s = rec(ENV_NAME="prod", REQUEST_BUDGET_MS="25")
    assert s.env_name == "prod" and s.request_budget_ms == 25
    with pytest.raises(ConfigError, match="REQUEST_BUDGET_MS"):
        rec(REQUEST_BUDGET_MS="-1")
    with pytest.raises(ConfigError, match="AUTH_MODE"):
        rec(AUTH_MODE="NONE")
    assert rec().exclude_seen and not rec(EXCLUDE_SEEN="false").exclude_seen
    with pytest.raises(ConfigError, match="EXCLUDE_SEEN"):
        rec(EXCLUDE_SEEN="sometimes")
    assert upd().user_state_cache_users == 20_000
    assert upd(USER_STATE_CACHE_USERS="0").user_state_cache_users == 0
    with pytest.raises(ConfigError, match="USER_STATE_CACHE_USERS"):
        upd(USER_STATE_CACHE_USERS="-5")
    with pytest.raises(ConfigError, match="REDIS_URL"):
        rec(REDIS_URL="localhost:6379")  # not a redis:// or rediss:// URL


def test_a_model_location_is_required_unless_a_bundle_directory_is_given() -> None:
    with pytest.raises(ConfigError, match="MODEL_POINTER_PARAM required"):
        load_settings(RecommendSettings, function_env(MODEL_POINTER_PARAM=""))
    local = load_settings(RecommendSettings, function_env(MODEL_BUCKET="", RECPIPE_BUNDLE_DIR="/tmp/b"))
    assert local.bundle_dir == "/tmp/b" and local.model_bucket is None
    with pytest.raises(ConfigError, match="CONTENT_INDEX_ALIAS required with OPENSEARCH_URL"):
        load_settings(RecommendSettings, function_env(OPENSEARCH_URL="https://search.invalid"))


def test_keys_are_prefixed_by_environment_and_version() -> None:
    keys = KeyLayout("prod")
    assert keys.candidates("20240101", "u1") == "rp:prod:cand:20240101:u:u1"
    assert keys.candidate_pointer().startswith("rp:prod:")
    assert KeyLayout("dev").session("u1") != keys.session("u1")


def test_value_encodings_round_trip() -> None:
    pairs = [("i1", 0.5), ("i|2", 0.25)]
    assert decode_candidates(encode_candidates(pairs)) == pairs
    assert decode_candidates(None) == []
    assert decode_session_entry(encode_session_entry("i|2", "click", 12.5)) == ("i|2", "click", 12.5)
