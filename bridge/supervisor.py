"""The bridge: several stream pipelines under one small supervisor, and the parts they share.

Per stream (isolation matters): the source, engine, frame counter, spool, queues, drop
accounting, the Grafana Live sink (its channel is ``stream/<key>/...``) and the health points,
each in a :class:`bridge.pipeline.StreamPipeline` on a thread of its own. Shared (sharing is
free): one metrics registry and port, one page server, one Grafana token, one marker follower.
One stream failing, leaving or being refused is logged under its key and ends only that
pipeline; the bridge ends when every stream has (or when stopped).

:class:`Bridge` is also the Python API: an acquisition script that already holds numpy chunks
calls :meth:`Bridge.add_stream` and :meth:`Bridge.push` and gets the same spectra, sinks, spool
and ledger as ``eeg-bridge run``, which is a thin user of this class.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import replace
from pathlib import Path
from types import TracebackType
from typing import Any, Sequence

import numpy as np
import pylsl
from pydantic import SecretStr

from bridge.archive.events import HealthPoints, MarkerFollower, Producer, encode_health
from bridge.archive.spool import Spool, SpoolInUse
from bridge.config import ConfigError, Settings
from bridge.frame import safe_name, stream_key
from bridge.observe.health import HealthServer
from bridge.observe.logs import StatusReporter
from bridge.observe.metrics import Metrics
from bridge.pipeline import EXIT_OK, StreamPipeline
from bridge.rig import Rig, StreamSpec, discovered_spec, with_key
from bridge.sinks.base import Sink
from bridge.sinks.grafana_live import GrafanaLiveSink
from bridge.sinks.influxdb import InfluxSink, make_writer
from bridge.sinks.view import BridgeStatus, ViewSink
from bridge.sources.lsl import StreamDescription, build_predicate, describe
from bridge.sources.pushed import PushedSource

log = logging.getLogger("bridge")

#: How long one discovery round listens for outlets.
DISCOVER_WINDOW_SEC = 1.0


# ---- parts a stream's pipeline is built from ---------------------------------------------------
def open_spool(settings: Settings, directory: Path, *, owner: str) -> Spool:
    """Lock and open one spool, or say in one sentence why not."""
    try:
        return Spool(directory, settings.spool.max_bytes)
    except SpoolInUse as busy:
        if owner == "replay":
            raise ConfigError(
                f"SPOOL_DIR '{directory}' is in use by {busy.holder()}, which uploads it itself; "
                "replay it after that process has stopped."
            ) from None
        raise ConfigError(
            f"SPOOL_DIR '{directory}' is in use by {busy.holder()}: each bridge needs a spool of its own; "
            "stop that process or set another SPOOL_DIR."
        ) from None
    except OSError as exc:
        raise ConfigError(f"Cannot use SPOOL_DIR '{directory}': {exc.strerror or exc}.") from None


def archive_sink(settings: Settings, metrics: Metrics, directory: Path, *, owner: str = "run") -> InfluxSink:
    spool = open_spool(settings, directory, owner=owner)
    writer = make_writer(settings.influxdb) if settings.influxdb.url else None
    if writer is None:
        log.warning("INFLUXDB_URL is empty: archiving to the spool at %s only", directory)
    return InfluxSink(settings.influxdb, metrics, spool, writer=writer, owner=owner)


class GrafanaCredentials:
    """The push token every stream's live sink uses: configured, or minted once for the process.

    A minted token expires (GRAFANA_MINTED_TOKEN_TTL_SEC). When several sinks ask for a renewal
    together (all of them meet the expiry at once), one new token serves them all.
    """

    #: A renewal this recent answers the next request too.
    SHARED_RENEWAL_SEC = 30.0

    def __init__(self, settings: Settings, bridge_id: str) -> None:
        self._settings = settings
        self._bridge_id = bridge_id
        self._lock = threading.Lock()
        self._renewed_at = 0.0
        grafana = settings.grafana
        assert grafana is not None
        self.can_renew = grafana.token is None and bool(grafana.admin_user and grafana.admin_password)
        self.token = grafana.token if grafana.token is not None else self._mint()

    def _mint(self) -> SecretStr | None:
        grafana = self._settings.grafana
        assert grafana is not None
        if not self.can_renew:
            return None
        from bridge.sinks.grafana_token import GrafanaTokenError, obtain_push_token, push_role

        try:
            token = obtain_push_token(
                grafana.url,
                grafana.admin_user or "",
                grafana.admin_password.get_secret_value() if grafana.admin_password else "",
                role=push_role(grafana.push),
                bridge_id=self._bridge_id,
                seconds_to_live=grafana.token_ttl_sec,
                verify=grafana.tls.context(),
            )
        except GrafanaTokenError as exc:
            log.error("grafana: could not create a push token: %s", exc)
            return None
        log.info("grafana: using the bridge's own %s service-account token", push_role(grafana.push))
        return SecretStr(token)

    def renew(self) -> SecretStr | None:
        with self._lock:
            if time.monotonic() - self._renewed_at > self.SHARED_RENEWAL_SEC or self.token is None:
                self.token = self._mint()
                self._renewed_at = time.monotonic()
            return self.token

    def sink(self, settings: Settings, metrics: Metrics) -> GrafanaLiveSink:
        assert settings.grafana is not None
        return GrafanaLiveSink(settings.grafana, metrics.sink("grafana"), token=self.token,
                               renew=self.renew if self.can_renew else None)


# ---- the supervisor ----------------------------------------------------------------------------
class Bridge:
    """Every stream of a rig, followed by one process; also the embeddable Python API.

    ``Bridge(settings)`` follows nothing by itself: :meth:`add_stream` adds a stream the caller
    pushes to; :meth:`follow` adds an LSL stream; :meth:`from_rig` builds what ``run`` follows.
    Used as a context manager it starts on entry and, on exit, ends every pushed stream, lets
    each archive make what was computed durable, and closes.
    """

    def __init__(self, settings: Settings, *, metrics: Metrics | None = None, name: str = "bridge") -> None:
        """``name`` names this process's Grafana tokens, so a restart replaces its own token only."""
        self.settings = settings
        self.metrics = metrics or Metrics.process()
        self.stop = threading.Event()
        self.pipelines: dict[str, StreamPipeline] = {}
        self._pushed: dict[str, PushedSource] = {}
        self._lock = threading.Lock()
        self._started = False
        self._marker_selectors: set[tuple[str | None, str | None]] = set()
        self._credentials = GrafanaCredentials(settings, name) if settings.grafana is not None else None
        self.view = ViewSink(settings.view, self.metrics.sink("view")) if settings.view is not None else None
        if self.view is not None:
            self.view.status_source = BridgeStatus(self)
        self._health = _health_server(self)
        self._status: StatusReporter | None = None
        self._discovery: threading.Thread | None = None
        self._rig: Rig | None = None

    @classmethod
    def from_rig(cls, rig: Rig) -> Bridge:
        bridge = cls(rig.base, name=rig.name)
        for spec in rig.streams:
            bridge.follow(spec)
        bridge._rig = rig
        return bridge

    # ---- adding streams --------------------------------------------------------------------
    def follow(self, spec: StreamSpec) -> StreamPipeline:
        """Follow one LSL stream (a selector from the configuration, or a discovered stream)."""
        return self._add(spec, source=None)

    def add_stream(self, name: str, *, channels: Sequence[str] | int, srate: float,
                   channel_format: str = "float32", key: str | None = None,
                   settings: Settings | None = None) -> StreamPipeline:
        """A stream whose samples the caller pushes (:meth:`push`); ``key`` defaults to ``name`` made safe."""
        labels = tuple(str(c) for c in channels) if not isinstance(channels, int) else ("",) * channels
        key = key or safe_name(name, "stream")
        description = StreamDescription(
            name=name, type="EEG", source_id=key, hostname="", uid=key, channel_count=len(labels),
            srate=float(srate), channel_format=channel_format, labels=labels,
        )
        base = settings or self.settings
        if base.spool.directory is None or key in self.pipelines or any(
            p.settings.spool.directory == base.spool.directory for p in self.pipelines.values()
        ):
            base = replace(base, spool=replace(base.spool, directory=base.spool.root / f"pushed-{key}"))
        spec = with_key(key, base)
        stop = threading.Event()
        source = PushedSource(description, stop)
        pipeline = self._add(spec, source=source, stop=stop)
        self._pushed[key] = source
        return pipeline

    def push(self, name: str, samples: np.ndarray, timestamps: np.ndarray | None = None) -> None:
        """Hand one chunk (n x channels, Unix-time seconds per sample or None) to stream ``name``."""
        source = self._pushed.get(name) or self._pushed.get(safe_name(name, "stream"))
        if source is None:
            raise KeyError(f"no pushed stream '{name}': add it first with add_stream()")
        source.push(samples, timestamps)

    def _add(self, spec: StreamSpec, *, source: PushedSource | None,
             stop: threading.Event | None = None) -> StreamPipeline:
        with self._lock:
            if spec.key in self.pipelines:
                raise ConfigError(f"Two streams have the key '{spec.key}': give one its own GRAFANA_STREAM_ID.")
            settings = spec.settings
            metrics = self.metrics.for_stream(spec.key)
            assert settings.spool.directory is not None
            archive = archive_sink(settings, metrics, settings.spool.directory)
            sinks: list[Sink] = []
            if self._credentials is not None and settings.grafana is not None:
                sinks.append(self._credentials.sink(settings, metrics))
            sinks.append(archive)
            # The page shows one stream for now: the first one added.
            page = [self.view] if self.view is not None and not self.pipelines else []
            pipeline = StreamPipeline(settings, metrics, sinks, key=spec.key, layout_key=spec.layout_key,
                                      shared=page, source=source, stop=stop)
            pipeline.producers = self._producers(pipeline, archive)
            self.pipelines[spec.key] = pipeline
            if self._started:
                pipeline.start()
            return pipeline

    def _producers(self, pipeline: StreamPipeline, archive: InfluxSink) -> list[Producer]:
        """Health points per stream; each marker stream once, archived beside the first stream that names it."""
        settings, producers = pipeline.settings, []
        influx = settings.influxdb
        if influx.health_interval_sec > 0:
            def health():  # noqa: ANN202 - a closure over this stream
                description = pipeline.source.description
                name = description.name if description else (settings.lsl.name or pipeline.key)
                return encode_health(influx.health_measurement, name, pipeline.metrics, time.time_ns(), pipeline.layout_key)

            producers.append(HealthPoints(influx.health_interval_sec, health, archive.offer_events, pipeline.stop))
        marker = (settings.lsl.marker_name, settings.lsl.marker_type)
        if any(marker) and marker not in self._marker_selectors:
            self._marker_selectors.add(marker)
            predicate = build_predicate(*marker)
            producers.append(MarkerFollower(predicate, influx.marker_measurement, archive.offer_events, pipeline.stop,
                                            pipeline.metrics, also=self.view.add_markers if self.view else None))
        return producers

    # ---- discovery -------------------------------------------------------------------------
    def _discover(self, rig: Rig) -> None:
        """Follow every stream matching LSL_DISCOVER, including ones that appear later.

        A stream that goes away keeps its pipeline (it re-resolves, shown as lost); one that
        reappears is the same key, so it is not added twice.
        """
        assert rig.discover is not None
        lsl = rig.discover
        predicate = build_predicate(lsl.name, lsl.type, lsl.source_id, lsl.hostname)
        known_uids: set[str] = set()
        while not self.stop.is_set():
            for info in pylsl.resolve_bypred(predicate, minimum=0, timeout=DISCOVER_WINDOW_SEC) if predicate else \
                    pylsl.resolve_streams(DISCOVER_WINDOW_SEC):
                if info.uid() in known_uids or self.stop.is_set():
                    continue
                known_uids.add(info.uid())
                found = describe(info)
                if found.channel_format == "string":
                    continue  # marker streams are never spectra
                key = stream_key(found.name, found.source_id, found.hostname)
                if key in self.pipelines:
                    continue
                log.info("discovered stream %s: following it as '%s'", found.who(), key)
                try:
                    self.follow(discovered_spec(rig, found.name, found.source_id, found.hostname, key))
                except ConfigError as exc:
                    log.error("stream %s: %s", found.who(), exc)
            self.stop.wait(rig.discover_interval_sec)

    # ---- running ---------------------------------------------------------------------------
    def start(self) -> None:
        if self._started:
            return
        self._started = True
        if self.view is not None:
            self.view.start()
        if self._health is not None:
            self._health.start()
        for pipeline in list(self.pipelines.values()):
            pipeline.start()
        if self._rig is not None and self._rig.discover is not None:
            self._discovery = threading.Thread(target=self._discover, args=(self._rig,), name="discover", daemon=True)
            self._discovery.start()

    def show_status(self) -> None:
        """The one-line status on stderr, every STATUS_INTERVAL_SEC (``run`` only)."""
        self._status = _status_line(self)
        self._status.start()

    def wait(self) -> int:
        """Until stopped, or until every stream has ended (with no discovery going on).

        The exit status is the worst of the streams' (0 when all ended cleanly).
        """
        while not self.stop.wait(0.2):
            if self._discovery is None and not any(p.running for p in self.pipelines.values()):
                break
        return self.close()

    def close(self) -> int:
        self.stop.set()
        # A pushed stream's queue holds the caller's samples: its pipeline finishes them first.
        for source in self._pushed.values():
            source.end()
        for key in self._pushed:
            self.pipelines[key].join()
        for pipeline in list(self.pipelines.values()):
            pipeline.stop.set()
        for pipeline in list(self.pipelines.values()):
            pipeline.join()
        if self._discovery is not None:
            self._discovery.join(DISCOVER_WINDOW_SEC + 5.0)
        if self.view is not None:
            self.view.close(self.settings.shutdown_timeout_sec)
        if self._status is not None:
            self._status.stop()
        if self._health is not None:
            self._health.stop()
        codes = [p.exit_code for p in self.pipelines.values() if p.exit_code is not None]
        return max(codes, default=EXIT_OK)

    def __enter__(self) -> Bridge:
        self.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


#: The name the project's plan gave the embeddable class.
EEGInfluxDBStreamer = Bridge


# ---- what a person sees --------------------------------------------------------------------------
def _stream_part(pipeline: StreamPipeline, rate: float) -> str:
    source, metrics = pipeline.source, pipeline.metrics
    description = source.description
    if source.connected and description is not None:
        head = f"{pipeline.key} {description.channel_count}ch@{description.srate:g}Hz"
    elif description is not None:
        head = f"{pipeline.key} stream lost {source.seconds_since_last_sample:.0f}s ago"
    else:
        head = f"{pipeline.key} waiting for stream"
    parts = [head, f"{rate:.1f} frames/s"]
    for sink in pipeline.sinks:
        latency = metrics.value("eeg_bridge_sink_last_latency_seconds", sink=sink.name)
        lat = f" lat {latency * 1000:.0f}ms" if latency else ""
        parts.append(f"{sink.name} {sink.health.state} q{sink.queue_depth()}{lat}")
    return " ".join(parts)


def _status_line(bridge: Bridge) -> StatusReporter:
    last: dict[str, float] = {}

    def render(elapsed: float) -> str:
        parts = []
        for key, pipeline in list(bridge.pipelines.items()):
            frames = pipeline.metrics.value("eeg_bridge_frames_computed_total")
            rate = (frames - last.get(key, 0.0)) / elapsed if elapsed > 0 else 0.0
            last[key] = frames
            parts.append(_stream_part(pipeline, rate))
        if bridge.view is not None:
            parts.append(f"view {bridge.view.health.state} q{bridge.view.queue_depth()}")
        return " | ".join(parts) or "no stream yet"

    return StatusReporter(render, bridge.settings.observability.status_interval_sec)


def stream_health(pipeline: StreamPipeline, failing_after: float) -> tuple[bool, dict[str, Any]]:
    source = pipeline.source
    stale = source.seconds_since_last_sample
    ok = source.connected and stale < pipeline.settings.lsl.stale_sec
    sinks = {
        sink.name: {
            "state": sink.health.state,
            "failing_for_sec": round(sink.health.failing_for(), 1),
            "queue_depth": sink.queue_depth(),
            "last_error": sink.health.last_error,
        }
        for sink in pipeline.sinks
    }
    failing = [name for name, s in sinks.items() if s["failing_for_sec"] > failing_after]
    return ok and not failing, {"connected": source.connected, "seconds_since_last_sample": round(stale, 1), "sinks": sinks}


def _health_server(bridge: Bridge) -> HealthServer | None:
    obs = bridge.settings.observability
    if obs.metrics_port is None:
        return None

    def check() -> tuple[bool, dict]:
        streams = {key: stream_health(p, obs.health_sink_failing_sec) for key, p in list(bridge.pipelines.items())}
        ready = bool(streams) and all(ok for ok, _ in streams.values())
        details: dict[str, Any] = {"streams": {key: d for key, (_, d) in streams.items()}}
        if len(streams) == 1:  # one stream: its figures at the top, as before there were several
            (only,) = details["streams"].values()
            details["stream"] = {k: only[k] for k in ("connected", "seconds_since_last_sample")}
            details["sinks"] = only["sinks"]
        return ready, details

    try:
        return HealthServer(obs.metrics_host, obs.metrics_port, bridge.metrics, check)
    except OSError as exc:
        raise ConfigError(
            f"Cannot serve metrics on {obs.metrics_host}:{obs.metrics_port} ({exc.strerror}); choose another METRICS_PORT."
        ) from None
