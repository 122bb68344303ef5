"""Logs people can read and machines can parse, plus the one-line status.

On a terminal the status is a single line rewritten in place; anywhere else (systemd, Docker,
a file) it becomes a periodic summary log line, so logs are not flooded with carriage returns.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from typing import Callable, Literal

_TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


class _ClearStatusFormatter(logging.Formatter):
    """On a terminal, wipe the status line first so a log line never lands glued to it."""

    def format(self, record: logging.LogRecord) -> str:
        return "\r\x1b[2K" + super().format(record)


def setup_logging(level: str, fmt: Literal["text", "json"]) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        formatter: logging.Formatter = JsonFormatter()
    elif sys.stderr.isatty():
        formatter = _ClearStatusFormatter(_TEXT_FORMAT)
    else:
        formatter = logging.Formatter(_TEXT_FORMAT)
    formatter.converter = time.gmtime
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("httpx", "httpcore", "urllib3", "websockets", "influxdb_client"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


class StatusReporter:
    """Calls ``render`` every ``interval`` seconds and shows the result."""

    def __init__(self, render: Callable[[float], str], interval: float, *, tty: bool | None = None) -> None:
        self._render = render
        self._interval = interval
        self._tty = sys.stderr.isatty() if tty is None else tty
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="status", daemon=True)
        self._log = logging.getLogger("bridge.status")

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2.0)
        if self._tty:
            sys.stderr.write("\n")

    def _run(self) -> None:
        every = 1 if self._tty else 10  # a summary line every 10 intervals when not a terminal
        tick = 0
        last = time.monotonic()
        while not self._stop.wait(self._interval):
            tick += 1
            if tick % every:
                continue
            now = time.monotonic()
            line = self._render(now - last)
            last = now
            if self._tty:
                sys.stderr.write("\r\x1b[2K" + line)
                sys.stderr.flush()
            else:
                self._log.info("%s", line)
