"""A private InfluxDB 1.x (`influxd`) process for tests.

Tests must never touch a system instance: the server runs with `-config /dev/null` (otherwise it
reads /etc/influxdb and listens on :8086 on all interfaces), keeps its meta/data/WAL in its own
temporary directory and binds HTTP *and* RPC to free ports on 127.0.0.1 (the default RPC port
8088 collides between instances), as the shared InfluxDB reference prescribes.

The ports and directories outlive the process, so a test can `kill()` the server (SIGKILL, as in a
crash) and `start()` it again on the same data and the same URL.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import httpx

from bridge.demo import influxd_environment

START_DEADLINE_S = 90.0
"""Generous: a loaded 2-core machine may take far longer than the usual ~0.1 s."""
STOP_DEADLINE_S = 30.0
"""How long a SIGTERM may take (flushing the WAL) before the process is killed."""
POLL_INTERVAL_S = 0.05
_READY_LOG_LINE = b'msg="Listening on HTTP"'
_PORT_IN_USE = b"address already in use"
_FIRST_START_ATTEMPTS = 3

_live: set[InfluxDBServer] = set()


class InfluxDBError(RuntimeError):
    """A request the server refused, or a server that would not start; carries the HTTP status."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def quote_ident(name: str) -> str:
    """InfluxQL double-quoted identifier, so test database names never need to be 'safe'."""
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _free_port() -> int:
    """A port the kernel just considered free; the tiny race is handled by retrying the first start."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class InfluxDBServer:
    """One `influxd` process plus the directories and ports it keeps across restarts."""

    def __init__(self, binary: str = "influxd") -> None:
        found = shutil.which(binary)
        if found is None:
            raise InfluxDBError(f"{binary!r} not found on PATH (Debian package 'influxdb')")
        self.binary = found
        self.root = Path(tempfile.mkdtemp(prefix="influxdb-test-"))
        self.log_path = self.root / "influxd.log"
        self.http_port, self.rpc_port = self._pick_ports()
        self._proc: subprocess.Popen[bytes] | None = None
        self._started_once = False
        self._http = httpx.Client(timeout=httpx.Timeout(60.0, connect=10.0))

    # -- process lifecycle -------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def pid(self) -> int:
        if not self.running:
            raise InfluxDBError("influxd is not running")
        assert self._proc is not None
        return self._proc.pid

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def environment(self) -> dict[str, str]:
        """The reference's variable set; everything else is left at influxd's defaults."""
        return {**os.environ, **influxd_environment(self.root, self.http_port, self.rpc_port)}

    def start(self) -> InfluxDBServer:
        """Start (or restart after `stop`/`kill`) on the same directories and ports.

        Only the very first start may move to other ports, when another process grabbed one
        between `_free_port` and the bind; a restart must keep its URL, so it fails instead.
        """
        if self.running:
            raise InfluxDBError(f"influxd already running with pid {self.pid}")
        attempts = 1 if self._started_once else _FIRST_START_ATTEMPTS
        for attempt in range(1, attempts + 1):
            log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
            with self.log_path.open("ab") as log:
                self._proc = subprocess.Popen(
                    [self.binary, "run", "-config", "/dev/null"],
                    env=self.environment(),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            _live.add(self)
            try:
                self._wait_ready(log_offset)
            except InfluxDBError:
                port_taken = _PORT_IN_USE in self._log_since(log_offset)
                if attempt == attempts or not port_taken:
                    raise
                self.http_port, self.rpc_port = self._pick_ports()
            else:
                self._started_once = True
                return self
        raise AssertionError("unreachable")

    def stop(self, deadline_s: float = STOP_DEADLINE_S) -> None:
        """Clean shutdown by PID: SIGTERM, then SIGKILL if it has not exited by the deadline."""
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(timeout=deadline_s)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._forget_process()

    def kill(self) -> None:
        """SIGKILL now, as a crash would: nothing gets flushed, the WAL is all that survives."""
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        self._forget_process()

    def close(self) -> None:
        """Stop the process and delete its data; the server object is unusable afterwards."""
        self.stop()
        self._http.close()
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> InfluxDBServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def rss_bytes(self) -> int:
        """Resident memory, to keep an eye on test data size (RSS grows with the data held)."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise InfluxDBError("VmRSS missing from /proc status")

    def log_tail(self, lines: int = 40) -> str:
        if not self.log_path.exists():
            return "(no log)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    # -- HTTP API ----------------------------------------------------------------------------

    def query(
        self,
        q: str,
        db: str | None = None,
        method: Literal["GET", "POST"] = "GET",
        **params: str,
    ) -> dict[str, Any]:
        """Run InfluxQL with ns epochs and raise on any error, including per-statement ones.

        1.x answers 200 even when a statement failed, so checking the status is not enough.
        Statements that change state (CREATE, DROP, SELECT ... INTO) need POST.
        """
        args = {"q": q, "epoch": "ns", **params}
        if db is not None:
            args["db"] = db
        if method == "GET":
            response = self._http.get(f"{self.url}/query", params=args)
        else:
            response = self._http.post(f"{self.url}/query", data=args)
        if response.status_code != 200:
            raise InfluxDBError(
                f"{method} /query {q!r}: {response.status_code} {self._error_text(response)}",
                response.status_code,
            )
        body: dict[str, Any] = response.json()
        errors = [body["error"]] if "error" in body else []
        errors += [r["error"] for r in body.get("results", []) if "error" in r]
        if errors:
            raise InfluxDBError(f"{method} /query {q!r}: {'; '.join(errors)}", response.status_code)
        return body

    def create_database(self, name: str) -> None:
        self.query(f"CREATE DATABASE {quote_ident(name)}", method="POST")

    def drop_database(self, name: str) -> None:
        self.query(f"DROP DATABASE {quote_ident(name)}", method="POST")

    def write(
        self,
        body: bytes,
        db: str,
        rp: str | None = None,
        precision: str = "ns",
        check: bool = True,
    ) -> httpx.Response:
        """POST line protocol as-is. `check=False` returns non-204 answers (e.g. partial writes)."""
        params = {"db": db, "precision": precision}
        if rp is not None:
            params["rp"] = rp
        response = self._http.post(f"{self.url}/write", params=params, content=body)
        if check and response.status_code != 204:
            raise InfluxDBError(
                f"/write db={db}: {response.status_code} {self._error_text(response)}",
                response.status_code,
            )
        return response

    def series(self, db: str, measurement: str) -> list[str]:
        """Series keys (`measurement,tag=value,...`), sorted, to check what a writer created."""
        result = self.query(f"SHOW SERIES FROM {quote_ident(measurement)}", db=db)
        rows = [row[0] for s in result["results"][0].get("series", []) for row in s["values"]]
        return sorted(rows)

    # -- internals ---------------------------------------------------------------------------

    @staticmethod
    def _pick_ports() -> tuple[int, int]:
        http_port = _free_port()
        rpc_port = _free_port()
        while rpc_port == http_port:
            rpc_port = _free_port()
        return http_port, rpc_port

    @staticmethod
    def _error_text(response: httpx.Response) -> str:
        return response.headers.get("X-Influxdb-Error") or response.text

    def _log_since(self, offset: int) -> bytes:
        with self.log_path.open("rb") as log:
            log.seek(offset)
            return log.read()

    def _wait_ready(self, log_offset: int) -> None:
        """Ready = our process logged its HTTP bind and answers /ping with 204.

        The log line proves the listener is ours, not another process's that won a port race.
        """
        assert self._proc is not None
        deadline = time.monotonic() + START_DEADLINE_S
        while True:
            if self._proc.poll() is not None:
                code = self._proc.returncode
                self._forget_process()
                raise InfluxDBError(f"influxd exited with {code} while starting:\n{self.log_tail()}")
            if _READY_LOG_LINE in self._log_since(log_offset) and self._pings():
                return
            if time.monotonic() > deadline:
                self.kill()
                raise InfluxDBError(
                    f"influxd not ready within {START_DEADLINE_S:.0f} s:\n{self.log_tail()}"
                )
            time.sleep(POLL_INTERVAL_S)

    def _pings(self) -> bool:
        try:
            return self._http.get(f"{self.url}/ping", timeout=5.0).status_code == 204
        except httpx.TransportError:
            return False

    def _forget_process(self) -> None:
        _live.discard(self)


@atexit.register
def _kill_leftovers() -> None:
    """Backup for finalizers that never ran (e.g. an interrupted session): no influxd outlives us."""
    for server in list(_live):
        server.kill()
        shutil.rmtree(server.root, ignore_errors=True)
