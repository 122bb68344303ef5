"""One real-time run: a real LSL outlet, the Grafana stand-in, optionally a real InfluxDB, and one
consumer process (the bridge, the floor or the straightforward pipeline), all on 127.0.0.1.

Shared by the latency and the cost sections. Everything is started here and stopped by PID in
``finally`` blocks. Measurement starts after a warm-up (imports, resolve, first frames) and
covers a fixed window:

* CPU = (utime + stime) growth of the consumer's PID over the window / window length;
* peak RSS = VmHWM of the consumer at the end of the window;
* latency of each frame received in the window = stand-in receive time (``time.time_ns()``
  after the body was read) - push time of the chunk holding the window's last sample. Frames are
  identified by their timestamp: window centre -> first sample index (see :mod:`bench.eeg`);
* lag growth = median latency in the last minute (or last third) minus the first.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal

import httpx
import numpy as np

from bench.eeg import Player, unique_name
from bench.procs import Managed, clean_env, cpu_seconds, free_port, status_kb, system_busy_seconds, wait_until
from bench.standin import ADMIN_TOKEN, TOKEN
from bridge.codecs.line_protocol import bin_field_names

Kind = Literal["bridge", "floor", "baseline"]
DB = "eeg"


@dataclass(frozen=True)
class Scenario:
    kind: Kind
    channels: int
    rate: float
    nperseg: int = 256
    noverlap: int = 128
    duration_s: float = 120.0
    warmup_s: float = 10.0
    influx: bool = True
    #: Extra environment for the bridge (experiments: GRAFANA_PUSH=ws, malloc tuning, ...).
    env: tuple[tuple[str, str], ...] = ()
    #: ``python -m`` arguments that start the bridge: a wrapper (``bench.memtrace``) runs the
    #: same ``bridge run`` under a profiler, so it is measured exactly where the benchmark runs it.
    bridge_module: tuple[str, ...] = ("bridge", "run")

    @property
    def hop(self) -> int:
        return self.nperseg - self.noverlap

    @property
    def label(self) -> str:
        extra = "".join(f" {k}={v}" for k, v in self.env)
        return f"{self.kind} {self.channels}ch x {self.rate / 1000:g}kHz hop {self.hop}{extra}"


@dataclass
class LiveResult:
    scenario: dict[str, Any]
    window_s: float = 0.0
    cpu_pct: float | None = None
    peak_rss_mb: float | None = None
    rss_end_mb: float | None = None
    frames_expected: float = 0.0
    frames_received: int = 0
    latency_ms: dict[str, float] = field(default_factory=dict)
    lag: dict[str, float] = field(default_factory=dict)
    id_residual_us: float | None = None
    others_cpu_pct: dict[str, float] = field(default_factory=dict)
    load_average: list[float] = field(default_factory=list)
    player_late_pushes: int = 0
    player_max_push_us: float = 0.0
    standin: dict[str, Any] = field(default_factory=dict)
    consumer: dict[str, Any] = field(default_factory=dict)
    archive: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class StandinProcess:
    """``python -m bench.standin`` in its own process; its receive log is read back as arrays."""

    def __init__(self, workdir: Path, extra_args: tuple[str, ...] = ()) -> None:
        self.record = workdir / "standin-record.txt"
        self.summary_path = workdir / "standin-summary.json"
        self.proc = Managed.python(
            "standin",
            ["bench.standin", "--port", "0", "--record", str(self.record), "--summary", str(self.summary_path),
             *extra_args],
            clean_env({}),
            workdir,
        )
        if not self.proc.wait_for_output("listening on", 30):
            raise RuntimeError(f"stand-in did not start:\n{self.proc.output()[-2000:]}")
        self.url = re.search(r"listening on (\S+)", self.proc.output()).group(1)  # type: ignore[union-attr]

    def received(self) -> np.ndarray:
        """(n, 4) int64: received_ns, frame_ns, body bytes, lines."""
        if not self.record.exists():
            return np.empty((0, 4), dtype=np.int64)
        lines = [ln for ln in self.record.read_text().splitlines() if ln.count(" ") == 3]
        if not lines:
            return np.empty((0, 4), dtype=np.int64)
        return np.array([[int(v) for v in ln.split()] for ln in lines], dtype=np.int64)

    def stop(self) -> dict[str, Any]:
        self.proc.stop()
        try:
            return json.loads(self.summary_path.read_text())
        except (OSError, ValueError):
            return {"error": "no summary"}


def _metrics(port: int) -> dict[str, float]:
    """The bridge's Prometheus text, flattened to name{labels} -> value."""
    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    except httpx.HTTPError:
        return {}
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            try:
                out[key] = float(value)
            except ValueError:
                pass
    return out


_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def parse_series(key: str) -> tuple[str, dict[str, str]]:
    """``name{a="x",b="y"}`` -> (name, labels). Matching on labels rather than on the exact
    label string keeps every reader working when the bridge adds a label (``stream="..."``)."""
    name, _, rest = key.partition("{")
    return name, dict(_LABEL.findall(rest))


def metric_sum(metrics: dict[str, float], name: str, **labels: str) -> float:
    """Sum of every series of ``name`` carrying at least ``labels`` (any other label, such as
    the stream, is summed over)."""
    total = 0.0
    for key, value in metrics.items():
        series, have = parse_series(key)
        if series == name and all(have.get(k) == v for k, v in labels.items()):
            total += value
    return total


def _pick(metrics: dict[str, float], prefix: str) -> dict[str, float]:
    return {k: v for k, v in metrics.items() if k.startswith(prefix) and v}


def latency_stats(player: Player, rec: np.ndarray, scenario: Scenario, t0: int, t1: int) -> tuple[dict[str, float], dict[str, float], float | None, int]:
    """Latency percentiles over [t0, t1], lag growth, identification residual, frames counted."""
    sel = rec[(rec[:, 0] >= t0) & (rec[:, 0] < t1)]
    if sel.size == 0:
        return {}, {}, None, 0
    received, frame_ns = sel[:, 0], sel[:, 1]
    first = player.sample_index_of_unix(frame_ns / 1e9 - scenario.nperseg / 2 / scenario.rate)
    first_i = np.rint(first).astype(np.int64)
    residual_us = float(np.max(np.abs(first - first_i)) / scenario.rate * 1e6)
    push_ns = player.sample_push_ns(first_i + scenario.nperseg - 1)
    ok = push_ns > 0
    lat = (received[ok] - push_ns[ok]) / 1e6
    stats = {
        "p50": float(np.percentile(lat, 50)),
        "p90": float(np.percentile(lat, 90)),
        "p99": float(np.percentile(lat, 99)),
        "max": float(np.max(lat)),
        "mean": float(np.mean(lat)),
        "min": float(np.min(lat)),
    }
    # Lag growth: first vs last minute (thirds for runs shorter than 3 minutes).
    span = (t1 - t0) / 1e9
    edge = 60.0 if span >= 180 else span / 3
    rel = (received[ok] - t0) / 1e9
    head, tail = lat[rel < edge], lat[rel >= span - edge]
    lag: dict[str, float] = {"edge_s": edge}
    if head.size and tail.size:
        lag["first_p50"] = float(np.median(head))
        lag["last_p50"] = float(np.median(tail))
        lag["growth_ms"] = lag["last_p50"] - lag["first_p50"]
        slope = np.polyfit(rel, lat, 1)[0] if lat.size > 2 else 0.0
        lag["slope_ms_per_min"] = float(slope * 60)
    return stats, lag, residual_us, int(ok.sum())


def final_health(server: Any, db: str) -> dict[str, Any]:
    """The bridge's last ``bridge_health`` point: its ledger as it stopped, after its last frame."""
    body = server.query('SELECT * FROM "bridge_health" ORDER BY time DESC LIMIT 1', db=db)
    (series,) = body["results"][0]["series"]
    return dict(zip(series["columns"], series["values"][0]))


def final_frames_computed(server: Any, db: str) -> int | None:
    try:
        return int(final_health(server, db)["frames_computed"])
    except Exception:  # noqa: BLE001 - a report field, not a reason to abort
        return None


def _archive_count(server: Any, scenario: Scenario) -> int | None:
    key = bin_field_names(np.fft.rfftfreq(scenario.nperseg, 1.0 / scenario.rate))[0]
    try:
        body = server.query(f'SELECT count("{key}") FROM eeg_spectrum WHERE channel=\'Fp1\'', db=DB)
        series = body["results"][0].get("series")
        return int(series[0]["values"][0][1]) if series else 0
    except Exception:  # noqa: BLE001 - a report field, not a reason to abort
        return None


def _consumer(scenario: Scenario, name: str, standin: StandinProcess, influx_url: str, workdir: Path, metrics_port: int) -> Managed:
    if scenario.kind == "floor":
        return Managed.python("floor", ["bench.floor", "--stream", name, "--min-samples", str(scenario.hop)], clean_env({}), workdir)
    if scenario.kind == "baseline":
        args = [
            "bench.baseline", "--stream", name, "--nperseg", str(scenario.nperseg), "--noverlap", str(scenario.noverlap),
            "--grafana-url", standin.url, "--token", TOKEN, "--influx-url", influx_url, "--db", DB,
        ]
        return Managed.python("baseline", args, clean_env({}), workdir)
    env = clean_env({
        "LSL_STREAM_NAME": name,
        "GRAFANA_URL": standin.url,
        "GRAFANA_TOKEN": TOKEN,
        "INFLUXDB_URL": influx_url,
        "INFLUXDB_API": "v1",
        "INFLUXDB_BUCKET": DB,
        "SPOOL_DIR": str(workdir / "spool"),
        "SPECTRUM_NPERSEG": str(scenario.nperseg),
        "SPECTRUM_NOVERLAP": str(scenario.noverlap),
        "METRICS_PORT": str(metrics_port),
        **dict(scenario.env),
    })
    if env.get("GRAFANA_PUSH") == "ws":
        env["GRAFANA_TOKEN"] = ADMIN_TOKEN  # Grafana: WebSocket push needs the Admin role
    return Managed.python("bridge", list(scenario.bridge_module), env, workdir)


def run(scenario: Scenario, log: Any = print, during: Callable[[int, float], None] | None = None) -> LiveResult:
    """One scenario; ``during(pid, seconds)``, if given, runs in the measured window (e.g. a profiler)."""
    result = LiveResult(scenario={**asdict(scenario), "label": scenario.label})
    workdir = Path(tempfile.mkdtemp(prefix="eeg-bench-"))
    standin: StandinProcess | None = None
    server: Any = None
    player: Player | None = None
    consumer: Managed | None = None
    try:
        standin = StandinProcess(workdir)
        influx_url = ""
        if scenario.influx:
            from tests.influxdb_server import InfluxDBServer

            server = InfluxDBServer().start()
            server.create_database(DB)
            influx_url = server.url
        name = unique_name(scenario.kind)
        player = Player(name, scenario.channels, scenario.rate).start()
        metrics_port = free_port()
        consumer = _consumer(scenario, name, standin, influx_url, workdir, metrics_port)
        # Ready = frames arrive at the stand-in (the floor: samples are being pulled).
        if scenario.kind == "floor":
            ready = consumer.wait_for_output("pulling", 90)
        else:
            ready = wait_until(lambda: standin.received().shape[0] > 0 or not consumer.alive(), 90, 0.2)
            ready = ready and consumer.alive()
        if not ready:
            raise RuntimeError(f"{scenario.kind} never got going:\n{consumer.output()[-3000:]}")
        time.sleep(scenario.warmup_s)
        others = {"standin": standin.proc.pid, "bench": os.getpid(), **({"influxd": server.pid} if server else {})}
        cpu_others0 = {k: cpu_seconds(pid) for k, pid in others.items()}
        t0, cpu0, busy0 = time.time_ns(), cpu_seconds(consumer.pid), system_busy_seconds()
        deadline = time.monotonic() + scenario.duration_s
        if during is not None:
            during(consumer.pid, scenario.duration_s)
        while time.monotonic() < deadline and consumer.alive():
            time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
        if not consumer.alive():
            raise RuntimeError(f"{scenario.kind} exited during the run:\n{consumer.output()[-3000:]}")
        t1, cpu1, busy1 = time.time_ns(), cpu_seconds(consumer.pid), system_busy_seconds()
        window = (t1 - t0) / 1e9
        result.window_s = window
        result.cpu_pct = 100.0 * (cpu1 - cpu0) / window
        result.others_cpu_pct = {k: 100.0 * (cpu_seconds(pid) - cpu_others0[k]) / window for k, pid in others.items()}
        # Everything else on the machine (other engineers' tests...), in % of one core.
        ours = result.cpu_pct + sum(result.others_cpu_pct.values())
        result.others_cpu_pct["rest_of_machine"] = max(0.0, 100.0 * (busy1 - busy0) / window - ours)
        result.peak_rss_mb = status_kb(consumer.pid, "VmHWM") / 1024
        result.rss_end_mb = status_kb(consumer.pid, "VmRSS") / 1024
        result.load_average = [round(x, 2) for x in os.getloadavg()]
        result.player_late_pushes = player.late_pushes
        result.player_max_push_us = player.max_push_ns / 1e3
        if scenario.kind == "bridge":
            m = _metrics(metrics_port)
            result.consumer["metrics"] = {
                **_pick(m, "eeg_bridge_frames_computed_total"),
                **_pick(m, "eeg_bridge_sink_frames_sent_total"),
                **_pick(m, "eeg_bridge_sink_frames_dropped_total"),
                **_pick(m, "eeg_bridge_spool_frames"),
                **_pick(m, "eeg_bridge_gaps_total"),
                **_pick(m, "eeg_bridge_samples_missing_total"),
            }
        if scenario.kind != "floor":
            result.frames_expected = window * scenario.rate / scenario.hop
            time.sleep(0.5)  # the last receive lines reach the log file
            rec = standin.received()
            stats, lag, residual, counted = latency_stats(player, rec, scenario, t0, t1)
            result.latency_ms, result.lag, result.id_residual_us, result.frames_received = stats, lag, residual, counted
            result.consumer["bytes_per_push"] = float(np.median(rec[:, 2])) if rec.size else 0.0
        # Stop the consumer (it flushes its archive) before the outlet, so it sees no stream loss.
        code = consumer.stop(timeout=60)
        result.consumer["exit_code"] = code
        tail = consumer.output().strip().splitlines()
        if scenario.kind == "baseline" and tail and tail[-1].startswith("{"):
            result.consumer["summary"] = json.loads(tail[-1])
        if server is not None and scenario.kind != "floor":
            result.archive = {"frames_archived": _archive_count(server, scenario)}
            if scenario.kind == "bridge":
                # The same moment as the rows: the bridge stopped cleanly, its spool uploaded, and
                # its last bridge_health point (written after its last frame) holds the final count.
                result.archive["frames_computed"] = final_frames_computed(server, DB)
    except Exception as exc:  # noqa: BLE001 - one failed scenario must not sink the whole report
        result.error = f"{type(exc).__name__}: {exc}"
        log(f"  ! {scenario.label}: {result.error[:2000]}")
    finally:
        if consumer is not None:
            consumer.stop(timeout=30)
        if player is not None:
            player.stop()
        if standin is not None:
            result.standin = standin.stop()
        if server is not None:
            server.close()
        shutil.rmtree(workdir, ignore_errors=True)
    return result
