"""Run ``eeg-bridge`` as a real subprocess, and always stop it by its PID."""

from __future__ import annotations

import contextlib
import http.server
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Iterator, Mapping

import pytest

REPO = Path(__file__).resolve().parent.parent


class BridgeProcess:
    def __init__(self, env: Mapping[str, str], workdir: Path, args: tuple[str, ...] = ("run",)) -> None:
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("LSL_", "GRAFANA_", "INFLUXDB_", "SPECTRUM_"))},
            "PYTHONUNBUFFERED": "1",
            "STATUS_INTERVAL_SEC": "0.5",
            **env,
        }
        self.workdir = workdir
        self.args = args
        self.log_path = workdir / f"bridge-{time.monotonic_ns()}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> BridgeProcess:
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bridge", *self.args],
            cwd=REPO,
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_output(self, text: str, timeout: float = 60.0) -> None:
        wait_until(lambda: text in self.output(), timeout, lambda: f"'{text}' not in bridge output:\n{self.output()[-3000:]}")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def terminate(self, timeout: float = 90.0) -> int:
        """SIGTERM and wait: the bridge must flush and exit by itself."""
        assert self.proc is not None
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(30)

    def close(self) -> None:
        self.kill()
        if hasattr(self, "_log"):
            self._log.close()


@contextlib.contextmanager
def local_http_server(handler: type[http.server.BaseHTTPRequestHandler]) -> Iterator[str]:
    """A throw-away HTTP server on 127.0.0.1 for ``handler``; yields its base URL, always shut down."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(condition: Callable[[], bool], timeout: float, message: Callable[[], str] | str = "condition not met") -> None:
    """Poll ``condition`` until true; tests never sleep a fixed time to synchronise."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(message() if callable(message) else message)
        time.sleep(0.05)


@pytest.fixture
def bridges(tmp_path: Path) -> Iterator[Callable[..., BridgeProcess]]:
    """Factory for bridge subprocesses; each is killed by PID at the end, even when the test failed."""
    started: list[BridgeProcess] = []

    def start(env: Mapping[str, str], args: tuple[str, ...] = ("run",)) -> BridgeProcess:
        process = BridgeProcess(env, tmp_path, args).start()
        started.append(process)
        return process

    yield start
    for process in started:
        process.close()
