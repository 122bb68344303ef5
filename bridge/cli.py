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
from typing import Sequence
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError


from bridge import __version__
from bridge.archive.spool import QUARANTINE
from bridge.config import SECRET_OPTIONS, ConfigError, Options, Settings, build_settings, load_options
from bridge.observe.logs import setup_logging
from bridge.observe.metrics import Metrics
from bridge.pipeline import EXIT_BAD_INPUT, EXIT_OK
from bridge.rig import load_rig
from bridge.sources.simulator import SimulatorSettings
from bridge.supervisor import Bridge, archive_sink

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
    parser.add_argument("--config", metavar="RIG.toml",
                        help="a rig's settings: the same names as the environment at the top, one [streams.<key>] "
                        "table per stream (the environment and flags override the top level)")
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


def _parse_settings(parser: argparse.ArgumentParser, argv: Sequence[str]) -> Settings:
    return build_settings(load_options(os.environ, vars(parser.parse_args(argv))))


def _install_signals(stop: threading.Event) -> None:
    def handler(signum: int, _frame: object) -> None:
        log.info("received %s: stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


def cmd_run(argv: Sequence[str]) -> int:
    args = vars(run_parser().parse_args(argv))
    config = args.pop("config")
    rig = load_rig(os.environ, args, Path(config) if config else None)
    settings = rig.base
    setup_logging(settings.observability.log_level, settings.observability.log_format)
    if settings.influxdb.tls.insecure:
        log.warning("TLS_INSECURE is set: certificates are NOT verified; anyone on the path can read the tokens")
    for spec in rig.streams:
        assert spec.settings.spool.directory is not None
        _mention_unowned_segments(spec.settings.spool.root, spec.settings.spool.directory)
    bridge = Bridge.from_rig(rig)  # every spool's lock first
    _install_signals(bridge.stop)
    bridge.show_status()
    bridge.start()
    code = bridge.wait()
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
    sink = archive_sink(settings, metrics, directory, owner="replay")
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
    settings = _parse_settings(replay_parser(), argv)
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
    return run_import([Path(p) for p in paths], settings, metrics, lambda: archive_sink(own, metrics, directory, owner="import"), stop, zone,
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
