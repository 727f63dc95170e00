from __future__ import annotations

import pytest
from recpipe.config import ConfigError, load_settings
from recpipe.redis_keys import (
    KeyLayout,
    decode_candidates,
    decode_session_entry,
    encode_candidates,
    encode_session_entry,
)


def test_settings_parse_and_fail_loudly_on_bad_values() -> None:
    s = load_settings({"ENV_NAME": "prod", "REQUEST_BUDGET_MS": "25"})
    assert s.env_name == "prod" and s.request_budget_ms == 25
    with pytest.raises(ConfigError, match="REQUEST_BUDGET_MS"):
        load_settings({"REQUEST_BUDGET_MS": "-1"})
    with pytest.raises(ConfigError, match="AUTH_MODE"):
        load_settings({"AUTH_MODE": "NONE"})
    assert load_settings({}).exclude_seen and not load_settings({"EXCLUDE_SEEN": "false"}).exclude_seen
    with pytest.raises(ConfigError, match="EXCLUDE_SEEN"):
        load_settings({"EXCLUDE_SEEN": "sometimes"})
    assert load_settings({}).user_state_cache_users == 20_000
    assert load_settings({"USER_STATE_CACHE_USERS": "0"}).user_state_cache_users == 0
    with pytest.raises(ConfigError, match="USER_STATE_CACHE_USERS"):
        load_settings({"USER_STATE_CACHE_USERS": "-5"})


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
