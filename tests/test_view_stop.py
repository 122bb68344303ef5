"""SIGTERM to a bridge with the live page open, mid-history, or just closed stops cleanly (issue 17, point 2).

Twenty stops in a row across the states of tests/stop_scenarios.py; each stop's log must hold no
traceback and no asyncio error, and the bridge must exit 0. How long the stops take is measured by
bench/stop_times.py, not asserted here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from tests.bridge_process import BridgeProcess
from tests.stop_scenarios import BAD_LOG, STATES, run_one

STOPS = 20


def test_twenty_stops_are_clean(bridges: Callable[..., BridgeProcess], tmp_path: Path) -> None:
    problems = []
    for i in range(STOPS):
        state = STATES[i % len(STATES)]
        process, _, status = run_one(state, tmp_path, bridges)
        log = process.output()
        found = [bad for bad in BAD_LOG if bad in log]
        if found or status != 0:
            problems.append(f"stop {i} ({state}): exit {status}, {found}\n{log[-2500:]}")
        process.close()  # its log file, and SIGKILL by PID if it were still running
    assert not problems, "\n\n".join(problems)
