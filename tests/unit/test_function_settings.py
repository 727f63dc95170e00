"""Every function refuses to initialise without a variable its settings model requires, and
says which one: a function started without its table, stream or bucket never serves."""

from __future__ import annotations

import pytest
from recpipe.config import ConfigError
from recpipe_dev.local.functions import load_function
from recpipe_dev.testing.settings import FUNCTION_ENV

#: function -> the variables it must refuse to start without (its resource names and API rules).
REQUIRED = {
    "recommend": [
        "ENV_NAME", "REDIS_URL", "USER_FEATURES_TABLE", "MODEL_BUCKET", "MODEL_POINTER_PARAM",
        "AUTH_MODE", "CORS_ALLOW_ORIGIN",
    ],
    "ingest_events": ["ENV_NAME", "REDIS_URL", "EVENT_STREAM_NAME", "AUTH_MODE", "CORS_ALLOW_ORIGIN"],
    "update_features": [
        "ENV_NAME", "REDIS_URL", "USER_FEATURES_TABLE", "FAILURE_QUEUE_URL", "MODEL_BUCKET",
        "MODEL_POINTER_PARAM",
    ],
    "retrain": ["ENV_NAME", "REDIS_URL", "MODEL_BUCKET", "MODEL_POINTER_PARAM"],
}  # fmt: skip


@pytest.mark.parametrize(("function", "variable"), [(f, v) for f, names in REQUIRED.items() for v in names])
def test_a_function_without_a_required_variable_refuses_to_start_and_names_it(
    function: str, variable: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in FUNCTION_ENV:
        monkeypatch.delenv(name, raising=False)
    for name, value in FUNCTION_ENV.items():
        if name != variable:
            monkeypatch.setenv(name, value)
    monkeypatch.delenv("RECPIPE_BUNDLE_DIR", raising=False)
    with pytest.raises(ConfigError) as refused:
        load_function(function)
    assert variable in str(refused.value)
    assert "required" in str(refused.value).lower()
