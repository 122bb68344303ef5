"""`eeg-bridge demo` as a user runs it: the URL first, a page that shows frames, a private InfluxDB
that receives them, and Ctrl-C (SIGINT to the whole foreground process group) stops every process
it started."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.bridge_process import REPO, wait_until
from tests.fixtures_influxdb import _require_influxd


def _descendants(pid: int) -> set[int]:
    found: set[int] = set()
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return found
    for child in map(int, children):
        found |= {child} | _descendants(child)
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.influxdb
def test_demo_prints_the_url_first_archives_and_stops_everything_on_ctrl_c(tmp_path: Path) -> None:
    _require_influxd()
    log_path = tmp_path / "demo.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LSL_", "GRAFANA_", "INFLUXDB_", "VIEW_", "SPOOL_"))}
    env.update(HOME=str(tmp_path), PYTHONUNBUFFERED="1")
    with log_path.open("wb") as log:
        demo = subprocess.Popen([sys.executable, "-m", "bridge", "demo", "--channels", "8", "--rate", "250"], cwd=REPO,
                                env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    started: set[int] = set()
    try:
        wait_until(lambda: "open http" in log_path.read_text(), 60, lambda: log_path.read_text())
        first = log_path.read_text().splitlines()[0]
        url = re.fullmatch(r"eeg-bridge demo: open (http://127\.0\.0\.1:\d+/) in a browser \(Ctrl-C stops everything\)", first)
        assert url, first
        wait_until(lambda: "view ok" in log_path.read_text(), 90, lambda: log_path.read_text())
        text = log_path.read_text()
        influx = re.search(r"archiving into a private InfluxDB 1\.x at (http://127\.0\.0\.1:\d+), database 'eeg' \(data in (.+)\)", text)
        assert influx and influx.group(2) == str(tmp_path / ".local/state/eeg-bridge/demo-influxdb")
        assert "Grafana not used: set GRAFANA_URL" in text
        assert httpx.get(url.group(1), timeout=10).status_code == 200

        def archived() -> int:
            body = httpx.get(f"{influx.group(1)}/query", params={"db": "eeg", "q": 'SELECT COUNT("000.00") FROM eeg_spectrum'}).json()
            series = body["results"][0].get("series")
            return int(series[0]["values"][0][1]) if series else 0

        wait_until(lambda: archived() > 0, 60, lambda: log_path.read_text())
        started = _descendants(demo.pid)
        assert len(started) >= 3  # simulator, bridge, influxd
        os.killpg(demo.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        assert demo.wait(90) == 0
        assert log_path.read_text().rstrip().endswith("eeg-bridge demo: stopped")
        wait_until(lambda: not any(_alive(pid) for pid in started), 30, "a process the demo started outlived it")
        assert "Traceback" not in log_path.read_text()
    finally:
        for pid in started | ({demo.pid} if demo.poll() is None else set()):
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        demo.wait(30)
