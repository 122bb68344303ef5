"""Section: the third sink. Bridge CPU with Grafana + InfluxDB + the live page (one page open and
reading), beside the same bridge with two sinks and the pull-only floor, in one run.

Goals (issue 10, point 3): three sinks cost no more CPU than two did before the page existed
(the two-sink figures of the committed full run, ``bench/results/latest.json``), and at
256 ch x 2 kHz the bridge stays within 5x the floor. The page's history (VIEW_HISTORY_SEC, 60 s)
is full by the end of each run (warm-up + window >= 60 s), so the peak RSS includes it.

Method: :mod:`bench.live` for each consumer; the page is :mod:`bench.pagereader` in its own
process, connected before the warm-up, so its CPU is not the bridge's.

    python -m bench.run --only threesinks --out threesinks
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from bench import live
from bench.procs import Managed, clean_env, free_port

SIZES = ((64, 1000.0), (256, 2000.0))
FLOOR_RATIO_GOAL = 5.0
RSS_GOAL_MB = 200.0
BEFORE = Path(__file__).resolve().parent / "results" / "latest.json"


def _two_sinks_before() -> dict[tuple[int, float], float]:
    """Bridge CPU with two sinks in the committed full run, by (channels, rate)."""
    try:
        results = json.loads(BEFORE.read_text())
    except (OSError, ValueError):
        return {}
    return {
        (r["scenario"]["channels"], float(r["scenario"]["rate"])): r["cpu_pct"]
        for r in results.get("cost") or []
        if r["scenario"]["kind"] == "bridge" and r.get("cpu_pct") is not None
    }


def _with_page(scenario: live.Scenario, log: Any) -> dict[str, Any]:
    port = free_port()
    workdir = Path(tempfile.mkdtemp(prefix="eeg-bench-page-"))
    page = Managed.python("page", ["bench.pagereader", "--port", str(port)], clean_env({}), workdir)
    try:
        scenario = dataclasses.replace(scenario, env=(("VIEW_PORT", str(port)),))
        result = live.run(scenario, log).to_dict()
        page.stop(timeout=30)  # the bridge has stopped: the reader has seen the close already
        lines = page.output().strip().splitlines()
        result["page"] = json.loads(lines[-1]) if lines and lines[-1].startswith("{") else {"error": page.output()[-500:]}
    finally:
        page.stop(timeout=10)
        shutil.rmtree(workdir, ignore_errors=True)
    return result


def history_footprint(channels: int = 256, bins: int = 129, fps: float = 2000.0 / 128, history_sec: float = 60.0) -> dict[str, Any]:
    """The page history's memory at 256 ch x 2 kHz (hop 128), measured alone: a live page sink in
    this process is fed 1.5x its history of frames; RSS before and after, and what it holds.

    The real-time runs' peak RSS also holds whatever the archive sink buffers while a busy InfluxDB
    lags, so the history's own share is measured here, where nothing else moves.
    """
    import time

    import numpy as np

    from bench.procs import status_kb
    from bridge.config import ViewSettings
    from bridge.frame import FrameLayout, SpectrumFrame
    from bridge.observe.metrics import Metrics
    from bridge.sinks.view import ViewSink

    sink = ViewSink(ViewSettings(port=0, host="127.0.0.1", history_sec=history_sec, token=None), Metrics().sink("view"))
    sink.start()
    layout = FrameLayout("bench", tuple(f"c{i}" for i in range(channels)), np.arange(bins, dtype=np.float64), 2000.0)
    rng = np.random.default_rng(0)
    values = (rng.standard_normal((8, channels, bins)) * 10).astype(np.float32)
    rss0 = status_kb(os.getpid(), "VmRSS")
    n = int(1.5 * history_sec * fps)
    t0 = time.time_ns()
    for i in range(n):
        t = t0 + int(i / fps * 1e9)
        sink.offer(SpectrumFrame(layout, i, t, t, values[i % 8].copy()))
        if i % 32 == 31:
            while sink.queue_depth():
                time.sleep(0.001)
    while sink.queue_depth():
        time.sleep(0.01)
    rss1 = status_kb(os.getpid(), "VmRSS")
    held = list(sink._history)  # noqa: SLF001 - what the history holds is the measurement
    sink.close(5.0)
    return {"frames_fed": n, "history_frames": len(held), "history_mb": sum(len(m) for _, m in held) / 1e6,
            "float32_equivalent_mb": len(held) * channels * bins * 4 / 1e6, "rss_growth_mb": (rss1 - rss0) / 1024}


def run(seconds: float, warmup: float, log: Any = print,
        floors: dict[tuple[int, float], dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """``floors``: the cost section's floor runs of the same run (``cost.floors``). Every figure of
    one run is a multiple of one floor measured one way (issue 17: a second, shorter floor
    measured here read 0.6 % where the cost section's read 1.4 % for the same stream); only a
    run without the cost section measures the floor here, the same way (same window)."""
    before = _two_sinks_before()
    out = []
    for channels, rate in SIZES:
        base = dict(channels=channels, rate=rate, nperseg=256, noverlap=128, duration_s=seconds, warmup_s=warmup)
        floor = (floors or {}).get((channels, rate))
        log(f"  threesinks: {channels}ch x {rate / 1000:g}kHz {'' if floor else 'floor, '}two sinks, three sinks ({seconds:g} s each)")
        if floor is None:
            floor = live.run(live.Scenario("floor", influx=False, **base), log).to_dict()
            floor["measured_in"] = "threesinks"
        else:
            floor = {**floor, "measured_in": "cost"}
        two = live.run(live.Scenario("bridge", **base), log).to_dict()
        three = _with_page(live.Scenario("bridge", **base), log)
        row: dict[str, Any] = {"channels": channels, "rate": rate, "floor": floor, "two": two, "three": three,
                               "two_before_cpu_pct": before.get((channels, rate))}
        f, t2, t3 = floor["cpu_pct"], two["cpu_pct"], three["cpu_pct"]
        row["three_over_floor"] = t3 / f if f and t3 else None
        row["two_over_floor"] = t2 / f if f and t2 else None
        row["checks"] = {
            "no_more_than_two_before": t3 is not None and row["two_before_cpu_pct"] is not None and t3 <= row["two_before_cpu_pct"],
            "rss": three["peak_rss_mb"] is not None and three["peak_rss_mb"] < RSS_GOAL_MB,
            "page_read_frames": bool(three.get("page", {}).get("frames")),
        }
        if (channels, rate) == (256, 2000.0):
            row["checks"]["within_5x_floor"] = row["three_over_floor"] is not None and row["three_over_floor"] <= FLOOR_RATIO_GOAL
        out.append(row)
    return out


def _spooled(result: dict[str, Any]) -> str:
    """Frames still in the spool when the measured window ended (the archive lagging behind)."""
    return _f(live.metric_sum(result.get("consumer", {}).get("metrics", {}), "eeg_bridge_spool_frames"), ".0f")


def _f(value: Any, fmt: str = ".1f") -> str:
    return "-" if value is None else format(value, fmt)


def render(rows: list[dict[str, Any]], history: dict[str, Any] | None = None) -> list[str]:
    out = [
        "## Three sinks: Grafana + InfluxDB + the live page (one page reading)", "",
        "CPU in % of one core over the same window, one after the other on the same stream shape "
        "(nperseg 256, hop 128). 'two sinks before' is the committed full run (bench/results/latest.json).", "",
        "| stream | floor | two sinks | three sinks | two sinks before | three / floor | peak RSS two / three | archive behind at stop, two / three | page frames (history) | drops (view) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        three = r["three"]
        page = three.get("page", {})
        drops = {k: v for k, v in three.get("consumer", {}).get("metrics", {}).items()
                 if "dropped" in live.parse_series(k)[0] and live.parse_series(k)[1].get("sink") == "view"}
        out.append(
            f"| {r['channels']} ch x {r['rate'] / 1000:g} kHz | {_f(r['floor']['cpu_pct'])} % | {_f(r['two']['cpu_pct'])} % "
            f"| **{_f(three['cpu_pct'])} %** | {_f(r['two_before_cpu_pct'])} % | {_f(r['three_over_floor'])}x "
            f"| {_f(r['two']['peak_rss_mb'], '.0f')} / {_f(three['peak_rss_mb'], '.0f')} MB "
            f"| {_spooled(r['two'])} / {_spooled(three)} frames "
            f"| {page.get('frames', '-')} ({page.get('history_frames', '-')}) "
            f"| {int(sum(drops.values()))} |"
        )
    busy = [x["others_cpu_pct"].get("rest_of_machine") for r in rows for x in (r["floor"], r["two"], r["three"])]
    busy = [b for b in busy if b is not None]
    if busy:
        out += ["", f"Other processes on the machine used on average {sum(busy) / len(busy):.0f} % of one core "
                f"(max {max(busy):.0f} %) out of {100 * (os.cpu_count() or 1)} % during these runs."]
    out.append("")
    for r in rows:
        checks = ", ".join(f"{k} {'pass' if v else 'FAIL'}" for k, v in r["checks"].items())
        out.append(f"- {r['channels']} ch x {r['rate'] / 1000:g} kHz: {checks}")
        for kind in ("floor", "two", "three"):
            if r[kind].get("error"):
                out.append(f"  - {kind}: {r[kind]['error'][:300]}")
    if history:
        out += [
            f"- The page history alone at 256 ch x 2 kHz (`history_footprint`, in-process, nothing else moving): "
            f"{history['history_frames']} frames = 60 s held in {history['history_mb']:.1f} MB "
            f"(float32 would be {history['float32_equivalent_mb']:.0f} MB); RSS grew {history['rss_growth_mb']:.1f} MB "
            f"while {history['frames_fed']} frames were fed.",
        ]
    out.append("")
    return out
