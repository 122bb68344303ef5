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

Each segment goes where it was recorded for (its header): this run's destination, another
bucket or database on the same server (with this run's credentials), or, when it belongs to
another server, nowhere: it stays in the spool and the log names the command that uploads it.

Exactly once outside the crash window: the uploader remembers how far into its current group
of segments the server has accepted, so a retry after an outage, a timeout or a 413 split
resumes there instead of sending accepted lines again, and each segment is removed (and counted
as sent) as soon as all its lines were accepted.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import queue
import shlex
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
from bridge.sinks.base import SinkHealth, delivery_retrying, line_cut
from bridge.archive.spool import Destination, Route, Segment, SegmentDamaged, Spool

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


class _Unservable(Exception):
    """The server refuses a recorded destination that is not this run's (e.g. its database is
    gone): keep those segments and go on with the others instead of pausing everything."""

    def __init__(self, destination: Destination, why: str) -> None:
        super().__init__(why)
        self.destination, self.why = destination, why


def destination_of(settings: InfluxSettings) -> Destination:
    """What every segment of this run records as its destination."""
    return Destination(
        url=settings.url, api=settings.api, org=settings.org if settings.api == "v2" else "", bucket=settings.bucket,
        measurements=(settings.measurement, settings.marker_measurement, settings.health_measurement),
    )


def replay_command(destination: Destination, spool_dir: object) -> str:
    """The one command that uploads segments recorded for ``destination``."""
    credentials = "INFLUXDB_TOKEN" if destination.api == "v2" else "INFLUXDB_USERNAME and INFLUXDB_PASSWORD if auth is on"
    return (
        f"SPOOL_DIR={shlex.quote(str(spool_dir))} INFLUXDB_URL={shlex.quote(destination.url)} eeg-bridge replay "
        f"(with that server's {credentials})"
    )


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
        owner: str = "run",
    ) -> None:
        self.settings = settings
        self.ledger = metrics
        self.metrics: SinkMetrics = metrics.sink(self.name)
        self.health = SinkHealth(self.name, log)
        self.spool = spool
        self.destination = destination_of(settings)
        spool.destination = self.destination  # what this sink appends is recorded for its own destination
        self._writer = writer
        #: One writer per route: this run's, plus others on the same server made on demand.
        self._writers: dict[Route, Writer] = {} if writer is None else {self.destination.route: writer}
        #: Routes whose segments stay in the spool (another server, or refused there).
        self._held: set[Route] = set()
        self._owner = owner
        #: (seq of the first segment not yet fully accepted, bytes of it the server already has).
        self._partial: tuple[int, int] | None = None
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
        for destination, frames in self.spool.destinations().items():
            if self._writer is None or destination.route == self.destination.route:
                continue
            if destination.on_server(self.settings.url):
                log.info(
                    "influxdb: %d of them were recorded for %s, not for this run's %s: they go there",
                    frames, destination.describe(), self.destination.describe(),
                )
            else:
                self._hold(destination, "another server: this run has no credentials for it")
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

    def uploadable_frames(self) -> int:
        """Frames in the spool this sink can still deliver (held destinations left out)."""
        return 0 if self._writer is None else self.spool.frames_for(skip=self._held)

    def close(self, timeout: float) -> None:
        """Spool everything still in memory, then keep uploading until empty or ``timeout``."""
        self._inbox.put(None)
        self._batcher.join()
        if self._writer is not None:
            # Keep uploading while the server takes data; if it is failing there is no point in
            # holding the user up: the spool is durable and is replayed at the next start.
            deadline = time.monotonic() + timeout
            while (
                self.uploadable_frames()
                and self.health.failing_since is None
                and self._uploader.is_alive()
                and time.monotonic() < deadline
            ):
                time.sleep(0.05)
            self._stop_uploading.set()
            self.spool.close()
            self._uploader.join(max(1.0, self.settings.timeout_sec + 1.0))
            for writer in self._writers.values():
                writer.close()
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
            self.ledger.event_dropped(item.kind, item.points)

    def _update_spool_gauges(self) -> None:
        self.ledger.spool_bytes.set(self.spool.pending_bytes)
        self.ledger.spool_frames.set(self.spool.pending_frames)
        self.metrics.queue_depth.set(self.queue_depth())

    # ---- uploader ------------------------------------------------------------------------------
    def _run_uploader(self) -> None:
        retrying = delivery_retrying(BACKOFF, self._stop_uploading, self.health, self.metrics)
        while not self._stop_uploading.is_set():
            segments = self.spool.take(self._max_body, timeout=0.5, skip=self._held)
            if not segments:
                continue
            try:
                retrying(self._upload, segments)
            except _Unservable as refused:
                self._hold(refused.destination, refused.why)
            except (DeliveryError, _Stopping):
                pass  # stopping while failing; the segments stay spooled
            except Exception:  # noqa: BLE001 - never let the archive thread die silently
                log.exception("influxdb: unexpected error while uploading; will retry")
                self._stop_uploading.wait(1.0)

    def _hold(self, destination: Destination, why: str) -> None:
        """Leave a destination's segments in the spool and say, once, what to do with them."""
        self._held.add(destination.route)
        frames = sum(n for d, n in self.spool.destinations().items() if d.route == destination.route)
        holder = {"run": "bridge", "replay": ""}.get(self._owner, self._owner)
        after = f" once this {holder} has stopped (it holds the spool)" if holder else ""
        log.warning(
            "influxdb: %d frames in the spool at %s were recorded for %s (%s); they stay there: upload them%s with: %s",
            frames, self.spool.directory, destination.describe(), why, after,
            replay_command(destination, self.spool.directory),
        )

    def _writer_for(self, destination: Destination) -> Writer:
        route = destination.route
        if route not in self._writers:
            # Same server, another bucket/database: this run's credentials are that server's.
            self._writers[route] = make_writer(dataclasses.replace(
                self.settings, api=destination.api, org=destination.org or self.settings.org, bucket=destination.bucket
            ))
        return self._writers[route]

    def _upload(self, segments: list[Segment]) -> None:
        """Deliver ``segments`` (one destination) as one or more bodies; raise DeliveryError to be
        retried. A retry resumes where the server stopped accepting (``self._partial``)."""
        if self._stop_uploading.is_set():
            raise _Stopping  # tenacity attempts once more after an interrupted sleep; don't
        remaining: list[Segment] = []
        bodies: list[bytes] = []
        for segment in segments:
            if not self.spool.holds(segment):
                continue  # accepted or quarantined by an earlier attempt
            try:
                data = segment.read()
            except SegmentDamaged as why:
                self.spool.quarantine(segment, str(why))
                self.metrics.drop("rejected", segment.frames)
                continue
            bodies.append(data if data.endswith(b"\n") else data + b"\n")  # lines never merge across segments
            remaining.append(segment)
        if not remaining:
            return
        destination = remaining[0].destination
        writer = self._writer_for(destination)
        ends = list(itertools.accumulate(len(b) for b in bodies))
        starts = [end - len(b) for end, b in zip(ends, bodies)]
        body = b"".join(bodies)
        del bodies  # joined: the segments' own copies need not live through the upload
        first = remaining[0].seq
        offset = self._partial[1] if self._partial is not None and self._partial[0] == first else 0
        done = 0  # segments settled (accepted or quarantined)
        rejected: set[int] = set()
        isolate = False  # after a rejection: one segment per part, to find the bad one
        while offset < len(body):
            i = next(k for k, end in enumerate(ends) if end > offset)
            end = offset + self._max_body
            if isolate:
                end = min(end, ends[i])
            cut = line_cut(body, offset, end)
            part = b""  # the previous part goes before the next is sliced: one copy at a time, not two
            part = body[offset:cut]
            try:
                writer.write(part)
            except PermanentError as error:
                if error.kind == "too_large" and part.count(b"\n") > 1:
                    # The server's limit is below ours: learn it and send the rest in smaller parts.
                    self._max_body = max(1, len(part) // 2)
                    log.warning("influxdb: write body too large (413); now splitting at %d bytes", self._max_body)
                    continue
                if error.kind not in ("bad_data", "retention", "too_large"):
                    if destination.route != self.destination.route and error.kind in ("auth", "missing"):
                        raise _Unservable(destination, str(error)) from None
                    raise
                if cut > ends[i]:
                    # The part held several segments: re-send them one by one. (A 1.x partial
                    # write kept the good lines: those are sent a second time and overwrite.)
                    isolate = True
                    continue
                self._reject(remaining[i], error)
                rejected.add(remaining[i].seq)
                cut = ends[i]
            offset = cut
            accepted: list[Segment] = []
            while done < len(remaining) and ends[done] <= offset:
                if remaining[done].seq not in rejected:
                    accepted.append(remaining[done])
                done += 1
            if accepted:
                self.spool.remove(accepted)
                self.metrics.succeeded(sum(s.frames for s in accepted), max(s.newest_sample_ns for s in accepted))
            self._partial = (remaining[done].seq, offset - starts[done]) if done < len(remaining) else None
            if remaining[i].seq not in rejected:
                self.health.ok()
            self._update_spool_gauges()

    def _reject(self, segment: Segment, error: PermanentError) -> None:
        """The server will never take it: quarantine it and keep going (not a sink failure:
        the queue moves on, so neither the shutdown upload nor replay stops early)."""
        self.spool.quarantine(segment, str(error))  # logged there, with the reason
        self.metrics.drop("rejected", segment.frames)
