"""The loss ledger: every sample and frame is accounted for, from the source to each sink.

Kept in Prometheus types (prometheus-client) because that is what operators scrape, and its
counters are thread-safe and monotonic by construction ("start at zero and only grow"). The
status line, the health check and the ``bridge_health`` points all read from this one ledger,
so they can never disagree. Each instance has its own registry, so tests can run several.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics

# The *_created series double the scrape for no use here.
disable_created_metrics()

DROP_REASONS = ("stale", "queue_full", "spool_full", "rejected", "failed")
_LATENCY_BUCKETS = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)


@dataclass(frozen=True)
class SinkMetrics:
    """The slice of the ledger one sink writes to (labels already bound)."""

    name: str
    sent: Counter
    retries: Counter
    dropped: dict[str, Counter]
    values_skipped: Counter
    queue_depth: Gauge
    last_success: Gauge
    last_latency: Gauge
    latency: Histogram

    def drop(self, reason: str, frames: int = 1) -> None:
        if frames:
            self.dropped[reason].inc(frames)

    def succeeded(self, frames: int, newest_sample_ns: int | None = None) -> None:
        now = time.time()
        self.sent.inc(frames)
        self.last_success.set(now)
        if newest_sample_ns:
            latency = max(0.0, now - newest_sample_ns / 1e9)
            self.latency.observe(latency)
            self.last_latency.set(latency)


class _Families:
    """Every metric family, once per registry; each stream binds its own ``stream`` label."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r, s = self.registry, ["stream"]
        self.samples_received = Counter("eeg_bridge_samples_received", "Samples pulled from LSL.", s, registry=r)
        self.samples_missing = Counter(
            "eeg_bridge_samples_missing", "Samples the nominal rate says never arrived (gaps).", s, registry=r
        )
        self.gaps = Counter("eeg_bridge_gaps", "Timestamp gaps or reconnections in the stream.", s, registry=r)
        self.reconnects = Counter("eeg_bridge_stream_reconnects", "Times the LSL stream was re-resolved.", s, registry=r)
        self.frames_computed = Counter("eeg_bridge_frames_computed", "Spectrum frames computed.", s, registry=r)
        self.frames_out_of_order = Counter(
            "eeg_bridge_frames_out_of_order", "Frames dropped because their time did not increase.", s, registry=r
        )
        self.stream_connected = Gauge("eeg_bridge_stream_connected", "1 while an LSL inlet is open.", s, registry=r)
        self.seconds_since_sample = Gauge(
            "eeg_bridge_lsl_seconds_since_last_sample", "LSL staleness.", s, registry=r
        )
        self.clock_offset = Gauge(
            "eeg_bridge_lsl_clock_offset_seconds", "Offset added to LSL local_clock to get Unix time.", s, registry=r
        )
        self.time_correction = Gauge(
            "eeg_bridge_lsl_time_correction_seconds",
            "liblsl's sender-to-local clock correction applied to the stream's timestamps.",
            s,
            registry=r,
        )
        sink = ["stream", "sink"]
        self.sent = Counter("eeg_bridge_sink_frames_sent", "Frames a sink delivered.", sink, registry=r)
        self.retries = Counter("eeg_bridge_sink_retries", "Failed attempts that were retried.", sink, registry=r)
        self.dropped = Counter(
            "eeg_bridge_sink_frames_dropped", "Frames a sink gave up on, by reason.", [*sink, "reason"], registry=r
        )
        self.skipped = Counter(
            "eeg_bridge_sink_values_skipped", "Non-finite values left out of line protocol.", sink, registry=r
        )
        self.depth = Gauge("eeg_bridge_sink_queue_depth", "Frames waiting in a sink.", sink, registry=r)
        self.last_success = Gauge(
            "eeg_bridge_sink_last_success_timestamp_seconds", "Unix time of a sink's last success.", sink, registry=r
        )
        self.last_latency = Gauge(
            "eeg_bridge_sink_last_latency_seconds", "Latency of a sink's most recent delivery.", sink, registry=r
        )
        self.latency = Histogram(
            "eeg_bridge_sink_latency_seconds",
            "Newest sample of a frame to the sink's confirmed delivery.",
            sink,
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.events_dropped = Counter(
            "eeg_bridge_events_dropped",
            "Marker or health points that could not be archived, by kind (marker, health).",
            ["stream", "kind"],
            registry=r,
        )
        self.marker_unwatched_seconds = Counter(
            "eeg_bridge_marker_unwatched_seconds",
            "Seconds the marker stream existed (or was lost) before its inlet opened: markers "
            "pushed then cannot be received.",
            s,
            registry=r,
        )
        self.spool_bytes = Gauge("eeg_bridge_spool_bytes", "Bytes waiting in the archive spool.", s, registry=r)
        self.spool_frames = Gauge("eeg_bridge_spool_frames", "Frames waiting in the archive spool.", s, registry=r)


class Metrics:
    """One stream's slice of the ledger (its ``stream`` label bound), over a registry that the
    streams of one process share, so one ``/metrics`` serves them all.

    ``Metrics()`` starts a registry of its own; :meth:`for_stream` gives another stream's slice
    of the same registry. :meth:`value` reads this stream's samples only. :meth:`process` is the
    slice of parts that belong to no stream (the page server): it binds no stream series, so no
    ``stream=""`` series (always "disconnected") confuses a per-stream alert.
    """

    def __init__(self, stream: str = "", *, families: _Families | None = None) -> None:
        self._families = families or _Families()
        self.registry = self._families.registry
        self.stream = stream
        self._sinks: dict[str, SinkMetrics] = {}
        if families is not None and not stream:
            return  # process()
        f = self._families
        self.samples_received = f.samples_received.labels(stream)
        self.samples_missing = f.samples_missing.labels(stream)
        self.gaps = f.gaps.labels(stream)
        self.reconnects = f.reconnects.labels(stream)
        self.frames_computed = f.frames_computed.labels(stream)
        self.frames_out_of_order = f.frames_out_of_order.labels(stream)
        self.stream_connected = f.stream_connected.labels(stream)
        self.seconds_since_sample = f.seconds_since_sample.labels(stream)
        self.clock_offset = f.clock_offset.labels(stream)
        self.time_correction = f.time_correction.labels(stream)
        self.marker_unwatched_seconds = f.marker_unwatched_seconds.labels(stream)
        self.spool_bytes = f.spool_bytes.labels(stream)
        self.spool_frames = f.spool_frames.labels(stream)
        self._events_dropped = {kind: f.events_dropped.labels(stream, kind) for kind in ("marker", "health")}

    def for_stream(self, stream: str) -> Metrics:
        """Another stream's slice of this registry."""
        if not stream:
            raise ValueError("a stream's metrics need its key")
        return Metrics(stream, families=self._families)

    @classmethod
    def process(cls) -> Metrics:
        """A registry for several streams, and the slice for what no one stream owns."""
        return cls("", families=_Families())

    def event_dropped(self, kind: str, count: int = 1) -> None:
        self._events_dropped[kind].inc(count)

    def sink(self, name: str) -> SinkMetrics:
        if name not in self._sinks:
            f, key = self._families, (self.stream, name)
            dropped = {reason: f.dropped.labels(*key, reason) for reason in DROP_REASONS}
            self._sinks[name] = SinkMetrics(
                name=name,
                sent=f.sent.labels(*key),
                retries=f.retries.labels(*key),
                dropped=dropped,
                values_skipped=f.skipped.labels(*key),
                queue_depth=f.depth.labels(*key),
                last_success=f.last_success.labels(*key),
                last_latency=f.last_latency.labels(*key),
                latency=f.latency.labels(*key),
            )
        return self._sinks[name]

    def sink_names(self) -> list[str]:
        return list(self._sinks)

    def dropped_total(self, sink: str) -> float:
        return sum(self.value("eeg_bridge_sink_frames_dropped_total", sink=sink, reason=r) for r in DROP_REASONS)

    def value(self, name: str, **labels: str) -> float:
        """Current value of one sample of this stream (``*_total`` for counters), 0 if never set."""
        return self.registry.get_sample_value(name, {"stream": self.stream, **labels}) or 0.0
