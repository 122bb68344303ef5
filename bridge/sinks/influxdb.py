"""InfluxDB sink: the archive. It favours completeness over freshness.

Two threads, so that a slow or absent server can never stall the recording:

* the *batcher* collects frames (``BATCH_SIZE`` or ``BATCH_INTERVAL_SEC``, whichever first),
  encodes them and appends the batch to the durable :class:`~bridge.archive.spool.Spool`;
* the *uploader* sends the oldest spooled segments and deletes them once the server accepted
  them, retrying transient failures with backoff (honouring ``Retry-After``).

Server rejections are not retried: a 400/422 quarantines the segment with the server's
message and the queue keeps moving; a 413 splits the body; 401/403/404 pause uploading (data
stays spooled) with a message naming the fix, re-checked slowly so a fix on the server side is
picked up without a restart.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Callable, Protocol

import httpx

from bridge.config import InfluxSettings
from bridge.archive.events import EventLines
from bridge.frame import SpectrumFrame
from bridge.codecs.line_protocol import DerivedEncoder, LineProtocolEncoder
from bridge.observe.metrics import Metrics, SinkMetrics
from bridge.sinks.retry import Backoff, DeliveryError, PermanentError, TransientError, classify_status
from bridge.sinks.base import SinkHealth, delivery_retrying, split_lines
from bridge.archive.spool import Segment, Spool

log = logging.getLogger(__name__)

BACKOFF = Backoff(initial=0.5, maximum=8.0, recheck=30.0)
#: Frames the batcher may hold in memory before it must refuse (it only waits on local disk).
INBOX_FRAMES = 2000


def _hints(settings: InfluxSettings) -> dict[int, str]:
    if settings.api == "v1":
        db, _ = settings.database
        missing = (
            f"InfluxDB has no database '{db}' (404): create it with "
            f"influx -execute 'CREATE DATABASE \"{db}\"' or set INFLUXDB_BUCKET."
        )
        auth = "InfluxDB refused the credentials ({status}): check INFLUXDB_USERNAME and INFLUXDB_PASSWORD."
    else:
        missing = (
            f"InfluxDB has no bucket '{settings.bucket}' in org '{settings.org}' (404): create it with "
            f"influx bucket create --name {settings.bucket} --org {settings.org}, or fix INFLUXDB_BUCKET/INFLUXDB_ORG."
        )
        auth = "InfluxDB refused the token ({status}): check INFLUXDB_TOKEN and that it may write to the bucket."
    return {
        400: "InfluxDB rejected the data (400); the batch was quarantined.",
        401: auth.format(status=401),
        403: auth.format(status=403),
        404: missing,
        413: "InfluxDB found the write body too large (413); splitting it.",
        422: "InfluxDB refused points outside its retention period (422); the batch was quarantined.",
        429: "InfluxDB is throttling writes (429); backing off.",
        503: "InfluxDB is unavailable (503); backing off.",
    }


class _Stopping(Exception):
    """Shutdown reached the uploader between two attempts."""


class Writer(Protocol):
    """The server-specific part: deliver one line-protocol body or raise a DeliveryError."""

    def write(self, body: bytes) -> None: ...

    def close(self) -> None: ...


class V1Writer:
    """Native 1.x ``/write?db=&rp=&precision=ns`` through httpx."""

    def __init__(self, settings: InfluxSettings) -> None:
        db, rp = settings.database
        self._params = {"db": db, "precision": "ns", **({"rp": rp} if rp else {})}
        auth = None
        if settings.username:
            password = settings.password.get_secret_value() if settings.password else ""
            auth = httpx.BasicAuth(settings.username, password)
        self._client = httpx.Client(timeout=settings.timeout_sec, verify=settings.tls.context(), auth=auth)
        self._url = f"{settings.url}/write"
        self._base = settings.url
        self._hints = _hints(settings)

    def write(self, body: bytes) -> None:
        try:
            response = self._client.post(self._url, params=self._params, content=body)
        except httpx.TimeoutException:
            raise TransientError(f"InfluxDB at {self._base} did not answer in time.") from None
        except httpx.TransportError as exc:
            raise TransientError(f"cannot reach InfluxDB at {self._base} ({type(exc).__name__}).") from None
        if response.status_code not in (200, 204):
            text = response.headers.get("X-Influxdb-Error") or response.text
            raise classify_status(
                response.status_code, retry_after=response.headers.get("Retry-After"), hints=self._hints, server_text=text
            )

    def close(self) -> None:
        self._client.close()


class V2Writer:
    """``/api/v2/write`` through influxdb-client: SYNCHRONOUS (raises on every failure) with its
    own retries off, so this sink's spool and backoff are the only retry logic."""

    def __init__(self, settings: InfluxSettings) -> None:
        # Imported here: influxdb-client costs ~25 MB of memory that v1 users should not pay.
        from influxdb_client import InfluxDBClient  # noqa: PLC0415
        from influxdb_client.client.write_api import SYNCHRONOUS  # noqa: PLC0415

        token = settings.token.get_secret_value() if settings.token else None
        self._client = InfluxDBClient(
            url=settings.url,
            token=token,
            org=settings.org,
            timeout=int(settings.timeout_sec * 1000),
            verify_ssl=not settings.tls.insecure,
            ssl_ca_cert=settings.tls.ca_bundle,
            retries=False,
        )
        self._api = self._client.write_api(write_options=SYNCHRONOUS)
        self._bucket, self._org = settings.bucket, settings.org
        self._base = settings.url
        self._hints = _hints(settings)

    def write(self, body: bytes) -> None:
        import urllib3  # noqa: PLC0415 - loaded with influxdb-client anyway
        from influxdb_client.rest import ApiException  # noqa: PLC0415

        try:
            self._api.write(bucket=self._bucket, org=self._org, record=body, write_precision="ns")
        except ApiException as exc:
            headers = exc.headers or {}
            raise classify_status(
                exc.status or 500,
                retry_after=headers.get("Retry-After"),
                hints=self._hints,
                server_text=str(exc.body or exc.reason or ""),
            ) from None
        except urllib3.exceptions.HTTPError as exc:
            raise TransientError(f"cannot reach InfluxDB at {self._base} ({type(exc).__name__}).") from None

    def close(self) -> None:
        self._client.close()


def make_writer(settings: InfluxSettings) -> Writer:
    return V1Writer(settings) if settings.api == "v1" else V2Writer(settings)


class InfluxSink:
    name = "influxdb"

    def __init__(
        self,
        settings: InfluxSettings,
        metrics: Metrics,
        spool: Spool,
        *,
        writer: Writer | None,
    ) -> None:
        self.settings = settings
        self.ledger = metrics
        self.metrics: SinkMetrics = metrics.sink(self.name)
        self.health = SinkHealth(self.name, log)
        self.spool = spool
        self._writer = writer
        self._encoder = LineProtocolEncoder(
            schema=settings.schema, measurement=settings.measurement, tag_channel=True, tag_stream=True
        )
        self._derived = DerivedEncoder(
            bands_measurement=settings.bands_measurement, quality_measurement=settings.quality_measurement
        )
        self._inbox: queue.Queue[SpectrumFrame | EventLines | None] = queue.Queue(maxsize=INBOX_FRAMES)
        self._stop_uploading = threading.Event()
        self._max_body = settings.max_body_bytes
        self._batcher = threading.Thread(target=self._run_batcher, name="sink-influxdb-batch", daemon=True)
        self._uploader = threading.Thread(target=self._run_uploader, name="sink-influxdb-upload", daemon=True)
        self._update_spool_gauges()
        if writer is None:
            self.health.set_state("spool only")

    # ---- core-facing -------------------------------------------------------------------------
    def start(self) -> None:
        if not self.spool.empty:
            log.info(
                "influxdb: %d frames (%.1f MB) from an earlier run are in the spool at %s; uploading them first",
                self.spool.pending_frames,
                self.spool.pending_bytes / 1e6,
                self.spool.directory,
            )
        self._batcher.start()
        if self._writer is not None:
            self._uploader.start()

    def offer(self, frame: SpectrumFrame) -> None:
        try:
            self._inbox.put_nowait(frame)
        except queue.Full:
            self.metrics.drop("queue_full")
            log.error("influxdb: the archive inbox is full (%d frames): the disk is not keeping up; frame %d dropped",
                      INBOX_FRAMES, frame.seq)
        self.metrics.queue_depth.set(self.queue_depth())

    def offer_events(self, events: EventLines) -> None:
        """Markers and health points: archived with the next batch, through the same spool."""
        try:
            self._inbox.put_nowait(events)
        except queue.Full:
            self._events_lost([events])
            log.error("influxdb: the archive inbox is full; %d %s points dropped", events.points, events.kind)

    def offer_waiting(self, item: SpectrumFrame | EventLines, max_frames: int, give_up: Callable[[], bool]) -> bool:
        """Hand ``item`` over without ever dropping it: the importer's path (a file can be read far
        faster than any server takes it). Waits while the archive already holds ``max_frames``
        (inbox + spool) or half of SPOOL_MAX_BYTES, so a long file streams through at the server's
        pace and the spool never has to drop for space. False (item not taken) only once
        ``give_up()`` says so (stop requested, or the server refused permanently). Without a writer
        (spool only) nothing drains the spool, so only the inbox bounds the wait."""
        while self._writer is not None and (
            self.queue_depth() >= max_frames or self.spool.pending_bytes > self.spool.max_bytes // 2
        ):
            if give_up():
                return False
            time.sleep(0.01)
        while True:
            try:
                self._inbox.put(item, timeout=0.1)
                break
            except queue.Full:
                if give_up():
                    return False
        self.metrics.queue_depth.set(self.queue_depth())
        return True

    def queue_depth(self) -> int:
        return self._inbox.qsize() + self.spool.pending_frames

    def close(self, timeout: float) -> None:
        """Spool everything still in memory, then keep uploading until empty or ``timeout``."""
        self._inbox.put(None)
        self._batcher.join()
        if self._writer is not None:
            # Keep uploading while the server takes data; if it is failing there is no point in
            # holding the user up: the spool is durable and is replayed at the next start.
            deadline = time.monotonic() + timeout
            while (
                not self.spool.empty
                and self.health.failing_since is None
                and self._uploader.is_alive()
                and time.monotonic() < deadline
            ):
                time.sleep(0.05)
            self._stop_uploading.set()
            self.spool.close()
            self._uploader.join(max(1.0, self.settings.timeout_sec + 1.0))
            self._writer.close()
        if not self.spool.empty:
            log.warning(
                "influxdb: %d frames stay in the spool at %s; they are uploaded at the next start "
                "or with 'eeg-bridge replay'",
                self.spool.pending_frames,
                self.spool.directory,
            )

    # ---- batcher -----------------------------------------------------------------------------
    def _run_batcher(self) -> None:
        frames: list[SpectrumFrame] = []
        events: list[EventLines] = []
        deadline = 0.0
        while True:
            waiting = frames or events
            timeout = max(0.0, deadline - time.monotonic()) if waiting else None
            try:
                item = self._inbox.get(timeout=timeout)
            except queue.Empty:  # the oldest item of the batch has waited BATCH_INTERVAL_SEC
                self._spool_batch(frames, events)
                frames, events = [], []
                continue
            if item is None:  # close(): make everything durable, then stop
                self._spool_batch(frames, events)
                return
            if not waiting:
                deadline = time.monotonic() + self.settings.batch_interval_sec
            if isinstance(item, EventLines):
                events.append(item)
            else:
                frames.append(item)
            if len(frames) >= self.settings.batch_size:
                self._spool_batch(frames, events)
                frames, events = [], []

    def _spool_batch(self, frames: list[SpectrumFrame], events: list[EventLines]) -> None:
        if not frames and not events:
            return
        try:
            body = b""
            if frames:
                encoded = self._encoder.encode_many(frames)
                self.health.skipped(self.metrics, encoded.values_skipped)
                # Band power and quality ride in the same segment as their spectra. Their NaN
                # numbers are "unknown" (quality on a precomputed stream) or come from spectra
                # already counted above, so they are left out without being counted again.
                body = encoded.body + self._derived.encode_many(frames).body
            body += b"".join(e.body for e in events)
            if body:
                newest = max((f.newest_sample_ns for f in frames), default=0)
                dropped = self.spool.append(body, len(frames), newest)
                self.metrics.drop("spool_full", dropped)
            self._update_spool_gauges()
        except OSError as exc:
            self.metrics.drop("failed", len(frames))
            self._events_lost(events)
            log.error("influxdb: cannot write %d frames to the spool at %s: %s", len(frames), self.spool.directory, exc)
        except Exception:  # noqa: BLE001 - a bad batch must not stop the archive
            self.metrics.drop("failed", len(frames))
            self._events_lost(events)
            log.exception("influxdb: could not encode a batch of %d frames; dropped", len(frames))

    def _events_lost(self, events: list[EventLines]) -> None:
        for item in events:
            self.ledger.events_dropped.labels(item.kind).inc(item.points)

    def _update_spool_gauges(self) -> None:
        self.ledger.spool_bytes.set(self.spool.pending_bytes)
        self.ledger.spool_frames.set(self.spool.pending_frames)
        self.metrics.queue_depth.set(self.queue_depth())

    # ---- uploader ------------------------------------------------------------------------------
    def _run_uploader(self) -> None:
        retrying = delivery_retrying(BACKOFF, self._stop_uploading, self.health, self.metrics)
        while not self._stop_uploading.is_set():
            segments = self.spool.take(self._max_body, timeout=0.5)
            if not segments:
                continue
            try:
                retrying(self._upload, segments)
            except (DeliveryError, _Stopping):
                pass  # stopping while failing; the segments stay spooled
            except Exception:  # noqa: BLE001 - never let the archive thread die silently
                log.exception("influxdb: unexpected error while uploading; will retry")
                self._stop_uploading.wait(1.0)

    def _upload(self, segments: list[Segment]) -> None:
        """Deliver ``segments`` (as one or more bodies); raise DeliveryError to be retried."""
        if self._stop_uploading.is_set():
            raise _Stopping  # tenacity attempts once more after an interrupted sleep; don't
        try:
            body = b"".join(segment.read() for segment in segments)
        except FileNotFoundError:
            return  # dropped for space meanwhile (already counted)
        try:
            for part in split_lines(body, self._max_body):
                try:
                    self._writer.write(part)  # type: ignore[union-attr]
                except PermanentError as error:
                    if error.kind == "too_large" and part.count(b"\n") > 1:
                        # The server's limit is below ours: learn it and resend in smaller parts
                        # (parts already accepted are overwritten, not duplicated).
                        self._max_body = len(part) // 2
                        log.warning("influxdb: write body too large (413); now splitting at %d bytes", self._max_body)
                        raise TransientError(str(error), status=413, retry_after=0.0) from None
                    raise
        except PermanentError as error:
            if error.kind in ("bad_data", "retention", "too_large"):
                self._reject(segments, error)
                return
            raise
        self.spool.remove(segments)
        self.metrics.succeeded(sum(s.frames for s in segments), max(s.newest_sample_ns for s in segments))
        self.health.ok()
        self._update_spool_gauges()

    def _reject(self, segments: list[Segment], error: PermanentError) -> None:
        if len(segments) > 1:
            for segment in segments:  # isolate the bad one: re-sending good lines just overwrites
                self._upload([segment])
            return
        segment = segments[0]
        where = self.spool.quarantine(segment, str(error))
        self.metrics.drop("rejected", segment.frames)
        self.health.failed(error)
        log.error("influxdb: %d frames quarantined in %s", segment.frames, where)
        self._update_spool_gauges()

