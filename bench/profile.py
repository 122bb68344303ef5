"""Profile the bridge where the benchmark runs it: ``python -m bench.profile --channels 64 --rate 1000``.

Runs one live scenario (real outlet, stand-in, real InfluxDB, bridge subprocess) and attaches
py-spy to the bridge for the measured window (``--idle`` off, all threads), then prints where
the samples fell: self time per function and inclusive time per function, in % of one core
(samples / duration / rate), so the numbers add up to the CPU figure of the cost section.
The collapsed stacks are kept for flame graphs (``--raw``).
"""

from __future__ import annotations

import argparse
import collections
import re
import subprocess
import threading
import time
from pathlib import Path

from bench import live
from bench.procs import _TICKS


def task_cpu(pid: int) -> dict[int, float]:
    """CPU seconds per native thread of ``pid`` (from /proc/<pid>/task/*/stat)."""
    out: dict[int, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            text = (task / "stat").read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2 :].split()
        out[int(task.name)] = (int(fields[11]) + int(fields[12])) / _TICKS
    return out

RATE_HZ = 250


def summarize(raw: Path, seconds: float, top: int = 25) -> str:
    self_t: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    threads: collections.Counter[str] = collections.Counter()
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        frames = stack.split(";")
        threads[frames[0]] += n
        funcs = [f.split(" (")[0] + " (" + f.split(" (")[-1].split(":")[0].rsplit("/", 1)[-1] + ")" if " (" in f else f for f in frames[1:]]
        if funcs:
            self_t[funcs[-1]] += n
        for f in set(funcs):
            incl[f] += n
    scale = 100.0 / (seconds * RATE_HZ)
    out = ["threads (% of one core):"]
    out += [f"  {n * scale:6.2f}  {name}" for name, n in threads.most_common(10)]
    out.append("self time:")
    out += [f"  {n * scale:6.2f}  {name}" for name, n in self_t.most_common(top)]
    out.append("inclusive:")
    out += [f"  {n * scale:6.2f}  {name}" for name, n in incl.most_common(top)]
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.profile")
    parser.add_argument("--channels", type=int, default=64)
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--noverlap", type=int, default=128)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--no-influx", action="store_true")
    parser.add_argument("--raw", type=Path, default=Path("/tmp/bridge-profile.txt"))
    args = parser.parse_args()
    procs: list[subprocess.Popen[bytes]] = []
    per_thread: dict[int, float] = {}

    def measure_threads(pid: int, seconds: float) -> None:
        before = task_cpu(pid)
        time.sleep(seconds)
        after = task_cpu(pid)
        per_thread.update({tid: 100 * (after[tid] - before.get(tid, 0.0)) / seconds for tid in after})

    def attach(pid: int, seconds: float) -> None:
        threading.Thread(target=measure_threads, args=(pid, args.seconds), daemon=True).start()
        procs.append(subprocess.Popen(
            ["py-spy", "record", "--pid", str(pid), "--duration", str(int(seconds)), "--rate", str(RATE_HZ),
             "--format", "raw", "--threads", "--nonblocking", "-o", str(args.raw)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        ))

    scenario = live.Scenario("bridge", args.channels, args.rate, 256, args.noverlap, duration_s=args.seconds + 2,
                             warmup_s=5, influx=not args.no_influx)
    result = live.run(scenario, during=attach)
    for proc in procs:
        proc.wait(60)
    print(f"{scenario.label}: CPU {result.cpu_pct:.1f} % (with py-spy attached), peak RSS {result.peak_rss_mb:.0f} MB, "
          f"latency {result.latency_ms}")
    names = dict((int(t), n) for t, n in re.findall(r"thread \((\d+)\): ([^;]+)", args.raw.read_text()))
    print("per-thread CPU from /proc (% of one core, exact):")
    for tid, pct in sorted(per_thread.items(), key=lambda kv: -kv[1]):
        print(f"  {pct:6.2f}  {tid} {names.get(tid, '(no Python frames)')}")
    print("py-spy samples (includes some waiting in C; use for where, not how much):")
    print(summarize(args.raw, args.seconds))


if __name__ == "__main__":
    main()
