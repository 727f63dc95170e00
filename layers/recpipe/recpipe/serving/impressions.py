"""ImpressionLog: every served list logged without touching the request's latency.

`record` runs on the request path: it builds a small dict and appends it to a deque (no I/O,
no JSON). A background thread wakes every `flush_interval_s` (or as soon as `batch_size`
records wait), encodes and hands batches to an ImpressionWriter (Firehose in AWS, the archive
bucket locally). A full buffer drops the oldest records and counts them (never blocks a
request); records the writer could not deliver are counted too. Both counts are reported by
`stats()` and logged by the handler's metrics.

In Lambda the thread runs while the container is thawed, i.e. during invocations: impressions
buffered when traffic stops are written at the next invocation, and at most `flush_interval_s`
of them are lost if the container is shut down first (docs/experiments.md).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from recpipe.domain.impressions import impression_of
from recpipe.ports import ImpressionWriter

logger = logging.getLogger(__name__)

BATCH_SIZE = 500
#: Seldom enough that a flush (encoding + one PutRecordBatch, a few ms of CPU holding the GIL)
#: overlaps well under 1 % of requests, so it stays out of the p99.
FLUSH_INTERVAL_S = 5.0
MAX_BUFFER = 50_000


class ImpressionLog:
    def __init__(
        self,
        writer: ImpressionWriter,
        *,
        batch_size: int = BATCH_SIZE,
        flush_interval_s: float = FLUSH_INTERVAL_S,
        max_buffer: int = MAX_BUFFER,
        clock: Callable[[], float] = time.time,
        start: bool = True,
    ) -> None:
        self.writer = writer
        self.batch_size = batch_size
        self.flush_interval_s = flush_interval_s
        self.clock = clock
        self._buffer: deque[dict[str, Any]] = deque(maxlen=max_buffer)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._write_lock = threading.Lock()
        #: Held only to append or take a batch (never during I/O): keeps the drop count exact.
        self._buffer_lock = threading.Lock()
        self.recorded = 0
        self.written = 0
        self.failed = 0
        self.dropped = 0
        #: CPU the writes cost (encoding, the writer's requests): the product's own cost.
        self.flush_cpu_s = 0.0
        self.last_error: str | None = None
        self._thread: threading.Thread | None = None
        if start:
            self._thread = threading.Thread(target=self._run, name="impression-log", daemon=True)
            self._thread.start()

    # ---- request path ----------------------------------------------------------------------
    def record(
        self,
        *,
        recommendation_id: str,
        user_id: str,
        model_version: str | None,
        experiment: str | None,
        variant: str | None,
        items: list[dict[str, Any]],
    ) -> None:
        impression = impression_of(
            recommendation_id=recommendation_id,
            user_id=user_id,
            ts=self.clock(),
            model_version=model_version,
            experiment=experiment,
            variant=variant,
            items=items,
        )
        body = impression.to_record()
        with self._buffer_lock:
            if len(self._buffer) == self._buffer.maxlen:
                self.dropped += 1  # the writer is behind or failing: the oldest record goes
            self._buffer.append(body)
            self.recorded += 1
        if len(self._buffer) >= self.batch_size:
            self._wake.set()

    def stats(self) -> dict[str, float]:
        return {
            "recorded": self.recorded,
            "written": self.written,
            "failed": self.failed,
            "dropped": self.dropped,
            "buffered": len(self._buffer),
            "flush_cpu_ms": round(self.flush_cpu_s * 1000.0, 1),
        }

    # ---- background ------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.flush_interval_s)
            self._wake.clear()
            self.flush()

    def flush(self) -> int:
        """Write everything buffered now (the background thread; tests and shutdown). Returns
        records delivered."""
        delivered = 0
        cpu0 = time.thread_time()
        with self._write_lock:
            while self._buffer:
                batch: list[dict[str, Any]] = []
                with self._buffer_lock:
                    while self._buffer and len(batch) < self.batch_size:
                        batch.append(self._buffer.popleft())
                try:
                    failures = self.writer.write(batch)
                except Exception as exc:  # an adapter bug must not kill the thread
                    failures = [(r, f"{type(exc).__name__}: {exc}") for r in batch]
                if failures:
                    self.failed += len(failures)
                    self.last_error = failures[0][1]
                    logger.warning("impressions not delivered: %d (%s)", len(failures), self.last_error)
                self.written += len(batch) - len(failures)
                delivered += len(batch) - len(failures)
        self.flush_cpu_s += time.thread_time() - cpu0
        return delivered

    def close(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
        self.flush()
