"""``python -m bench.memtrace run``: ``eeg-bridge run`` under tracemalloc, for ``bench.memprofile``.

The bridge's peak RSS is what a lab's laptop pays for, and /proc only says how much, not where.
This wrapper starts tracemalloc before the bridge imports anything, then runs the real
``bridge.cli.main`` unchanged; a daemon thread takes a snapshot every ``MEMTRACE_EVERY_SEC``
seconds and keeps the one where traced memory was highest (traced memory, not RSS, is what a
snapshot can explain; numpy registers its buffers with tracemalloc, so arrays are included).
At exit (and after every snapshot, so a SIGKILL loses little) it writes a JSON summary to
``MEMTRACE_OUT``: the top allocation sites by line at the highest snapshot and at the first one
after ``MEMTRACE_BASE_SEC``, the growth between them, and traced/RSS figures over time.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import tracemalloc
from pathlib import Path
from typing import Any

TOP = 40
#: How often traced memory is polled for a new high between the timed snapshots.
POLL_SEC = 0.1


def _kb(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def _sites(snapshot: tracemalloc.Snapshot, key: str = "lineno") -> list[dict[str, Any]]:
    """Allocation sites, largest first: where the memory still held at this moment was allocated."""
    stats = snapshot.filter_traces((tracemalloc.Filter(False, tracemalloc.__file__),)).statistics(key)
    return [{"site": str(s.traceback[0]), "mb": s.size / 1e6, "blocks": s.count} for s in stats[:TOP]]


def _by_file(snapshot: tracemalloc.Snapshot) -> list[dict[str, Any]]:
    stats = snapshot.filter_traces((tracemalloc.Filter(False, tracemalloc.__file__),)).statistics("filename")
    return [{"file": str(s.traceback[0].filename), "mb": s.size / 1e6, "blocks": s.count} for s in stats[:TOP]]


class Tracer:
    """Snapshots on a timer; keeps the highest and the baseline; writes the summary each time."""

    def __init__(self, out: Path, every: float, base_after: float) -> None:
        self.out, self.every, self.base_after = out, every, base_after
        self.started = time.monotonic()
        self.series: list[dict[str, float]] = []
        self.base: tracemalloc.Snapshot | None = None
        self.highest: tracemalloc.Snapshot | None = None
        self.highest_mb = 0.0
        self.highest_at = 0.0
        self.lock = threading.Lock()

    def tick(self) -> None:
        with self.lock:
            now = time.monotonic() - self.started
            current, peak = tracemalloc.get_traced_memory()
            self.series.append({"t_s": round(now, 1), "traced_mb": current / 1e6, "traced_peak_mb": peak / 1e6,
                                "rss_mb": _kb("VmRSS") / 1024, "hwm_mb": _kb("VmHWM") / 1024})
            if self.base is None and now >= self.base_after:
                self.base = tracemalloc.take_snapshot()
            if current / 1e6 > self.highest_mb:
                self.highest, self.highest_mb, self.highest_at = tracemalloc.take_snapshot(), current / 1e6, now
            self.write()

    def watch(self) -> None:
        """Between timed snapshots, poll traced memory and snapshot a new high (2 MB above the last):
        RSS peaks are transient (an upload, a burst of frames), and a timer alone misses them."""
        with self.lock:
            current, _ = tracemalloc.get_traced_memory()
            if current / 1e6 <= self.highest_mb + 2.0:
                return
            now = time.monotonic() - self.started
            self.highest, self.highest_mb, self.highest_at = tracemalloc.take_snapshot(), current / 1e6, now

    def write(self) -> None:
        summary: dict[str, Any] = {"series": self.series, "highest_traced_mb": self.highest_mb, "highest_at_s": self.highest_at,
                                   "tracemalloc_frames": tracemalloc.get_traceback_limit()}
        if self.highest is not None:
            summary["highest_sites"] = _sites(self.highest)
            summary["highest_files"] = _by_file(self.highest)
        if self.base is not None:
            summary["base_sites"] = _sites(self.base)
            if self.highest is not None:
                diff = self.highest.compare_to(self.base, "lineno")
                summary["growth_since_base"] = [{"site": str(d.traceback[0]), "mb": d.size_diff / 1e6, "held_mb": d.size / 1e6}
                                                for d in diff[:TOP] if d.size_diff]
        tmp = self.out.with_suffix(".tmp")
        tmp.write_text(json.dumps(summary, indent=1))
        tmp.replace(self.out)

    def loop(self) -> None:
        next_tick = time.monotonic() + self.every
        while True:
            time.sleep(POLL_SEC)
            try:
                if time.monotonic() >= next_tick:
                    next_tick += self.every
                    self.tick()
                else:
                    self.watch()
            except Exception as exc:  # noqa: BLE001 - the profiler must never stop the bridge
                print(f"memtrace: {exc}", file=sys.stderr)


def main() -> int:
    tracemalloc.start(int(os.environ.get("MEMTRACE_FRAMES", "1")))
    tracer = Tracer(Path(os.environ["MEMTRACE_OUT"]), float(os.environ.get("MEMTRACE_EVERY_SEC", "2")),
                    float(os.environ.get("MEMTRACE_BASE_SEC", "10")))
    threading.Thread(target=tracer.loop, name="memtrace", daemon=True).start()
    from bridge.cli import main as bridge_main  # after tracemalloc.start: imports are traced too

    try:
        return int(bridge_main(sys.argv[1:]) or 0)
    finally:
        tracer.tick()


if __name__ == "__main__":
    sys.exit(main())
