"""Secrets never appear in logs, errors, status, health output or --help."""

from __future__ import annotations

import http.server
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import httpx
import numpy as np
import pytest

from tests.bridge_process import free_port, local_http_server, wait_until
from tests.fixtures_lsl import Player, make_outlet, unique

GRAFANA_TOKEN = "glsa_SECRETgrafanaTOKEN123456789"
ADMIN_PASSWORD = "SECRETadminPASSWORD"
INFLUX_TOKEN = "SECRETinfluxTOKEN987654321"
INFLUX_PASSWORD = "SECRETinfluxPASSWORD"
SECRETS = (GRAFANA_TOKEN, ADMIN_PASSWORD, INFLUX_TOKEN, INFLUX_PASSWORD)


class _Refuse(http.server.BaseHTTPRequestHandler):
    """Answers every request 401, echoing nothing: the bridge has to phrase the error itself."""

    def _deny(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        body = b'{"message":"Unauthorized","code":"unauthorized"}'
        self.send_response(401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _deny  # noqa: N815 - http.server's naming

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def refusing_server() -> Iterator[str]:
    with local_http_server(_Refuse) as url:
        yield url


def test_no_secret_in_any_output(refusing_server: str, bridges, players: list[Player], tmp_path: Path) -> None:
    name = unique()
    outlet = make_outlet(name, channels=2, rate=250.0)
    port = free_port()
    env = {
        "LSL_STREAM_NAME": name,
        "GRAFANA_URL": refusing_server,
        "GRAFANA_TOKEN": GRAFANA_TOKEN,
        "GRAFANA_ADMIN_USER": "admin",
        "GRAFANA_ADMIN_PASSWORD": ADMIN_PASSWORD,
        "INFLUXDB_URL": refusing_server,
        "INFLUXDB_TOKEN": INFLUX_TOKEN,
        "INFLUXDB_PASSWORD": INFLUX_PASSWORD,
        "INFLUXDB_USERNAME": "writer",
        "SPECTRUM_NPERSEG": "64",
        "SPECTRUM_NOVERLAP": "32",
        "BATCH_INTERVAL_SEC": "0.2",
        "LOG_LEVEL": "DEBUG",
        "METRICS_PORT": str(port),
        "SPOOL_DIR": str(tmp_path / "spool"),
    }
    process = bridges(env)
    process.wait_for_output("connected to")
    players.append(Player(outlet, np.zeros((2500, 2), np.float32), 250.0, loop=True).start())
    process.wait_for_output("GRAFANA_TOKEN")  # the 401 message names the setting, not its value
    process.wait_for_output("INFLUXDB_TOKEN")
    health = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=10).text
    metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    assert "401" in health
    assert process.terminate() == 0
    bad_run = subprocess.run(
        [sys.executable, "-m", "bridge", "run", "--spectrum-nperseg", "x"],
        env={**process.env, **env}, capture_output=True, text=True, timeout=60,
    )
    assert bad_run.returncode == 2
    help_text = subprocess.run(
        [sys.executable, "-m", "bridge", "--help"], env={**process.env, **env}, capture_output=True, text=True, timeout=60
    ).stdout
    everything = "\n".join([process.output(), health, metrics, bad_run.stdout, bad_run.stderr, help_text])
    for secret in SECRETS:
        assert secret not in everything
    assert "GRAFANA_TOKEN" in help_text


def test_metrics_port_binds_to_loopback_by_default(bridges, tmp_path: Path) -> None:
    port = free_port()
    process = bridges({"LSL_STREAM_NAME": unique(), "GRAFANA_URL": "", "INFLUXDB_URL": "", "METRICS_PORT": str(port),
                       "SPOOL_DIR": str(tmp_path / "spool")})
    wait_until(lambda: f"127.0.0.1:{port}/metrics" in process.output(), 60, process.output)
    listening = Path("/proc/net/tcp").read_text().splitlines()[1:]
    local = [line.split()[1] for line in listening if line.split()[3] == "0A"]  # 0A = LISTEN
    assert f"0100007F:{port:04X}" in local  # 127.0.0.1, and not 0.0.0.0
    assert f"00000000:{port:04X}" not in local
    assert process.terminate() == 0
