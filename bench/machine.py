"""Machine facts printed with every result: numbers are meaningless without them."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _influxd_version() -> str:
    import subprocess

    try:
        out = subprocess.run(["influxd", "version"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return "not installed"
    return out.strip() or "?"


def load_average() -> tuple[float, float, float]:
    return os.getloadavg()


def facts() -> dict[str, Any]:
    import numpy
    import pylsl
    import scipy

    mem_kb = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem_kb = int(line.split()[1])
    try:
        influx = __import__("influxdb_client").__version__
    except Exception:  # noqa: BLE001 - optional in a report
        influx = "?"
    return {
        "cpu_model": _cpu_model(),
        "cores": os.cpu_count(),
        "memory_gb": round(mem_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "numpy": numpy.__version__,
        "scipy": scipy.__version__,
        "pylsl": getattr(pylsl, "__version__", "?"),
        "liblsl": f"{pylsl.library_version()} ({pylsl.library_info().split('/build')[0]})",
        "influxd": _influxd_version(),
        "influxdb_client": influx,
        "load_average_at_start": [round(x, 2) for x in load_average()],
    }
