"""Logger, Metrics and Tracer for a handler, and the one decorator stack every handler wears."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.logging import correlation_paths

Handler = TypeVar("Handler", bound=Callable[..., Any])

#: Where the correlation id comes from, per kind of trigger.
API_GATEWAY = correlation_paths.API_GATEWAY_REST


class Observability:
    """One Logger, Metrics and Tracer per function (service name from POWERTOOLS_SERVICE_NAME)."""

    def __init__(self) -> None:
        self.logger = Logger()
        self.metrics = Metrics()
        self.tracer = Tracer()

    def handler(
        self, *, correlation_id_path: str | None = None, metrics: bool = True
    ) -> Callable[[Handler], Handler]:
        """Logger with the Lambda context and a correlation id (fresh keys per invocation),
        Tracer without the response (lists and user ids stay out of X-Ray), and metrics
        flushed with the cold-start metric."""

        def wrap(func: Handler) -> Handler:
            wrapped: Any = self.tracer.capture_lambda_handler(func, capture_response=False)
            if metrics:
                wrapped = self.metrics.log_metrics(wrapped, capture_cold_start_metric=True)
            wrapped = self.logger.inject_lambda_context(
                wrapped, correlation_id_path=correlation_id_path, clear_state=True
            )
            return wrapped

        return wrap
