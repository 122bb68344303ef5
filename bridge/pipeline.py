"""One stream's pipeline: source -> spectrum -> frame -> fan-out -> sinks, and an orderly stop.

The source loop runs on the stream's own thread and never waits for a sink: each sink has its own
queue and threads, and the fan-out only hands frames over. Stopping (SIGINT/SIGTERM) ends the
source first, then lets the archive sink make everything already computed durable and
upload what it can, so a clean stop loses nothing.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, replace
from typing import Callable, Protocol, Sequence

import numpy as np

from bridge.config import Settings, SpectrumSettings
from bridge.archive.events import Producer
from bridge.frame import Session, SpectrumFrame, channel_names
from bridge.sources.lsl import Chunk, LslSource, StreamDescription, StreamRejected
from bridge.observe.metrics import Metrics
from bridge.sinks.base import Sink
from bridge.dsp.bands import BandOutsideAxis
from bridge.dsp.quality import rails_for
from bridge.dsp.spectrum import PrecomputedEngine, SpectrumEngine, StftEngine

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_BAD_INPUT = 2
EXIT_LAYOUT_CHANGED = 3
#: How often the ledger's copy of liblsl's clock correction is refreshed.
CORRECTION_CHECK_SEC = 5.0


class LayoutChanged(Exception):
    """The stream came back with a different frequency axis: its data must not join the old series."""


@dataclass(frozen=True)
class Selection:
    """Which source channels feed the spectra, and the names they are published under."""

    indices: np.ndarray | None  # None = all, in order
    names: tuple[str, ...]


def select_channels(description: StreamDescription, wanted: tuple[str, ...] | None, n_channels: int) -> Selection:
    labels = list(description.labels[:n_channels]) if n_channels == description.channel_count else [
        "" for _ in range(n_channels)
    ]
    if not wanted:
        return Selection(indices=None, names=channel_names(labels))
    indices: list[int] = []
    for item in wanted:
        if item in labels:
            indices.append(labels.index(item))
        elif item.isdigit() and int(item) < n_channels:
            indices.append(int(item))
        else:
            known = ", ".join(label or f"#{i}" for i, label in enumerate(labels))
            raise StreamRejected(f"SPECTRUM_CHANNELS names '{item}', which stream {description.who()} does not have (it has: {known}).")
    all_names = channel_names(labels)
    return Selection(indices=np.array(indices), names=tuple(all_names[i] for i in indices))


def build_engine(description: StreamDescription, spectrum: SpectrumSettings, key: str = "") -> tuple[SpectrumEngine, Selection]:
    """The one place engines are made, so ``run`` and ``import`` frames carry identical products.

    Band edges can only be checked against the axis once the stream is known: a band that does
    not fit it is refused here like any other unusable stream (one sentence, exit 2).
    """
    try:
        engine, selection = _build_engine(description, spectrum, key)
    except BandOutsideAxis as exc:
        raise StreamRejected(f"stream {description.who()}: {exc}") from None
    # The bin count is known only now (SPECTRUM_FMIN/FMAX, a precomputed axis): wide rows must fit
    # the server's columns per table (INFLUXDB_MAX_COLUMNS).
    problem = spectrum.bins_problem(int(engine.layout.frequencies.size))
    if problem is not None:
        raise StreamRejected(f"stream {description.who()}: {problem}")
    return engine, selection


def _build_engine(description: StreamDescription, spectrum: SpectrumSettings, key: str) -> tuple[SpectrumEngine, Selection]:
    frame_rate = description.srate / spectrum.stft.hop if spectrum.mode == "raw" else description.srate
    derived = spectrum.derived.for_frame_rate(frame_rate)
    if spectrum.mode == "raw":
        selection = select_channels(description, spectrum.channels, description.channel_count)
        engine: SpectrumEngine = StftEngine(
            stream=description.name,
            channels=selection.names,
            srate=description.srate,
            params=spectrum.stft,
            max_chunk=max(64, int(description.srate) or 64),
            derived=derived,
            rails=rails_for(description.channel_format, derived.quality) if derived.quality is not None else None,
            key=key,
        )
        return engine, selection
    freqs = spectrum.precomputed_frequencies if spectrum.precomputed_frequencies is not None else description.frequencies
    if freqs is None:
        raise StreamRejected(
            f"stream {description.who()} has no <frequencies> in its description; set PRECOMPUTED_FREQUENCIES."
        )
    if description.channel_count % freqs.size:
        raise StreamRejected(
            f"stream {description.who()} has {description.channel_count} values per sample, which is not a whole "
            f"number of spectra of {freqs.size} bins (PRECOMPUTED_FREQUENCIES / <frequencies>)."
        )
    n_spectra = description.channel_count // freqs.size
    selection = select_channels(description, None, n_spectra)
    engine = PrecomputedEngine(
        stream=description.name,
        channels=selection.names,
        frequencies=freqs,
        scale=spectrum.precomputed_scale,
        fmin=spectrum.stft.fmin,
        fmax=spectrum.stft.fmax,
        derived=derived,
        key=key,
    )
    return engine, selection


class Source(Protocol):
    """What a stream pipeline reads from: an LSL inlet, or chunks an application pushes."""

    description: StreamDescription | None

    def connect(self) -> StreamDescription | None: ...

    def pull(self, min_samples: int = 1) -> Chunk | None: ...

    def reconnect(self) -> StreamDescription | None: ...

    def close(self) -> None: ...

    def time_correction(self, timeout: float = 0.0) -> float | None: ...

    @property
    def connected(self) -> bool: ...

    @property
    def seconds_since_last_sample(self) -> float: ...

    @property
    def clock_offset(self) -> float: ...


class StreamPipeline:
    """One stream, end to end: its source, engine, frame counter, spool, sinks and ledger slice.

    Everything here is per stream, so one stream failing, leaving or being refused never stops or
    slows another: each runs :meth:`run` on a thread of its own under :class:`bridge.supervisor.Bridge`.
    ``sinks`` are this stream's own (started and closed here); ``shared`` ones (the page server)
    belong to the supervisor and are only offered frames.
    """

    def __init__(
        self,
        settings: Settings,
        metrics: Metrics,
        sinks: list[Sink],
        *,
        shared: Sequence[Sink] = (),
        key: str = "",
        layout_key: str = "",
        source: Source | None = None,
        stop: threading.Event | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.sinks = list(sinks)
        self.shared = list(shared)
        self.stop = stop or threading.Event()
        self.source: Source = source or LslSource(
            settings.lsl, require_regular_rate=settings.spectrum.mode == "raw", stop=self.stop
        )
        #: The stream's name in logs, metrics and status (bridge.rig.StreamSpec).
        self.key = key
        #: On its frames as ``layout.key`` (the archive's ``stream_id``); empty for one classic stream.
        self.layout_key = layout_key
        #: Threads feeding the archive beside the spectra (markers, health points).
        self.producers: list[Producer] = []
        #: The running session to attach to each frame (bridge/control), or None.
        self.session: Callable[[], Session | None] = lambda: None
        self.engine: SpectrumEngine | None = None
        self.exit_code: int | None = None
        self._selection: Selection | None = None
        self._last_time_ns = 0
        self._next_correction_check = 0.0
        self._thread: threading.Thread | None = None

    @property
    def label(self) -> str:
        """How logs name this stream: its key, else (tools without one) its name or selector."""
        description = self.source.description
        return self.key or (description.name if description else "") or self.settings.lsl.describe()

    def all_sinks(self) -> list[Sink]:
        return self.sinks + self.shared

    # ---- fan-out -------------------------------------------------------------------------------
    def publish(self, frame: SpectrumFrame) -> None:
        if frame.time_ns <= self._last_time_ns:
            # Only possible across a reconnection with a clock step; the heatmap and the archive
            # both need strictly increasing times, so such a frame cannot be kept.
            self.metrics.frames_out_of_order.inc()
            log.warning("%s: frame %d is not later than its predecessor; dropped (counted)", self.label, frame.seq)
            return
        self._last_time_ns = frame.time_ns
        session = self.session()
        if session is not None:
            frame = replace(frame, session=session)
        self.metrics.frames_computed.inc()
        for sink in self.sinks:
            sink.offer(frame)
        for sink in self.shared:
            sink.offer(frame)

    # ---- the source loop -------------------------------------------------------------------
    def _adopt(self, description: StreamDescription) -> None:
        engine, selection = build_engine(description, self.settings.spectrum, self.layout_key)
        if self.engine is not None:
            old, new = self.engine.layout, engine.layout
            if not np.array_equal(old.frequencies, new.frequencies):
                raise LayoutChanged(
                    f"stream {description.who()} came back with a different frequency axis "
                    f"({new.frequencies.size} bins up to {new.frequencies[-1]:g} Hz, was "
                    f"{old.frequencies.size} up to {old.frequencies[-1]:g} Hz); its spectra must not be mixed into the old series: "
                    "restart the bridge with another INFLUXDB_MEASUREMENT (or stream name) to record it."
                )
            if old.same_axes(new):
                engine = self.engine  # keep the frame counter and layout identity
                engine.reset()
            else:
                log.warning(
                    "stream %s came back with different channels (%d, was %d); continuing with the new layout",
                    description.who(), len(new.channels), len(old.channels),
                )
        self.engine, self._selection = engine, selection
        self.metrics.stream_connected.set(1)
        self.metrics.clock_offset.set(self.source.clock_offset)
        self._track_time_correction(timeout=2.0)  # the first estimate takes a few ms

    def _track_time_correction(self, timeout: float) -> None:
        self._next_correction_check = time.monotonic() + CORRECTION_CHECK_SEC
        correction = self.source.time_correction(timeout)
        if correction is not None:
            self.metrics.time_correction.set(correction)

    def start(self) -> None:
        """Run on a thread of its own (several streams in one process)."""
        self._thread = threading.Thread(target=self.run, name=f"stream-{self.label}", daemon=True)
        self._thread.start()

    def join(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def run(self) -> int:
        for sink in self.sinks:
            sink.start()
        for producer in self.producers:
            producer.start()
        try:
            description = self.source.connect()
            if description is not None:
                self._adopt(description)
                self._loop()
            self.exit_code = EXIT_OK
        except StreamRejected as exc:
            log.error("%s", exc)
            self.exit_code = EXIT_BAD_INPUT
        except LayoutChanged as exc:
            log.error("%s", exc)
            self.exit_code = EXIT_LAYOUT_CHANGED
        finally:
            self.stop.set()
            self.source.close()
            self.metrics.stream_connected.set(0)
            for producer in self.producers:
                producer.join(5.0)  # their last points must reach the archive before it closes
            for sink in self.sinks:
                sink.close(self.settings.shutdown_timeout_sec)
        return self.exit_code

    def _loop(self) -> None:
        while not self.stop.is_set():
            chunk = self.source.pull(self.engine.samples_needed())  # type: ignore[union-attr]
            if chunk is None:
                self.metrics.seconds_since_sample.set(self.source.seconds_since_last_sample)
                if not self.source.connected and not self.stop.is_set():
                    self.metrics.stream_connected.set(0)
                    self.metrics.reconnects.inc()
                    description = self.source.reconnect()
                    if description is None:
                        return
                    self._adopt(description)
                continue
            self.metrics.samples_received.inc(len(chunk.times))
            self.metrics.seconds_since_sample.set(0.0)
            if time.monotonic() >= self._next_correction_check:
                self._track_time_correction(timeout=0.0)
            if chunk.gap_samples > 0:
                self.metrics.gaps.inc()
                self.metrics.samples_missing.inc(chunk.gap_samples)
                log.warning("%s: gap in the stream: about %d samples missing", self.label, chunk.gap_samples)
            if chunk.restart or chunk.gap_samples > 0:
                self.engine.reset()  # type: ignore[union-attr]
            samples = chunk.samples
            if self._selection is not None and self._selection.indices is not None:
                samples = samples[:, self._selection.indices]
            for frame in self.engine.push(samples, chunk.times):  # type: ignore[union-attr]
                self.publish(frame)
