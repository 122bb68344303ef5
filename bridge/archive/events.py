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
from typing import Callable, Literal, Protocol

import pylsl

from bridge.codecs.line_protocol import escape_key, escape_measurement
from bridge.observe.metrics import Metrics

log = logging.getLogger(__name__)


EventKind = Literal["marker", "health"]


@dataclass(frozen=True)
class EventLines:
    """Pre-encoded line protocol for the archive (``points`` lines, each ending in a newline)."""

    body: bytes
    points: int
    #: What the points are, for the ledger when they have to be dropped.
    kind: EventKind


def _string_field(value: str) -> str:
    """Line-protocol string field: quote, escape backslash and quote; newlines end lines."""
    cleaned = value.replace("\\", "\\\\").replace('"', '\\"').replace("\r", " ").replace("\n", " ")
    return f'"{cleaned}"'


@dataclass
class SameTime:
    """How many markers of one stream so far carry the newest timestamp.

    InfluxDB keeps one point per series and time: a second marker at the same nanosecond (two
    markers pushed for one sample, or a burst stamped by a coarse clock) would silently replace
    the first. So the second gets tag ``n=1``, the third ``n=2``, ...: a distinct series, the
    exact same time. LSL timestamps of a stream never decrease (``proc_monotonize``), so equal
    times are always consecutive, also across chunks: one instance per followed stream.
    """

    time_ns: int = -1
    count: int = 0

    def number(self, time_ns: int) -> int:
        """0 for the first marker at ``time_ns``, 1 for the next one at the same time, ..."""
        if time_ns == self.time_ns:
            self.count += 1
        else:
            self.time_ns, self.count = time_ns, 0
        return self.count


def encode_markers(measurement: str, stream: str, markers: list[tuple[str, int]],
                   same_time: SameTime | None = None) -> EventLines:
    """One point per marker; markers sharing a time get the ``n`` tag (see :class:`SameTime`),
    the first of them none, so the usual line stays as the data model shows it."""
    same_time = same_time if same_time is not None else SameTime()
    measurement_key, stream_tag = escape_measurement(measurement), f"stream_name={escape_key(stream)}"
    lines = []
    for text, time_ns in markers:
        n = same_time.number(time_ns)
        tags = f"n={n},{stream_tag}" if n else stream_tag  # tags in key order, as InfluxDB sorts them
        lines.append(f"{measurement_key},{tags} marker={_string_field(text)} {time_ns}\n")
    return EventLines("".join(lines).encode("utf-8"), len(markers), "marker")


def encode_health(measurement: str, stream: str, metrics: Metrics, time_ns: int, key: str = "") -> EventLines:
    """One point with the whole loss ledger, so the dashboards can plot it next to the spectra.

    ``key``: the stream's key where the bridge keeps several streams apart (as on its spectra).
    """
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
    # stream_id: the stream's key, which keeps two same-named streams of two hosts apart.
    tag = f",stream_id={escape_key(key)}" if key else ""
    line = f"{escape_measurement(measurement)}{tag},stream_name={escape_key(stream)} {text} {time_ns}\n"
    return EventLines(line.encode(), 1, "health")


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
    """Writes the loss ledger into the archive every ``interval`` seconds, and once more when
    joined: the pipeline joins its producers after the last frame was computed, so the archive's
    last point holds the final ``frames_computed`` to compare the stored rows with."""

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

    def join(self, timeout: float) -> None:
        super().join(timeout)
        self._sink(self._emit())


class MarkerFollower(_DaemonThread):
    """Follows a string (marker) stream next to the EEG stream; each marker becomes an event."""

    def __init__(
        self,
        predicate: str,
        measurement: str,
        emit: Callable[[EventLines], None],
        stop: threading.Event,
        metrics: Metrics,
        also: Callable[[list[tuple[str, int]]], None] | None = None,
    ) -> None:
        super().__init__("markers")
        self._predicate = predicate
        self._measurement = measurement
        self._emit = emit
        self._stop = stop
        #: Optional second receiver of the (text, Unix ns) markers, e.g. the live page.
        self._also = also
        self._metrics = metrics
        self._same_time = SameTime()
        #: LSL time the previous inlet was lost (None: never opened yet).
        self._lost_at: float | None = None

    def _run(self) -> None:
        while not self._stop.is_set():
            found = pylsl.resolve_bypred(self._predicate, 1, 1.0)
            if not found:
                continue
            info = found[0]
            if info.channel_format() != pylsl.cf_string:
                log.error("marker stream '%s' is not a string stream; markers are not followed", info.name())
                return
            inlet = pylsl.StreamInlet(info, max_buflen=360, recover=True,
                                      processing_flags=pylsl.proc_clocksync | pylsl.proc_monotonize)
            try:
                # LSL delivers to an inlet only what is pushed after its data connection is open:
                # open it before saying we follow the stream, so "following" means "receiving".
                inlet.open_stream(timeout=5.0)
                self._count_unwatched(info, inlet)
                log.info("following marker stream '%s' (source_id %s)", info.name(), info.source_id() or "-")
                self._follow(inlet, info.name())
            except pylsl.util.TimeoutError:
                log.warning("marker stream '%s' found but not opened within 5 s; trying again", info.name())
            except pylsl.util.LostError:
                self._lost_at = pylsl.local_clock()
                log.warning("marker stream '%s' lost; looking for it again", info.name())

    def _count_unwatched(self, info: pylsl.StreamInfo, inlet: pylsl.StreamInlet) -> None:
        """Markers pushed before the inlet opened never reach it, and nothing tells how many there
        were. What the bridge can know is the window: since the outlet was created (its
        ``created_at``, on the sender's clock) or since the previous inlet was lost, to now."""
        opened = pylsl.local_clock()
        try:
            created = info.created_at() + inlet.time_correction(timeout=2.0)
        except pylsl.util.TimeoutError:
            created = info.created_at()  # same machine, or a sender that does not answer: uncorrected
        since = created if self._lost_at is None else max(created, self._lost_at)
        window = max(0.0, opened - since)
        self._metrics.marker_unwatched_seconds.inc(window)
        if window > 0.5:
            log.warning("marker stream '%s': markers pushed in the %.1f s before its inlet opened "
                        "(outlet created or stream lost, to now) could not be received", info.name(), window)

    def _follow(self, inlet: pylsl.StreamInlet, stream: str) -> None:
        offset = time.time() - pylsl.local_clock()
        while True:
            stopping = self._stop.is_set()  # after the stop, one last pull takes what already arrived
            samples, stamps = inlet.pull_chunk(timeout=0.0 if stopping else 0.2)
            if stamps:
                markers = [("|".join(sample), int(round((ts + offset) * 1e9))) for sample, ts in zip(samples, stamps)]
                self._emit(encode_markers(self._measurement, stream, markers, self._same_time))
                if self._also is not None:
                    self._also(markers)
            if stopping:
                break
        inlet.close_stream()
