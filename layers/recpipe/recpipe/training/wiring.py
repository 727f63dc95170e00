"""Builds the retrain workflow's dependencies from settings (handlers, SageMaker entry, CLI).

Model bundles: S3 + SSM pointer, or a local directory of versions when RECPIPE_BUNDLE_DIR is
set. Run artefacts: the model bucket's `runs/` prefix, or `work_dir`. Candidates: Redis.
Content: OpenSearch when OPENSEARCH_URL is set, else the in-process index in CONTENT_INDEX_DIR.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from recpipe.adapters.redis_candidates import RedisCandidateCache
from recpipe.adapters.s3_models import DirectoryModelStore, S3ModelStore
from recpipe.clients import batch_aws_client as aws_client
from recpipe.clients import opensearch_client, redis_client
from recpipe.config import ConfigError, ContentSettings, RetrainSettings, TrainingJobSettings
from recpipe.ports import ContentIndexWriter
from recpipe.redis_keys import KeyLayout
from recpipe.training.runs import DirectoryRunStore, RunStore, S3RunStore
from recpipe.training.sources import default_loaders
from recpipe.training.workflow import DataLoader, ModelRegistry, RetrainDeps


def content_writer(settings: ContentSettings) -> ContentIndexWriter | None:
    if settings.opensearch_url and settings.content_index_alias:
        from recpipe.adapters.content_index import OpenSearchContentIndexWriter

        client = opensearch_client(settings.opensearch_url, settings, timeout_s=60)
        return OpenSearchContentIndexWriter(client, settings.content_index_alias)
    if settings.content_index_dir:
        from recpipe.adapters.content_index import InProcessContentIndexWriter

        return InProcessContentIndexWriter(Path(settings.content_index_dir))
    return None


def content_access(settings: ContentSettings, environ: Mapping[str, str] | None = None) -> Any:
    """Callable that maps the scoring and indexing roles in OpenSearch FGAC, or None without
    OpenSearch. AWS calls (secret, caller identity) happen when called, not when wiring."""
    env = os.environ if environ is None else environ
    secret_arn = env.get("OPENSEARCH_AUTH_SECRET_ARN")
    if not settings.opensearch_url or not settings.content_index_alias or not secret_arn:
        return None
    url, alias = settings.opensearch_url, settings.content_index_alias

    def ensure() -> dict[str, str]:
        from opensearchpy import OpenSearch

        from recpipe.adapters.opensearch_security import (
            ContentIndexAccess,
            content_roles,
            master_credentials,
            role_arn_of_caller,
        )

        reader = env.get("CONTENT_INDEX_READER_ROLE_ARN")
        if not reader:
            raise ConfigError("CONTENT_INDEX_READER_ROLE_ARN is required with OPENSEARCH_AUTH_SECRET_ARN")
        writer = env.get("CONTENT_INDEX_WRITER_ROLE_ARN") or role_arn_of_caller(
            aws_client("sts", settings).get_caller_identity()["Arn"]
        )
        secret = aws_client("secretsmanager", settings).get_secret_value(SecretId=secret_arn)["SecretString"]
        client = OpenSearch(hosts=[url], http_auth=master_credentials(secret), timeout=30)
        roles = content_roles(settings.env_name, alias, reader_arn=reader, writer_arn=writer)
        return ContentIndexAccess(client, roles).ensure()

    return ensure


def sns_notifier(settings: TrainingJobSettings) -> Any:
    sns = aws_client("sns", settings)

    def notify(topic_arn: str, subject: str, message: str) -> str:
        return str(sns.publish(TopicArn=topic_arn, Subject=subject, Message=message)["MessageId"])

    return notify


def build_deps(
    settings: TrainingJobSettings,
    *,
    work_dir: Path | None = None,
    s3: Any = None,
    extra_loaders: Mapping[str, DataLoader] | None = None,
) -> RetrainDeps:
    local_only = settings.bundle_dir is not None and work_dir is not None
    if s3 is None and not local_only:
        s3 = aws_client("s3", settings)
    models: ModelRegistry
    if settings.bundle_dir:
        models = DirectoryModelStore(Path(settings.bundle_dir))
    else:
        models = S3ModelStore(
            s3,
            aws_client("ssm", settings),
            *settings.s3_pointer(),
            experiment_param=settings.experiment_param,
        )
    runs: RunStore = (
        DirectoryRunStore(work_dir) if work_dir is not None else S3RunStore(s3, str(settings.model_bucket))
    )
    # The SageMaker job (TrainingJobSettings) never publishes candidates: no Redis there.
    candidates = (
        RedisCandidateCache(
            redis_client(settings, timeout_s=30, connect_timeout_s=5),
            KeyLayout(settings.env_name),
            retention_s=int(settings.published_retention_days * 86400),
        )
        if isinstance(settings, RetrainSettings)
        else None
    )
    return RetrainDeps(
        runs=runs,
        models=models,
        candidates=candidates,
        content=content_writer(settings),
        loaders={
            **(
                default_loaders(s3, settings.model_bucket)
                if s3 is not None and settings.model_bucket
                else default_loaders()
            ),
            **(extra_loaders or {}),
        },
        notify=sns_notifier(settings),
        content_access=content_access(settings),
    )
