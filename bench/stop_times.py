"""How long SIGTERM takes to stop a bridge that serves the live page (issue 17, point 2: < 2 s).

The tests assert no durations (project rule); this measures them: for each state of
tests/stop_scenarios.py, N stops in a row, the time from SIGTERM to the process's exit
(the source ends at SIGTERM), with each log checked as the test does. Every bridge is stopped by
its PID, also when a run fails.

    python -m bench.stop_times [--stops 20]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from tests.bridge_process import BridgeProcess
from tests.stop_scenarios import BAD_LOG, STATES, run_one


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stops", type=int, default=20, help="stops per state")
    args = parser.parse_args()
    bad = 0
    with tempfile.TemporaryDirectory(prefix="stop-times-") as tmp:
        workdir = Path(tmp)
        for state in STATES:
            times: list[float] = []
            for _ in range(args.stops):
                started: list[BridgeProcess] = []

                def start(env: dict[str, str]) -> BridgeProcess:
                    started.append(BridgeProcess(env, workdir).start())
                    return started[-1]

                try:
                    process, seconds, status = run_one(state, workdir, start)
                    log = process.output()
                    found = [b for b in BAD_LOG if b in log]
                    if found or status != 0:
                        bad += 1
                        print(f"  {state}: exit {status} {found}")
                    times.append(seconds)
                finally:
                    for p in started:
                        p.close()
            print(f"{state:24s} n={len(times)}  min {min(times):.2f} s  median {statistics.median(times):.2f} s  "
                  f"max {max(times):.2f} s", flush=True)
    print(f"unclean stops: {bad}")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
