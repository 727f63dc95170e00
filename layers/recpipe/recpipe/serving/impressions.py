"""ImpressionLog: every served list logged without touching the request's latency.

`record` runs on the request path: it encodes the served list as its archive line (one small
dict through the C JSON encoder, 0.01-0.04 ms; recpipe.domain.impressions.impression_line) and
appends the bytes to a deque (no I/O). A background thread wakes every `flush_interval_s` (or as
soon as `batch_size` lines wait) and hands the lines to an ImpressionWriter, which only packs and
sends them (Firehose in AWS: up to ~1,000 impressions per Firehose record and per
PutRecordBatch; the archive bucket locally). Encoding on the request path and packing keep a
flush of 500 impressions to a few ms of CPU (about 1 ms per call plus ~4 us per impression):
that work shares the interpreter's lock with the requests, and a flush is the only moment
impressions can slow one. A full buffer drops the oldest lines and counts them
(never blocks a request); lines the writer could not deliver are counted too. Both counts are
reported by `stats()` and logged by the handler's metrics.

In Lambda the thread runs while the container is thawed, i.e. during invocations: a flush whose
timer expired while the container was frozen starts as the next invocation arrives, and
impressions buffered when traffic stops are written at the next invocation. When the container
is shut down, `flush_on_shutdown` writes what is still buffered on SIGTERM (or at interpreter
exit), within a bounded time: Lambda sends SIGTERM to the runtime only when an external
extension is registered (template.yaml attaches a no-op one, layers/shutdown-extension/), and
allows the runtime about 300 ms before SIGKILL. What the limits leave open is in
docs/experiments.md.
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

from recpipe.domain.impressions import impression_line
from recpipe.ports import ImpressionWriter

logger = logging.getLogger(__name__)

#: Lines that wake the thread before its interval; a writer call takes up to twice as many
#: (Firehose: ~0.4-0.9 MB in one packed record, one PutRecordBatch). Larger calls would save
#: little CPU (a call's fixed cost is ~1 ms) and hold the interpreter's lock longer in one piece
#: (the SDK encodes the whole body in one C call).
BATCH_SIZE = 500
#: When fewer than BATCH_SIZE lines wait. In Lambda a flush that fell due while the container
#: was frozen runs during the next invocation and slows it by up to the flush's CPU (~1 ms for
#: a few lines): one flush per minute is one request in 60 x (requests/s of the container), under
#: 1 % from 2 requests/s; with 5 s it was one in five at 1 request/s. Also the most an
#: ungraceful container end can lose (with at most BATCH_SIZE lines). RecommendSettings
#: (IMPRESSION_FLUSH_S) sets the deployed value.
FLUSH_INTERVAL_S = 60.0
MAX_BUFFER = 50_000
#: How long a shutdown waits for the last flush: inside the ~300 ms Lambda leaves the runtime
#: between SIGTERM and SIGKILL when external extensions are registered.
SHUTDOWN_FLUSH_S = 0.25


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
        self._buffer: deque[bytes] = deque(maxlen=max_buffer)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._write_lock = threading.Lock()
        #: Held only to append or take a batch (never during I/O): keeps the drop count exact.
        self._buffer_lock = threading.Lock()
        self.recorded = 0
        self.written = 0
        self.failed = 0
        self.dropped = 0
        #: Flushes that wrote at least one line.
        self.flushes = 0
        #: CPU the writes cost (packing, the writer's requests): the product's own cost.
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
        line = impression_line(
            recommendation_id=recommendation_id,
            user_id=user_id,
            ts=self.clock(),
            model_version=model_version,
            experiment=experiment,
            variant=variant,
            items=items,
        )
        with self._buffer_lock:
            if len(self._buffer) == self._buffer.maxlen:
                self.dropped += 1  # the writer is behind or failing: the oldest line goes
            self._buffer.append(line)
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
            "flushes": self.flushes,
            "flush_cpu_ms": round(self.flush_cpu_s * 1000.0, 1),
        }

    def writing(self) -> bool:
        """A write is running (or writes are held)."""
        return self._write_lock.locked()

    # ---- background ------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.flush_interval_s)
            self._wake.clear()
            self.flush()

    def flush(self) -> int:
        """Write the lines buffered when it starts (the background thread; tests and shutdown).
        Lines that arrive during the write wait for the next flush: chasing them would cost a
        call (~1 ms of CPU) per handful. Returns lines delivered."""
        delivered = 0
        cpu0 = time.thread_time()
        with self._write_lock:
            left = len(self._buffer)
            if left:
                self.flushes += 1
            while left > 0:
                with self._buffer_lock:
                    # Up to twice the wake-up size: the lines that arrived while the thread
                    # woke go in the same call.
                    n = min(left, len(self._buffer), 2 * self.batch_size)
                    batch = [self._buffer.popleft() for _ in range(n)]
                if not batch:  # the oldest were dropped meanwhile (a full buffer)
                    break
                left -= n
                try:
                    failures = self.writer.write(batch)
                except Exception as exc:  # an adapter bug must not kill the thread
                    failures = [(line, f"{type(exc).__name__}: {exc}") for line in batch]
                with self._buffer_lock:
                    if failures:
                        self.failed += len(failures)
                        self.last_error = failures[0][1]
                    self.written += len(batch) - len(failures)
                if failures:
                    logger.warning("impressions not delivered: %d (%s)", len(failures), self.last_error)
                delivered += len(batch) - len(failures)
        self.flush_cpu_s += time.thread_time() - cpu0
        return delivered

    def stop_periodic(self) -> None:
        """The background thread stops after its current write (a final flush follows)."""
        self._stop.set()

    @contextmanager
    def writes_held(self) -> Iterator[None]:
        """No write starts while inside (one in progress finishes first; a due flush waits and
        starts on leaving), as Lambda's freeze holds the thread between invocations. The
        serving benchmark holds writes during its blocks of requests without impressions."""
        with self._write_lock:
            yield

    def close(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
        self.flush()


class ShutdownFlush:
    """Flushes an ImpressionLog once at shutdown, waiting at most `timeout_s` for it.

    The flush runs in its own thread so a slow archive cannot hold the process past its
    deadline (whatever is not written by then is lost, and the counts say how much)."""

    def __init__(self, log: ImpressionLog, timeout_s: float = SHUTDOWN_FLUSH_S) -> None:
        self.log = log
        self.timeout_s = timeout_s
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._deadline = 0.0

    def run(self) -> bool:
        """Start the flush (first call only) and wait for it until the deadline. True if done."""
        with self._lock:
            if self._thread is None:
                self._deadline = time.monotonic() + self.timeout_s
                self.log.stop_periodic()
                self._thread = threading.Thread(
                    target=self.log.flush, name="impression-shutdown", daemon=True
                )
                self._thread.start()
            thread, deadline = self._thread, self._deadline
        thread.join(max(0.0, deadline - time.monotonic()))
        return not thread.is_alive()


def flush_on_shutdown(log: ImpressionLog, timeout_s: float = SHUTDOWN_FLUSH_S) -> ShutdownFlush:
    """Write the buffered impressions when the process is told to stop (SIGTERM) or exits.

    Two paths to the same once-only flush: a Python SIGTERM handler (runs in the main thread,
    then passes the signal on to the previous handler, so the process still ends as it would
    have), and a watcher thread woken through `signal.set_wakeup_fd`, which the interpreter
    writes to as the signal arrives: the flush starts even while the main thread sits in the
    runtime's native wait for the next invocation, where a Python handler may only run late.
    Signal handlers can only be installed from the main thread; elsewhere only atexit is used.
    """
    shutdown = ShutdownFlush(log, timeout_s)
    atexit.register(shutdown.run)
    if threading.current_thread() is not threading.main_thread():
        return shutdown
    previous = signal.getsignal(signal.SIGTERM)

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        shutdown.run()
        if callable(previous):
            previous(signum, frame)
        elif previous != signal.SIG_IGN:  # default action: end the process, as without us
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)

    signal.signal(signal.SIGTERM, on_sigterm)
    _watch_wakeup_fd(shutdown)
    return shutdown


def _watch_wakeup_fd(shutdown: ShutdownFlush) -> None:
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)
    try:
        old = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
    except ValueError:
        old = -1
    if old != -1:  # someone else (an event loop) owns the wakeup fd: leave it to them
        signal.set_wakeup_fd(old)
        os.close(read_fd)
        os.close(write_fd)
        return

    def watch() -> None:
        while True:
            try:
                data = os.read(read_fd, 64)
            except OSError:
                return
            if not data:
                return
            if signal.SIGTERM in data:
                shutdown.run()

    threading.Thread(target=watch, name="impression-sigterm", daemon=True).start()
