"""Section 6: ``eeg-bridge import`` of a long recording, against what the server can ingest.

One EDF file of simulated EEG (64 ch x 1 kHz, ``minutes`` long, written with pyedflib in 10 s
blocks; EDF rather than XDF because pyedflib reads it in blocks, so neither this process nor the
import needs the whole recording in memory on the shared machine). Then, in one run:

* **spectra**: the importer's reader + the engine from ``build_engine`` on the whole file, in this
  process, without encoding or sink: recording seconds per wall second (goal >= 200x real time),
  and the engine's share of it.
* **raw**: the exact bodies the import uploads (built by the importer itself into a spool-only
  archive sink: same batcher, same encoder, same BATCH_SIZE), grouped as the uploader groups them
  and POSTed back to back by ``bench.catchup``'s raw-ingest measurement into a fresh InfluxDB 1.x.
* **import**: ``python -m bridge import file.edf`` into another fresh InfluxDB 1.x, from process
  start to exit (start-up, reading, spectra, encoding, spooling and upload all included).

Fraction = raw seconds / import seconds (goal >= 80 %); both servers are checked for completeness.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from bench.catchup import DB, MAX_BODY, _count, _raw
from bench.procs import Managed, clean_env, cpu_seconds
from bridge.archive.spool import Spool
from bridge.config import build_settings, load_options
from bridge.importer import Importer, open_recording, plan
from bridge.observe.metrics import Metrics
from bridge.sinks.influxdb import InfluxSink
from bridge.sources.simulator import EegSignal, SimulatorSettings, channel_labels

CHANNELS, RATE = 64, 1000
TARGET_RATIO = 0.80
TARGET_REALTIME = 200.0
BLOCK_SEC = 10


def make_edf(path: Path, minutes: float) -> dict[str, Any]:
    import pyedflib  # noqa: PLC0415

    signal = EegSignal(SimulatorSettings(channels=CHANNELS, rate=RATE, seed=7))
    writer = pyedflib.EdfWriter(str(path), CHANNELS, file_type=pyedflib.FILETYPE_EDFPLUS)
    writer.setSignalHeaders([
        {"label": label, "dimension": "uV", "sample_frequency": RATE, "physical_min": -1000.0, "physical_max": 1000.0,
         "digital_min": -32768, "digital_max": 32767, "transducer": "", "prefilter": ""}
        for label in channel_labels(CHANNELS)
    ])
    blocks = int(round(minutes * 60 / BLOCK_SEC))
    for _ in range(blocks):
        block = np.clip(signal.block(BLOCK_SEC * RATE).astype(np.float64), -1000, 1000)
        writer.writeSamples([np.ascontiguousarray(block[:, c]) for c in range(CHANNELS)])
    writer.close()
    return {"seconds": blocks * BLOCK_SEC, "bytes": path.stat().st_size}


def _settings(extra: dict[str, str]) -> Any:
    return build_settings(load_options({"INFLUXDB_API": "v1", "INFLUXDB_BUCKET": DB, "GRAFANA_URL": "", **extra}),
                          check_hosts=False)


def spectra_alone(path: Path) -> dict[str, Any]:
    """CPU seconds of this process (reading is pyedflib's C code in this thread), as section 2
    measures the engine: other load on the shared machine inflates wall time, not this figure."""
    settings = _settings({})
    t0, c0 = time.perf_counter(), time.process_time()
    recording = open_recording(path, settings, None)
    planned = plan(recording, settings)
    engine_s, frames = 0.0, 0
    try:
        for p in planned:
            for starts, samples, times in p.stream.blocks():
                e0 = time.process_time()
                if starts:
                    p.engine.reset()
                frames += len(p.engine.push(samples, times))
                engine_s += time.process_time() - e0
    finally:
        recording.close()
    cpu, wall = time.process_time() - c0, time.perf_counter() - t0
    seconds = sum(p.stream.duration for p in planned)
    return {"frames": frames, "cpu_s": cpu, "wall_s": wall, "engine_cpu_s": engine_s, "realtime_x": seconds / cpu,
            "wall_realtime_x": seconds / wall, "engine_realtime_x": seconds / engine_s, "target": TARGET_REALTIME,
            "pass": seconds / cpu >= TARGET_REALTIME}


def build_bodies(path: Path, spool_dir: Path) -> dict[str, Any]:
    """What the import uploads, made by the importer itself into a spool nobody drains."""
    settings = _settings({"SPOOL_DIR": str(spool_dir), "INFLUXDB_URL": ""})
    metrics = Metrics()
    logging.getLogger("bridge.sinks.influxdb").setLevel(logging.ERROR)  # "frames stay in the spool": the point here
    sink = InfluxSink(settings.influxdb, metrics, Spool(spool_dir, 1 << 40), writer=None)
    sink.start()
    recording = open_recording(path, settings, None)
    planned = plan(recording, settings)
    importer = Importer(settings, metrics, sink, threading.Event())
    try:
        importer.import_file(recording, planned)
    finally:
        recording.close()
        sink.close(0.0)
    values = sum(p.frames * len(p.engine.layout.channels) * p.engine.layout.frequencies.size for p in planned)
    return {"frames": importer.frames_offered, "values": values, "bytes": sink.spool.pending_bytes,
            "segments": len(list(spool_dir.glob("*.lp")))}


class _Bodies:
    """Segments grouped like ``Spool.take(MAX_BODY)``, read one body at a time (GBs stay on disk)."""

    def __init__(self, directory: Path) -> None:
        segments = sorted(directory.glob("*.lp"))
        self._groups: list[list[Path]] = []
        size = 0
        for segment in segments:
            length = segment.stat().st_size
            if not self._groups or size + length > MAX_BODY:
                self._groups.append([])
                size = 0
            self._groups[-1].append(segment)
            size += length

    def __len__(self) -> int:
        return len(self._groups)

    def __iter__(self) -> Iterator[bytes]:
        for group in self._groups:
            yield b"".join(p.read_bytes() for p in group)


def _import(path: Path, workdir: Path) -> dict[str, Any]:
    from tests.influxdb_server import InfluxDBServer  # noqa: PLC0415

    server = InfluxDBServer().start()
    proc: Managed | None = None
    try:
        server.create_database(DB)
        env = clean_env({"SPOOL_DIR": str(workdir / "import-spool"), "INFLUXDB_URL": server.url, "INFLUXDB_API": "v1",
                         "INFLUXDB_BUCKET": DB, "GRAFANA_URL": ""})
        cpu0 = cpu_seconds(server.pid)
        started = time.perf_counter()
        proc = Managed.python("import", ["bridge", "import", str(path)], env, workdir)
        import_cpu = 0.0
        while proc.alive():
            import_cpu = cpu_seconds(proc.pid)
            time.sleep(0.05)
        seconds = time.perf_counter() - started
        code = proc.stop()
        if code != 0:
            raise RuntimeError(f"import exited with {code}:\n{proc.output()[-2000:]}")
        return {"seconds": seconds, "influxd_cpu_pct": 100 * (cpu_seconds(server.pid) - cpu0) / seconds,
                "import_cpu_pct": 100 * import_cpu / seconds, "frames_stored": _count(server, "000.00"),
                "summary": proc.output().strip().splitlines()[-1]}
    finally:
        if proc is not None:
            proc.stop()
        server.close()


def run(quick: bool = False, minutes: float | None = None, log: Any = print) -> dict[str, Any]:
    minutes = minutes if minutes is not None else (1.0 if quick else 60.0)
    workdir = Path(tempfile.mkdtemp(prefix="eeg-bench-import-"))
    try:
        path = workdir / "session.edf"
        t0 = time.perf_counter()
        recording = make_edf(path, minutes)
        log(f"  file: {recording['seconds'] / 60:.0f} min, {recording['bytes'] / 1e6:.0f} MB in {time.perf_counter() - t0:.0f} s")
        spectra = spectra_alone(path)
        log(f"  spectra alone: {spectra['realtime_x']:.0f}x real time")
        spool_dir = workdir / "bodies"
        bodies = build_bodies(path, spool_dir)
        raw = _raw(_Bodies(spool_dir), "000.00")  # type: ignore[arg-type]
        shutil.rmtree(spool_dir, ignore_errors=True)
        log(f"  raw ingest: {raw['seconds']:.1f} s")
        imported = _import(path, workdir)
        log(f"  import: {imported['seconds']:.1f} s")
        for side in (raw, imported):
            side["frames_per_s"] = bodies["frames"] / side["seconds"]
            side["values_per_s"] = bodies["values"] / side["seconds"]
            side["mb_per_s"] = bodies["bytes"] / 1e6 / side["seconds"]
        ratio = raw["seconds"] / imported["seconds"]
        complete = raw["frames_stored"] == bodies["frames"] == imported["frames_stored"]
        return {"minutes": minutes, "file": recording, "bodies": bodies, "spectra": spectra, "raw": raw,
                "import": imported, "ratio": ratio, "target": TARGET_RATIO, "complete": complete,
                "pass": bool(ratio >= TARGET_RATIO and complete)}
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    import json

    print(json.dumps(run(quick=True), indent=1, default=str))
