"""``eeg-bridge import``: recorded files into the same archive, exactly as a live bridge writes them.

Each selected stream gets its engine from :func:`bridge.pipeline.build_engine` with the same
``SPECTRUM_*`` settings as ``run`` (so spectra, and whatever else that engine attaches to a frame,
are identical), fed with per-sample Unix times, so frame times follow the same window-centre
rule. Frames and markers go through the archive sink's own batcher, spool and writer: an outage
makes the import wait (nothing is dropped: :meth:`InfluxSink.offer_waiting`), a crash leaves a
spool that the next import or ``eeg-bridge replay`` uploads, and a re-run writes the same series
at the same times, which InfluxDB overwrites instead of duplicating.

Every stream of a file is checked and its engine built before anything of that file is written,
so a file is either refused with one sentence or imported (an interrupted recording: its intact
part, said so).
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from dataclasses import dataclass, replace
from datetime import tzinfo
from pathlib import Path
from typing import Callable, TextIO

import numpy as np

from bridge.archive.events import SameTime, encode_markers
from bridge.config import Settings
from bridge.dsp.spectrum import SpectrumEngine
from bridge.observe.metrics import Metrics
from bridge.pipeline import Selection, build_engine
from bridge.sinks.influxdb import INBOX_FRAMES, InfluxSink
from bridge.sources.lsl import StreamRejected
from bridge.sources.recorded import RecordedStream, Recording, RecordingError, StreamSelector

log = logging.getLogger(__name__)

#: Frames the archive may hold (inbox + spool) before the importer waits for the server.
MAX_PENDING_FRAMES = INBOX_FRAMES // 2
#: Markers per archive item: one line each, so a long session's markers stay small batches.
MARKERS_PER_ITEM = 1000
#: A permanent refusal (credentials, missing database) lasting this long ends the import.
GIVE_UP_AFTER_SEC = 2.0
#: Subfolder of SPOOL_DIR for imports: never the spool a running live bridge is using.
IMPORT_SPOOL = "import"


def open_recording(path: Path, settings: Settings, zone: tzinfo | None, *, load: bool = True) -> Recording:
    """The reader for the file's type; RecordingError (one sentence) for anything unusable."""
    name = path.name.lower()
    lsl = settings.lsl
    if name.endswith(".xdf"):
        from bridge.sources.xdf import open_xdf  # noqa: PLC0415 - pyxdf only when needed

        return open_xdf(path, StreamSelector(lsl.name, lsl.type, lsl.source_id),
                        StreamSelector(lsl.marker_name, lsl.marker_type), settings.spectrum.mode, load=load)
    if name.endswith((".edf", ".bdf")):
        from bridge.sources.edf import open_edf  # noqa: PLC0415 - pyedflib only when needed

        return open_edf(path, lsl.name, settings.spectrum.channels, zone)
    if not path.exists():
        raise RecordingError(f"{path}: no such file.")
    raise RecordingError(f"{path}: unknown file type; import reads .xdf (LabRecorder), .edf and .bdf files.")


@dataclass
class Planned:
    """A stream with the engine a live bridge would build for it."""

    stream: RecordedStream
    engine: SpectrumEngine
    selection: Selection
    frames: int


def plan(recording: Recording, settings: Settings) -> list[Planned]:
    spectrum = settings.spectrum
    stft = spectrum.stft
    planned = []
    for stream in recording.streams:
        own = replace(spectrum, channels=None) if stream.channels_selected else spectrum
        try:
            engine, selection = build_engine(stream.description, own)
        except (StreamRejected, ValueError) as exc:
            raise RecordingError(f"{recording.path}: {exc}") from None
        frames = stream.frames(stft.nperseg, stft.hop) if spectrum.mode == "raw" else stream.samples
        planned.append(Planned(stream, engine, selection, frames))
    return planned


def describe_plan(recording: Recording, planned: list[Planned]) -> list[str]:
    """The ``--dry-run`` listing: streams, channels, duration and frames."""
    lines = [f"{recording.path} ({recording.format}):"]
    for p in planned:
        d = p.stream.description
        names = ", ".join(p.engine.layout.channels[:8]) + (" ..." if len(p.engine.layout.channels) > 8 else "")
        lines.append(
            f"  stream '{d.name}' (type {d.type or '-'}, source_id {d.source_id or '-'}): "
            f"{len(p.engine.layout.channels)} channels ({names}) at {d.srate:g} Hz, {p.stream.duration:.1f} s, "
            f"{p.frames} frames of {p.engine.layout.frequencies.size} bins"
        )
    for m in recording.markers:
        lines.append(f"  markers '{m.stream_name}': {m.count}")
    for s in recording.skipped:
        lines.append(f"  skipped {s}")
    lines.append(f"  times: {recording.time_base}")
    return lines


class Progress:
    """tqdm on a terminal (frames done/total, frames/s, ETA); one summary line per file otherwise."""

    def __init__(self, total: int, label: str, stream: TextIO | None = None) -> None:
        self._stream = stream or sys.stderr
        self._bar = None
        if self._stream.isatty():
            from tqdm import tqdm  # noqa: PLC0415

            self._bar = tqdm(total=total, unit="frame", desc=label, file=self._stream, dynamic_ncols=True,
                             smoothing=0.1, mininterval=0.25)

    def update(self, frames: int) -> None:
        if self._bar is not None and frames:
            self._bar.update(frames)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


@dataclass
class FileResult:
    path: Path
    frames: int = 0
    markers: int = 0
    complete: bool = False


class Importer:
    """Feeds recordings into one archive sink; the sink is started and closed by the caller."""

    def __init__(self, settings: Settings, metrics: Metrics, sink: InfluxSink, stop: threading.Event) -> None:
        self.settings = settings
        self.metrics = metrics
        self.sink = sink
        self.stop = stop
        self.frames_offered = 0

    def give_up(self) -> bool:
        health = self.sink.health
        return self.stop.is_set() or (health.state == "failed" and health.failing_for() >= GIVE_UP_AFTER_SEC)

    def _hand_over(self, item) -> bool:  # noqa: ANN001 - a frame or EventLines
        return self.sink.offer_waiting(item, MAX_PENDING_FRAMES, self.give_up)

    def import_file(self, recording: Recording, planned: list[Planned]) -> FileResult:
        result = FileResult(recording.path)
        for warning in recording.warnings:
            log.warning("%s", warning)
        measurement = self.settings.influxdb.marker_measurement
        # Markers first: the last item handed over is then a frame, whose upload implies theirs.
        for markers in recording.markers:
            # In time order, numbered as live (same-ns markers get tag n), so a re-run writes the same points.
            ordered, same_time = sorted(markers.markers, key=lambda m: m[1]), SameTime()
            for at in range(0, len(ordered), MARKERS_PER_ITEM):
                if not self._hand_over(encode_markers(measurement, markers.stream_name,
                                                      ordered[at : at + MARKERS_PER_ITEM], same_time)):
                    return result
            result.markers += len(markers.markers)
        progress = Progress(sum(p.frames for p in planned), recording.path.name)
        started = time.monotonic()
        written: list[str] = []
        try:
            for p in planned:
                done = self._stream(p, progress)
                result.frames += done
                written.append(f"'{p.stream.description.name}' {done} frames")
                if self.give_up():
                    log.warning("%s: stopped in stream '%s' after %d of %d frames",
                                recording.path, p.stream.description.name, done, p.frames)
                    return result
        finally:
            progress.close()
        elapsed = time.monotonic() - started
        log.info("%s: %s; %d markers; computed in %.1f s (%.0f frames/s); times from %s",
                 recording.path, ", ".join(written), result.markers, elapsed, result.frames / elapsed if elapsed > 0 else 0.0,
                 recording.time_base)
        result.complete = True
        return result

    def _stream(self, p: Planned, progress: Progress) -> int:
        engine, indices = p.engine, p.selection.indices
        last_ns = 0
        done = dropped = 0
        for starts_segment, samples, times in p.stream.blocks():
            if starts_segment:
                engine.reset()  # a break in the recording: no window spans it, as live after a gap
            self.metrics.samples_received.inc(len(times))
            block = samples if indices is None else samples[:, indices]
            frames = engine.push(np.asarray(block), times)
            for frame in frames:
                if frame.time_ns <= last_ns:  # only across overlapping segments; as live, dropped and counted
                    self.metrics.frames_out_of_order.inc()
                    dropped += 1
                    continue
                last_ns = frame.time_ns
                if not self._hand_over(frame):
                    return done
                self.metrics.frames_computed.inc()
                self.frames_offered += 1
                done += 1
            progress.update(len(frames))
        if dropped:
            log.warning("stream '%s': %d frames were not later than their predecessor (segments of the recording "
                        "overlap in time); dropped (counted in eeg_bridge_frames_out_of_order_total)",
                        p.stream.description.name, dropped)
        return done

    def wait_uploaded(self, report: Callable[[str], None]) -> bool:
        """Until every frame handed over is in InfluxDB (or counted as refused by it)."""
        sink = self.sink
        last_report = 0.0
        while not self.give_up():
            accounted = (self.metrics.value("eeg_bridge_sink_frames_sent_total", sink=sink.name)
                         + self.metrics.dropped_total(sink.name))
            if accounted >= self.frames_offered and sink.queue_depth() == 0:
                return True
            if time.monotonic() - last_report > 10.0:
                last_report = time.monotonic()
                report(f"uploading: {self.frames_offered - int(accounted)} frames to go ({sink.health.state})")
            time.sleep(0.05)
        return False


def run_import(paths: list[Path], settings: Settings, metrics: Metrics, make_sink: Callable[[], InfluxSink],
               stop: threading.Event, zone: tzinfo | None, dry_run: bool, out: TextIO) -> int:
    """Exit status: 0 all imported, 2 a file was refused (the others still imported), 1 not all uploaded."""
    bad = 0
    sink: InfluxSink | None = None
    importer: Importer | None = None
    results: list[FileResult] = []
    try:
        for path in paths:
            if stop.is_set():
                break
            try:
                recording = open_recording(path, settings, zone, load=not dry_run)
                planned = plan(recording, settings)
            except RecordingError as exc:
                bad += 1
                print(f"eeg-bridge import: {exc}", file=sys.stderr)
                continue
            if dry_run:
                print("\n".join(describe_plan(recording, planned)), file=out)
                for warning in recording.warnings:
                    print(f"  warning: {warning}", file=out)
                recording.close()
                continue
            if sink is None:
                sink = make_sink()
                sink.start()
                importer = Importer(settings, metrics, sink, stop)
            try:
                results.append(importer.import_file(recording, planned))  # type: ignore[union-attr]
            finally:
                recording.close()
            if importer.give_up():  # type: ignore[union-attr]
                break  # stopped, or the server refuses: the remaining files would only queue up
        if sink is None or importer is None:
            return 2 if bad else 0
        uploaded = importer.wait_uploaded(lambda text: log.info("%s", text))
    finally:
        if sink is not None:
            sink.close(settings.shutdown_timeout_sec)
    frames = sum(r.frames for r in results)
    markers = sum(r.markers for r in results)
    if uploaded and all(r.complete for r in results) and sink.spool.empty:
        print(f"eeg-bridge import: {len(results)} file(s), {frames} frames and {markers} markers are in InfluxDB"
              + (f"; {bad} file(s) refused" if bad else "") + ".", file=out)
        return 2 if bad else 0
    reason = "stopped" if stop.is_set() else f"InfluxDB: {sink.health.last_error or sink.health.state}"
    print(f"eeg-bridge import: not finished ({reason}); {sink.spool.pending_frames} frames stay in the spool at "
          f"{sink.spool.directory}: the next import there or 'SPOOL_DIR={sink.spool.directory} eeg-bridge replay' "
          "uploads them, and re-running the import overwrites what is already stored.", file=sys.stderr)
    return 1
