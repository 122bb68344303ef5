"""Stopping a bridge that serves the live page, in the states a user leaves it in (issue 17, point 2).

Shared by tests/test_view_stop.py (each stop's log and exit status) and bench/stop_times.py (how
long each stop takes; the tests assert no durations). The pages are real WebSocket clients that
speak the page's protocol (hello, auth, layout, history, history_end, frames).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable

import numpy as np
from websockets.sync.client import ClientConnection, connect

from tests.bridge_process import BridgeProcess, free_port, wait_until
from tests.fixtures_lsl import Player, make_outlet, unique

FS = 1000.0
CHANNELS = 64
#: What a stop's log must never hold.
BAD_LOG = ("Traceback", "Task was destroyed", "did not stop in time", "no running event loop")
STATES = ("no page", "one page", "three pages", "page mid-history", "page closed just before")


def _page(url: str, read_history: bool = True) -> tuple[ClientConnection, int]:
    """A page: hello, then (unless told not to) its whole history; returns it and the history length."""
    ws = connect(url, open_timeout=30, max_size=None)
    ws.send(json.dumps({"type": "hello", "token": ""}))
    auth = json.loads(ws.recv(timeout=30))
    assert auth["ok"], auth
    if not read_history:
        ws.recv(timeout=30)  # one message, then it stops reading: a stalled browser mid-history
        return ws, -1
    while True:
        message = ws.recv(timeout=30)
        if isinstance(message, str) and json.loads(message).get("type") == "history_end":
            return ws, int(json.loads(message)["frames"])


def run_one(state: str, workdir: Path, start: Callable[[dict[str, str]], BridgeProcess]) -> tuple[BridgeProcess, float, int]:
    """Start a bridge on a live outlet, put it in ``state``, SIGTERM it; (process, seconds to exit, status)."""
    name, port = unique("stop"), free_port()
    outlet = make_outlet(name, channels=CHANNELS, rate=FS)
    data = np.random.default_rng(0).standard_normal((int(5 * FS), CHANNELS)).astype(np.float32)
    player = Player(outlet, data, FS, chunk=50, loop=True).start()
    pages: list[ClientConnection] = []
    try:
        process = start({
            "LSL_STREAM_NAME": name,
            "SPECTRUM_NPERSEG": "256",
            "SPECTRUM_NOVERLAP": "192",
            "GRAFANA_URL": "",
            "INFLUXDB_URL": "",
            "SPOOL_DIR": str(workdir / f"spool-{name}"),
            "VIEW_PORT": str(port),
            "VIEW_HISTORY_SEC": "60",
        })
        process.wait_for_output("connected to")
        url = f"ws://127.0.0.1:{port}/ws"
        if state == "page mid-history":
            # enough history that it cannot all sit in the socket buffers of a page that stops reading
            def long_history() -> bool:
                ws, frames = _page(url)
                ws.close()
                return frames >= 60
            wait_until(long_history, 60, "the history never grew to 60 frames")
            pages.append(_page(url, read_history=False)[0])
        elif state != "no page":
            count = 3 if state == "three pages" else 1
            pages.extend(_page(url)[0] for _ in range(count))
            for ws in pages:  # each page receives live frames, as an open page does
                wait_until(lambda ws=ws: isinstance(ws.recv(timeout=30), bytes), 30, "no live frame")
            if state == "page closed just before":
                for ws in pages:
                    ws.close()
                pages.clear()
        began = time.monotonic()
        status = process.terminate(90)
        return process, time.monotonic() - began, status
    finally:
        for ws in pages:
            ws.close()
        player.stop()
