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


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.samples_received = Counter("eeg_bridge_samples_received", "Samples pulled from LSL.", registry=r)
        self.samples_missing = Counter(
            "eeg_bridge_samples_missing", "Samples the nominal rate says never arrived (gaps).", registry=r
        )
        self.gaps = Counter("eeg_bridge_gaps", "Timestamp gaps or reconnections in the stream.", registry=r)
        self.reconnects = Counter("eeg_bridge_stream_reconnects", "Times the LSL stream was re-resolved.", registry=r)
        self.frames_computed = Counter("eeg_bridge_frames_computed", "Spectrum frames computed.", registry=r)
        self.frames_out_of_order = Counter(
            "eeg_bridge_frames_out_of_order", "Frames dropped because their time did not increase.", registry=r
        )
        self.stream_connected = Gauge("eeg_bridge_stream_connected", "1 while an LSL inlet is open.", registry=r)
        self.seconds_since_sample = Gauge(
            "eeg_bridge_lsl_seconds_since_last_sample", "LSL staleness.", registry=r
        )
        self.clock_offset = Gauge(
            "eeg_bridge_lsl_clock_offset_seconds", "Offset added to LSL local_clock to get Unix time.", registry=r
        )
        self.time_correction = Gauge(
            "eeg_bridge_lsl_time_correction_seconds",
            "liblsl's sender-to-local clock correction applied to the stream's timestamps.",
            registry=r,
        )
        self._sent = Counter("eeg_bridge_sink_frames_sent", "Frames a sink delivered.", ["sink"], registry=r)
        self._retries = Counter("eeg_bridge_sink_retries", "Failed attempts that were retried.", ["sink"], registry=r)
        self._dropped = Counter(
            "eeg_bridge_sink_frames_dropped", "Frames a sink gave up on, by reason.", ["sink", "reason"], registry=r
        )
        self._skipped = Counter(
            "eeg_bridge_sink_values_skipped", "Non-finite values left out of line protocol.", ["sink"], registry=r
        )
        self._depth = Gauge("eeg_bridge_sink_queue_depth", "Frames waiting in a sink.", ["sink"], registry=r)
        self._last_success = Gauge(
            "eeg_bridge_sink_last_success_timestamp_seconds", "Unix time of a sink's last success.", ["sink"], registry=r
        )
        self._last_latency = Gauge(
            "eeg_bridge_sink_last_latency_seconds", "Latency of a sink's most recent delivery.", ["sink"], registry=r
        )
        self._latency = Histogram(
            "eeg_bridge_sink_latency_seconds",
            "Newest sample of a frame to the sink's confirmed delivery.",
            ["sink"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.events_dropped = Counter(
            "eeg_bridge_events_dropped",
            "Marker or health points that could not be archived, by kind (marker, health).",
            ["kind"],
            registry=r,
        )
        self.marker_unwatched_seconds = Counter(
            "eeg_bridge_marker_unwatched_seconds",
            "Seconds the marker stream existed (or was lost) before its inlet opened: markers "
            "pushed then cannot be received.",
            registry=r,
        )
        self.spool_bytes = Gauge("eeg_bridge_spool_bytes", "Bytes waiting in the archive spool.", registry=r)
        self.spool_frames = Gauge("eeg_bridge_spool_frames", "Frames waiting in the archive spool.", registry=r)
        self._sinks: dict[str, SinkMetrics] = {}

    def sink(self, name: str) -> SinkMetrics:
        if name not in self._sinks:
            dropped = {reason: self._dropped.labels(name, reason) for reason in DROP_REASONS}
            self._sinks[name] = SinkMetrics(
                name=name,
                sent=self._sent.labels(name),
                retries=self._retries.labels(name),
                dropped=dropped,
                values_skipped=self._skipped.labels(name),
                queue_depth=self._depth.labels(name),
                last_success=self._last_success.labels(name),
                last_latency=self._last_latency.labels(name),
                latency=self._latency.labels(name),
            )
        return self._sinks[name]

    def sink_names(self) -> list[str]:
        return list(self._sinks)

    def dropped_total(self, sink: str) -> float:
        return sum(self.value("eeg_bridge_sink_frames_dropped_total", sink=sink, reason=r) for r in DROP_REASONS)

    def value(self, name: str, **labels: str) -> float:
        """Current value of one sample (``*_total`` for counters), 0 if never set."""
        return self.registry.get_sample_value(name, labels) or 0.0
