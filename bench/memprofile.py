"""Where the bridge's memory goes: ``python -m bench.memprofile --channels 256 --rate 2000``.

Peak RSS (VmHWM) is judged by the cost and three-sink sections, but /proc cannot say where it
went. This runs the same live scenario (:mod:`bench.live`: real outlet, Grafana stand-in, real
InfluxDB, simulated 256 ch x 2 kHz stream) with the bridge started through
:mod:`bench.memtrace`, which runs the unchanged ``bridge run`` under tracemalloc, and prints
the allocation sites holding the most memory at the moment traced memory was highest, plus
their growth since the first snapshot after the warm-up. ``--page`` adds the live page
(:mod:`bench.pagereader` reading), ``--env DERIVED_EVERY_FRAMES=0`` turns band power and
quality off to compare. tracemalloc itself costs memory and CPU, so the RSS to judge comes from
``--plain`` (the same scenario without the tracer); the sites say where, not the exact RSS.

    python -m bench.memprofile --channels 256 --rate 2000 --seconds 40 [--page] [--plain]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from bench import live
from bench.procs import Managed, clean_env, free_port


def run(channels: int, rate: float, seconds: float, warmup: float, *, page: bool, traced: bool,
        env: tuple[tuple[str, str], ...] = (), frames: int = 1) -> dict[str, Any]:
    """One live run; with ``traced`` the tracemalloc summary of the bridge is in ``memtrace``."""
    workdir = Path(tempfile.mkdtemp(prefix="eeg-bench-mem-"))
    out = workdir / "memtrace.json"
    extra = list(env)
    scenario = live.Scenario("bridge", channels, rate, 256, 128, duration_s=seconds, warmup_s=warmup)
    if traced:
        extra += [("MEMTRACE_OUT", str(out)), ("MEMTRACE_FRAMES", str(frames)), ("MEMTRACE_BASE_SEC", str(warmup))]
        scenario = dataclasses.replace(scenario, bridge_module=("bench.memtrace", "run"))
    reader: Managed | None = None
    try:
        if page:
            port = free_port()
            reader = Managed.python("page", ["bench.pagereader", "--port", str(port)], clean_env({}), workdir)
            extra.append(("VIEW_PORT", str(port)))
        result = live.run(dataclasses.replace(scenario, env=tuple(extra)), print).to_dict()
        summary = {"label": scenario.label + (" + page" if page else "") + (" (tracemalloc)" if traced else ""),
                   "peak_rss_mb": result["peak_rss_mb"], "rss_end_mb": result["rss_end_mb"], "cpu_pct": result["cpu_pct"],
                   "frames": [result["frames_received"], round(result["frames_expected"])], "error": result["error"],
                   "spooled_at_end": live.metric_sum(result.get("consumer", {}).get("metrics", {}), "eeg_bridge_spool_frames")}
        if traced and out.exists():
            summary["memtrace"] = json.loads(out.read_text())
        return summary
    finally:
        if reader is not None:
            reader.stop(timeout=10)
        shutil.rmtree(workdir, ignore_errors=True)


def render(summary: dict[str, Any], top: int = 20) -> str:
    lines = [f"{summary['label']}: peak RSS {summary['peak_rss_mb']:.0f} MB, RSS at end {summary['rss_end_mb']:.0f} MB, "
             f"CPU {summary['cpu_pct']:.1f} %, live frames {summary['frames'][0]}/{summary['frames'][1]}"
             + (f", error {summary['error']}" if summary["error"] else "")]
    trace = summary.get("memtrace")
    if trace:
        lines.append(f"  traced memory highest {trace['highest_traced_mb']:.1f} MB at {trace['highest_at_s']:.0f} s")
        for title, key in (("held at the highest snapshot, by line", "highest_sites"),
                           ("held at the highest snapshot, by file", "highest_files"),
                           ("growth since the warm-up, by line", "growth_since_base")):
            lines.append(f"  {title}:")
            for row in trace.get(key, [])[:top]:
                lines.append(f"    {row['mb']:8.2f} MB  {row.get('site') or row.get('file')}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.memprofile", description=__doc__.splitlines()[0])
    parser.add_argument("--channels", type=int, default=256)
    parser.add_argument("--rate", type=float, default=2000.0)
    parser.add_argument("--seconds", type=float, default=40.0)
    parser.add_argument("--warmup", type=float, default=10.0)
    parser.add_argument("--page", action="store_true", help="one live page open and reading")
    parser.add_argument("--plain", action="store_true", help="also run without tracemalloc (the RSS to judge)")
    parser.add_argument("--frames", type=int, default=1, help="traceback depth per allocation")
    parser.add_argument("--env", nargs="+", default=[], metavar="KEY=VALUE", help="extra bridge environment")
    parser.add_argument("--json", type=Path, help="write the summaries here")
    args = parser.parse_args()
    env = tuple(tuple(kv.split("=", 1)) for kv in args.env)  # type: ignore[misc]
    summaries = [run(args.channels, args.rate, args.seconds, args.warmup, page=args.page, traced=True, env=env, frames=args.frames)]
    if args.plain:
        summaries.append(run(args.channels, args.rate, args.seconds, args.warmup, page=args.page, traced=False, env=env))
    for s in summaries:
        print(render(s))
    if args.json:
        args.json.write_text(json.dumps(summaries, indent=1) + "\n")


if __name__ == "__main__":
    main()
