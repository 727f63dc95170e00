"""Typed configuration from the environment, parsed once at cold start.

A misconfigured function fails at init with the name of the bad variable, not on the
thousandth request. Names match the template's `Environment.Variables`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from functools import lru_cache

from pydantic import BaseModel, ConfigDict, Field, ValidationError


class ConfigError(Exception):
    pass


class Settings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    env_name: str = Field("dev", alias="ENV_NAME", pattern=r"^[a-z0-9-]{1,32}$")
    # Redis (Candidate Cache, sessions, trending). rediss:// in AWS; AUTH from the secret.
    redis_url: str = Field("redis://127.0.0.1:6379/0", alias="REDIS_URL")
    redis_auth_secret_arn: str | None = Field(None, alias="REDIS_AUTH_SECRET_ARN")
    # AWS resources
    user_features_table: str = Field("recpipe-user-features", alias="USER_FEATURES_TABLE")
    event_stream_name: str = Field("recpipe-events", alias="EVENT_STREAM_NAME")
    model_bucket: str = Field("recpipe-models", alias="MODEL_BUCKET")
    model_pointer_param: str = Field("/recpipe/dev/model/current", alias="MODEL_POINTER_PARAM")
    failure_queue_url: str | None = Field(None, alias="FAILURE_QUEUE_URL")
    # Content index: OpenSearch when a URL is set, the in-process index otherwise.
    opensearch_url: str | None = Field(None, alias="OPENSEARCH_URL")
    content_index_alias: str = Field("recpipe-content", alias="CONTENT_INDEX_ALIAS")
    # moto server / LocalStack endpoint for the local stack; unset in AWS.
    aws_endpoint_url: str | None = Field(None, alias="AWS_ENDPOINT_URL")
    # Local bundle directory (skips S3; used by the local stack and benchmarks).
    bundle_dir: str | None = Field(None, alias="RECPIPE_BUNDLE_DIR")
    # Online path budget
    request_budget_ms: float = Field(35.0, alias="REQUEST_BUDGET_MS", gt=0, le=10_000)
    read_timeout_ms: float = Field(15.0, alias="READ_TIMEOUT_MS", gt=0, le=10_000)
    model_refresh_s: float = Field(60.0, alias="MODEL_REFRESH_S", ge=0)
    # Candidate pool size ranked per request (CF + session + trending, topped up with popularity).
    max_candidates: int = Field(500, alias="MAX_CANDIDATES", ge=10, le=5000)
    # Leave out items the user already interacted with (training's replay never offers them,
    # so the ranker never learnt to score them); false for "buy it again" style rails.
    exclude_seen: bool = Field(True, alias="EXCLUDE_SEEN")
    # In-process content index directory (local stack; used when OPENSEARCH_URL is unset).
    content_index_dir: str | None = Field(None, alias="CONTENT_INDEX_DIR")
    # JWT mode: the user is the token's subject.
    auth_mode: str = Field("API_KEY", alias="AUTH_MODE", pattern=r"^(API_KEY|JWT|IAM)$")
    # Feature updater: "transact" commits up to 100 users per TransactWriteItems request (one
    # round trip, 2x write units per item); "item" makes one conditional PutItem per user.
    user_features_write_mode: str = Field(
        "transact", alias="USER_FEATURES_WRITE_MODE", pattern=r"^(transact|item)$"
    )
    # Feature updater: user states kept in memory after a read or write (recpipe.stream.
    # state_cache), so a user's next batch skips the read; writes stay conditional. 0 = off.
    # ~3-47 KB per user (~22 KB after 400 events; every history full ~47 KB): 20,000 fit the
    # updater's 1769 MB (FeatureUpdaterMemorySize) even when all are full.
    user_state_cache_users: int = Field(20_000, alias="USER_STATE_CACHE_USERS", ge=0, le=1_000_000)


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    env = dict(os.environ if environ is None else environ)
    try:
        return Settings.model_validate(env)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors(include_url=False)
        )
        raise ConfigError(f"invalid configuration: {problems}") from None


@lru_cache(maxsize=1)
def settings() -> Settings:
    return load_settings()
