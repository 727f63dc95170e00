"""The one place that builds AWS, Redis and OpenSearch clients from settings.

Each path asks for the timeouts and retries it can afford: the online path one SDK attempt
under a short deadline (the answer degrades instead), the updater a few (Lambda redelivers),
the batch steps long timeouts (bundles of tens of MB).
"""

from __future__ import annotations

import json
from typing import Any

import boto3
import redis
from botocore.config import Config

from recpipe.config import BaseSettings, RedisSettings


def aws_client(
    service: str,
    settings: BaseSettings,
    *,
    connect_timeout_s: float = 1.0,
    read_timeout_s: float = 2.0,
    attempts: int = 2,
    max_pool: int = 10,
    validate: bool = True,
) -> Any:
    """A boto3 client (the moto endpoint when AWS_ENDPOINT_URL is set). `validate=False` skips
    client-side parameter validation where an adapter builds every request itself."""
    config = Config(
        connect_timeout=connect_timeout_s,
        read_timeout=read_timeout_s,
        retries={"max_attempts": attempts, "mode": "standard"},
        max_pool_connections=max_pool,
        parameter_validation=validate,
    )
    client: Any = boto3.client(service, endpoint_url=settings.aws_endpoint_url, config=config)  # type: ignore[call-overload]
    return client


def batch_aws_client(service: str, settings: BaseSettings) -> Any:
    """For the retrain steps: generous timeouts and standard retries."""
    return aws_client(service, settings, connect_timeout_s=5.0, read_timeout_s=60.0, attempts=5)


def redis_password(settings: RedisSettings) -> str | None:
    """The AUTH token from REDIS_AUTH_SECRET_ARN (plain or {"password": ...}), or None."""
    if not settings.redis_auth_secret_arn:
        return None
    raw = str(
        aws_client("secretsmanager", settings).get_secret_value(SecretId=settings.redis_auth_secret_arn)[
            "SecretString"
        ]
    )
    return str(json.loads(raw).get("password", raw)) if raw.lstrip().startswith("{") else raw


def redis_client(
    settings: RedisSettings, *, timeout_s: float, connect_timeout_s: float | None = None
) -> redis.Redis:
    return redis.Redis.from_url(
        settings.redis_url,
        password=redis_password(settings),
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s if connect_timeout_s is None else connect_timeout_s,
        health_check_interval=30,
    )


def opensearch_client(url: str, settings: BaseSettings, *, timeout_s: float, max_retries: int = 3) -> Any:
    """An OpenSearch client; requests to an https domain in AWS are SigV4-signed."""
    from opensearchpy import OpenSearch

    auth: Any = None
    if settings.aws_endpoint_url is None and url.startswith("https://"):
        from opensearchpy import Urllib3AWSV4SignerAuth

        session = boto3.Session()
        auth = Urllib3AWSV4SignerAuth(session.get_credentials(), session.region_name or "us-east-1", "es")
    return OpenSearch(hosts=[url], http_auth=auth, timeout=timeout_s, max_retries=max_retries)
