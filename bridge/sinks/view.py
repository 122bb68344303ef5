"""The live page: the bridge's own spectrogram viewer, served over HTTP and a WebSocket.

Labs check electrodes at set-up time, often before any server runs, so the bridge shows what it
computes itself: one page (plain HTML, JS and canvas from ``bridge/view/``, nothing fetched from
the internet) fed by a WebSocket. Like the Grafana sink it favours freshness: each connected page
has its own short queue and a slow or stalled browser drops its own oldest frames (counted as
``stale`` under ``sink="view"``); the source, the archive and the other pages never wait for it.

Every frame is encoded once (:mod:`bridge.codecs.view`) and the same bytes go to every page and
into the history, which keeps the last ``VIEW_HISTORY_SEC`` so that a reload starts with a full
picture. All connection work runs on one asyncio loop in its own thread; the source thread only
appends to a small inbox and wakes the loop.

Security: the page binds to loopback unless told otherwise, and off loopback only with
``VIEW_TOKEN`` (checked in :mod:`bridge.config`). The HTTP page holds no secret; the token is
sent as the first WebSocket message and compared in constant time. A WebSocket whose ``Origin``
is another site is refused, so a web page the user happens to visit cannot read the stream.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os
import socket
import threading
import time
from collections import deque
from http import HTTPStatus
from importlib import resources
from typing import TYPE_CHECKING, Any, Callable
from urllib.parse import urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State
from websockets.http11 import Request, Response

from bridge.codecs.view import encode_frame, layout_message, markers_message
from bridge.config import ConfigError, ViewSettings
from bridge.frame import FrameLayout, SpectrumFrame
from bridge.observe.metrics import SinkMetrics
from bridge.sinks.base import Sink, SinkHealth

if TYPE_CHECKING:
    from bridge.observe.metrics import Metrics
    from bridge.supervisor import Bridge

log = logging.getLogger(__name__)
#: websockets logs every HTTP request and connection at INFO; a page load is not news.
_ws_log = logging.getLogger("bridge.sinks.view.ws")
_ws_log.setLevel(logging.WARNING)

#: Frames a page may fall behind before its oldest are dropped: ~1 s at 256 ch x 2 kHz.
PAGE_QUEUE_FRAMES = 16
#: Frames the source may hand over before the loop thread has taken them (it never should lag).
INBOX_FRAMES = 64
#: Kernel send buffer per page: what a stalled browser can hold beyond its queue (autotuning would
#: let it grow to megabytes, i.e. seconds of frames that are stale before they arrive).
PAGE_SOCKET_BUFFER = 1 << 18
#: A page must say hello (with the token, when one is set) this fast.
HELLO_TIMEOUT_SEC = 10.0
STATUS_INTERVAL_SEC = 1.0
#: A page that does not answer the close handshake (a stalled or vanished browser) is dropped after
#: this long; websockets' default of 10 s would hold up every stop behind one dead page.
PAGE_CLOSE_TIMEOUT_SEC = 1.0
#: How long a stop waits for the pages' handlers to return before cancelling them.
SHUTDOWN_GRACE_SEC = 3.0
WS_PATH = "/ws"
_STATIC = {"/": ("index.html", "text/html; charset=utf-8"),
           "/index.html": ("index.html", "text/html; charset=utf-8"),
           "/view.js": ("view.js", "text/javascript; charset=utf-8"),
           "/view.css": ("view.css", "text/css; charset=utf-8")}
_SECURITY_HEADERS = [
    ("Content-Security-Policy",
     "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
     "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("Cache-Control", "no-store"),
]

#: Status shown on the page: called on the loop thread once a second.
StatusSource = Callable[[], dict[str, Any]]


def _static_files() -> dict[str, tuple[bytes, str]]:
    folder = resources.files("bridge") / "view"
    return {path: ((folder / name).read_bytes(), kind) for path, (name, kind) in _STATIC.items()}


class _Page:
    """One connected page: its own bounded frame queue, plus control messages that are never dropped."""

    def __init__(self, connection: ServerConnection) -> None:
        self.connection = connection
        self.frames: deque[tuple[bytes, int]] = deque()
        self.control: deque[str] = deque()
        self.status: str | None = None
        self.wake = asyncio.Event()

    def push_frame(self, message: bytes, newest_ns: int, metrics: SinkMetrics) -> None:
        if len(self.frames) >= PAGE_QUEUE_FRAMES:
            self.frames.popleft()
            metrics.drop("stale")
        self.frames.append((message, newest_ns))
        self.wake.set()

    def push_control(self, message: str) -> None:
        self.control.append(message)
        self.wake.set()

    def push_status(self, message: str) -> None:
        self.status = message
        self.wake.set()


class ViewSink:
    name = "view"

    def __init__(self, settings: ViewSettings, metrics: SinkMetrics, status: StatusSource | None = None) -> None:
        self.settings = settings
        self.metrics = metrics
        self.health = SinkHealth(self.name, log)
        self.status_source = status
        self._files = _static_files()
        self._history: deque[tuple[int, bytes]] = deque()
        self._markers: deque[tuple[float, str]] = deque()
        self._layout: FrameLayout | None = None
        self._layout_text: str | None = None
        self._pages: set[_Page] = set()
        self._inbox: deque[SpectrumFrame] = deque()
        self._lock = threading.Lock()
        self._scheduled = False
        self._closed = False
        self._status_task: Any = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="sink-view", daemon=True)
        self._thread.start()
        try:
            self._server: Server = asyncio.run_coroutine_threadsafe(self._serve(), self._loop).result(30)
        except OSError as exc:
            self._stop_loop()
            raise ConfigError(
                f"Cannot serve the live page on {settings.host}:{settings.port} "
                f"({os.strerror(exc.errno) if exc.errno else exc}); "
                "choose another VIEW_PORT."
            ) from None
        self.port = int(self._server.sockets[0].getsockname()[1])
        host = f"[{settings.host}]" if ":" in settings.host else settings.host
        self.url = f"http://{host}:{self.port}/"

    async def _serve(self) -> Server:
        return await serve(
            self._handle, self.settings.host, self.settings.port,
            process_request=self._http, max_size=4096, write_limit=2**16,
            logger=_ws_log, server_header=None, close_timeout=PAGE_CLOSE_TIMEOUT_SEC,
        )

    # ---- core-facing -----------------------------------------------------------------------
    def start(self) -> None:
        self.health.ok()
        self._status_task = asyncio.run_coroutine_threadsafe(self._status_loop(), self._loop)
        log.info("live page on %s", self.url)

    def offer(self, frame: SpectrumFrame) -> None:
        with self._lock:
            if self._closed:
                return
            if len(self._inbox) >= INBOX_FRAMES:
                self._inbox.popleft()
                self.metrics.drop("stale")
            self._inbox.append(frame)
            wake = not self._scheduled
            self._scheduled = True
        if wake:
            self._loop.call_soon_threadsafe(self._take_inbox)

    def add_markers(self, markers: list[tuple[str, int]]) -> None:
        """LSL markers (text, Unix ns) from the marker follower; shown as lines on the spectrograms."""
        if not self._closed:
            try:
                self._loop.call_soon_threadsafe(self._on_markers, [(t / 1e6, text) for text, t in markers])
            except RuntimeError:  # the loop closed between the check and the call: the bridge is stopping
                pass

    def queue_depth(self) -> int:
        return len(self._inbox) + sum(len(page.frames) for page in list(self._pages))

    def close(self, timeout: float) -> None:
        """Stop at once: unsent live frames are worthless after shutdown (counted as stale)."""
        with self._lock:
            self._closed = True
        if self._thread.is_alive():
            future = asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop)
            try:
                # _shutdown bounds itself (SHUTDOWN_GRACE_SEC, then cancels); the margin is for a loop
                # thread that is itself stuck, which must not hold the bridge's exit.
                future.result(max(timeout, SHUTDOWN_GRACE_SEC + 2.0))
            except (TimeoutError, RuntimeError):
                future.cancel()
                log.warning("view: the page server did not stop in time")
        self._stop_loop()

    def _stop_loop(self) -> None:
        """Stop the loop thread, then finish (cancel) whatever task is left, on this thread.

        A task left pending on a stopped loop is destroyed later by the garbage collector, which is
        what logged "Task was destroyed but it is pending!" and "no running event loop" at exit.
        """
        try:
            self._loop.call_soon_threadsafe(self._loop.stop)
        except RuntimeError:  # already closed
            return
        self._thread.join(5.0)
        if self._thread.is_alive() or self._loop.is_closed():
            return
        left = asyncio.all_tasks(self._loop)
        for task in left:
            task.cancel()
        if left:
            self._loop.run_until_complete(asyncio.gather(*left, return_exceptions=True))
        self._loop.run_until_complete(self._loop.shutdown_asyncgens())
        self._loop.close()

    async def _shutdown(self) -> None:
        """Close every page and the server, bounded: a page's handler that does not return in time
        (a vanished browser) is cancelled, so a stop never waits on a client."""
        if self._status_task is not None:
            self._status_task.cancel()
        self._server.close(close_connections=True)
        for page in list(self._pages):
            page.wake.set()  # a handler idle in _feed sees the closed connection and returns
        try:
            await asyncio.wait_for(self._server.wait_closed(), SHUTDOWN_GRACE_SEC)
        except TimeoutError:
            log.info("view: %d page(s) did not close in %.0f s; dropped", len(self._pages), SHUTDOWN_GRACE_SEC)
        self.metrics.drop("stale", len(self._inbox) + sum(len(page.frames) for page in self._pages))
        self._inbox.clear()
        self.metrics.queue_depth.set(0)
        me = asyncio.current_task()
        left = [task for task in asyncio.all_tasks() if task is not me]
        for task in left:
            task.cancel()
        if left:
            await asyncio.gather(*left, return_exceptions=True)

    # ---- loop thread: fan-out ------------------------------------------------------------------
    def _take_inbox(self) -> None:
        with self._lock:
            frames = list(self._inbox)
            self._inbox.clear()
            self._scheduled = False
        for frame in frames:
            self._fan_out(frame)
        self.metrics.queue_depth.set(sum(len(page.frames) for page in self._pages))

    def _fan_out(self, frame: SpectrumFrame) -> None:
        if frame.layout is not self._layout:
            self._layout = frame.layout
            self._layout_text = layout_message(frame.layout, self.settings.history_sec)
            self._history.clear()
            for page in self._pages:
                page.frames.clear()
                page.push_control(self._layout_text)
        message = encode_frame(frame)
        if self.settings.history_sec > 0:
            self._history.append((frame.time_ns, message))
            oldest = frame.time_ns - int(self.settings.history_sec * 1e9)
            while self._history and self._history[0][0] < oldest:
                self._history.popleft()
        for page in self._pages:
            page.push_frame(message, frame.newest_sample_ns, self.metrics)

    def _on_markers(self, markers: list[tuple[float, str]]) -> None:
        self._markers.extend(markers)
        oldest = time.time() * 1e3 - self.settings.history_sec * 1e3
        while self._markers and self._markers[0][0] < oldest:
            self._markers.popleft()
        text = markers_message(markers)
        for page in self._pages:
            page.push_control(text)

    async def _status_loop(self) -> None:
        while True:
            await asyncio.sleep(STATUS_INTERVAL_SEC)
            if self.status_source is None or not self._pages:
                continue
            try:
                status = {"type": "status", "pages": len(self._pages), **self.status_source()}
                text = json.dumps(status)
            except Exception:  # noqa: BLE001 - a status bug must not stop the page
                log.exception("view: building the status failed")
                continue
            for page in self._pages:
                page.push_status(text)

    # ---- loop thread: HTTP and connections ----------------------------------------------------
    def _http(self, connection: ServerConnection, request: Request) -> Response | None:
        path = urlsplit(request.path).path
        if path == WS_PATH:
            origin = request.headers.get("Origin")
            if origin and urlsplit(origin).netloc != request.headers.get("Host"):
                return self._response(HTTPStatus.FORBIDDEN, b"cross-origin WebSocket refused\n", "text/plain")
            return None
        found = self._files.get(path)
        if found is None:
            return self._response(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain")
        return self._response(HTTPStatus.OK, *found)

    @staticmethod
    def _response(status: HTTPStatus, body: bytes, kind: str) -> Response:
        headers = Headers([("Content-Type", kind), ("Content-Length", str(len(body))),
                           ("Connection", "close"), *_SECURITY_HEADERS])
        return Response(status.value, status.phrase, headers, body)

    async def _authorised(self, connection: ServerConnection) -> bool:
        try:
            hello = json.loads(await asyncio.wait_for(connection.recv(), HELLO_TIMEOUT_SEC))
            given = str(hello.get("token") or "") if isinstance(hello, dict) else ""
        except (TimeoutError, ValueError, ConnectionClosed):
            return False
        required = self.settings.token is not None
        ok = not required or hmac.compare_digest(
            given.encode(), self.settings.token.get_secret_value().encode()  # type: ignore[union-attr]
        )
        await connection.send(json.dumps({"type": "auth", "ok": ok, "required": required}))
        if not ok:
            await connection.close(4401, "token required")
        return ok

    async def _handle(self, connection: ServerConnection) -> None:
        sock = connection.transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, PAGE_SOCKET_BUFFER)
        try:
            if not await self._authorised(connection):
                return
        except ConnectionClosed:
            return
        page = _Page(connection)
        # Snapshot and registration with no await between: every frame is either in the
        # snapshot or in the page's queue, never both, never neither.
        history = [message for _, message in self._history]
        markers = list(self._markers)
        self._pages.add(page)
        # A page closed by its browser while no frame flows (the stream ended, or before it came)
        # would leave its handler waiting on page.wake for ever and hold up the server's close.
        closed = asyncio.ensure_future(connection.wait_closed())
        closed.add_done_callback(lambda _: page.wake.set())
        try:
            if self._layout_text is not None:
                await connection.send(self._layout_text)
            if markers:
                await connection.send(markers_message(markers))
            for message in history:
                await connection.send(message)
            await connection.send(json.dumps({"type": "history_end", "frames": len(history)}))
            await self._feed(page)
        except ConnectionClosed:
            pass
        finally:
            closed.cancel()
            self._pages.discard(page)
            self.metrics.drop("stale", len(page.frames))

    async def _feed(self, page: _Page) -> None:
        while True:
            await page.wake.wait()
            page.wake.clear()
            if page.connection.state is State.CLOSED or page.connection.state is State.CLOSING:
                return
            while page.control or page.status is not None or page.frames:
                if page.control:
                    await page.connection.send(page.control.popleft())
                elif page.status is not None:
                    text, page.status = page.status, None
                    await page.connection.send(text)
                else:
                    message, newest_ns = page.frames.popleft()
                    await page.connection.send(message)
                    self.metrics.succeeded(1, newest_ns)


class BridgeStatus:
    """The page's status bar: stream, rate, channels, frames/s and each sink's state from the ledger.

    The same figures as the terminal status line, read from the same ledger, so they never
    disagree. The page shows the bridge's first stream; ``streams`` lists every stream's key.
    """

    def __init__(self, bridge: Bridge) -> None:
        self._bridge = bridge
        self._last: tuple[float, float] | None = None

    def __call__(self) -> dict[str, Any]:
        pipelines = list(self._bridge.pipelines.values())
        if not pipelines:
            return {"stream": None, "srate": None, "channel_count": None, "connected": False,
                    "frames_per_sec": 0.0, "sinks": [], "streams": []}
        pipeline = pipelines[0]
        metrics = pipeline.metrics
        now, frames = time.monotonic(), metrics.value("eeg_bridge_frames_computed_total")
        then, before = self._last or (now, frames)
        self._last = (now, frames)
        source = pipeline.source
        description = source.description
        sinks = pipeline.sinks + ([self._bridge.view] if self._bridge.view is not None else [])
        return {
            "stream": description.name if description else None,
            "srate": description.srate if description else None,
            "channel_count": description.channel_count if description else None,
            "connected": bool(source.connected),
            "frames_per_sec": round((frames - before) / (now - then), 2) if now > then else 0.0,
            "sinks": sink_states(sinks, metrics, self._bridge.metrics),
            "streams": [p.key for p in pipelines],
        }


def sink_states(sinks: list[Sink], metrics: Metrics, shared: Metrics) -> list[dict[str, Any]]:
    """Each sink's state from the ledger, for the page's status bar (same figures as the status
    line); the page server's own figures are the process's (``shared``), not one stream's."""
    states = []
    for sink in sinks:
        metrics_of = shared if sink.name == "view" else metrics
        latency = metrics_of.value("eeg_bridge_sink_last_latency_seconds", sink=sink.name)
        states.append({
            "name": sink.name,
            "state": sink.health.state,
            "queue": sink.queue_depth(),
            "latency_ms": round(latency * 1000, 1) if latency else None,
            "sent": metrics_of.value("eeg_bridge_sink_frames_sent_total", sink=sink.name),
            "dropped": metrics_of.dropped_total(sink.name),
        })
    return states
