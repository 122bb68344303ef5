"""What every sink is, and the one piece of state-keeping they share.

Modelled on Telegraf's outputs: the bridge core only ever calls ``start``, ``offer`` (never
blocks, never raises: a slow or failing sink must not delay the source or the other sink) and
``close``. How a sink queues, batches and retries is its own business, so that the live sink can
favour freshness and the archive sink completeness.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Protocol

from tenacity import RetryCallState, Retrying, retry_if_exception_type

from bridge.frame import SpectrumFrame
from bridge.observe.metrics import SinkMetrics
from bridge.sinks.retry import Backoff, DeliveryError, PermanentError


class Sink(Protocol):
    name: str
    health: SinkHealth

    def start(self) -> None: ...

    def offer(self, frame: SpectrumFrame) -> None: ...

    def close(self, timeout: float) -> None: ...

    def queue_depth(self) -> int: ...


class SinkHealth:
    """A sink's current state, logged on change only, so an outage is one line, not thousands."""

    def __init__(self, name: str, log: logging.Logger) -> None:
        self.name = name
        self._log = log
        self._lock = threading.Lock()
        self.state = "starting"
        self.last_error: str | None = None
        self.failing_since: float | None = None  # time.monotonic()
        self._skipped_logged = False

    def skipped(self, metrics: SinkMetrics, values: int) -> None:
        """Count non-finite values left out of line protocol; say so once, not per frame."""
        if not values:
            return
        metrics.values_skipped.inc(values)
        if not self._skipped_logged:
            self._skipped_logged = True
            self._log.warning(
                "%s: NaN/Inf in the spectra (non-finite input samples); those values are left out "
                "and counted in eeg_bridge_sink_values_skipped_total (logged once)", self.name,
            )

    def ok(self) -> None:
        with self._lock:
            if self.failing_since is not None:
                self._log.info(
                    "%s: delivering again after %.1f s", self.name, time.monotonic() - self.failing_since
                )
            self.state, self.last_error, self.failing_since = "ok", None, None

    def failed(self, error: DeliveryError) -> None:
        message = str(error)
        with self._lock:
            state = "failed" if isinstance(error, PermanentError) else "retrying"
            if message != self.last_error:
                level = logging.ERROR if state == "failed" else logging.WARNING
                self._log.log(level, "%s: %s", self.name, message)
            if self.failing_since is None:
                self.failing_since = time.monotonic()
            self.state, self.last_error = state, message

    def set_state(self, state: str) -> None:
        with self._lock:
            self.state = state

    def failing_for(self) -> float:
        since = self.failing_since
        return 0.0 if since is None else time.monotonic() - since


def delivery_retrying(backoff: Backoff, stopping: threading.Event, health: SinkHealth, metrics: SinkMetrics) -> Retrying:
    """The tenacity policy both sinks deliver under: retry DeliveryErrors with ``backoff``,
    count and report each failed attempt, and give up (re-raising) once ``stopping`` is set."""

    def failed(state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        if isinstance(error, DeliveryError):
            health.failed(error)
        metrics.retries.inc()

    return Retrying(
        retry=retry_if_exception_type(DeliveryError),
        wait=backoff.wait(),
        stop=lambda _state: stopping.is_set(),
        sleep=stopping.wait,
        before_sleep=failed,
        reraise=True,
    )


def line_cut(body: bytes, start: int, end: int) -> int:
    """Where a part starting at ``start`` should end: after the last whole line before ``end``
    (a longer first line stays whole)."""
    if end >= len(body):
        return len(body)
    cut = body.rfind(b"\n", start, end)
    if cut < 0:
        cut = body.find(b"\n", end)
    return len(body) if cut < 0 else cut + 1


def split_lines(body: bytes, limit: int) -> list[bytes]:
    """Cut a body at line ends into parts of at most ``limit`` bytes (a longer line stays whole)."""
    parts: list[bytes] = []
    start = 0
    while start < len(body):
        cut = line_cut(body, start, start + limit)
        parts.append(body[start:cut])
        start = cut
    return parts
