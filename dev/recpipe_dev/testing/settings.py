"""A complete function environment for tests: every variable some function's settings model
requires (recpipe/config.py), with test resource names. Tests override what they exercise."""

from __future__ import annotations

FUNCTION_ENV: dict[str, str] = {
    "ENV_NAME": "test",
    "AUTH_MODE": "API_KEY",
    "CORS_ALLOW_ORIGIN": "*",
    "REDIS_URL": "redis://127.0.0.1:6379/0",
    "USER_FEATURES_TABLE": "recpipe-test-user-features",
    "EVENT_STREAM_NAME": "recpipe-test-events",
    "FAILURE_QUEUE_URL": "https://sqs.us-east-1.amazonaws.com/123456789012/recpipe-test-failures",
    "MODEL_BUCKET": "recpipe-test-models",
    "MODEL_POINTER_PARAM": "/recpipe/test/model/current",
}


def function_env(**overrides: str) -> dict[str, str]:
    """FUNCTION_ENV with `overrides` (a value of "" removes the variable)."""
    env = {**FUNCTION_ENV, **overrides}
    return {k: v for k, v in env.items() if v != ""}
