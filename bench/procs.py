"""Starting, measuring and stopping the processes a benchmark runs.

Every process is started here and stopped here by its own PID (SIGTERM, then SIGKILL), so a
failing benchmark never leaves a bridge, a stand-in or a load generator behind. CPU and memory
come from /proc, which is what an operator's `top` shows, not from the process's own account.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Mapping, Sequence

REPO = Path(__file__).resolve().parent.parent
_TICKS = os.sysconf("SC_CLK_TCK")

#: Variables of the bridge's own configuration that must not leak from the caller's shell.
_BRIDGE_PREFIXES = ("LSL_", "GRAFANA_", "INFLUXDB_", "SPECTRUM_", "BATCH_", "SPOOL_", "METRICS_", "PRECOMPUTED_")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """utime + stime of all threads of ``pid`` so far, in seconds."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS  # fields 14 and 15 of stat(5)


def status_kb(pid: int, key: str) -> int:
    """A ``Vm*`` line of /proc/<pid>/status in kB (VmHWM = peak RSS, VmRSS = current)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def clean_env(extra: Mapping[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(_BRIDGE_PREFIXES)}
    env.update({"PYTHONUNBUFFERED": "1", **extra})
    return env


class Managed:
    """One child process with its output in a log file; ``stop()`` is safe to call twice."""

    def __init__(self, name: str, args: Sequence[str], env: Mapping[str, str], workdir: Path) -> None:
        self.name = name
        self.log_path = workdir / f"{name}.log"
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            list(args), cwd=REPO, env=dict(env), stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT
        )

    @classmethod
    def python(cls, name: str, module_args: Sequence[str], env: Mapping[str, str], workdir: Path) -> Managed:
        return cls(name, [sys.executable, "-m", *module_args], env, workdir)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def output(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def wait_for_output(self, text: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.output():
                return True
            if not self.alive():
                return False
            time.sleep(0.05)
        return False

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM by PID and wait; SIGKILL if it does not leave in ``timeout`` seconds."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(30)
        if not self._log.closed:
            self._log.close()
        return self.proc.returncode


def wait_until(condition, timeout: float, interval: float = 0.05) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return bool(condition())


def system_busy_seconds() -> float:
    """CPU seconds all cores spent busy since boot (everything but idle and iowait)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    return (user + nice + system + irq + softirq + steal) / _TICKS
