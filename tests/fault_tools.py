"""Helpers for the fault tests: read the bridge's loss ledger, its memory, and a fault proxy.

* :func:`scrape` reads ``/metrics`` of a running bridge (``METRICS_PORT``) into a :class:`Ledger`.
* :func:`memory` reads VmRSS / VmHWM of a process from ``/proc/<pid>/status``.
* :class:`FaultProxy` is a tiny HTTP proxy in front of a real server (here: InfluxDB) that can
  pass requests through, answer ``503`` with a ``Retry-After`` itself, or stall every request for
  some seconds before passing it on (a slow server that still applies the write late), while
  recording every request it saw with its arrival time.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator, Literal

import httpx
from prometheus_client.parser import text_string_to_metric_families


# ---- the loss ledger -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ledger:
    """One scrape of ``/metrics``: sample name + labels -> value, and when it was taken."""

    samples: dict[tuple[str, frozenset[tuple[str, str]]], float]
    at: float  # time.monotonic() when the answer arrived

    def value(self, name: str, **labels: str) -> float:
        """The sample of ``name`` with these labels, summed over the streams (one stream: its own)."""
        return self.total(name, **labels)

    def total(self, name: str, **labels: str) -> float:
        """Sum over every sample of ``name`` whose labels include ``labels``."""
        wanted = set(labels.items())
        return sum(v for (n, ls), v in self.samples.items() if n == name and wanted <= ls)

    # the counters the fault tests read most
    @property
    def computed(self) -> int:
        return int(self.value("eeg_bridge_frames_computed_total"))

    @property
    def received(self) -> int:
        return int(self.value("eeg_bridge_samples_received_total"))

    def sent(self, sink: str) -> int:
        return int(self.value("eeg_bridge_sink_frames_sent_total", sink=sink))

    def dropped(self, sink: str, reason: str | None = None) -> int:
        labels = {"sink": sink} if reason is None else {"sink": sink, "reason": reason}
        return int(self.total("eeg_bridge_sink_frames_dropped_total", **labels))

    def retries(self, sink: str) -> int:
        return int(self.value("eeg_bridge_sink_retries_total", sink=sink))

    def skipped(self, sink: str) -> int:
        return int(self.value("eeg_bridge_sink_values_skipped_total", sink=sink))

    @property
    def spool_frames(self) -> int:
        return int(self.value("eeg_bridge_spool_frames"))


def scrape(port: int, timeout: float = 10.0) -> Ledger:
    response = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=timeout)
    response.raise_for_status()
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = float(sample.value)
    return Ledger(samples, time.monotonic())


def try_scrape(port: int) -> Ledger | None:
    """None while the bridge is not (yet) serving."""
    try:
        return scrape(port, timeout=5.0)
    except httpx.HTTPError:
        return None


# ---- memory ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Memory:
    rss: int  # bytes
    hwm: int  # peak RSS so far, bytes


def memory(pid: int) -> Memory:
    values: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0]) * 1024
    return Memory(values["VmRSS"], values["VmHWM"])


def spooled_frames(spool_dir: Path) -> int:
    """Frames in the segments on disk now (the count is in each segment's file name)."""
    return sum(int(p.stem.split("-")[1]) for p in spool_dir.glob("*.lp"))


# ---- a fault proxy ---------------------------------------------------------------------------------

ProxyMode = Literal["pass", "unavailable", "stall", "flaky"]


@dataclass(frozen=True)
class ProxyRequest:
    at: float  # time.monotonic() on arrival
    method: str
    path: str
    mode: ProxyMode
    status: int | None  # what the client was answered (None: it went away first)
    body: bytes = field(default=b"", repr=False)  # what the client sent, byte for byte
    query: str = ""


def point_keys(body: bytes) -> list[tuple[bytes, bytes]]:
    """(series key, timestamp) of every line-protocol point in ``body``: what InfluxDB identifies
    a point by (a second write of the same key overwrites it, so counting rows cannot see it)."""
    keys = []
    for line in body.splitlines():
        if not line or line.startswith(b"#"):
            continue
        i = line.index(b" ")
        while line[i - 1 : i] == b"\\":  # the first unescaped space ends the key
            i = line.index(b" ", i + 1)
        keys.append((line[:i], line.rsplit(b" ", 1)[1]))
    return keys


def accepted_points(requests: list[ProxyRequest]) -> Counter[tuple[bytes, bytes]]:
    """How often each point was in a write the server accepted (2xx)."""
    counts: Counter[tuple[bytes, bytes]] = Counter()
    for request in requests:
        if request.status is not None and 200 <= request.status < 300:
            counts.update(point_keys(request.body))
    return counts


class FaultProxy:
    """HTTP proxy on 127.0.0.1 in front of ``upstream``, with switchable faults.

    ``pass``: forward as is. ``unavailable``: answer ``503`` with ``Retry-After: <retry_after>``
    without forwarding. ``stall``: wait ``stall_sec`` and then forward (like a server that
    applies the write late, possibly after the client gave up). ``flaky``: like ``unavailable``
    for every ``flaky_every``-th request in that mode, the others are forwarded. Every request
    is recorded with its body (a capture for counting points per write).
    """

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.mode: ProxyMode = "pass"
        self.retry_after = "2"
        self.stall_sec = 0.0
        self.flaky_every = 3
        self._flaky_count = 0
        self._lock = threading.Lock()
        self._records: list[ProxyRequest] = []
        self._closing = threading.Event()
        self._client = httpx.Client(timeout=60.0)
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                with proxy._lock:  # the mode and the arrival time together: set_mode() is ordered with it
                    arrived = time.monotonic()
                    mode, retry_after, stall = proxy.mode, proxy.retry_after, proxy.stall_sec
                    if mode == "flaky":
                        proxy._flaky_count += 1
                        refuse = proxy._flaky_count % proxy.flaky_every == 0
                status: int | None = None
                try:
                    if mode == "unavailable" or (mode == "flaky" and refuse):
                        status = 503
                        self._reply(503, b'{"error":"unavailable (fault proxy)"}', {"Retry-After": retry_after})
                        return
                    if mode == "stall":
                        proxy._closing.wait(stall)
                    upstream = proxy._client.request(
                        self.command,
                        proxy.upstream + self.path,
                        content=body,
                        headers={k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length", "connection")},
                    )
                    status = upstream.status_code
                    headers = {k: v for k, v in upstream.headers.items() if k.lower().startswith("x-influxdb") or k.lower() == "content-type"}
                    self._reply(upstream.status_code, upstream.content, headers)
                except (OSError, httpx.HTTPError):
                    status = None  # the client gave up (timeout) or the upstream is gone
                finally:
                    with proxy._lock:
                        path, _, query = self.path.partition("?")
                        proxy._records.append(ProxyRequest(arrived, self.command, path, mode, status, body, query))

            def _reply(self, status: int, body: bytes, headers: dict[str, str]) -> None:
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                self.wfile.flush()

            do_GET = do_POST = _handle  # noqa: N815

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="fault-proxy", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_port}"

    def start(self) -> FaultProxy:
        self._thread.start()
        return self

    def set_mode(self, mode: ProxyMode, *, retry_after: str = "2", stall_sec: float = 0.0) -> float:
        """Switch the fault; returns time.monotonic() of the switch. A request that arrived
        before it was served in the old mode, one that arrived at or after it in the new one."""
        with self._lock:
            self.retry_after, self.stall_sec = retry_after, stall_sec
            self.mode = mode
            return time.monotonic()

    def requests(self, path: str = "/write", since: float = 0.0, until: float = float("inf"),
                 mode: ProxyMode | None = None) -> list[ProxyRequest]:
        """Requests that arrived in [since, until) (and were served in ``mode``), as far as they
        are answered: one still in flight (stalled, or its answer being written) is recorded only
        when it ends, so read this after the client has moved on (e.g. once its spool is empty)."""
        with self._lock:
            return [r for r in self._records
                    if r.path == path and since <= r.at < until and (mode is None or r.mode == mode)]

    def close(self) -> None:
        self._closing.set()
        self._server.shutdown()
        self._server.server_close()
        self._client.close()


def sampled(interval: float, until: float) -> Iterator[float]:
    """Yield time.monotonic() every ``interval`` s until ``until`` (a phase of a scenario)."""
    while (now := time.monotonic()) < until:
        yield now
        time.sleep(min(interval, max(0.0, until - time.monotonic())))
