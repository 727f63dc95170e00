"""The throw-away redis-server can be deployed-like: TLS with a verified certificate and AUTH,
and the product's client (recpipe.clients.redis_client) reaches it with the token from Secrets
Manager, as the functions reach ElastiCache."""

from __future__ import annotations

import json
from pathlib import Path

import boto3
import pytest
import redis
from recpipe.clients import redis_client
from recpipe.config import RedisSettings, load_settings
from recpipe_dev.local.redis_server import RedisServer


def test_tls_and_auth_through_the_products_client(aws: None, tmp_path: Path) -> None:
    secret = boto3.client("secretsmanager").create_secret(
        Name="redis-auth", SecretString=json.dumps({"password": "a-long-token"})
    )["ARN"]
    with RedisServer(tmp_path, tls=True, password="a-long-token") as server:
        url = server.url_without_password
        assert url.startswith("rediss://") and "a-long-token" not in url
        settings = load_settings(
            RedisSettings, {"ENV_NAME": "test", "REDIS_URL": url, "REDIS_AUTH_SECRET_ARN": secret}
        )
        client = redis_client(settings, timeout_s=2.0)
        assert client.set("k", "v") and client.get("k") == b"v"

        # no token: refused
        with pytest.raises(redis.AuthenticationError):
            redis.Redis.from_url(url).ping()
        # TLS is verified: a client that does not trust the throw-away CA refuses the server
        with pytest.raises(
            redis.ConnectionError, match="CERTIFICATE_VERIFY_FAILED|certificate verify failed"
        ):
            redis.Redis(host=server.host, port=server.port, password="a-long-token", ssl=True).ping()
        # plain TCP is not served
        with pytest.raises(redis.ConnectionError):
            redis.Redis(host=server.host, port=server.port, password="a-long-token", socket_timeout=1).ping()
