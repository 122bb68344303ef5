"""Command line: ``eeg-bridge [run]``, ``eeg-bridge simulate``, ``eeg-bridge replay``, ``eeg-bridge import``.

Flags are generated from the option table in :mod:`bridge.config`, so ``--help``, the
environment variables and the README's table cannot drift apart. Bad input ends here with one
sentence and exit status 2, before anything connects.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from dataclasses import replace
from datetime import datetime, timezone, tzinfo
from pathlib import Path
from typing import Callable, Sequence
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import SecretStr

from bridge import __version__
from bridge.config import (
    SECRET_OPTIONS,
    ConfigError,
    Options,
    Settings,
    build_settings,
    load_options,
    require_stream_selector,
)
from bridge.archive.events import HealthPoints, MarkerFollower, Producer, encode_health
from bridge.observe.health import HealthServer
from bridge.sources.lsl import build_predicate
from bridge.observe.logs import StatusReporter, setup_logging
from bridge.observe.metrics import Metrics
from bridge.pipeline import EXIT_BAD_INPUT, EXIT_OK, Pipeline
from bridge.sources.simulator import SimulatorSettings
from bridge.sinks.base import Sink
from bridge.sinks.grafana_live import GrafanaLiveSink
from bridge.sinks.influxdb import InfluxSink, make_writer
from bridge.sinks.view import PipelineStatus, ViewSink
from bridge.archive.spool import QUARANTINE, Spool, SpoolInUse

log = logging.getLogger("bridge")

_COMMANDS = ("run", "simulate", "replay", "import", "demo")
#: replay's exit status is 0 or the sum of these (2 stays "bad input", e.g. a spool in use).
EXIT_DATA_LEFT = 1
EXIT_QUARANTINED = 4


def _flag(alias: str) -> str:
    return "--" + alias.lower().replace("_", "-")


def _add_option_flags(parser: argparse.ArgumentParser) -> None:
    for field in Options.model_fields.values():
        alias = field.alias or ""
        if alias in SECRET_OPTIONS:
            continue  # secrets only from env or *_FILE: a flag would show in `ps`
        default = "-" if field.default is None else field.default
        help_text = f"{field.description} [env {alias}; default: {default}]"
        if field.annotation is bool:
            parser.add_argument(_flag(alias), dest=alias, action="store_const", const="true", help=help_text)
        else:
            parser.add_argument(_flag(alias), dest=alias, metavar=alias.split("_")[-1], help=help_text)


def _secrets_epilog() -> str:
    names = ", ".join(SECRET_OPTIONS)
    return (
        f"Secrets ({names}) are read only from the environment or from a file named by the same "
        "variable with a _FILE suffix (Docker secrets); they are never printed."
    )


def run_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="eeg-bridge",
        description="Stream EEG power spectra from LSL to Grafana Live (live heatmap) and InfluxDB (archive). "
        "Commands: run (default), simulate (a synthetic EEG outlet), replay (upload a spool), "
        "import (recorded XDF/EDF/BDF files; see 'eeg-bridge import --help'), "
        "demo (simulator + bridge + live page). "
        "Every option can also be set by its environment variable.",
        epilog=_secrets_epilog(),
    )
    parser.add_argument("--version", action="version", version=f"eeg-bridge {__version__}")
    _add_option_flags(parser)
    return parser


def replay_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="eeg-bridge replay",
        description="Upload archive spools to InfluxDB, each segment to the destination recorded in it, then exit. "
        "Which spools: SPOOL_DIR; else the stream's default spool (LSL_SOURCE_ID, LSL_STREAM_NAME or LSL_STREAM_TYPE); "
        "else every spool under ~/.local/state/eeg-bridge/spool. Exit status: 0 all uploaded; otherwise the sum of "
        f"{EXIT_DATA_LEFT} (data left in a spool) and {EXIT_QUARANTINED} (files moved to quarantine/); 2 bad "
        "configuration or a spool in use by another process.",
        epilog=_secrets_epilog(),
    )
    _add_option_flags(parser)
    return parser


def import_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="eeg-bridge import",
        description="Import recorded sessions (XDF from LabRecorder, EDF/BDF) into InfluxDB with the same spectra, "
        "settings and markers as the live bridge, then exit. XDF streams are chosen with LSL_STREAM_NAME / "
        "LSL_STREAM_TYPE / LSL_SOURCE_ID (default: every EEG-typed numeric stream).",
        epilog=_secrets_epilog(),
    )
    parser.add_argument("paths", nargs="+", metavar="PATH", help=".xdf, .edf or .bdf files")
    parser.add_argument("--dry-run", action="store_true",
                        help="list the streams, channels, duration and frames each file would give; write nothing")
    parser.add_argument("--timezone", metavar="ZONE",
                        help="EDF/BDF only: time zone of the header's start time, an IANA name (Europe/Berlin), "
                        "UTC or +HH:MM [default: this machine's]")
    _add_option_flags(parser)
    return parser


def _zone(text: str | None) -> tzinfo | None:
    if not text:
        return None
    if text.upper() in ("UTC", "Z"):
        return timezone.utc
    try:
        return ZoneInfo(text)
    except (ZoneInfoNotFoundError, ValueError):
        pass
    try:
        return datetime.strptime(text, "%z").tzinfo
    except ValueError:
        raise ConfigError(f"--timezone '{text}' is neither a time zone name (Europe/Berlin) nor an offset (+01:00).") from None


def simulate_parser() -> argparse.ArgumentParser:
    d = SimulatorSettings()
    parser = argparse.ArgumentParser(
        prog="eeg-bridge simulate", description="Publish a synthetic EEG stream on LSL until stopped."
    )
    parser.add_argument("--name", default=d.name, help=f"stream name [default: {d.name}]")
    parser.add_argument("--type", default=d.type, help=f"stream type [default: {d.type}]")
    parser.add_argument("--source-id", default=d.source_id, help=f"source_id [default: {d.source_id}]")
    parser.add_argument("--channels", type=int, default=d.channels, help=f"channel count [default: {d.channels}]")
    parser.add_argument("--rate", type=float, default=d.rate, help=f"sampling rate, Hz [default: {d.rate:g}]")
    parser.add_argument("--line-hz", type=float, default=d.line_hz, help=f"mains frequency [default: {d.line_hz:g}]")
    parser.add_argument("--chunk-ms", type=float, default=d.chunk_ms, help=f"push period, ms [default: {d.chunk_ms:g}]")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: random)")
    parser.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    return parser


def _parse_settings(parser: argparse.ArgumentParser, argv: Sequence[str], *, stream_needed: bool) -> Settings:
    args = parser.parse_args(argv)
    options = load_options(os.environ, vars(args))
    if stream_needed:
        require_stream_selector(options)
    return build_settings(options)


def _install_signals(stop: threading.Event) -> None:
    def handler(signum: int, _frame: object) -> None:
        log.info("received %s: stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


def _mint_grafana_token(settings: Settings) -> SecretStr | None:
    """A fresh token of the bridge's own service account (role by push mode), or None (logged)."""
    grafana = settings.grafana
    if grafana is None or not (grafana.admin_user and grafana.admin_password):
        return None
    from bridge.sinks.grafana_token import GrafanaTokenError, obtain_push_token, push_role

    try:
        token = obtain_push_token(
            grafana.url,
            grafana.admin_user,
            grafana.admin_password.get_secret_value(),
            role=push_role(grafana.push),
            bridge_id=grafana.stream_id,
            seconds_to_live=grafana.token_ttl_sec,
            verify=grafana.tls.context(),
        )
    except GrafanaTokenError as exc:
        log.error("grafana: could not create a push token: %s", exc)
        return None
    log.info("grafana: using the bridge's own %s service-account token", push_role(grafana.push))
    return SecretStr(token)


def _grafana_sink(settings: Settings, metrics: Metrics) -> GrafanaLiveSink:
    grafana = settings.grafana
    assert grafana is not None
    if grafana.token is not None:
        return GrafanaLiveSink(grafana, metrics.sink("grafana"), token=grafana.token)
    # A minted token expires (GRAFANA_MINTED_TOKEN_TTL_SEC): the sink asks for a new one on 401.
    return GrafanaLiveSink(
        grafana, metrics.sink("grafana"), token=_mint_grafana_token(settings),
        renew=(lambda: _mint_grafana_token(settings)) if grafana.admin_user and grafana.admin_password else None,
    )


def _open_spool(settings: Settings, directory: Path, *, owner: str) -> Spool:
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


def _influx_sink(settings: Settings, metrics: Metrics, directory: Path, *, owner: str = "run") -> InfluxSink:
    spool = _open_spool(settings, directory, owner=owner)
    writer = make_writer(settings.influxdb) if settings.influxdb.url else None
    if writer is None:
        log.warning("INFLUXDB_URL is empty: archiving to the spool at %s only", directory)
    return InfluxSink(settings.influxdb, metrics, spool, writer=writer, owner=owner)


def _status_line(pipeline: Pipeline, metrics: Metrics) -> StatusReporter:
    last = {"frames": 0.0}

    def render(elapsed: float) -> str:
        frames = metrics.value("eeg_bridge_frames_computed_total")
        rate = (frames - last["frames"]) / elapsed if elapsed > 0 else 0.0
        last["frames"] = frames
        description = pipeline.source.description
        if pipeline.source.connected and description is not None:
            stream = f"{description.name} {description.channel_count}ch@{description.srate:g}Hz"
        else:
            stream = f"stream lost {pipeline.source.seconds_since_last_sample:.0f}s ago" if description else "waiting for stream"
        parts = [stream, f"{rate:.1f} frames/s"]
        for sink in pipeline.sinks:
            latency = metrics.value("eeg_bridge_sink_last_latency_seconds", sink=sink.name)
            lat = f" lat {latency * 1000:.0f}ms" if latency else ""
            parts.append(f"{sink.name} {sink.health.state} q{sink.queue_depth()}{lat}")
        return " | ".join(parts)

    return StatusReporter(render, pipeline.settings.observability.status_interval_sec)


def _health_server(pipeline: Pipeline, metrics: Metrics) -> HealthServer | None:
    obs = pipeline.settings.observability
    if obs.metrics_port is None:
        return None

    def check() -> tuple[bool, dict]:
        source = pipeline.source
        stale = source.seconds_since_last_sample
        stream_ok = source.connected and stale < pipeline.settings.lsl.stale_sec
        sinks = {
            sink.name: {
                "state": sink.health.state,
                "failing_for_sec": round(sink.health.failing_for(), 1),
                "queue_depth": sink.queue_depth(),
                "last_error": sink.health.last_error,
            }
            for sink in pipeline.sinks
        }
        failing = [name for name, s in sinks.items() if s["failing_for_sec"] > obs.health_sink_failing_sec]
        stream = {"connected": source.connected, "seconds_since_last_sample": round(stale, 1)}
        return stream_ok and not failing, {"stream": stream, "sinks": sinks}

    try:
        return HealthServer(obs.metrics_host, obs.metrics_port, metrics, check)
    except OSError as exc:
        raise ConfigError(
            f"Cannot serve metrics on {obs.metrics_host}:{obs.metrics_port} ({exc.strerror}); choose another METRICS_PORT."
        ) from None


def _producers(settings: Settings, metrics: Metrics, archive: InfluxSink, stop: threading.Event,
               stream_name: Callable[[], str], view: ViewSink | None = None) -> list[Producer]:
    """Health points and markers, which reach the archive beside the spectra."""
    producers: list[Producer] = []
    influx = settings.influxdb
    if influx.health_interval_sec > 0:
        producers.append(HealthPoints(
            influx.health_interval_sec,
            lambda: encode_health(influx.health_measurement, stream_name(), metrics, time.time_ns()),
            archive.offer_events,
            stop,
        ))
    if settings.lsl.marker_name or settings.lsl.marker_type:
        predicate = build_predicate(settings.lsl.marker_name, settings.lsl.marker_type)
        producers.append(MarkerFollower(predicate, influx.marker_measurement, archive.offer_events, stop, metrics,
                                        also=view.add_markers if view is not None else None))
    return producers


def cmd_run(argv: Sequence[str]) -> int:
    settings = _parse_settings(run_parser(), argv, stream_needed=True)
    setup_logging(settings.observability.log_level, settings.observability.log_format)
    if settings.influxdb.tls.insecure:
        log.warning("TLS_INSECURE is set: certificates are NOT verified; anyone on the path can read the tokens")
    metrics = Metrics()
    assert settings.spool.directory is not None  # a stream selector is required, so there is a default
    _mention_unowned_segments(settings.spool.root, settings.spool.directory)
    archive = _influx_sink(settings, metrics, settings.spool.directory)  # the spool's lock first
    sinks: list[Sink] = []
    if settings.grafana is not None:
        sinks.append(_grafana_sink(settings, metrics))
    sinks.append(archive)
    view = ViewSink(settings.view, metrics.sink("view")) if settings.view is not None else None
    if view is not None:
        sinks.append(view)
    pipeline = Pipeline(settings, metrics, sinks)
    if view is not None:
        view.status_source = PipelineStatus(pipeline, metrics)

    def stream_name() -> str:
        description = pipeline.source.description
        return description.name if description else (settings.lsl.name or "unknown")

    pipeline.producers = _producers(settings, metrics, archive, pipeline.stop, stream_name, view)
    health = _health_server(pipeline, metrics)
    _install_signals(pipeline.stop)
    status = _status_line(pipeline, metrics)
    status.start()
    if health is not None:
        health.start()
    try:
        code = pipeline.run()
    finally:
        status.stop()
        if health is not None:
            health.stop()
    log.info("stopped")
    return code


def _mention_unowned_segments(root: Path, directory: Path) -> None:
    """Spools used to default to ``root`` itself: segments left there by an older eeg-bridge are
    no run's any more, so say so instead of leaving them unmentioned."""
    if directory == root or not root.is_dir():
        return
    left = sorted(root.glob("*.lp"))
    if left:
        log.warning(
            "%d segment files from an older eeg-bridge are in %s (spools are per stream now); they record no "
            "destination, so they are not uploaded automatically: 'SPOOL_DIR=%s eeg-bridge replay' moves them to "
            "quarantine/, and docs/failure-modes.md says how to upload such a file",
            len(left), root, root,
        )


def find_spools(root: Path) -> list[Path]:
    """Every spool directory at or below ``root`` (quarantine/ folders are not spools)."""
    if not root.is_dir():
        return []
    found = []
    for directory in [root, *sorted(p for p in root.rglob("*") if p.is_dir())]:
        if QUARANTINE in directory.relative_to(root).parts:
            continue
        if any(child.is_file() for child in directory.iterdir()):
            found.append(directory)
    return found


def _replay_one(settings: Settings, directory: Path, stop: threading.Event) -> int:
    """Upload one spool; its exit-status bits."""
    metrics = Metrics()
    sink = _influx_sink(settings, metrics, directory, owner="replay")
    log.info("replaying %d frames from %s", sink.spool.pending_frames, directory)
    sink.start()
    while sink.uploadable_frames() and not stop.is_set() and sink.health.state != "failed":
        stop.wait(0.2)
    sink.close(0.0)
    sink.spool.unlock()
    code = 0
    if sink.spool.empty:
        log.info("replay done: %d frames uploaded", int(metrics.value("eeg_bridge_sink_frames_sent_total", sink="influxdb")))
    else:
        code |= EXIT_DATA_LEFT
    if sink.spool.quarantined:
        code |= EXIT_QUARANTINED
        log.error(
            "replay: %d files of %s were moved to %s (the reason is beside each)",
            sink.spool.quarantined, directory, sink.spool.quarantine_dir,
        )
    return code


def cmd_replay(argv: Sequence[str]) -> int:
    settings = _parse_settings(replay_parser(), argv, stream_needed=False)
    setup_logging(settings.observability.log_level, settings.observability.log_format)
    if not settings.influxdb.url:
        raise ConfigError("Set INFLUXDB_URL: replay uploads the spool to that server.")
    stop = threading.Event()
    _install_signals(stop)
    if settings.spool.directory is not None:
        return _replay_one(settings, settings.spool.directory, stop)
    directories = find_spools(settings.spool.root)
    if not directories:
        log.info("no spool under %s: nothing to replay", settings.spool.root)
    code = EXIT_OK
    for directory in directories:
        if stop.is_set():
            return code | EXIT_DATA_LEFT
        try:
            code |= _replay_one(settings, directory, stop)
        except ConfigError as busy:  # in use: its own bridge uploads it; the others still get replayed
            log.warning("%s", busy)
    return code


def cmd_import(argv: Sequence[str]) -> int:
    from bridge.importer import IMPORT_SPOOL, run_import  # noqa: PLC0415 - pyxdf/pyedflib only for import

    args = vars(import_parser().parse_args(argv))
    paths, dry_run, zone = args.pop("paths"), args.pop("dry_run"), _zone(args.pop("timezone"))
    settings = build_settings(load_options(os.environ, args), check_hosts=not dry_run)
    setup_logging(settings.observability.log_level, settings.observability.log_format)
    if not dry_run and not settings.influxdb.url:
        raise ConfigError("Set INFLUXDB_URL: import writes into that server.")
    metrics = Metrics()
    # Its own spool under SPOOL_DIR, so an import never shares (or waits for) a live bridge's.
    directory = (settings.spool.directory or settings.spool.root) / IMPORT_SPOOL
    own = replace(settings, spool=replace(settings.spool, directory=directory))
    stop = threading.Event()
    _install_signals(stop)
    return run_import([Path(p) for p in paths], settings, metrics, lambda: _influx_sink(own, metrics, directory, owner="import"), stop, zone,
                      dry_run, sys.stdout)


def cmd_simulate(argv: Sequence[str]) -> int:
    from bridge.sources import simulator

    args = simulate_parser().parse_args(argv)
    if args.channels < 1 or args.rate <= 0 or args.chunk_ms <= 0:
        raise ConfigError("--channels, --rate and --chunk-ms must be positive.")
    setup_logging("INFO", "text")
    settings = SimulatorSettings(
        name=args.name, type=args.type, source_id=args.source_id, channels=args.channels,
        rate=args.rate, line_hz=args.line_hz, chunk_ms=args.chunk_ms, seed=args.seed,
    )
    stop = threading.Event()
    _install_signals(stop)
    started = time.monotonic()
    pushed = simulator.run(settings, stop, duration=args.duration)
    log.info("simulator stopped after %.1f s, %d samples", time.monotonic() - started, pushed)
    return EXIT_OK


def cmd_demo(argv: Sequence[str]) -> int:
    from bridge import demo

    return demo.main(argv)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv.pop(0) if argv and argv[0] in _COMMANDS else "run"
    handlers = {"run": cmd_run, "simulate": cmd_simulate, "replay": cmd_replay, "import": cmd_import,
                "demo": cmd_demo}
    try:
        return handlers[command](argv)
    except ConfigError as exc:
        print(f"eeg-bridge: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
