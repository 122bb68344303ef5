"""Markdown for the benchmark results: a summary of every target first, then one table per section."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ENCODE_TARGETS = {"wide": 10.0, "long": 20.0}
#: Spectra are judged on identity only (bench/spectra.py): < 0.001 dB, the written resolution.
IDENTICAL_DB = 1e-3
#: Issue 17: peak RSS with the live page open (three sinks) at 256 ch x 2 kHz.
THREE_SINKS_RSS_MB = 200.0


def _ok(flag: bool | None) -> str:
    return "n/a" if flag is None else ("**pass**" if flag else "**FAIL**")


def _f(value: Any, fmt: str = ".1f", none: str = "-") -> str:
    return none if value is None else format(value, fmt)


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(row) + " |" for row in rows]
    return out + [""]


# ---- summary ---------------------------------------------------------------------------------------
def summary_rows(results: dict[str, Any]) -> list[list[str]]:
    rows: list[list[str]] = []
    for r in results.get("encoding") or []:
        if r["serializer"] == "ours":
            target = ENCODE_TARGETS[r["schema"]]
            rows.append([
                f"Encoding {r['channels']}x{r['bins']} {r['schema']}: speed vs influxdb-client Point",
                f"{r['speedup_vs_point']:.1f}x", f">= {target:g}x", _ok(r["speedup_vs_point"] >= target),
            ])
    for r in results.get("spectra") or []:
        dc = r.get("dc_offset", {}).get("max_abs_db_diff")
        identical = r["same_frame_count"] and r["max_abs_db_diff"] < IDENTICAL_DB and (dc is None or dc < IDENTICAL_DB)
        rows.append([
            f"Spectra {r['channels']}ch {r['fs'] / 1000:g}kHz nperseg {r['nperseg']} hop {r['hop']}: StftEngine vs per-hop spectrogram",
            f"max abs diff {r['max_abs_db_diff']:.3g} dB" + (f" (with DC offsets {dc:.3g} dB)" if dc is not None else "")
            + f"; {r['speedup']:.1f}x the speed, ceiling {r['best_identical_speedup']:.1f}x",
            "identical (< 0.001 dB); speed: reported against the ceiling of scipy's arithmetic", _ok(identical),
        ])
    for r in results.get("latency") or []:
        p99 = r["latency_ms"].get("p99")
        rows.append([
            f"Latency p99, 64ch 1kHz hop {r['scenario']['nperseg'] - r['scenario']['noverlap']} (live path)",
            f"{_f(p99)} ms", "<= 20 ms", _ok(r["pass"]),
        ])
    by = _cost_by(results)
    for r in results.get("cost") or []:
        j = r.get("judgement")
        if not j:
            continue
        s = r["scenario"]
        key = (s["channels"], float(s["rate"]))
        name = f"{s['channels']}ch {s['rate'] / 1000:g}kHz"
        c = j["checks"]
        rows.append(_cpu_row(name, r, by.get((*key, "floor")), by.get((*key, "baseline")), j.get("floor_multiple_goal"), c.get("cpu")))
        rss_target = j["rss_target_mb"]
        rows.append([f"Bridge peak RSS, {name}, both sinks", f"{_f(r['peak_rss_mb'], '.0f')} MB", f"< {rss_target:g} MB", _ok(c["rss"])])
        rows.append([
            f"Lag growth, {name} (median latency end - start)", f"{_f(r['lag'].get('growth_ms'), '+.1f')} ms",
            f"<= {j['lag_limit_ms']:g} ms", _ok(c["lag"]),
        ])
        rows.append(_nothing_lost_row(name, r, c))
        three = next((t for t in results.get("threesinks") or [] if (t["channels"], float(t["rate"])) == key), None)
        if three is not None:
            page = three["three"]
            rows.append([f"Bridge peak RSS, {name}, both sinks + the live page (one page reading)",
                         f"{_f(page['peak_rss_mb'], '.0f')} MB", f"< {THREE_SINKS_RSS_MB:g} MB",
                         _ok(page["peak_rss_mb"] is not None and page["peak_rss_mb"] < THREE_SINKS_RSS_MB)])
    c = results.get("catchup")
    if c:
        rows.append([
            f"Catch-up: drain {c['minutes']:g} min backlog vs raw server ingest",
            f"{100 * c['ratio']:.0f} % ({c['replay']['seconds']:.1f} s vs {c['raw']['seconds']:.1f} s)",
            f">= {100 * c['target']:.0f} % (ceiling: the server's raw ingest, 100 %)", _ok(c["pass"]),
        ])
    i = results.get("import")
    if i:
        rows.append([
            f"Import: {i['minutes']:g} min 64 ch x 1 kHz EDF into InfluxDB vs raw server ingest",
            f"{100 * i['ratio']:.0f} % ({i['import']['seconds']:.1f} s vs {i['raw']['seconds']:.1f} s)",
            f">= {100 * i['target']:.0f} % (ceiling: the server's raw ingest, 100 %)", _ok(i["pass"]),
        ])
        rows.append([
            "Import: spectra alone (file read + engine, per CPU second)", f"{i['spectra']['realtime_x']:.0f}x real time",
            f">= {i['spectra']['target']:.0f}x", _ok(i["spectra"]["pass"]),
        ])
    return rows


def _cost_targets(j: dict[str, Any]) -> str:
    if "cpu_target_pct" in j:  # results from before the floor multiple (issue 6's fixed % of one core)
        cpu = f"CPU < {j['cpu_target_pct']:g} %"
    elif j.get("floor_multiple_goal") is not None:
        cpu = f"CPU <= {j['floor_multiple_goal']:g}x the floor"
    else:
        cpu = "CPU: no goal (x the floor shown)"
    return f"{cpu}, RSS < {j['rss_target_mb']:g} MB, lag <= {j['lag_limit_ms']:g} ms"


def _cost_by(results: dict[str, Any]) -> dict[tuple[int, float, str], dict[str, Any]]:
    return {(r["scenario"]["channels"], float(r["scenario"]["rate"]), r["scenario"]["kind"]): r for r in results.get("cost") or []}


def _times(cpu: float | None, floor: float | None) -> str:
    return "-" if not cpu or not floor else f"{cpu / floor:.1f}x"


def _cpu_row(name: str, bridge: dict[str, Any], floor: dict[str, Any] | None, baseline: dict[str, Any] | None,
             goal: float | None, ok: bool | None) -> list[str]:
    """CPU as a multiple of the one floor of the run, the obvious pipeline's beside it (issue 17)."""
    f = floor["cpu_pct"] if floor else None
    measured = f"{_times(bridge['cpu_pct'], f)} the floor ({_f(bridge['cpu_pct'])} % of one core; floor {_f(f)} %)"
    if baseline is not None:
        measured += f"; obvious pipeline {_times(baseline['cpu_pct'], f)} ({_f(baseline['cpu_pct'])} %)"
    target = f"<= {goal:g}x the floor" if goal is not None else "no goal set: shown beside the floor and the obvious pipeline"
    return [f"Bridge CPU, {name}, both sinks, as a multiple of the pull-only floor", measured, target,
            _ok(ok) if goal is not None else "n/a"]


def _nothing_lost_row(name: str, r: dict[str, Any], checks: dict[str, bool]) -> list[str]:
    archive = r["archive"]
    live = f"{r['frames_received']}/{r['frames_expected']:.0f}"
    if "frames_computed" in archive:  # rows stored vs the final ledger, both after the clean stop
        return [f"Nothing lost, {name} (live frames / expected; archived / computed, after a clean stop)",
                f"{live}; {archive.get('frames_archived')}/{_f(archive['frames_computed'], '.0f')}",
                "all; archived = computed", _ok(checks["live_complete"] and checks["archive_complete"])]
    # Results from before the exact comparison: computed was read *before* the stop, so archived
    # could only be checked as >=, which cannot see a lost tail. Say so rather than claim more.
    return [f"Nothing lost, {name} (live frames / expected; archived / computed before the stop)",
            f"{live}; {archive.get('frames_archived')}/{archive.get('frames_computed_before_stop', 0):.0f}",
            "all; archived >= computed (old check: blind to a lost tail)",
            _ok(checks["live_complete"] and checks["archive_complete"])]


# ---- sections --------------------------------------------------------------------------------------
def encoding(rows: list[dict[str, Any]]) -> list[str]:
    out = ["## 1. Encoding (line protocol per frame, single thread)", ""]
    body = []
    for r in rows:
        target = ENCODE_TARGETS[r["schema"]] if r["serializer"] == "ours" else None
        body.append([
            f"{r['channels']}x{r['bins']}", r["schema"], r["serializer"], f"{r['ms_per_frame']:.2f}",
            f"{r['values_per_s'] / 1e6:.2f}", f"{r['bytes_per_frame'] / 1e3:.0f}", f"{r['speedup_vs_point']:.1f}x",
            f">= {target:g}x" if target else "", _ok(r["speedup_vs_point"] >= target) if target else "",
        ])
    return out + _table(["frame", "schema", "serializer", "ms/frame", "M values/s", "KB/frame", "vs Point", "target", ""], body)


def spectra(rows: list[dict[str, Any]]) -> list[str]:
    out = [
        "## 2. Spectra: channel-seconds of EEG per CPU-second", "",
        "Same simulated EEG fed in chunks of 20-50 samples to `bridge.dsp.spectrum.StftEngine` and to a rolling "
        "buffer + `scipy.signal.spectrogram` on the last nperseg samples per hop (`bench/naive.py`); "
        "CPU = `time.process_time`, median of the repeats. \"arithmetic only\" = detrend + window + rfft + power + dB "
        "per window in scipy's order and nothing else; spectrogram / arithmetic = the best speed-up an implementation "
        "doing scipy's arithmetic can reach when frames are made one hop at a time. Output identity is checked on the "
        "simulated EEG and again on the same EEG riding on +-50 mV per-channel DC offsets (DC-coupled amplifiers); "
        "pass needs < 0.001 dB (the written resolution) in both.", "",
    ]
    body = [[
        f"{r['channels']}ch {r['fs'] / 1000:g}kHz", f"{r['nperseg']}/{r['hop']}", f"{r['seconds']:g} s",
        f"{r['engine_ch_s_per_cpu_s']:,.0f}", f"{r['naive_ch_s_per_cpu_s']:,.0f}", f"{r['speedup']:.2f}x",
        f"{r['engine_us_per_frame']:.0f} / {r['naive_us_per_frame']:.0f} / {r['math_us_per_frame']:.0f}",
        f"{r['best_identical_speedup']:.1f}x",
        f"{r['frames']}/{r['frames_naive']}", f"{r['max_abs_db_diff']:.3g}",
        f"{r['dc_offset']['max_abs_db_diff']:.3g}" if "dc_offset" in r else "-", ">= 5x", _ok(r["pass"]),
    ] for r in rows]
    return out + _table(
        ["stream", "nperseg/hop", "EEG", "engine ch-s/CPU-s", "spectrogram ch-s/CPU-s", "speed-up",
         "us/frame engine / spectrogram / arithmetic only", "scipy-order arithmetic bound", "frames", "max abs dB diff", "same, +-50 mV DC offsets", "target", ""],
        body,
    )


def _lat(r: dict[str, Any], key: str) -> str:
    return _f(r["latency_ms"].get(key))


def latency(rows: list[dict[str, Any]]) -> list[str]:
    out = [
        "## 3. Latency: last sample of a window pushed into LSL -> frame received by Grafana Live (stand-in)", "",
        "64 ch x 1 kHz, nperseg 256, bridge subprocess, InfluxDB off (spool only). Frames identified by timestamp.", "",
    ]
    body = [[
        str(r["scenario"]["nperseg"] - r["scenario"]["noverlap"]), f"{r['window_s']:.0f} s",
        f"{r['frames_received']}/{r['frames_expected']:.0f}", _lat(r, "p50"), _lat(r, "p90"), _lat(r, "p99"), _lat(r, "max"),
        _f(r["cpu_pct"]), "<= 20 ms", _ok(r["pass"]) + (f" ({r['error'][:80]})" if r["error"] else ""),
    ] for r in rows]
    return out + _table(["hop", "window", "frames rx/expected", "p50 ms", "p90 ms", "p99 ms", "max ms", "bridge CPU %", "p99 target", ""], body)


def cost(rows: list[dict[str, Any]]) -> list[str]:
    out = [
        "## 4. Cost at scale (real-time streaming, both sinks: Grafana stand-in + real InfluxDB 1.x)", "",
        "nperseg 256, noverlap 128. CPU in % of ONE core over the measured window (utime+stime from /proc); "
        "peak RSS = VmHWM. floor = pull the stream into numpy and discard; baseline = per-hop spectrogram + "
        "influxdb-client Point + default batching write_api + one httpx POST per frame (`bench/baseline.py`). "
        "Latency/lag as in section 3; lag growth = median latency of the last third (or minute) minus the first. "
        "influxd / rest = CPU of the InfluxDB server and of everything else on the machine meanwhile.", "",
    ]
    body = []
    for r in rows:
        s = r["scenario"]
        j = r.get("judgement")
        arch = r.get("archive") or {}
        archived = arch.get("frames_archived")
        body.append([
            f"{s['channels']}ch {s['rate'] / 1000:g}kHz", s["kind"], f"{r['window_s']:.0f} s", _f(r["cpu_pct"]),
            _f(r["peak_rss_mb"], ".0f"),
            _lat(r, "p50") if s["kind"] != "floor" else "",
            _lat(r, "p99") if s["kind"] != "floor" else "",
            _f(r["lag"].get("growth_ms"), "+.1f") if s["kind"] != "floor" else "",
            f"{r['frames_received']}/{r['frames_expected']:.0f}" if s["kind"] != "floor" else "",
            "" if archived is None else str(archived),
            _f(r["others_cpu_pct"].get("influxd")), _f(r["others_cpu_pct"].get("rest_of_machine")),
            (_cost_targets(j) if j else ""),
            (_ok(j["pass"]) if j else "") + (f" (error: {r['error'][:80]})" if r["error"] else ""),
        ])
    out += _table(
        ["stream", "process", "window", "CPU %", "peak RSS MB", "p50 ms", "p99 ms", "lag growth ms", "live frames", "archived",
         "influxd CPU %", "rest CPU %", "targets", ""],
        body,
    )
    by = {(r["scenario"]["channels"], r["scenario"]["kind"]): r for r in rows}
    for ch in sorted({r["scenario"]["channels"] for r in rows}):
        b, f, n = by.get((ch, "bridge")), by.get((ch, "floor")), by.get((ch, "baseline"))
        if b and f and n and None not in (b["cpu_pct"], f["cpu_pct"], n["cpu_pct"]) and b["cpu_pct"]:
            out.append(
                f"- {ch} ch: bridge {b['cpu_pct']:.1f} % = {_times(b['cpu_pct'], f['cpu_pct'])} the floor ({f['cpu_pct']:.1f} %); "
                f"the straightforward pipeline {n['cpu_pct']:.1f} % = {_times(n['cpu_pct'], f['cpu_pct'])} the floor, "
                f"{n['cpu_pct'] / b['cpu_pct']:.1f}x the bridge's CPU."
            )
    return out + [""]


def catchup(c: dict[str, Any]) -> list[str]:
    b = c["backlog"]
    out = [
        "## 5. Catch-up: draining a spool backlog into a real InfluxDB 1.x", "",
        f"Backlog: {c['minutes']:g} min of 64 ch x 1 kHz frames (nperseg 256, hop 128): {b['frames']} frames in "
        f"{b['segments']} segments, {b['bytes'] / 1e6:.0f} MB, {b['values'] / 1e6:.1f} M values. raw = the same bodies "
        "POSTed back to back by the benchmark (httpx, one connection); replay = `python -m bridge replay`. "
        "Fresh server for each.", "",
    ]
    body = []
    for name, side in (("raw ingest", c["raw"]), ("bridge replay", c["replay"])):
        body.append([
            name, f"{side['seconds']:.1f}", f"{side['frames_per_s']:.0f}", f"{side['mb_per_s']:.1f}", f"{side['values_per_s'] / 1e6:.2f}",
            f"{side['influxd_cpu_pct']:.0f}", str(side["frames_stored"]),
        ])
    out += _table(["", "seconds", "frames/s", "MB/s", "M values/s", "influxd CPU %", "frames stored"], body)
    rp = c["replay"]
    out.append(
        f"Replay drains at **{100 * c['ratio']:.0f} %** of raw ingest (target >= {100 * c['target']:.0f} %: {_ok(c['pass'])}); "
        f"plus {rp['startup_s']:.1f} s process start-up; replay process CPU {rp['replay_cpu_pct']:.0f} % of one core."
    )
    return out + [""]


def importing(i: dict[str, Any]) -> list[str]:
    b, sp = i["bodies"], i["spectra"]
    out = [
        "## 6. Import: a recorded file into a real InfluxDB 1.x", "",
        f"File: {i['minutes']:g} min of simulated 64 ch x 1 kHz EEG as EDF+ ({i['file']['bytes'] / 1e6:.0f} MB); "
        f"{b['frames']} frames (nperseg 256, hop 128), {b['bytes'] / 1e6:.0f} MB of line protocol, "
        f"{b['values'] / 1e6:.1f} M values. raw = the bodies the import uploads (made by the importer into a spool-only "
        "sink), POSTed back to back as in section 5; import = `python -m bridge import file.edf`, process start to exit. "
        "Fresh server for each.", "",
    ]
    body = []
    for name, side in (("raw ingest", i["raw"]), ("eeg-bridge import", i["import"])):
        body.append([
            name, f"{side['seconds']:.1f}", f"{side['frames_per_s']:.0f}", f"{side['mb_per_s']:.1f}",
            f"{side['values_per_s'] / 1e6:.2f}", f"{side['influxd_cpu_pct']:.0f}", str(side["frames_stored"]),
        ])
    out += _table(["", "seconds", "frames/s", "MB/s", "M values/s", "influxd CPU %", "frames stored"], body)
    out.append(
        f"Import runs at **{100 * i['ratio']:.0f} %** of raw ingest (target >= {100 * i['target']:.0f} %: {_ok(i['pass'])}); "
        f"import process CPU {i['import']['import_cpu_pct']:.0f} % of one core. Spectra alone (reading the file and "
        f"the engine with band power and quality, no encoding or sink), per CPU second: **{sp['realtime_x']:.0f}x** "
        f"real time ({sp['cpu_s']:.1f} CPU s; {sp['wall_realtime_x']:.0f}x by the wall clock on the shared machine; "
        f"the engine alone {sp['engine_realtime_x']:.0f}x)."
    )
    return out + [""]


def render(results: dict[str, Any]) -> str:
    m = results["machine"]
    out = [
        "# eeg-bridge benchmark", "",
        f"`{results['command']}` on {results['started']} ({results['mode']} run, {results['elapsed_s'] / 60:.1f} min). "
        "Run it with `make bench` or `python -m bench.run` (`--quick` for a ~3 min smoke run, `--only SECTION...`, "
        "`--cost-seconds N`, `--bridge-env KEY=VALUE` to try bridge options; `--help` lists all).", "",
        f"Machine: {m['cpu_model']}, {m['cores']} cores, {m['memory_gb']} GB; Linux {m['kernel']}; Python {m['python']}, "
        f"numpy {m['numpy']}, scipy {m['scipy']}, pylsl {m['pylsl']}, liblsl {m['liblsl']}, influxdb-client "
        f"{m['influxdb_client']}, {m['influxd']}.", "",
        f"Load average at start {m['load_average_at_start']}, at end {results.get('load_average_at_end')}. "
        + results.get("busy_note", ""), "",
        "## Summary: every figure against its target", "",
    ]
    out += _table(["figure", "measured", "target", ""], summary_rows(results))
    if results.get("encoding"):
        out += encoding(results["encoding"])
    elif "encoding_error" in results:
        out += ["## 1. Encoding", "", f"not measured: {results['encoding_error']}", ""]
    if results.get("spectra"):
        out += spectra(results["spectra"])
    if results.get("latency"):
        out += latency(results["latency"])
    if results.get("cost"):
        out += cost(results["cost"])
    if results.get("catchup"):
        out += catchup(results["catchup"])
    if results.get("import"):
        out += importing(results["import"])
    if results.get("threesinks"):
        from bench import threesinks

        out += threesinks.render(results["threesinks"], results.get("threesinks_history"))
    for note in results.get("notes", []):
        out.append(f"- {note}")
    return "\n".join(out).rstrip() + "\n"


# ---- the README's Performance section ---------------------------------------------------------------
#: The README quotes only what these functions render from committed results (tests/test_bench_report.py
#: checks it): `python -m bench.report --readme` rewrites the sections between the markers.
README = Path(__file__).resolve().parent.parent / "README.md"
RESULTS_DIR = Path(__file__).resolve().parent / "results"


def _markers(name: str) -> tuple[str, str]:
    return (f"<!-- {name}: generated from bench/results by `python -m bench.report --readme`; do not edit by hand -->",
            f"<!-- end of {name} -->")


def readme_performance(results: dict[str, Any], source: str = "bench/results/latest.json") -> str:
    """The README's Performance section: every figure from one run, every CPU figure a multiple
    of that run's one floor (the cost section's pull-only process, same window as the bridge)."""
    m = results["machine"]
    out = [
        "`make bench` (or `python -m bench.run`; `--quick` for a short smoke run) measures the bridge side by side with "
        "what a user would otherwise write, on the same frames, and writes `bench/results/latest.md` and `.json`. "
        f"Every figure in this section comes from `{source}`: the {results['mode']} run `{results['command']}` of "
        f"{results['started']} ({results['elapsed_s'] / 60:.0f} min) at commit {results.get('commit', 'unknown')} on "
        f"{m['cpu_model']}, {m['cores']} cores, {m['memory_gb']} GB; "
        f"Linux {m['kernel']}; Python {m['python']}, numpy {m['numpy']}, scipy {m['scipy']}, pylsl {m['pylsl']}, "
        f"influxdb-client {m['influxdb_client']}, {m['influxd']}. Load average at start {m['load_average_at_start']}, "
        f"at end {results.get('load_average_at_end')}. " + results.get("busy_note", ""),
        "",
        "CPU is judged as a multiple of the floor: a process that only pulls the same stream from LSL into numpy "
        "(`bench/floor.py`), measured once per stream size in this run (cost section, same window as the bridge) "
        "and used for every multiple below. Nothing reading the stream in Python costs less.",
        "",
    ]
    out += _table(["figure", "measured", "target", ""], summary_rows(results))
    spectra_rows = results.get("spectra") or []
    if spectra_rows:
        diff = max(r["max_abs_db_diff"] for r in spectra_rows)
        dc = max((r["dc_offset"]["max_abs_db_diff"] for r in spectra_rows if "dc_offset" in r), default=None)
        speed = [r["speedup"] for r in spectra_rows]
        text = (
            f"- **Spectra**: the engine's output differs from `scipy.signal.spectrogram` by at most {diff:.2g} dB on "
            "the simulated EEG"
            + (f" and {dc:.2g} dB on the same EEG riding on +-50 mV DC offsets" if dc is not None else "")
            + " (rounding; the values are written with 3 decimals, 0.001 dB), at "
            f"{min(speed):.1f}-{max(speed):.1f}x the speed of calling `spectrogram` per hop."
        )
        ref = next((r for r in spectra_rows if r["channels"] == 64 and r["hop"] == 128), None)
        if ref is not None:
            text += (
                " The ceiling for identical output: doing only scipy's arithmetic per window (detrend, "
                f"window, rfft, power, dB) already costs {ref['math_us_per_frame']:.0f} of the "
                f"{ref['naive_us_per_frame']:.0f} us a per-hop `spectrogram` call takes at 64 ch x 1 kHz, hop 128, a "
                f"ceiling of {ref['best_identical_speedup']:.1f}x; the engine takes {ref['engine_us_per_frame']:.0f} us. "
                "A float32 path was not taken because it changes written values."
            )
        out.append(text)
    by = _cost_by(results)
    parts, behind = [], []
    for channels, rate in sorted({(c, r) for c, r, _ in by}):
        f, b, n = (by.get((channels, rate, k)) for k in ("floor", "bridge", "baseline"))
        if not (f and b and n) or None in (f["cpu_pct"], b["cpu_pct"], n["cpu_pct"]):
            continue
        parts.append(f"{channels} ch x {rate / 1000:g} kHz: {f['cpu_pct']:.1f} % / **{b['cpu_pct']:.1f} %** "
                     f"({_times(b['cpu_pct'], f['cpu_pct'])}) / {n['cpu_pct']:.1f} % ({_times(n['cpu_pct'], f['cpu_pct'])})")
        if n["frames_received"] < int(n["frames_expected"]) - 1:
            behind.append(
                f"at {channels} ch x {rate / 1000:g} kHz the obvious pipeline does not keep up: p99 latency "
                f"{n['latency_ms']['p99'] / 1000:.1f} s, lag growth {n['lag']['growth_ms'] / 1000:+.1f} s, "
                f"{n['frames_received']} of {n['frames_expected']:.0f} frames reach Grafana"
            )
    if parts:
        out.append(
            "- **Beside the floor and the obvious pipeline** (per-hop `spectrogram` + influxdb-client `Point` and its "
            "batching writer + one httpx POST per frame), in % of one core (x the floor), only pulling from LSL / "
            "**bridge** / obvious pipeline: " + "; ".join(parts) + "." + "".join(f" {b[0].upper()}{b[1:]}." for b in behind)
            + " No peer tool was measured."
        )
    three = _three_sinks_text(results, by)
    if three:
        out.append(three)
    derived = _derived_text(results)
    if derived:
        out.append(derived)
    return "\n".join(out).rstrip() + "\n"


def _three_sinks_text(results: dict[str, Any], by: dict[tuple[int, float, str], dict[str, Any]]) -> str:
    """The live page as a third sink, against the same floor as the table (one floor per run)."""
    parts = []
    for t in results.get("threesinks") or []:
        key = (t["channels"], float(t["rate"]))
        floor = by.get((*key, "floor")) or t["floor"]
        f = floor["cpu_pct"]
        two, three = t["two"], t["three"]
        parts.append(
            f"{t['channels']} ch x {t['rate'] / 1000:g} kHz {_f(two['cpu_pct'])} % ({_times(two['cpu_pct'], f)}) / "
            f"**{_f(three['cpu_pct'])} %** ({_times(three['cpu_pct'], f)}), peak RSS {_f(two['peak_rss_mb'], '.0f')} / "
            f"**{_f(three['peak_rss_mb'], '.0f')} MB** (target < {THREE_SINKS_RSS_MB:g} MB with the page)"
        )
    if not parts:
        return ""
    history = results.get("threesinks_history")
    text = (
        "- **With the live page as a third sink** (section \"Three sinks\" of `bench/results/latest.md`: each "
        "configuration on the same stream, one page open and reading; multiples of the same floor as the table), "
        "bridge CPU two sinks / three sinks: " + "; ".join(parts) + "."
    )
    if history:
        text += (f" The page's 60 s history at 256 ch x 2 kHz is {history['history_frames']} frames in "
                 f"{history['history_mb']:.0f} MB, measured alone in the same section.")
    return text


def _derived_text(results: dict[str, Any]) -> str:
    rows = results.get("derived") or []
    judged = [r for r in rows if r.get("extra_pct_of_bridge") is not None]
    if not judged:
        return ""
    at = "; ".join(f"{r['channels']} ch x {r['fs'] / 1000:g} kHz {r['extra_pct_of_bridge']:.1f} % "
                   f"(every frame {r['every1_extra_pct_of_bridge']:.1f} %)" for r in judged)
    return (f"- **Band power and quality** at their default rate add, of the bridge's own CPU: {at} (section "
            "\"Band power and quality\"; goal < 10 %).")


def replace_section(text: str, name: str, body: str) -> str:
    begin, end = _markers(name)
    head, found, rest = text.partition(begin + "\n")
    if not found:
        raise ValueError(f"README has no '{begin}' line")
    _, found, tail = rest.partition(end)
    if not found:
        raise ValueError(f"README has no '{end}' line")
    return f"{head}{begin}\n{body}{end}{tail}"


def section(text: str, name: str) -> str:
    begin, end = _markers(name)
    return text.split(begin + "\n", 1)[1].split(end, 1)[0]


def readme_sections() -> dict[str, str]:
    """Every generated README section, from the committed results."""
    from bench import soak  # noqa: PLC0415 - soak imports this module

    sections = {"performance": readme_performance(json.loads((RESULTS_DIR / "latest.json").read_text()))}
    soak_results = RESULTS_DIR / "soak.json"
    if soak_results.exists():
        sections["reliability"] = soak.readme_reliability(json.loads(soak_results.read_text()))
    return sections


def update_readme() -> None:
    text = README.read_text()
    for name, body in readme_sections().items():
        text = replace_section(text, name, body)
    README.write_text(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.report",
                                     description="Render committed benchmark results (Markdown, README sections).")
    parser.add_argument("--readme", action="store_true", help="rewrite README.md's generated sections from bench/results")
    parser.add_argument("results", nargs="?", type=Path, help="a results JSON to render as Markdown")
    args = parser.parse_args(argv)
    if args.readme:
        update_readme()
        print(f"updated {README}")
    if args.results:
        print(render(json.loads(args.results.read_text())), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
