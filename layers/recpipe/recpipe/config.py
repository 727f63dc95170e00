"""Typed configuration from the environment: one settings model per function, parsed once at init.

Each function reads only the variables it needs (`template.yaml` gives each function only its
own). Resource names (tables, streams, buckets, parameters, the Redis endpoint) have no
defaults: a function started without one refuses to initialise with a message naming the
variable, instead of silently talking to a resource that does not exist. Tunables (deadlines,
sizes) have defaults that match the template's.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from recpipe.compat import Self


class ConfigError(Exception):
    pass


class BaseSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    #: Prefixes Redis keys and names resources: a wrong default would read another environment.
    env_name: str = Field(alias="ENV_NAME", pattern=r"^[a-z0-9-]{1,32}$")
    #: moto server endpoint for the local stack; unset in AWS.
    aws_endpoint_url: str | None = Field(None, alias="AWS_ENDPOINT_URL")


class RedisSettings(BaseSettings):
    """Redis (candidate cache, sessions, trending): rediss:// in AWS, AUTH from the secret."""

    redis_url: str = Field(alias="REDIS_URL", pattern=r"^rediss?://")
    redis_auth_secret_arn: str | None = Field(None, alias="REDIS_AUTH_SECRET_ARN")


class ModelSettings(BaseSettings):
    """Where the current model bundle is: S3 + SSM pointer in AWS, or a local directory."""

    model_bucket: str | None = Field(None, alias="MODEL_BUCKET", min_length=1)
    model_pointer_param: str | None = Field(None, alias="MODEL_POINTER_PARAM", min_length=1)
    #: SSM parameter holding the live experiment (traffic split); unset = no experiments.
    experiment_param: str | None = Field(None, alias="EXPERIMENT_PARAM", min_length=1)
    #: Local bundle directory (skips S3): the local stack and benchmarks.
    bundle_dir: str | None = Field(None, alias="RECPIPE_BUNDLE_DIR", min_length=1)
    model_refresh_s: float = Field(60.0, alias="MODEL_REFRESH_S", ge=0)

    @model_validator(mode="after")
    def _bundle_location(self) -> Self:
        if self.bundle_dir is None:
            missing = [
                name
                for name, value in (
                    ("MODEL_BUCKET", self.model_bucket),
                    ("MODEL_POINTER_PARAM", self.model_pointer_param),
                )
                if not value
            ]
            if missing:
                raise ValueError(
                    f"{' and '.join(missing)} required (or RECPIPE_BUNDLE_DIR for a local bundle directory)"
                )
        return self

    def s3_pointer(self) -> tuple[str, str]:
        """(bucket, SSM pointer parameter) of the published bundles; only without bundle_dir."""
        if not (self.model_bucket and self.model_pointer_param):
            raise ConfigError("MODEL_BUCKET and MODEL_POINTER_PARAM required")
        return self.model_bucket, self.model_pointer_param


class ContentSettings(BaseSettings):
    """Content index: OpenSearch when a URL is set, the in-process index in a directory otherwise."""

    opensearch_url: str | None = Field(None, alias="OPENSEARCH_URL", min_length=1)
    content_index_alias: str | None = Field(None, alias="CONTENT_INDEX_ALIAS", min_length=1)
    content_index_dir: str | None = Field(None, alias="CONTENT_INDEX_DIR", min_length=1)

    @model_validator(mode="after")
    def _alias_with_url(self) -> Self:
        if self.opensearch_url and not self.content_index_alias:
            raise ValueError("CONTENT_INDEX_ALIAS required with OPENSEARCH_URL")
        return self


class ApiSettings(BaseSettings):
    """What every HTTP handler needs: who the caller is and which origins may call."""

    #: JWT mode: the user is the token's subject. No default: a JWT deployment that lost this
    #: variable must not fall back to "any key holder may read any user".
    auth_mode: str = Field(alias="AUTH_MODE", pattern=r"^(API_KEY|JWT|IAM)$")
    cors_allow_origin: str = Field(alias="CORS_ALLOW_ORIGIN", min_length=1)


class RecommendSettings(ApiSettings, RedisSettings, ModelSettings, ContentSettings):
    """RecommendFunction: GET/POST /recommendations and /health."""

    user_features_table: str = Field(alias="USER_FEATURES_TABLE", min_length=1)
    request_budget_ms: float = Field(35.0, alias="REQUEST_BUDGET_MS", gt=0, le=10_000)
    read_timeout_ms: float = Field(15.0, alias="READ_TIMEOUT_MS", gt=0, le=10_000)
    #: Candidate pool size ranked per request (CF + session + trending, topped up with popularity).
    max_candidates: int = Field(500, alias="MAX_CANDIDATES", ge=10, le=5000)
    #: Leave out items the user already interacted with (training never offers them, so the
    #: ranker never learnt to score them); false for "buy it again" style rails.
    exclude_seen: bool = Field(True, alias="EXCLUDE_SEEN")
    #: Where served lists are logged as impressions: a Firehose delivery stream (AWS), or the
    #: archive bucket directly (local stack). Neither set: impressions are not logged.
    impression_stream_name: str | None = Field(None, alias="IMPRESSION_STREAM_NAME", min_length=1)
    impression_bucket: str | None = Field(None, alias="IMPRESSION_ARCHIVE_BUCKET", min_length=1)
    #: Seconds between the background thread's writes when fewer than 500 impressions wait
    #: (also: at most this much, or 500 impressions, is lost when a container ends without the
    #: SIGTERM that flushes the buffer). In Lambda a write whose time came while the container
    #: was frozen runs during the next invocation; 60 s keeps that to one request in 60 x the
    #: container's requests per second (docs/experiments.md).
    impression_flush_s: float = Field(60.0, alias="IMPRESSION_FLUSH_S", gt=0, le=300)


class IngestSettings(ApiSettings, RedisSettings):
    """IngestEventsFunction: POST /events -> Kinesis + the session list."""

    event_stream_name: str = Field(alias="EVENT_STREAM_NAME", min_length=1)


class UpdaterSettings(RedisSettings, ModelSettings):
    """FeatureUpdaterFunction: Kinesis -> user features (DynamoDB), session and trending (Redis)."""

    user_features_table: str = Field(alias="USER_FEATURES_TABLE", min_length=1)
    #: Where reports of records that can never succeed go (the poison-record queue).
    failure_queue_url: str = Field(alias="FAILURE_QUEUE_URL", min_length=1)
    #: "transact" commits up to 100 users per TransactWriteItems request (one round trip, 2x
    #: write units per item); "item" makes one conditional PutItem per user.
    user_features_write_mode: str = Field(
        "transact", alias="USER_FEATURES_WRITE_MODE", pattern=r"^(transact|item)$"
    )
    #: User states kept in memory after a read or write (recpipe.stream.state_cache), so a
    #: user's next batch skips the read; writes stay conditional. 0 = off. Sized for the
    #: updater's memory (FeatureUpdaterMemorySize; docs/stream.md has the per-state sizes).
    user_state_cache_users: int = Field(20_000, alias="USER_STATE_CACHE_USERS", ge=0, le=1_000_000)


class TrainingJobSettings(ModelSettings, ContentSettings):
    """The SageMaker training entry: writes the bundle and run artefacts; never touches Redis."""


class RetrainSettings(TrainingJobSettings, RedisSettings):
    """The retrain workflow's Lambda steps and `recpipe retrain`: also publishes candidates to
    Redis and content to the index."""

    #: How long a superseded version's candidate lists stay in Redis, restorable by
    #: `recpipe rollback` (bundles and content-index versions are kept longer by their stores).
    #: Redis holds up to this many days of published versions: size the cache for it.
    published_retention_days: float = Field(7.0, alias="PUBLISHED_RETENTION_DAYS", gt=0, le=90)


S = TypeVar("S", bound=BaseSettings)


def load_settings(kind: type[S], environ: Mapping[str, str] | None = None) -> S:
    """`kind` from the environment, or ConfigError naming every bad or missing variable."""
    env = dict(os.environ if environ is None else environ)
    try:
        return kind.model_validate(env)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or kind.__name__}: {e['msg'].removeprefix('Value error, ')}"
            for e in exc.errors(include_url=False)
        )
        raise ConfigError(f"{kind.__name__}: invalid configuration: {problems}") from None
