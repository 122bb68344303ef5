"""Section "derived": what band power and channel quality add to the bridge's CPU.

Goal (issue 13): at 256 ch x 2 kHz the extra CPU is under 10 % of the bridge's own CPU without
them. Method: the same simulated EEG (``bench.eeg``) in the same irregular 20-50 sample chunks
goes through the work the bridge does per frame, once with ``DERIVED_EVERY_FRAMES=0`` (off)
and once with the defaults (five bands, quality, about 4 products a second):

* ``StftEngine.push`` (spectra; with derived on also the bands and quality);
* the archive encoder (wide spectra) and, when on, ``DerivedEncoder`` (eeg_bands, eeg_quality);
* the Grafana Live encoder (spectra) and, when on, the live sink's band/quality lines.

CPU is ``time.process_time`` of this process, median of the repeats, per second of EEG. The
shared value words (encode once) are cleared before each run so both see the same caching.
The in-process work leaves out what does not change with bands (LSL pulls, HTTP, spool
writes), so the judged ratio divides the extra by the *live* bridge's CPU without them: a real
bridge process (``bench.live``, simulated LSL stream, Grafana stand-in, real InfluxDB) run with
``DERIVED_EVERY_FRAMES=0``; the same live run with the defaults is reported beside it (a direct
difference of two live runs on a shared machine is noisier than the extra itself).
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import numpy as np

from bench import live
from bench.eeg import eeg_block
from bench.spectra import _chunks
from bridge.codecs import line_protocol as lp
from bridge.dsp.bands import DEFAULT_BANDS, parse_bands
from bridge.dsp.derived import DerivedSettings
from bridge.dsp.quality import QualitySettings
from bridge.dsp.spectrum import StftEngine, StftParams
from bridge.frame import channel_names
from bridge.sinks.grafana_live import _OverviewLines

CASES = ((64, 1000.0), (256, 2000.0))
TARGET_PCT = 10.0
NPERSEG, HOP = 256, 128


def _once(data: np.ndarray, times: np.ndarray, fs: float, derived: DerivedSettings | None) -> dict[str, float]:
    lp.SHARED_WORDS.clear()
    engine = StftEngine(
        stream="bench", channels=channel_names([f"c{i}" for i in range(data.shape[1])]), srate=fs,
        params=StftParams(nperseg=NPERSEG, noverlap=NPERSEG - HOP), max_chunk=max(64, int(fs)), derived=derived,
        rails=None,  # a float32 stream without QUALITY_RAIL, as in the live runs
    )
    archive, live = lp.LineProtocolEncoder(), lp.LineProtocolEncoder(measurement=None, tag_channel=False, tag_stream=False)
    tables = lp.DerivedEncoder()
    overview: _OverviewLines | None = None
    spent = {"engine": 0.0, "live": 0.0, "archive": 0.0}
    batch: list[Any] = []
    for a, b in _chunks(data.shape[0]):
        t0 = time.process_time()
        frames = engine.push(data[a:b], times[a:b])
        t1 = time.process_time()
        for frame in frames:  # the live sink: each frame as it comes
            live.encode(frame)
            if derived is not None:
                overview = overview if overview is not None and overview.layout is frame.layout else _OverviewLines(frame.layout)
                overview.encode(frame)
        t2 = time.process_time()
        batch.extend(frames)
        if len(batch) >= 10:  # the archive: BATCH_SIZE frames at a time
            archive.encode_many(batch)
            if derived is not None:
                tables.encode_many(batch)
            batch = []
        t3 = time.process_time()
        spent["engine"] += t1 - t0
        spent["live"] += t2 - t1
        spent["archive"] += t3 - t2
    return spent


def _live_cpu(channels: int, fs: float, env: tuple[tuple[str, str], ...], seconds: float, warmup: float, log: Any) -> dict[str, Any]:
    scenario = live.Scenario("bridge", channels, fs, NPERSEG, NPERSEG - HOP, duration_s=seconds, warmup_s=warmup, env=env)
    log(f"  derived: live {scenario.label}, {seconds:g} s")
    result = live.run(scenario, log)
    metrics = (result.consumer or {}).get("metrics", {})
    return {"cpu_pct": result.cpu_pct, "peak_rss_mb": result.peak_rss_mb, "error": result.error,
            "rest_of_machine_pct": result.others_cpu_pct.get("rest_of_machine"),
            "live_frames": [result.frames_received, round(result.frames_expected)],
            "grafana_stale": live.metric_sum(metrics, "eeg_bridge_sink_frames_dropped_total", reason="stale", sink="grafana")}


def run(repeats: int = 5, seconds: float = 20.0, log: Any = print, live_seconds: float = 60.0, warmup: float = 10.0) -> list[dict[str, Any]]:
    # as the defaults run: bands that hold no bin at this resolution are left out (docs/data-model.md)
    defaults = DerivedSettings(parse_bands(DEFAULT_BANDS), None, QualitySettings(), strict=False)
    every1 = DerivedSettings(parse_bands(DEFAULT_BANDS), 1, QualitySettings(), strict=False)
    out = []
    for channels, fs in CASES:
        data = eeg_block(channels, fs, seconds).astype(np.float64)
        times = 1.7e9 + np.arange(data.shape[0]) / fs
        log(f"  derived: {channels} ch x {fs / 1000:g} kHz, {seconds:g} s of EEG x {repeats}")
        on = defaults.for_frame_rate(fs / HOP)
        runs: dict[str, list[dict[str, float]]] = {"off": [], "on": [], "every1": []}
        for _ in range(repeats):  # interleaved, so a burst of other load hits both alike
            runs["off"].append(_once(data, times, fs, None))
            runs["on"].append(_once(data, times, fs, on))
            runs["every1"].append(_once(data, times, fs, every1))
        row: dict[str, Any] = {"channels": channels, "fs": fs, "seconds_of_eeg": seconds, "repeats": repeats,
                               "default_every": on.every}
        for mode, results in runs.items():
            for part in ("engine", "live", "archive"):
                row[f"{mode}_{part}_pct"] = 100 * statistics.median(r[part] for r in results) / seconds
            row[f"{mode}_total_pct"] = 100 * statistics.median(sum(r.values()) for r in results) / seconds
        row["extra_pct_of_core"] = row["on_total_pct"] - row["off_total_pct"]
        row["extra_pct_of_work"] = 100 * row["extra_pct_of_core"] / row["off_total_pct"]
        row["every1_extra_pct_of_core"] = row["every1_total_pct"] - row["off_total_pct"]
        if live_seconds > 0:
            row["live_off"] = _live_cpu(channels, fs, (("DERIVED_EVERY_FRAMES", "0"),), live_seconds, warmup, log)
            row["live_on"] = _live_cpu(channels, fs, (), live_seconds, warmup, log)
            bridge = row["live_off"]["cpu_pct"]
            row["extra_pct_of_bridge"] = 100 * row["extra_pct_of_core"] / bridge if bridge else None
            row["every1_extra_pct_of_bridge"] = 100 * row["every1_extra_pct_of_core"] / bridge if bridge else None
        row["pass"] = row.get("extra_pct_of_bridge") is not None and row["extra_pct_of_bridge"] < TARGET_PCT
        out.append(row)
        log(f"    off {row['off_total_pct']:.2f} %, on {row['on_total_pct']:.2f} % of one core: "
            f"+{row['extra_pct_of_core']:.2f} % of a core; of the live bridge: {row.get('extra_pct_of_bridge')}")
    return out


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        "", "## Band power and quality: extra CPU", "",
        "Same simulated EEG through the engine and both encoders with band power + quality off "
        "(`DERIVED_EVERY_FRAMES=0`) and on (defaults: 5 bands, quality, about 4 products a second: every Nth frame as shown); nperseg 256, hop 128; "
        "`time.process_time`, median of the repeats, in % of one core per second of EEG (`bench/derived.py`). "
        "Judged: the extra over the live bridge's CPU without them (a real bridge process, `DERIVED_EVERY_FRAMES=0`, "
        "simulated stream, Grafana stand-in, real InfluxDB; the live run with the defaults beside it). "
        f"Target: extra < {TARGET_PCT:g} % of the bridge's own CPU.", "",
        "| stream | engine off / on | live encode off / on | archive encode off / on | total off / on | extra | live bridge off / on (live frames received/expected) | extra / live bridge off | target | | extra with `DERIVED_EVERY_FRAMES=1` (every frame) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        off, on = r.get("live_off", {}).get("cpu_pct"), r.get("live_on", {}).get("cpu_pct")
        ratio = r.get("extra_pct_of_bridge")
        lines.append(
            f"| {r['channels']} ch x {r['fs'] / 1000:g} kHz (every {r['default_every']}) "
            f"| {r['off_engine_pct']:.2f} / {r['on_engine_pct']:.2f} % "
            f"| {r['off_live_pct']:.2f} / {r['on_live_pct']:.2f} % "
            f"| {r['off_archive_pct']:.2f} / {r['on_archive_pct']:.2f} % "
            f"| {r['off_total_pct']:.2f} / {r['on_total_pct']:.2f} % "
            f"| +{r['extra_pct_of_core']:.2f} % of a core (+{r['extra_pct_of_work']:.0f} % of this work) "
            f"| {_pct(off)} ({_frames(r.get('live_off'))}) / {_pct(on)} ({_frames(r.get('live_on'))}) | {_pct(ratio)} "
            f"| < {TARGET_PCT:g} % | **{'pass' if r['pass'] else 'FAIL'}** "
            f"| +{r['every1_extra_pct_of_core']:.2f} % of a core = {_pct(r.get('every1_extra_pct_of_bridge'))} of the bridge |"
        )
    return "\n".join(lines) + "\n"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.1f} %"


def _frames(live_run: dict[str, Any] | None) -> str:
    if not live_run or not live_run.get("live_frames"):
        return "-"
    received, expected = live_run["live_frames"]
    return f"{received}/{expected}"
