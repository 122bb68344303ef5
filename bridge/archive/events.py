"""Points that are not spectra: LSL markers and the bridge's own health ledger.

Both go to the archive only (Grafana reads them back as annotations and a health row), through
the same durable spool as the spectra, so a task event is never lost when a spectrum would not be.
They are encoded here, once, and travel as ready line protocol.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable, Protocol

import pylsl

from bridge.codecs.line_protocol import escape_key, escape_measurement
from bridge.observe.metrics import Metrics

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EventLines:
    """Pre-encoded line protocol for the archive (``points`` lines, each ending in a newline)."""

    body: bytes
    points: int


def _string_field(value: str) -> str:
    """Line-protocol string field: quote, escape backslash and quote; newlines end lines."""
    cleaned = value.replace("\\", "\\\\").replace('"', '\\"').replace("\r", " ").replace("\n", " ")
    return f'"{cleaned}"'


def encode_markers(measurement: str, stream: str, markers: list[tuple[str, int]]) -> EventLines:
    head = f"{escape_measurement(measurement)},stream_name={escape_key(stream)} marker="
    body = "".join(f"{head}{_string_field(text)} {time_ns}\n" for text, time_ns in markers)
    return EventLines(body.encode("utf-8"), len(markers))


def encode_health(measurement: str, stream: str, metrics: Metrics, time_ns: int) -> EventLines:
    """One point with the whole loss ledger, so the dashboards can plot it next to the spectra."""
    fields = {
        "samples_received": metrics.value("eeg_bridge_samples_received_total"),
        "samples_missing": metrics.value("eeg_bridge_samples_missing_total"),
        "gaps": metrics.value("eeg_bridge_gaps_total"),
        "reconnects": metrics.value("eeg_bridge_stream_reconnects_total"),
        "frames_computed": metrics.value("eeg_bridge_frames_computed_total"),
        "stream_connected": metrics.value("eeg_bridge_stream_connected"),
        "seconds_since_sample": metrics.value("eeg_bridge_lsl_seconds_since_last_sample"),
        "spool_frames": metrics.value("eeg_bridge_spool_frames"),
    }
    for sink in metrics.sink_names():
        fields[f"{sink}_sent"] = metrics.value("eeg_bridge_sink_frames_sent_total", sink=sink)
        fields[f"{sink}_retries"] = metrics.value("eeg_bridge_sink_retries_total", sink=sink)
        fields[f"{sink}_dropped"] = metrics.dropped_total(sink)
        fields[f"{sink}_queue_depth"] = metrics.value("eeg_bridge_sink_queue_depth", sink=sink)
        fields[f"{sink}_latency_seconds"] = metrics.value("eeg_bridge_sink_last_latency_seconds", sink=sink)
    text = ",".join(f"{escape_key(k)}={float(v)!r}" for k, v in fields.items())
    line = f"{escape_measurement(measurement)},stream_name={escape_key(stream)} {text} {time_ns}\n"
    return EventLines(line.encode(), 1)


class Producer(Protocol):
    """A thread that feeds the archive beside the spectra; joined before the sinks close."""

    def start(self) -> None: ...

    def join(self, timeout: float) -> None: ...


class _DaemonThread:
    """One daemon thread running ``_run``, with the start/join a :class:`Producer` needs."""

    def __init__(self, name: str) -> None:
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    def _run(self) -> None:
        raise NotImplementedError


class HealthPoints(_DaemonThread):
    """Writes the loss ledger into the archive every ``interval`` seconds."""

    def __init__(self, interval: float, emit: Callable[[], EventLines], sink: Callable[[EventLines], None],
                 stop: threading.Event) -> None:
        super().__init__("health-points")
        self._interval = interval
        self._emit = emit
        self._sink = sink
        self._stop = stop

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self._sink(self._emit())


class MarkerFollower(_DaemonThread):
    """Follows a string (marker) stream next to the EEG stream; each marker becomes an event."""

    def __init__(
        self,
        predicate: str,
        measurement: str,
        emit: Callable[[EventLines], None],
        stop: threading.Event,
        also: Callable[[list[tuple[str, int]]], None] | None = None,
    ) -> None:
        super().__init__("markers")
        self._predicate = predicate
        self._measurement = measurement
        self._emit = emit
        self._stop = stop
        #: Optional second receiver of the (text, Unix ns) markers, e.g. the live page.
        self._also = also

    def _run(self) -> None:
        while not self._stop.is_set():
            found = pylsl.resolve_bypred(self._predicate, 1, 1.0)
            if not found:
                continue
            info = found[0]
            if info.channel_format() != pylsl.cf_string:
                log.error("marker stream '%s' is not a string stream; markers are not followed", info.name())
                return
            log.info("following marker stream '%s' (source_id %s)", info.name(), info.source_id() or "-")
            try:
                self._follow(pylsl.StreamInlet(info, max_buflen=360, recover=True,
                                               processing_flags=pylsl.proc_clocksync | pylsl.proc_monotonize),
                             info.name())
            except pylsl.util.LostError:
                log.warning("marker stream '%s' lost; looking for it again", info.name())

    def _follow(self, inlet: pylsl.StreamInlet, stream: str) -> None:
        offset = time.time() - pylsl.local_clock()
        while not self._stop.is_set():
            samples, stamps = inlet.pull_chunk(timeout=0.2)
            if stamps:
                markers = [("|".join(sample), int(round((ts + offset) * 1e9))) for sample, ts in zip(samples, stamps)]
                self._emit(encode_markers(self._measurement, stream, markers))
                if self._also is not None:
                    self._also(markers)
        inlet.close_stream()
