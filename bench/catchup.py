"""Section 5: how fast a spool backlog drains after an outage, against what the server can take.

The backlog is built the way the bridge builds it: simulated EEG -> ``StftEngine`` -> the
InfluxDB sink's own encoder (wide schema, tags channel + stream_name) -> ``BATCH_SIZE`` frames
per ``Spool.append`` segment. Then:

* **raw**: the same segments, grouped into bodies exactly as the uploader groups them
  (``Spool.take``: oldest first, up to ``INFLUXDB_MAX_BODY_BYTES``), POSTed by this process with
  httpx on one keep-alive connection, back to back: what the server itself can ingest.
* **replay**: ``python -m bridge replay`` on the spool directory, timed from its "replaying"
  log line to its exit (process start-up reported separately).

Each side gets a fresh InfluxDB 1.x (same binary, empty data directory), so neither inherits
the other's series index or compactions. Both are checked for completeness afterwards.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np


from bench.procs import Managed, clean_env, cpu_seconds
from bridge.frame import channel_names
from bridge.codecs.line_protocol import LineProtocolEncoder, bin_field_names
from bridge.sources.simulator import EegSignal, SimulatorSettings, channel_labels
from bridge.dsp.spectrum import StftEngine, StftParams
from bridge.archive.spool import Destination, Spool

DB = "eeg"
STREAM = "BenchEEG"
BATCH_SIZE = 10  # the bridge's default BATCH_SIZE
MAX_BODY = 5_000_000  # the bridge's default INFLUXDB_MAX_BODY_BYTES
TARGET_RATIO = 0.80


def build_spool(directory: Path, minutes: float, channels: int = 64, rate: float = 1000.0, nperseg: int = 256, noverlap: int = 128) -> dict[str, Any]:
    """Fill ``directory`` with ``minutes`` of frames, as the archive sink would have spooled them."""
    # Recorded as with INFLUXDB_URL empty: replay sends it to the server it is given, database DB.
    spool = Spool(directory, max_bytes=1 << 40, destination=Destination(url="", api="v1", org="", bucket=DB))
    signal = EegSignal(SimulatorSettings(channels=channels, rate=rate, seed=7))
    engine = StftEngine(
        stream=STREAM, channels=channel_names(channel_labels(channels)), srate=rate,
        params=StftParams(nperseg=nperseg, noverlap=noverlap), max_chunk=int(rate),
    )
    encoder = LineProtocolEncoder(schema="wide", measurement="eeg_spectrum", tag_channel=True, tag_stream=True)
    start = time.time() - minutes * 60 - 60  # a recent past, as after an outage
    total = int(minutes * 60 * rate)
    pending: list[Any] = []
    frames = segments = 0
    block = int(rate)  # one second per push
    for offset in range(0, total, block):
        n = min(block, total - offset)
        times = start + (offset + np.arange(n)) / rate
        pending.extend(engine.push(signal.block(n), times))
        while len(pending) >= BATCH_SIZE:
            batch, pending = pending[:BATCH_SIZE], pending[BATCH_SIZE:]
            spool.append(encoder.encode_many(batch).body, len(batch))
            frames += len(batch)
            segments += 1
    if pending:
        spool.append(encoder.encode_many(pending).body, len(pending))
        frames += len(pending)
        segments += 1
    spool.unlock()  # replay opens it next
    return {
        "frames": frames, "segments": segments, "bytes": spool.pending_bytes,
        "values": frames * channels * (nperseg // 2 + 1),
        "first_field": bin_field_names(engine.layout.frequencies)[0],
    }


def _bodies(directory: Path) -> list[bytes]:
    """Segments grouped like ``Spool.take(MAX_BODY)`` groups them for one upload."""
    spool = Spool(directory, max_bytes=1 << 40)
    bodies, current, size = [], [], 0
    for segment in spool._segments:  # read-only look at the queue, in upload order
        if current and size + segment.size > MAX_BODY:
            bodies.append(b"".join(current))
            current, size = [], 0
        current.append(segment.read())
        size += segment.size
    if current:
        bodies.append(b"".join(current))
    spool.unlock()
    return bodies


def _count(server: Any, field: str) -> int:
    body = server.query(f'SELECT count("{field}") FROM eeg_spectrum WHERE channel=\'Fp1\'', db=DB)
    series = body["results"][0].get("series")
    return int(series[0]["values"][0][1]) if series else 0


def _raw(bodies: list[bytes], field: str) -> dict[str, Any]:
    from tests.influxdb_server import InfluxDBServer

    server = InfluxDBServer().start()
    try:
        server.create_database(DB)
        cpu0 = cpu_seconds(server.pid)
        with httpx.Client(timeout=120.0) as client:
            url, params = f"{server.url}/write", {"db": DB, "precision": "ns"}
            t0 = time.perf_counter()
            for body in bodies:
                response = client.post(url, params=params, content=body)
                if response.status_code != 204:
                    raise RuntimeError(f"raw write failed: {response.status_code} {response.text[:300]}")
            seconds = time.perf_counter() - t0
        return {"seconds": seconds, "influxd_cpu_pct": 100 * (cpu_seconds(server.pid) - cpu0) / seconds,
                "frames_stored": _count(server, field), "requests": len(bodies)}
    finally:
        server.close()


def _replay(spool_dir: Path, workdir: Path, field: str) -> dict[str, Any]:
    from tests.influxdb_server import InfluxDBServer

    server = InfluxDBServer().start()
    proc: Managed | None = None
    try:
        server.create_database(DB)
        env = clean_env({
            "SPOOL_DIR": str(spool_dir), "INFLUXDB_URL": server.url, "INFLUXDB_API": "v1", "INFLUXDB_BUCKET": DB,
        })
        cpu0 = cpu_seconds(server.pid)
        spawned = time.perf_counter()
        proc = Managed.python("replay", ["bridge", "replay"], env, workdir)
        if not proc.wait_for_output("replaying", 120):
            raise RuntimeError(f"replay did not start:\n{proc.output()[-2000:]}")
        started = time.perf_counter()
        replay_cpu = 0.0
        while proc.alive():
            replay_cpu = cpu_seconds(proc.pid)  # last reading before exit
            time.sleep(0.02)
        ended = time.perf_counter()
        code = proc.stop()
        if code != 0:
            raise RuntimeError(f"replay exited with {code}:\n{proc.output()[-2000:]}")
        seconds = ended - started
        return {"seconds": seconds, "startup_s": started - spawned, "with_startup_s": ended - spawned,
                "influxd_cpu_pct": 100 * (cpu_seconds(server.pid) - cpu0) / (ended - spawned),
                "replay_cpu_pct": 100 * replay_cpu / (ended - spawned),
                "frames_stored": _count(server, field)}
    finally:
        if proc is not None:
            proc.stop()
        server.close()


def run(quick: bool = False, minutes: float | None = None, log: Any = print) -> dict[str, Any]:
    minutes = minutes if minutes is not None else (1.0 if quick else 10.0)
    workdir = Path(tempfile.mkdtemp(prefix="eeg-bench-catchup-"))
    try:
        spool_dir = workdir / "spool"
        t0 = time.perf_counter()
        backlog = build_spool(spool_dir, minutes)
        log(f"  spool: {backlog['frames']} frames, {backlog['bytes'] / 1e6:.0f} MB in {time.perf_counter() - t0:.0f} s")
        bodies = _bodies(spool_dir)
        raw = _raw(bodies, backlog["first_field"])
        del bodies
        replay = _replay(spool_dir, workdir, backlog["first_field"])
        for side in (raw, replay):
            side["frames_per_s"] = backlog["frames"] / side["seconds"]
            side["values_per_s"] = backlog["values"] / side["seconds"]
            side["mb_per_s"] = backlog["bytes"] / 1e6 / side["seconds"]
        ratio = raw["seconds"] / replay["seconds"]
        return {
            "minutes": minutes, "backlog": backlog, "raw": raw, "replay": replay,
            "ratio": ratio, "target": TARGET_RATIO,
            "complete": raw["frames_stored"] == backlog["frames"] == replay["frames_stored"],
            "pass": bool(ratio >= TARGET_RATIO and replay["frames_stored"] == backlog["frames"]),
        }
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    import json

    print(json.dumps(run(quick=True), indent=1))
