"""One open live page for the benchmark: a WebSocket client that reads every message, as a browser would.

It keeps trying to connect until the bridge serves the page, reads until the bridge closes the
connection (or SIGTERM), and prints a JSON summary line: frames and bytes received, history frames.
Running in its own process keeps its CPU out of the bridge's figures.

    python -m bench.pagereader --port PORT
"""

from __future__ import annotations

import argparse
import json
import signal
import threading
import time

from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.pagereader")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--connect-timeout", type=float, default=180.0)
    args = parser.parse_args()
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    summary = {"connected": False, "frames": 0, "bytes": 0, "history_frames": None}
    deadline = time.monotonic() + args.connect_timeout
    ws = None
    while ws is None and not stop.is_set() and time.monotonic() < deadline:
        try:
            ws = connect(f"ws://127.0.0.1:{args.port}/ws", max_size=None, open_timeout=5)
        except OSError:
            stop.wait(0.2)
    if ws is not None:
        summary["connected"] = True
        print("connected", flush=True)
        ws.send(json.dumps({"type": "hello", "token": ""}))
        try:
            while not stop.is_set():
                try:
                    message = ws.recv(0.5)
                except TimeoutError:
                    continue
                if isinstance(message, bytes):
                    summary["frames"] += 1
                    summary["bytes"] += len(message)
                elif '"history_end"' in message:
                    summary["history_frames"] = json.loads(message)["frames"]
        except ConnectionClosed:
            pass
        ws.close()
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
