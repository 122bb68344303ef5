"""The Grafana Live stand-in (tests/grafana_standin.py) as a benchmark receiver in its own process.

Why not run it unchanged: the stand-in parses every body with Python regexes and converts it into
browser frames, ~33 ms per 64 x 129 frame and ~115 ms per 256 x 129 frame on the benchmark machine.
At 31 frames/s (hop 32), or 15.6 frames/s of 256 channels, that is one to two cores, so the *receiver* would be the bottleneck: the
bridge waits for each answer, its live queue would drop frames and the measured latency would be
the stand-in's. Real Grafana parses in Go, in about a millisecond.

So this subclass keeps everything of the stand-in that shapes the exchange (its HTTP/1.1 server,
keep-alive, receive timestamp ``time.time_ns()`` after the body is read, authentication and role
check, 200 reply), and *defers* the parse: each request is logged as one line
``received_ns frame_ns body_bytes lines`` (frame_ns = timestamp of the first line), and a sample
of bodies is kept and run through the stand-in's own parser (``parse_line_protocol`` and
``points_to_frames``) after the run, so a malformed push still fails the benchmark's check.
"""

from __future__ import annotations

import argparse
import itertools
import json
import signal
import threading
import time
from pathlib import Path
from typing import Any, Sequence

from tests.grafana_standin import (
    GrafanaLiveStandIn,
    LineProtocolError,
    _HttpRequest,
    _Reply,
    parse_line_protocol,
    points_to_frames,
)

TOKEN = "glsa_bench_token"
ADMIN_TOKEN = "glsa_bench_admin"  # WebSocket push needs the Admin role
#: Bodies kept for the after-run parse: the first few and then one in ``SAMPLE_EVERY``.
SAMPLE_FIRST = 5
SAMPLE_EVERY = 200
SAMPLE_MAX = 40
#: ``--flap``: the faults a flapping Grafana cycles through (the stand-in's modes, see its set_mode).
FLAP_MODES = ("down", "error_5xx", "hang", "reset")


class RecordingStandIn(GrafanaLiveStandIn):
    def __init__(self, record: Path, **kwargs: Any) -> None:
        # history_limit bounds what the base class keeps (it stores whole bodies).
        super().__init__(tokens={TOKEN: "Editor", ADMIN_TOKEN: "Admin"}, history_limit=20, **kwargs)
        self._out = open(record, "w", buffering=1 << 16)
        self._count = 0
        self.samples: list[bytes] = []

    def _http_push(self, request: _HttpRequest, stream_id: str) -> _Reply:
        identity = self._authenticate(request.header_map)
        if isinstance(identity, _Reply):
            return identity
        self._log_body(request.received_ns, request.body)
        return _Reply(200)

    def _log_body(self, received_ns: int, body: bytes) -> None:
        first = body[: body.find(b"\n")] if b"\n" in body else body
        stamp = first.rsplit(b" ", 1)[-1] if first else b"0"
        lines = body.count(b"\n") + (0 if body.endswith(b"\n") else 1)
        self._out.write(f"{received_ns} {int(stamp)} {len(body)} {lines}\n")
        self._count += 1
        if len(self.samples) < SAMPLE_MAX and (self._count <= SAMPLE_FIRST or self._count % SAMPLE_EVERY == 0):
            self.samples.append(body)

    def _ws_message(self, conn_id: int, stream_id: str, frame_format: str, body: bytes) -> None:
        """WebSocket push: same record, parse deferred likewise (Grafana sends no acknowledgement)."""
        received = time.time_ns()
        self._log_body(received, body)

    def flush(self) -> None:
        self._out.flush()

    def close_record(self) -> None:
        self._out.close()


def validate(bodies: list[bytes]) -> dict[str, Any]:
    """Run kept bodies through the stand-in's parser and browser-frame conversion."""
    errors: list[str] = []
    schemas: set[tuple[tuple[str, tuple[str, ...]], ...]] = set()
    for body in bodies:
        try:
            points = parse_line_protocol(body)
            frames = points_to_frames(points, "labels_column")
            schemas.add(tuple((name, tuple(f.name for f in fields)) for name, fields in frames))
        except LineProtocolError as exc:
            errors.append(str(exc)[:200])
    return {"parsed": len(bodies), "invalid": len(errors), "errors": errors[:3], "schemas": len(schemas)}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.standin")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--record", type=Path, required=True, help="receive log, one line per push")
    parser.add_argument("--summary", type=Path, required=True, help="JSON written at exit")
    parser.add_argument("--flap", metavar="OK_SEC:FAULT_SEC",
                        help="flap: OK_SEC healthy, then FAULT_SEC in the next of " + ", ".join(FLAP_MODES) + ", and again")
    args = parser.parse_args(argv)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    standin = RecordingStandIn(args.record, host="127.0.0.1", port=args.port)
    standin.start()
    ok_sec, fault_sec = (float(v) for v in args.flap.split(":")) if args.flap else (0.0, 0.0)
    faults = itertools.cycle(FLAP_MODES)
    flaps: list[tuple[float, str]] = []  # (seconds since start, mode entered)
    started = time.monotonic()
    next_switch = started + ok_sec
    try:
        print(f"listening on {standin.url}", flush=True)
        while not stop.wait(0.25):
            standin.flush()
            if args.flap and time.monotonic() >= next_switch:
                healthy = standin.mode != "ok"
                mode = "ok" if healthy else next(faults)
                standin.set_mode(mode)  # type: ignore[arg-type]
                next_switch += ok_sec if healthy else fault_sec
                flaps.append((round(time.monotonic() - started, 1), mode))
                print(f"{flaps[-1][0]:.1f} s: mode {mode}", flush=True)
    finally:
        if standin.mode != "ok":
            standin.set_mode("ok")  # release hung requests before stopping
        standin.stop()
        standin.close_record()
    summary = {"status_counts": {str(k): v for k, v in standin.status_counts().items()}, **validate(standin.samples),
               "flaps": flaps}
    args.summary.write_text(json.dumps(summary))


if __name__ == "__main__":
    main()
