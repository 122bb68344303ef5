"""``eeg-bridge demo``: something to look at on a fresh machine, with nothing else installed.

Starts the simulated EEG stream and the bridge with the live page on, and prints the page's URL
first. If ``influxd`` (Debian's ``influxdb``) is on PATH it also starts a private InfluxDB 1.x
under the user's state directory and archives into it; otherwise the archive is the spool only,
said once. Grafana is used only when ``GRAFANA_URL`` is set. Every process it starts is its own
child in a session of its own, stopped by PID when the bridge ends (Ctrl-C reaches only the demo,
which passes it on), in order: bridge, simulator, InfluxDB, so the bridge can upload what it
computed before the server goes away.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Mapping, Sequence

import httpx

from bridge.config import ConfigError

DEMO_STREAM = "SimEEG"
DEMO_DATABASE = "eeg"
INFLUXD_START_SEC = 60.0


def state_dir() -> Path:
    return Path.home() / ".local" / "state" / "eeg-bridge"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def influxd_environment(root: Path, http_port: int, rpc_port: int) -> dict[str, str]:
    """A private influxd: its own directories, loopback-only ports, no phoning home.

    Run it with ``-config /dev/null``, or it reads /etc/influxdb and listens on :8086 on every
    interface. The RPC port must be set too: its default (8088) collides between instances.
    """
    return {
        "INFLUXDB_META_DIR": str(root / "meta"),
        "INFLUXDB_DATA_DIR": str(root / "data"),
        "INFLUXDB_DATA_WAL_DIR": str(root / "wal"),
        "INFLUXDB_HTTP_BIND_ADDRESS": f"127.0.0.1:{http_port}",
        "INFLUXDB_BIND_ADDRESS": f"127.0.0.1:{rpc_port}",
        "INFLUXDB_REPORTING_ENABLED": "false",
        "INFLUXDB_MONITOR_STORE_ENABLED": "false",
        "INFLUXDB_HTTP_LOG_ENABLED": "false",
    }


def _say(text: str) -> None:
    print(f"eeg-bridge demo: {text}", flush=True)


def _stop(process: subprocess.Popen[bytes] | None, sig: int, timeout: float) -> None:
    """Stop one child by its PID: ``sig``, then SIGKILL if it has not ended within ``timeout``."""
    if process is None or process.poll() is not None:
        return
    process.send_signal(sig)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _start_influxd(root: Path, log_path: Path) -> tuple[subprocess.Popen[bytes], str] | None:
    """Start a private influxd and create the demo database; None (after saying why) if it fails."""
    root.mkdir(parents=True, exist_ok=True)
    http_port, rpc_port = free_port(), free_port()
    env = {**os.environ, **influxd_environment(root, http_port, rpc_port)}
    with log_path.open("ab") as log:
        process = subprocess.Popen(["influxd", "run", "-config", "/dev/null"], env=env, stdin=subprocess.DEVNULL,
                                   stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{http_port}"
    deadline = time.monotonic() + INFLUXD_START_SEC
    with httpx.Client(timeout=5.0) as client:
        while time.monotonic() < deadline and process.poll() is None:
            try:
                if client.get(f"{url}/ping").status_code == 204:
                    client.post(f"{url}/query", data={"q": f'CREATE DATABASE "{DEMO_DATABASE}"'}).raise_for_status()
                    return process, url
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
    _stop(process, signal.SIGTERM, 10.0)
    _say(f"influxd did not start (see {log_path}); archiving to the spool only")
    return None


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="eeg-bridge demo",
        description="Simulated EEG -> the bridge -> the live page (and a private InfluxDB when influxd is installed). "
        "Ctrl-C stops everything it started. Other bridge options (e.g. GRAFANA_URL) are taken from the environment.",
    )
    p.add_argument("--channels", type=int, default=32, help="simulated channels [default: 32]")
    p.add_argument("--rate", type=float, default=500.0, help="simulated sampling rate, Hz [default: 500]")
    p.add_argument("--port", type=int, default=None, help="live page port [default: VIEW_PORT, else a free port]")
    return p


def bridge_environment(env: Mapping[str, str], *, port: int, spool: Path, influx_url: str | None) -> dict[str, str]:
    """The bridge's settings for the demo; the user's own environment wins where it says something."""
    out = {**env, "LSL_STREAM_NAME": DEMO_STREAM, "VIEW_PORT": str(port)}
    out.setdefault("GRAFANA_URL", "")
    # EEG lives below ~80 Hz; the simulator's 0-250 Hz would squeeze it into the bottom third.
    out.setdefault("SPECTRUM_FMAX", "80")
    out.setdefault("SPOOL_DIR", str(spool))
    if influx_url is not None:
        out.update(INFLUXDB_URL=influx_url, INFLUXDB_API="v1", INFLUXDB_BUCKET=DEMO_DATABASE)
    else:
        out["INFLUXDB_URL"] = ""
    return out


def main(argv: Sequence[str]) -> int:
    args = parser().parse_args(argv)
    # Started in the background by a non-interactive shell, SIGINT arrives ignored: Ctrl-C (or
    # kill -INT) must still stop the demo.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    if args.channels < 1 or args.rate <= 0:
        raise ConfigError("--channels and --rate must be positive.")
    host = os.environ.get("VIEW_HOST", "127.0.0.1")
    port = args.port or int(os.environ.get("VIEW_PORT") or 0) or free_port()
    shown = f"[{host}]" if ":" in host else host
    _say(f"open http://{shown}:{port}/ in a browser (Ctrl-C stops everything)")
    base = state_dir()
    base.mkdir(parents=True, exist_ok=True)
    spool = base / "demo-spool"
    simulator = bridge = influxd = None
    try:
        influx_url = None
        if shutil.which("influxd"):
            started = _start_influxd(base / "demo-influxdb", base / "demo-influxdb.log")
            if started is not None:
                influxd, influx_url = started
                _say(f"archiving into a private InfluxDB 1.x at {influx_url}, database '{DEMO_DATABASE}' "
                     f"(data in {base / 'demo-influxdb'})")
        else:
            _say(f"no influxd on PATH: archiving to the spool at {spool} only "
                 "(install Debian's 'influxdb' for a private InfluxDB; 'eeg-bridge replay' uploads the spool later)")
        if os.environ.get("GRAFANA_URL"):
            _say(f"also pushing live frames to Grafana at {os.environ['GRAFANA_URL']}")
        else:
            _say("Grafana not used: set GRAFANA_URL (and GRAFANA_TOKEN) to also push the heatmaps there")
        # A source_id of its own, so another simulator (or demo) on the network is never picked up.
        source_id = f"eeg-bridge-demo-{os.getpid()}"
        simulator = subprocess.Popen(
            [sys.executable, "-m", "bridge", "simulate", "--name", DEMO_STREAM, "--source-id", source_id,
             "--channels", str(args.channels), "--rate", f"{args.rate:g}"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True,
        )
        env = {**bridge_environment(os.environ, port=port, spool=spool, influx_url=influx_url), "LSL_SOURCE_ID": source_id}
        # Its own session too: a terminal's Ctrl-C reaches only us, and we pass on exactly one
        # signal (a second one landing while the bridge exits would cut its clean stop short).
        bridge = subprocess.Popen([sys.executable, "-m", "bridge", "run"], env=env, stdin=subprocess.DEVNULL,
                                  start_new_session=True)
        signal.signal(signal.SIGTERM, lambda *_: bridge.send_signal(signal.SIGTERM))  # type: ignore[union-attr]
        while True:
            try:
                code = bridge.wait()
                return code if code >= 0 else 128 - code
            except KeyboardInterrupt:
                bridge.send_signal(signal.SIGINT)
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        _stop(bridge, signal.SIGINT, 60.0)
        _stop(simulator, signal.SIGTERM, 10.0)
        _stop(influxd, signal.SIGTERM, 30.0)
        _say("stopped")
