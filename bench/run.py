"""``python -m bench.run``: the Performance benchmark, every section side by side in one run.

    python -m bench.run                      # full run (~20 min), writes bench/results/latest.{md,json}
    python -m bench.run --quick              # ~3 min smoke run, writes bench/results/quick.{md,json}
    python -m bench.run --only latency cost  # some sections (writes bench/results/partial.*)
    python -m bench.run --cost-seconds 180   # longer real-time runs

Sections: encoding, spectra, latency, cost, catchup, import, derived (see each module's docstring). The Markdown
goes to stdout and to the .md file; everything measured, with the machine facts, to the .json.
Progress goes to stderr. Figures are reported as measured, with their target and pass/fail:
on a shared 2-core machine they include whatever else ran meanwhile, which the report states.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from bench import machine, report

SECTIONS = ("encoding", "spectra", "latency", "cost", "catchup", "import", "derived", "threesinks")
RESULTS = Path(__file__).resolve().parent / "results"

NOTES = [
    "Grafana Live receiver: `tests/grafana_standin.py` in its own process (`bench/standin.py`), with its parse "
    "deferred: the stand-in's Python parse + browser-frame conversion needs ~33 ms per 64x129 body and ~115 ms per "
    "256x129 body, i.e. ~1 core at hop 32 and ~1.8 cores at 256 ch x 2 kHz: it would make the receiver the bottleneck. Receive time, HTTP handling, auth and the 200 reply are the stand-in's; a sample "
    "of bodies is parsed with its parser after each run (reported in the JSON as standin.parsed/invalid).",
    "Straightforward pipeline on InfluxDB 1.6.7: influxdb-client only speaks /api/v2/write, which 1.6.7 lacks, "
    "so its one call_api entry is pointed at /write?db=&precision=ns; batching and serialisation are unchanged.",
    "Push time of a sample = time.time_ns() just before the outlet's push_chunk call (pushes every 10 ms); "
    "receive time = the stand-in's time.time_ns() after reading the body. Same host, same clock.",
]


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _commit() -> str:
    """The code measured: HEAD, marked dirty when the worktree differs (the README names it)."""
    import subprocess

    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True, text=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("-dirty" if dirty else "")


def _busy_note(results: dict[str, Any]) -> str:
    rest = [r["others_cpu_pct"].get("rest_of_machine") for key in ("latency", "cost") for r in results.get(key) or []]
    rest = [x for x in rest if x is not None]
    if not rest:
        return ""
    mean, peak = sum(rest) / len(rest), max(rest)
    verdict = "the machine was busy with other work" if mean > 20 else "the machine was mostly quiet otherwise"
    return (
        f"During the real-time runs, processes other than the benchmark's used on average {mean:.0f} % of one core "
        f"(max {peak:.0f} %) out of {100 * (os.cpu_count() or 1)} %: {verdict}."
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short smoke run of every section (~3 min)")
    parser.add_argument("--only", nargs="+", choices=SECTIONS, help="run only these sections")
    parser.add_argument("--latency-seconds", type=float, help="measured window per latency run (default 60, quick 10)")
    parser.add_argument("--cost-seconds", type=float, help="measured window per cost run (default 120, quick 10)")
    parser.add_argument("--warmup-seconds", type=float, help="settling time before each window (default 10, quick 3)")
    parser.add_argument("--catchup-minutes", type=float, help="backlog size in minutes of EEG (default 10, quick 1)")
    parser.add_argument("--import-minutes", type=float, help="length of the imported file (default 60, quick 1)")
    parser.add_argument("--encode-repeats", type=int, help="repeats per encoder case (default 50, quick 5)")
    parser.add_argument("--bridge-env", nargs="+", default=[], metavar="KEY=VALUE",
                        help="extra environment for the bridge in latency/cost runs (e.g. GRAFANA_PUSH=ws)")
    parser.add_argument("--out", help="results file stem in bench/results (default: latest, quick, or partial)")
    args = parser.parse_args(argv)

    quick = args.quick
    sections = tuple(args.only or SECTIONS)
    stem = args.out or ("quick" if quick else "partial" if args.only else "latest")
    warmup = args.warmup_seconds if args.warmup_seconds is not None else (3.0 if quick else 10.0)
    bridge_env = tuple(tuple(kv.split("=", 1)) for kv in args.bridge_env)  # type: ignore[misc]
    started = time.time()
    results: dict[str, Any] = {
        "command": "python -m bench.run " + " ".join(argv if argv is not None else sys.argv[1:]),
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(started)),
        "mode": "quick" if quick else ("partial" if args.only else "full"),
        "commit": _commit(),
        "machine": machine.facts(),
        "sections": list(sections),
        "notes": NOTES,
    }

    if "encoding" in sections:
        log("encoding ...")
        try:
            from bench import bench_encode

            results["encoding"] = bench_encode.run(args.encode_repeats or (5 if quick else 50))
        except Exception as exc:  # noqa: BLE001 - another engineer's module; report, don't crash
            results["encoding_error"] = f"{type(exc).__name__}: {exc}"
            log(f"  ! encoding: {results['encoding_error']}")
    if "spectra" in sections:
        log("spectra ...")
        from bench import spectra

        results["spectra"] = spectra.run(quick)
    if "latency" in sections:
        log("latency ...")
        from bench import latency

        seconds = args.latency_seconds or (10.0 if quick else 60.0)
        results["latency"] = latency.run(seconds, warmup, log, bridge_env)
    if "cost" in sections:
        log("cost ...")
        from bench import cost

        seconds = args.cost_seconds or (10.0 if quick else 120.0)
        results["cost"] = cost.run(seconds, warmup, log, bridge_env=bridge_env)
    if "catchup" in sections:
        log("catch-up ...")
        from bench import catchup

        results["catchup"] = catchup.run(quick, args.catchup_minutes, log)
    if "import" in sections:
        log("import ...")
        from bench import importbench

        results["import"] = importbench.run(quick, args.import_minutes, log)
    if "derived" in sections:
        log("derived (band power + quality) ...")
        from bench import derived

        results["derived"] = derived.run(2 if quick else 5, 10.0 if quick else 20.0, log,
                                         live_seconds=args.cost_seconds or (10.0 if quick else 60.0), warmup=warmup)

    if "threesinks" in sections:
        log("three sinks ...")
        from bench import threesinks

        from bench import cost as cost_section

        results["threesinks"] = threesinks.run(args.cost_seconds or (10.0 if quick else 60.0), warmup, log,
                                               floors=cost_section.floors(results.get("cost")))
        results["threesinks_history"] = threesinks.history_footprint()
    results["elapsed_s"] = time.time() - started
    results["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    results["busy_note"] = _busy_note(results)
    text = report.render(results)
    if results.get("derived"):
        from bench import derived

        text += derived.markdown(results["derived"])
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{stem}.md").write_text(text)
    (RESULTS / f"{stem}.json").write_text(json.dumps(results, indent=1, default=str) + "\n")
    print(text)
    log(f"written {RESULTS / (stem + '.md')} and {RESULTS / (stem + '.json')}")
    if stem == "latest":  # the README quotes only the latest full run (tests/test_bench_report.py)
        report.update_readme()
        log("README.md's Performance section rendered from it")
    return 0


if __name__ == "__main__":
    sys.exit(main())
