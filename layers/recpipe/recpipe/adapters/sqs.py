"""FailureSink on SQS: the feature updater's failure queue (FeatureUpdaterFailureQueue).

The same queue receives the Lambda event source mapping's on-failure messages (KinesisBatchInfo)
and the updater's own poison-record reports (`kind: poison_record`); `recpipe replay` tells
them apart.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from recpipe.ports import DependencyError, RetryableError

#: SendMessageBatch takes at most 10 entries.
SEND_BATCH_MAX = 10


class SqsFailureSink:
    def __init__(self, client: Any, queue_url: str) -> None:
        self._sqs = client
        self._queue_url = queue_url

    def report(self, failures: Sequence[Mapping[str, Any]]) -> None:
        for start in range(0, len(failures), SEND_BATCH_MAX):
            chunk = failures[start : start + SEND_BATCH_MAX]
            entries = [
                {"Id": str(i), "MessageBody": json.dumps(dict(f), separators=(",", ":"), default=str)}
                for i, f in enumerate(chunk)
            ]
            try:
                resp = self._sqs.send_message_batch(QueueUrl=self._queue_url, Entries=entries)
            except ClientError as exc:
                raise DependencyError(f"sqs: {exc.response.get('Error', {}).get('Code', exc)}") from exc
            except BotoCoreError as exc:
                raise RetryableError(f"sqs: {exc}") from exc
            if resp.get("Failed"):
                codes = ", ".join(sorted({str(f.get("Code")) for f in resp["Failed"]}))
                raise RetryableError(f"sqs: {len(resp['Failed'])} failure reports not sent ({codes})")
