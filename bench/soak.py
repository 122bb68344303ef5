"""``python -m bench.soak``: the long run behind the README's Reliability section (not pytest).

    python -m bench.soak                 # 30 min, writes bench/results/soak.{json,md}
    python -m bench.soak --minutes 3 --kill-every 60 --outage 20 --out soak-short   # a trial

Two bridges on two LSL streams at once (64 ch x 1 kHz each by default), each with both sinks:

* **Grafana side flapping**: each bridge pushes to its own Grafana stand-in process
  (:mod:`bench.standin` ``--flap``): healthy for ``--flap-ok`` s, then ``--flap-fault`` s down,
  answering 5xx, hanging or resetting connections, in turn, again and again;
* **InfluxDB killed**: one real ``influxd`` (one database per bridge) is SIGKILLed every
  ``--kill-every`` s and restarted on the same data and port after ``--outage`` s.

What it reports, per bridge:

* **RSS** (VmRSS from /proc) after the warm-up (the first InfluxDB outage recovered and
  ``--settle`` s more, so one-time allocations of the retry paths are in) and at the end, with
  the growth between them (goal: under 5 MB), the peak, and a sample every 30 s;
* **archived == computed**: the bridges are stopped cleanly (SIGTERM, InfluxDB up, a shutdown
  timeout long enough to upload the whole spool); then the rows stored per channel are compared
  with ``frames_computed`` of the bridge's last ``bridge_health`` point, which it writes after its
  last frame: the same moment, exactly, no ``>=``;
* **live delivery fraction**: pushes the stand-in accepted / frames computed, next to the share of
  time the stand-in was healthy, and the bridge's own drop counts by reason.

Every process is started here and stopped by PID (bench/procs.py), also on failure.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import machine
from bench.eeg import Player, unique_name
from bench.live import StandinProcess, _metrics, final_health, parse_series
from bench.procs import REPO, Managed, clean_env, free_port, status_kb
from bench.standin import TOKEN
from bridge.codecs.line_protocol import bin_field_names

RESULTS = Path(__file__).resolve().parent / "results"
RSS_GROWTH_GOAL_MB = 5.0
RSS_SAMPLE_SEC = 30.0


def log(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {message}", file=sys.stderr, flush=True)


@dataclass
class Stream:
    """One bridge on one stream, with its own stand-in, database and spool directory."""

    index: int
    name: str
    db: str
    workdir: Path
    metrics_port: int
    player: Player
    standin: StandinProcess
    bridge: Managed | None = None
    rss_mb: list[tuple[float, float]] = field(default_factory=list)  # (seconds since start, MB)
    env: dict[str, str] = field(default_factory=dict)
    last_metrics: dict[str, float] = field(default_factory=dict)

    @property
    def spool_dir(self) -> Path:
        return self.workdir / "spool"

    def start_bridge(self, influx_url: str, args: argparse.Namespace) -> None:
        env = self.env = clean_env({
            "LSL_STREAM_NAME": self.name,
            "GRAFANA_URL": self.standin.url,
            "GRAFANA_TOKEN": TOKEN,
            "GRAFANA_STREAM_ID": f"soak{self.index}",
            "INFLUXDB_URL": influx_url,
            "INFLUXDB_API": "v1",
            "INFLUXDB_BUCKET": self.db,
            # Its own spool: two bridges must never share one (issue 12).
            "SPOOL_DIR": str(self.spool_dir),
            "SPECTRUM_NPERSEG": str(args.nperseg),
            "SPECTRUM_NOVERLAP": str(args.noverlap),
            "METRICS_PORT": str(self.metrics_port),
            "SHUTDOWN_TIMEOUT_SEC": "600",  # the clean stop uploads the whole spool
            "LOG_FORMAT": "text",
        })
        self.bridge = Managed.python(f"bridge{self.index}", ["bridge", "run"], env, self.workdir)

    def replay_leftovers(self) -> int | None:
        """What a user does when a stop left segments behind (the server failing at that moment):
        ``eeg-bridge replay`` with the same settings. None when the spool was empty."""
        if not list(self.spool_dir.glob("*.lp")):
            return None
        replay = Managed.python(f"replay{self.index}", ["bridge", "replay"], self.env, self.workdir)
        try:
            replay.proc.wait(900)
        finally:
            code = replay.stop(timeout=30)
        return code

    def sample(self, since: float) -> None:
        assert self.bridge is not None
        if self.bridge.alive():
            self.rss_mb.append((round(time.monotonic() - since, 1), status_kb(self.bridge.pid, "VmRSS") / 1024))
            scraped = _metrics(self.metrics_port)
            if scraped:
                self.last_metrics = scraped


class Influx:
    """The real influxd, with the kill/restart schedule recorded."""

    def __init__(self) -> None:
        from tests.influxdb_server import InfluxDBServer

        self.server = InfluxDBServer().start()
        self.outages: list[dict[str, float]] = []

    def kill(self, at: float) -> None:
        self.server.kill()  # SIGKILL, as a crash: only the WAL survives
        self.outages.append({"killed_at_s": round(at, 1)})

    def restart(self, at: float) -> None:
        self.server.start()  # same data directory and port
        self.outages[-1]["restarted_at_s"] = round(at, 1)

    @property
    def down(self) -> bool:
        return not self.server.running


def archive_counts(server: Any, db: str, first_field: str) -> dict[str, int]:
    """Rows stored per channel (one row per frame per channel in the wide schema)."""
    body = server.query(f'SELECT count("{first_field}") FROM "eeg_spectrum" GROUP BY "channel"', db=db)
    return {s["tags"]["channel"]: int(s["values"][0][1]) for s in body["results"][0].get("series", [])}


def _git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return out.stdout.strip() + ("+uncommitted changes" if dirty else "") if out.returncode == 0 else "unknown"
    except OSError:
        return "unknown"


def run(args: argparse.Namespace) -> dict[str, Any]:
    duration = args.minutes * 60.0
    warmup = args.kill_every + args.outage + args.settle
    if warmup >= duration:
        raise SystemExit(f"--minutes {args.minutes:g} is too short for a warm-up of {warmup:g} s "
                         "(first kill + outage + settle); run longer or kill earlier.")
    root = Path(tempfile.mkdtemp(prefix="eeg-soak-"))
    flap = f"{args.flap_ok:g}:{args.flap_fault:g}"
    streams: list[Stream] = []
    influx: Influx | None = None
    result: dict[str, Any] = {
        "command": "python -m bench.soak " + " ".join(sys.argv[1:]),
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "commit": _git_commit(),
        "machine": machine.facts(),
        "settings": {
            "minutes": args.minutes, "streams": args.streams, "channels": args.channels, "rate_hz": args.rate,
            "nperseg": args.nperseg, "noverlap": args.noverlap, "influxdb_kill_every_s": args.kill_every,
            "influxdb_outage_s": args.outage, "grafana_flap_ok_s": args.flap_ok, "grafana_flap_fault_s": args.flap_fault,
            "grafana_flap_modes": ["down", "error_5xx", "hang", "reset"], "warmup_s": warmup,
        },
    }
    try:
        influx = Influx()
        for i in range(args.streams):
            workdir = root / f"stream{i}"
            workdir.mkdir()
            db = f"soak{i}"
            influx.server.create_database(db)
            name = unique_name(f"soak{i}")
            streams.append(Stream(i, name, db, workdir, free_port(), Player(name, args.channels, args.rate),
                                  StandinProcess(workdir, ("--flap", flap))))
        for stream in streams:
            stream.player.start()
            stream.start_bridge(influx.server.url, args)
        for stream in streams:
            assert stream.bridge is not None
            if not stream.bridge.wait_for_output("connected to", 120):
                raise RuntimeError(f"bridge {stream.index} never connected:\n{stream.bridge.output()[-3000:]}")
        start = time.monotonic()
        log(f"running {args.minutes:g} min: {args.streams} bridges, {args.channels} ch x {args.rate:g} Hz, "
            f"influxd killed every {args.kill_every:g} s for {args.outage:g} s, Grafana flapping {flap}; work dir {root}")
        next_kill = start + args.kill_every
        next_sample = start
        rss_warm: dict[int, float] = {}
        while (now := time.monotonic()) < start + duration:
            for stream in streams:
                assert stream.bridge is not None
                if not stream.bridge.alive():
                    raise RuntimeError(f"bridge {stream.index} exited:\n{stream.bridge.output()[-3000:]}")
            if influx.down and now >= next_kill - args.kill_every + args.outage:
                influx.restart(now - start)
                log("influxd restarted")
            elif not influx.down and now >= next_kill and now + args.outage < start + duration:
                influx.kill(now - start)
                next_kill += args.kill_every
                log("influxd killed")
            if now >= next_sample:
                for stream in streams:
                    stream.sample(start)
                next_sample += RSS_SAMPLE_SEC
            if not rss_warm and now - start >= warmup:
                for stream in streams:
                    stream.sample(start)
                    rss_warm[stream.index] = stream.rss_mb[-1][1]
                log("warm-up over: RSS " + ", ".join(f"{v:.1f} MB" for v in rss_warm.values()))
            time.sleep(0.5)
        if influx.down:
            influx.restart(time.monotonic() - start)
        # The end: RSS and ledger while still running, then a clean stop with InfluxDB up.
        for stream in streams:
            stream.sample(start)
        rss_end = {s.index: s.rss_mb[-1][1] for s in streams}
        log("end: RSS " + ", ".join(f"{v:.1f} MB" for v in rss_end.values()) + "; stopping the bridges")
        codes = {}
        for stream in streams:  # SIGTERM both first: they drain their spools side by side
            assert stream.bridge is not None
            os.kill(stream.bridge.pid, signal.SIGTERM)
        for stream in streams:
            assert stream.bridge is not None
            try:  # no second SIGTERM: one arriving during interpreter shutdown would kill it
                stream.bridge.proc.wait(900)
            except subprocess.TimeoutExpired:
                pass  # stop() below kills it; the exit code shows it
            codes[stream.index] = stream.bridge.stop(timeout=30)
        replays = {stream.index: stream.replay_leftovers() for stream in streams}
        first_field = bin_field_names(__import__("numpy").fft.rfftfreq(args.nperseg, 1.0 / args.rate))[0]
        per_stream = []
        for stream in streams:
            health = final_health(influx.server, stream.db)
            counts = archive_counts(influx.server, stream.db, first_field)
            computed = int(health["frames_computed"])
            standin = stream.standin.stop()
            accepted = int(stream.standin.received().shape[0])
            flaps = standin.get("flaps", [])
            healthy_s = _healthy_seconds(flaps, duration)
            m = stream.last_metrics
            dropped: dict[str, float] = {}  # by reason, summed over any other label (stream="...")
            for key, value in m.items():
                series, labels = parse_series(key)
                if series == "eeg_bridge_sink_frames_dropped_total" and labels.get("sink") == "grafana" and value:
                    dropped[labels.get("reason", "")] = dropped.get(labels.get("reason", ""), 0.0) + value
            per_stream.append({
                "stream": stream.name,
                "exit_code": codes[stream.index],
                "rss_mb": {
                    "after_warmup": round(rss_warm[stream.index], 1),
                    "end": round(rss_end[stream.index], 1),
                    "growth": round(rss_end[stream.index] - rss_warm[stream.index], 1),
                    "max": round(max(v for _, v in stream.rss_mb), 1),
                    "series": [[t, round(v, 1)] for t, v in stream.rss_mb],
                },
                "frames_computed": computed,
                "samples_received": int(health["samples_received"]),
                "samples_missing": int(health["samples_missing"]),
                "gaps": int(health["gaps"]),
                "reconnects": int(health["reconnects"]),
                "archived_rows_per_channel": {"channels": len(counts), "min": min(counts.values(), default=0),
                                              "max": max(counts.values(), default=0)},
                "archived_equals_computed": len(counts) == args.channels and set(counts.values()) == {computed},
                "influxdb_dropped": int(health["influxdb_dropped"]),
                "influxdb_retries": int(health["influxdb_retries"]),
                "spool_files_left": len(list(stream.spool_dir.glob("*.lp"))),
                "replay_after_stop_exit": replays[stream.index],  # None: the stop uploaded everything
                "live": {
                    "accepted_by_standin": accepted,
                    "fraction": round(accepted / computed, 4) if computed else None,
                    "grafana_sent": int(health["grafana_sent"]),
                    "grafana_dropped_by_reason": dropped,
                    "standin_healthy_fraction": round(healthy_s / duration, 4),
                    "flaps": len(flaps),
                    "standin_status_counts": standin.get("status_counts"),
                    "standin_bodies_invalid": standin.get("invalid"),
                },
            })
            log(f"stream {stream.index}: computed {computed}, archived per channel {set(counts.values())}, "
                f"live {accepted}/{computed}, RSS {rss_warm[stream.index]:.1f} -> {rss_end[stream.index]:.1f} MB")
        result["influxdb_outages"] = influx.outages
        result["streams"] = per_stream
        result["elapsed_s"] = round(time.monotonic() - start, 1)
        result["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
        result["checks"] = {
            "rss_growth_under_5_mb": all(s["rss_mb"]["growth"] < RSS_GROWTH_GOAL_MB for s in per_stream),
            "archived_equals_computed": all(s["archived_equals_computed"] for s in per_stream),
            "clean_exit": all(s["exit_code"] == 0 for s in per_stream),
            "spool_empty": all(s["spool_files_left"] == 0 for s in per_stream),
            "no_archive_drops": all(s["influxdb_dropped"] == 0 for s in per_stream),
        }
        result["pass"] = all(result["checks"].values())
    finally:
        for stream in streams:
            if stream.bridge is not None:
                stream.bridge.stop(timeout=60)
            stream.player.stop()
            stream.standin.stop()
        if influx is not None:
            influx.server.close()
        if result.get("pass"):
            shutil.rmtree(root, ignore_errors=True)
        else:
            log(f"work dir kept for inspection: {root}")
    return result


def _healthy_seconds(flaps: list[list[Any]], duration: float) -> float:
    """Seconds the stand-in was in mode ok within the run (its flap log starts healthy)."""
    healthy, since, ok = 0.0, 0.0, True
    for at, mode in flaps:
        at = min(float(at), duration)
        if ok:
            healthy += at - since
        since, ok = at, mode == "ok"
    if ok:
        healthy += max(0.0, duration - since)
    return healthy


def readme_reliability(result: dict[str, Any], source: str = "bench/results/soak.json") -> str:
    """The README's Reliability figures (also the body of soak.md): everything from one run's JSON."""
    s = result["settings"]
    m = result["machine"]
    lines = [
        f"`python -m bench.soak` (not pytest; `--minutes 3 --kill-every 60 --outage 20 --settle 20` for a trial) runs "
        f"{s['streams']} bridges on {s['streams']} LSL streams at once, {s['channels']} ch x {s['rate_hz'] / 1000:g} kHz "
        f"each (nperseg {s['nperseg']}, noverlap {s['noverlap']}), each with both sinks and its own spool directory. "
        f"InfluxDB 1.x (one database per bridge) is SIGKILLed every {s['influxdb_kill_every_s']:g} s and restarted "
        f"{s['influxdb_outage_s']:g} s later; each bridge's Grafana stand-in flaps: {s['grafana_flap_ok_s']:g} s healthy, "
        f"then {s['grafana_flap_fault_s']:g} s {', '.join(s['grafana_flap_modes'])} in turn. RSS after warm-up is taken "
        f"{s['warmup_s']:g} s in (the first outage recovered), RSS at the end just before the stop; archived vs computed "
        "after a clean stop, rows stored per channel against `frames_computed` of the bridge's final `bridge_health` "
        "point; live = pushes the stand-in accepted / frames computed.",
        "",
        f"Figures from `{source}`: {s['minutes']:g} min run of {result['started']}, commit {result['commit']}, "
        f"{len(result['influxdb_outages'])} InfluxDB outages; {m['cpu_model']}, {m['cores']} cores, shared with other "
        f"work (load average {m['load_average_at_start']} at start, {result['load_average_at_end']} at end).",
        "",
        "| stream | RSS after warm-up | RSS at end | growth (goal < 5 MB) | frames computed | archived rows per channel | archived = computed | live delivered / computed | Grafana stand-in healthy | exit |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for i, st in enumerate(result["streams"]):
        r, a, live = st["rss_mb"], st["archived_rows_per_channel"], st["live"]
        rows = str(a["min"]) if a["min"] == a["max"] else f"{a['min']}..{a['max']}"
        lines.append(
            f"| {i} | {r['after_warmup']:.1f} MB | {r['end']:.1f} MB | {r['growth']:+.1f} MB | {st['frames_computed']} | "
            f"{rows} ({a['channels']} ch) | {'yes' if st['archived_equals_computed'] else '**no**'} | "
            f"{live['accepted_by_standin']} / {st['frames_computed']} = {100 * (live['fraction'] or 0):.1f} % | "
            f"{100 * live['standin_healthy_fraction']:.1f} % of the time | {st['exit_code']} |"
        )
    labels = {"rss_growth_under_5_mb": "RSS growth < 5 MB", "archived_equals_computed": "archived = computed",
              "clean_exit": "clean exit (0)", "spool_empty": "spool empty after the stop",
              "no_archive_drops": "no archive drops"}
    lines += ["", "Checks: " + ", ".join(f"{labels.get(k, k)} **{'pass' if v else 'FAIL'}**"
                                          for k, v in result["checks"].items()) + ".", ""]
    for i, st in enumerate(result["streams"]):
        live = st["live"]
        dropped = ", ".join(f"{k} {v:.0f}" for k, v in sorted(live["grafana_dropped_by_reason"].items())) or "none"
        lines.append(
            f"- stream {i}: InfluxDB retries {st['influxdb_retries']}, archive drops {st['influxdb_dropped']}, spool "
            f"files left {st['spool_files_left']}"
            + ("" if st.get("replay_after_stop_exit") is None else
               f" (after an `eeg-bridge replay` of what the stop left, exit {st['replay_after_stop_exit']})")
            + f"; samples received {st['samples_received']}, missing "
            f"{st['samples_missing']}, gaps {st['gaps']}; live frames given up: {dropped} "
            f"({live['flaps']} Grafana mode changes); peak RSS {st['rss_mb']['max']:.1f} MB. " + _rss_spread(st, s["warmup_s"])
        )
    return "\n".join(lines) + "\n"


def _rss_spread(stream: dict[str, Any], warmup_s: float, window_s: float = 300.0) -> str:
    """Two single samples can mislead: RSS rises during each catch-up after an outage and falls
    back. So also the range after the warm-up, and the medians of its first and last 5 minutes."""
    after = [(t, v) for t, v in stream["rss_mb"]["series"] if t >= warmup_s]
    if len(after) < 4:
        return ""
    end = after[-1][0]
    first = statistics.median(v for t, v in after if t < warmup_s + window_s)
    last = statistics.median(v for t, v in after if t > end - window_s)
    return (f"RSS after the warm-up (every {RSS_SAMPLE_SEC:g} s): {min(v for _, v in after):.1f}-"
            f"{max(v for _, v in after):.1f} MB; median of its first 5 min {first:.1f} MB, of the last 5 min "
            f"{last:.1f} MB ({last - first:+.1f} MB).")


def render(result: dict[str, Any]) -> str:
    return f"# Soak run ({result['started']})\n\n" + readme_reliability(result)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--streams", type=int, default=2)
    parser.add_argument("--channels", type=int, default=64)
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--nperseg", type=int, default=256)
    parser.add_argument("--noverlap", type=int, default=128)
    parser.add_argument("--kill-every", type=float, default=300.0, help="seconds between InfluxDB kills")
    parser.add_argument("--outage", type=float, default=60.0, help="seconds InfluxDB stays down")
    parser.add_argument("--settle", type=float, default=120.0, help="seconds after the first restart before the warm-up RSS")
    parser.add_argument("--flap-ok", type=float, default=45.0, help="seconds the Grafana stand-in stays healthy")
    parser.add_argument("--flap-fault", type=float, default=15.0, help="seconds of each Grafana fault")
    parser.add_argument("--out", default="soak", help="results file stem in bench/results")
    args = parser.parse_args(argv)
    result = run(args)
    text = render(result)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.out}.json").write_text(json.dumps(result, indent=1, default=str) + "\n")
    (RESULTS / f"{args.out}.md").write_text(text)
    print(text)
    log(f"written {RESULTS / (args.out + '.json')} and .md")
    if args.out == "soak":  # the README's Reliability section shows the latest soak run
        from bench import report  # noqa: PLC0415

        report.update_readme()
        log("README.md's Reliability section rendered from it")
    return 0 if result.get("pass") else 1


if __name__ == "__main__":
    sys.exit(main())
