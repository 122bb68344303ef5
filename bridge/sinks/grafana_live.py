"""Grafana Live sink: the sub-second scrolling heatmap. It favours freshness over completeness.

Frames wait in a short bounded queue; when the sink falls behind, the oldest are dropped
(counted as ``stale``) so a push is never late because of an earlier one. A frame whose push
fails is not retried: by the time the server is back a newer frame is more useful, and the
archive keeps the complete record anyway. Backoff after failures is short (live view!) and
follows ``Retry-After``. Every push sends one line per channel with the identical field set,
because Grafana wipes a channel's browser buffer when the schema changes (grafana-live.md).

When the engine computed band power and quality for a frame (``frame.band_db`` /
``frame.quality``, docs/data-model.md), the same push also carries one line per band,
``band_<name>`` with one field per EEG channel (dB), and one ``quality`` line (state 0/1/2 per
channel): one Live subscription per band shows every channel, which is what lets the live
dashboard's overview scale to 256 channels under Grafana Live's 128 subscriptions per browser.

A frame that never reaches Grafana (dropped as stale, or its push failed) would leave a gap
between two buffered rows, and the heatmap takes every cell's width from the gap between its
first two rows: one missing frame near the start of the buffer doubles every cell for as long as
that row stays first. So the next push carries a placeholder row at each missing time of a
regular stream (value ``FILL_DB``, hidden by the panels' ``filterValues.le``): the gap shows as
one empty column of the right width. Longer gaps get the slots right before the new frame filled,
within ``FILL_BUDGET_BYTES`` (at least one), so a buffer starting at or after the gap is even.

With a token, the sink also keeps the live dashboard's channel list and buffer length current
(bridge/sinks/grafana_dashboard.py), once per stream layout, from a background thread.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Protocol

import httpx
from pydantic import SecretStr
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from bridge.config import GrafanaSettings
from bridge.frame import FrameLayout, SpectrumFrame
from bridge.codecs.line_protocol import (
    Column,
    LineProtocolEncoder,
    TableEncoder,
    bin_field_names,
    escape_key,
    escape_measurement,
)
from bridge.observe.metrics import SinkMetrics
from bridge.sinks import grafana_layout
from bridge.sinks.grafana_dashboard import DashboardSyncError, sync_live_dashboard
from bridge.sinks.retry import Backoff, DeliveryError, TransientError, classify_status
from bridge.sinks.base import SinkHealth, delivery_retrying, split_lines

log = logging.getLogger(__name__)

BACKOFF = Backoff(initial=0.05, maximum=0.5, recheck=5.0)
#: Grafana closes a WebSocket on messages over 1 MB; stay clearly below.
WS_MAX_MESSAGE = 900_000


def _hints(settings: GrafanaSettings, has_token: bool) -> dict[int, str]:
    role = "Admin (WebSocket push)" if settings.push == "ws" else "Editor"
    return {
        400: "Grafana rejected the push request (400); this is a bridge bug, please report it.",
        401: (
            "Grafana rejected the token (401): set GRAFANA_TOKEN to a valid, unexpired service-account token."
            if has_token
            else "Grafana requires a credential (401): set GRAFANA_TOKEN to a service-account token "
            "(or GRAFANA_ADMIN_USER/GRAFANA_ADMIN_PASSWORD to let the bridge create one)."
        ),
        403: f"Grafana refused the push (403): the service account needs the {role} role.",
        404: f"Grafana has no live push endpoint at {settings.url} (404): check GRAFANA_URL.",
        500: "Grafana answered 500: it could not parse the frame or failed internally; the frame was dropped.",
    }


#: Live measurement of the per-channel quality state (0 good, 1 warn, 2 bad).
QUALITY_MEASUREMENT = "quality"


def band_measurement(band: str) -> str:
    """Live measurement (and channel ``stream/<id>/band_<name>``) of one band's power."""
    return f"band_{band}"


class _OverviewLines:
    """The band/quality lines of one layout: heads cached, only the numbers change per frame.

    Fields are the channels in the layout's order; Grafana's converter sorts them by name anyway
    (docs/grafana_eeg_heatmap_setup.md, "Channel order"). A line whose numbers are not all finite
    is left out (and counted) rather than sent with fewer fields, which would change the
    channel's schema and wipe the browser's buffer.
    """

    def __init__(self, layout: FrameLayout) -> None:
        self.layout = layout
        self._keys = [escape_key(c) for c in layout.channels]
        self._bands = [escape_measurement(band_measurement(b.name)) for b in layout.bands]
        # The codec's table renderer (per-value f-strings cost ~0.5 ms per 256-channel frame):
        # dB with 3 decimals, states as bare digits (float fields, as always).
        dbs = tuple(Column(c, 3) for c in layout.channels)
        states = tuple(Column(c, 0) for c in layout.channels)
        self._band_lines = TableEncoder(lambda _: (self._bands, dbs), lambda f: f.band_db, whole_lines=True)
        self._quality_lines = TableEncoder(
            lambda _: ([QUALITY_MEASUREMENT], states),
            lambda f: None if f.quality is None else f.quality.state[None, :],
            whole_lines=True,
        )

    def encode(self, frame: SpectrumFrame) -> tuple[bytes, int]:
        """(body, values skipped) for the frame's band power and quality; empty when it has none."""
        bands = self._band_lines.encode_many((frame,)) if self._bands else None
        quality = self._quality_lines.encode_many((frame,))
        body = (bands.body if bands else b"") + quality.body
        return body, (bands.values_skipped if bands else 0) + quality.values_skipped


#: A token the bridge minted is replaced once this fraction of its lifetime has passed.
RENEW_AT_FRACTION = 0.8
#: After a renewal that produced no token (Grafana down, login refused), the next try waits this long.
RENEW_RETRY_SEC = 30.0
#: After a failed dashboard update, the next attempt waits this long.
SYNC_RETRY_SEC = 30.0
#: Placeholder rows of one push stay under this many bytes (a long outage is not replayed as a
#: large body for Grafana to parse): at least one row, the slots right before the new frame.
FILL_BUDGET_BYTES = 128_000


class _Cadence:
    """Times of one series of rows: the period, and the rows missing since the last delivered one.

    The period is the smallest gap between consecutive frames taken for pushing among the last few
    (a gap after a drop is a multiple of it). Missing rows are counted from the last row that
    reached Grafana, so a frame whose push failed is filled in as well as one dropped as stale.
    Only the last ``limit`` missing slots are named (those right before the new frame, which are
    what keeps the first two rows of a browser buffer one period apart); gaps longer than the
    dashboard window are left alone, the browser trims those rows anyway.
    """

    def __init__(self) -> None:
        self.seen: int | None = None
        self.delivered: int | None = None
        self.gaps: deque[int] = deque(maxlen=16)

    @property
    def period(self) -> int | None:
        return min(self.gaps) if self.gaps else None

    def rate_hz(self) -> float | None:
        """Frames per second once three gaps were seen, else None."""
        return 1e9 / min(self.gaps) if len(self.gaps) >= 3 else None

    def observe(self, time_ns: int) -> None:
        if self.seen is not None and time_ns > self.seen:
            self.gaps.append(time_ns - self.seen)
        if self.seen is None or time_ns > self.seen:
            self.seen = time_ns

    def missing(self, time_ns: int, limit: int) -> list[int]:
        period, last = self.period, self.delivered
        if period is None or last is None or time_ns - last <= 1.5 * period:
            return []
        gap = time_ns - last
        k = round(gap / period) - 1
        if k * period > grafana_layout.LIVE_WINDOW_SEC * 1e9:
            return []
        return [last + round(i * gap / (k + 1)) for i in range(max(1, k - limit + 1), k + 1)]

    def delivered_at(self, time_ns: int) -> None:
        if self.delivered is None or time_ns > self.delivered:
            self.delivered = time_ns


class _Fillers:
    """Placeholder lines of one layout: every measurement the push carries, same fields, hidden values."""

    def __init__(self, layout: FrameLayout) -> None:
        self.layout = layout
        fill_db, fill_state = f"{grafana_layout.FILL_DB:g}", f"{grafana_layout.FILL_STATE}"
        bins = ",".join(f"{escape_key(n)}={fill_db}" for n in bin_field_names(layout.frequencies))
        channels = [escape_key(c) for c in layout.channels]
        dbs = ",".join(f"{c}={fill_db}" for c in channels)
        self._spectra = [f"{escape_measurement(c)} {bins} " for c in layout.channels]
        self._bands = [f"{escape_measurement(band_measurement(b.name))} {dbs} " for b in layout.bands]
        self._quality = f"{QUALITY_MEASUREMENT} " + ",".join(f"{c}={fill_state}" for c in channels) + " "
        per_row = sum(len(h) + 21 for h in (*self._spectra, *self._bands, self._quality))
        self.limit = max(1, FILL_BUDGET_BYTES // per_row)

    def spectra(self, stamps: list[int]) -> bytes:
        return "".join(f"{h}{t}\n" for t in stamps for h in self._spectra).encode()

    def overview_lines(self, stamps: list[int], *, bands: bool, quality: bool) -> bytes:
        heads = [*(self._bands if bands else ()), *((self._quality,) if quality else ())]
        return "".join(f"{h}{t}\n" for t in stamps for h in heads).encode()


class _Transport(Protocol):
    def send(self, body: bytes) -> None: ...

    def close(self) -> None: ...


class HttpPush:
    """One ``POST /api/live/push/<stream id>`` per frame (Editor role)."""

    def __init__(self, settings: GrafanaSettings, token: SecretStr | None) -> None:
        headers = {"Authorization": f"Bearer {token.get_secret_value()}"} if token else {}
        self._client = httpx.Client(timeout=settings.timeout_sec, verify=settings.tls.context(), headers=headers)
        self._url = f"{settings.url}/api/live/push/{settings.stream_id}"
        self._base = settings.url
        self._hints = _hints(settings, token is not None)

    def send(self, body: bytes) -> None:
        try:
            response = self._client.post(self._url, content=body)
        except httpx.TimeoutException:
            raise TransientError(f"Grafana at {self._base} did not answer in time.") from None
        except httpx.TransportError as exc:
            raise TransientError(f"cannot reach Grafana at {self._base} ({type(exc).__name__}).") from None
        if response.status_code != 200:
            raise classify_status(
                response.status_code,
                retry_after=response.headers.get("Retry-After"),
                hints=self._hints,
                server_text=response.text,
            )

    def close(self) -> None:
        self._client.close()


class WebSocketPush:
    """One WebSocket message per frame (Admin role); skips Grafana's per-request middleware.

    The sync ``websockets`` client answers the server's pings from its own background thread,
    so an idle connection is not dropped after ~30 s (grafana#60905).
    """

    def __init__(self, settings: GrafanaSettings, token: SecretStr | None) -> None:
        scheme = "wss" if settings.url.startswith("https") else "ws"
        self._url = f"{scheme}://{settings.url.split('://', 1)[1]}/api/live/push/{settings.stream_id}"
        self._base = settings.url
        self._headers = {"Authorization": f"Bearer {token.get_secret_value()}"} if token else {}
        self._ssl = settings.tls.context() if scheme == "wss" else None
        self._timeout = settings.timeout_sec
        self._hints = _hints(settings, token is not None)
        self._conn: ClientConnection | None = None

    def _connect(self) -> ClientConnection:
        try:
            return connect(
                self._url,
                additional_headers=self._headers,
                open_timeout=self._timeout,
                close_timeout=self._timeout,
                ssl=self._ssl,
                max_size=2**20,
            )
        except InvalidStatus as exc:
            status = exc.response.status_code
            raise classify_status(status, retry_after=exc.response.headers.get("Retry-After"), hints=self._hints) from None
        except (OSError, TimeoutError, InvalidHandshake) as exc:
            raise TransientError(f"cannot open a WebSocket to Grafana at {self._base} ({type(exc).__name__}).") from None

    def send(self, body: bytes) -> None:
        if self._conn is None:
            self._conn = self._connect()
        try:
            for message in split_lines(body, WS_MAX_MESSAGE):
                self._conn.send(message.decode("utf-8"))
        except (ConnectionClosed, OSError) as exc:
            self.close()
            raise TransientError(f"the WebSocket to Grafana closed ({type(exc).__name__}); reconnecting.") from None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class GrafanaLiveSink:
    name = "grafana"

    def __init__(
        self,
        settings: GrafanaSettings,
        metrics: SinkMetrics,
        *,
        token: SecretStr | None,
        renew: Callable[[], SecretStr | None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``renew`` mints a fresh token (the bridge's own, valid ``settings.token_ttl_sec``).

        Why renewal cannot wait for a 401: with anonymous access on, Grafana turns an expired token
        into an anonymous Viewer (pkg/services/authn/authnimpl/service.go) that HTTP push lets
        through (reqSignedIn, pkg/middleware/auth.go), so no 401 ever comes, and a WebSocket
        reconnect gets 403 from ReqOrgAdmin instead. So a minted token is replaced before it
        expires, at ``RENEW_AT_FRACTION`` of its known lifetime (counted from when the sink got
        it, which is after Grafana started its clock); a 401 still renews at once. Without
        ``renew`` (a GRAFANA_TOKEN given by the operator) the expiry is unknown and nothing is renewed.
        """
        self.settings = settings
        self.metrics = metrics
        self.health = SinkHealth(self.name, log)
        self._renew = renew
        self._token = token
        self._clock = clock
        self._renew_at = self._next_renewal(token)
        self._transport = self._open(token)
        self._encoder = LineProtocolEncoder(measurement=None, tag_channel=False, tag_stream=False)
        self._overview: _OverviewLines | None = None
        self._spectra_cadence = _Cadence()
        self._overview_cadence = _Cadence()
        self._fillers: _Fillers | None = None
        self._synced_layout: FrameLayout | None = None
        self._sync_not_before = 0.0
        self._sync_error: str | None = None
        self._sync_thread: threading.Thread | None = None
        self._queue: deque[SpectrumFrame] = deque()
        self._ready = threading.Condition()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sink-grafana", daemon=True)

    def _open(self, token: SecretStr | None) -> _Transport:
        return WebSocketPush(self.settings, token) if self.settings.push == "ws" else HttpPush(self.settings, token)

    def _next_renewal(self, token: SecretStr | None) -> float | None:
        """When to replace ``token``: None when it is not the bridge's own (its expiry is unknown)."""
        if self._renew is None:
            return None
        if token is None:  # minting failed: try again soon rather than push anonymously
            return self._clock() + RENEW_RETRY_SEC
        return self._clock() + RENEW_AT_FRACTION * self.settings.token_ttl_sec

    def _renew_token(self, why: str) -> None:
        assert self._renew is not None
        token = self._renew()
        if token is not None:
            self._token = token
            self._transport.close()
            self._transport = self._open(token)
            self._renew_at = self._next_renewal(token)
            log.info("grafana: renewed the bridge's service-account token (%s)", why)
        else:
            self._renew_at = self._clock() + RENEW_RETRY_SEC

    def _renew_if_due(self) -> None:
        if self._renew_at is not None and self._clock() >= self._renew_at:
            self._renew_token("before it expires" if self._token is not None else "none was obtained yet")

    # ---- core-facing -----------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def offer(self, frame: SpectrumFrame) -> None:
        with self._ready:
            if len(self._queue) >= self.settings.queue_frames:
                self._queue.popleft()
                self.metrics.drop("stale")
            self._queue.append(frame)
            self.metrics.queue_depth.set(len(self._queue))
            self._ready.notify()

    def queue_depth(self) -> int:
        return len(self._queue)

    def close(self, timeout: float) -> None:
        """Stop at once: unsent live frames are worthless after shutdown (counted as stale)."""
        self._stopping.set()
        with self._ready:
            self._ready.notify_all()
        self._thread.join(timeout)
        if self._sync_thread is not None:  # a dashboard update in flight (a GET and a POST) ends within its timeouts
            self._sync_thread.join(2 * max(self.settings.timeout_sec, 5.0) + 1.0)
        with self._ready:
            self.metrics.drop("stale", len(self._queue))
            self._queue.clear()
            self.metrics.queue_depth.set(0)
        self._transport.close()

    # ---- worker ------------------------------------------------------------------------------
    def _take(self) -> SpectrumFrame | None:
        with self._ready:
            while not self._queue and not self._stopping.is_set():
                self._ready.wait(0.5)
            if not self._queue:
                return None
            frame = self._queue.popleft()
            self.metrics.queue_depth.set(len(self._queue))
            return frame

    def _push_next(self) -> None:
        frame = self._take()
        if frame is None:
            return
        overview = frame.band_db is not None or frame.quality is not None
        if self._fillers is None or self._fillers.layout is not frame.layout:
            self._spectra_cadence, self._overview_cadence = _Cadence(), _Cadence()
            self._fillers = _Fillers(frame.layout)
        fillers, regular = self._fillers, frame.layout.srate > 0
        self._spectra_cadence.observe(frame.time_ns)
        encoded = self._encoder.encode(frame)
        body, skipped = encoded.body, encoded.values_skipped
        if regular:
            body = fillers.spectra(self._spectra_cadence.missing(frame.time_ns, fillers.limit)) + body
        if overview:
            if self._overview is None or self._overview.layout is not frame.layout:
                self._overview = _OverviewLines(frame.layout)
            self._overview_cadence.observe(frame.time_ns)
            extra, extra_skipped = self._overview.encode(frame)
            if regular:
                missing = self._overview_cadence.missing(frame.time_ns, fillers.limit)
                extra = fillers.overview_lines(
                    missing, bands=frame.band_db is not None, quality=frame.quality is not None
                ) + extra
            body, skipped = body + extra, skipped + extra_skipped
        self.health.skipped(self.metrics, skipped)
        if not body:
            return
        self._renew_if_due()
        try:
            self._transport.send(body)
        except DeliveryError as exc:
            self.metrics.drop("failed")
            if exc.status == 401 and self._renew is not None:
                self._renew_token("Grafana answered 401")
            raise
        self._spectra_cadence.delivered_at(frame.time_ns)
        if overview:
            self._overview_cadence.delivered_at(frame.time_ns)
        self.metrics.succeeded(1, frame.newest_sample_ns)
        self.health.ok()
        self._maybe_sync(frame.layout)

    def _maybe_sync(self, layout: FrameLayout) -> None:
        """Once per stream layout, when the frame rate is known, update the live dashboard.

        A failed update (Grafana restarting, dashboards not provisioned yet) is tried again after
        SYNC_RETRY_SEC; the same failure is logged once.
        """
        if self._token is None or (self._synced_layout is not None and self._synced_layout.same_axes(layout)):
            return
        rate = self._spectra_cadence.rate_hz()
        if rate is None or time.monotonic() < self._sync_not_before:
            return
        self._synced_layout = layout
        token, settings = self._token, self.settings

        def run() -> None:
            try:
                sync_live_dashboard(settings.url, token, settings.stream_id, layout.channels, rate,
                                    verify=settings.tls.context(), timeout=max(settings.timeout_sec, 5.0))
                log.info("grafana: live dashboard lists the %d channels of %s", len(layout.channels), layout.stream)
                self._sync_error = None
            except DashboardSyncError as exc:
                if str(exc) != self._sync_error:
                    log.warning("grafana: could not update the live dashboard (live push continues): %s", exc)
                self._sync_error = str(exc)
                self._sync_not_before = time.monotonic() + SYNC_RETRY_SEC
                self._synced_layout = None

        self._sync_thread = threading.Thread(target=run, name="grafana-dashboard-sync", daemon=True)
        self._sync_thread.start()

    def _run(self) -> None:
        retrying = delivery_retrying(BACKOFF, self._stopping, self.health, self.metrics)
        while not self._stopping.is_set():
            try:
                retrying(self._push_next)
            except DeliveryError:
                pass  # stopping while failing: already counted and logged
            except Exception:  # noqa: BLE001 - a bug must not kill the live view silently
                log.exception("grafana: unexpected error; continuing with the next frame")
