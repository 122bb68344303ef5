"""A rig: the streams one bridge follows, each with its own settings, validated once at the edge.

Streams are chosen, most specific first, by the ``[streams.<label>]`` tables of a TOML file
(``eeg-bridge run --config rig.toml``), by ``LSL_STREAMS`` (several selectors), or by the single
selector of one-stream set-ups (``LSL_STREAM_NAME``/``TYPE``/``SOURCE_ID``, unchanged); or they
are discovered on the network (``LSL_DISCOVER``), including streams that appear later.

Every setting keeps its one name (the environment variable's) in the file too, and each stream's
settings are validated by the same option table as the environment. Precedence, lowest first:
defaults, the file's top level, the environment, command-line flags, the stream's own table.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Mapping

from bridge.frame import safe_name
from bridge.config import (
    ConfigError,
    LslSettings,
    Options,
    Settings,
    build_settings,
    raw_options,
    spool_root,
    stream_spool_name,
    validate_options,
)

#: Settings one process has once, whatever its streams: a stream's table may not set them.
GLOBAL_ONLY = frozenset({
    "LSL_STREAMS", "LSL_DISCOVER", "LSL_DISCOVER_INTERVAL_SEC",
    "GRAFANA_URL", "GRAFANA_TOKEN", "GRAFANA_PUSH", "GRAFANA_ADMIN_USER", "GRAFANA_ADMIN_PASSWORD",
    "GRAFANA_MINTED_TOKEN_TTL_SEC", "VIEW_PORT", "VIEW_HOST", "VIEW_HISTORY_SEC", "VIEW_TOKEN",
    "METRICS_PORT", "METRICS_HOST", "HEALTH_SINK_FAILING_SEC", "LOG_LEVEL", "LOG_FORMAT",
    "STATUS_INTERVAL_SEC", "SHUTDOWN_TIMEOUT_SEC", "TLS_CA_BUNDLE", "TLS_INSECURE",
})
_SELECTOR_OPTIONS = {"name": "LSL_STREAM_NAME", "type": "LSL_STREAM_TYPE", "source_id": "LSL_SOURCE_ID",
                     "host": "LSL_STREAM_HOST"}
_SINGLE = ("LSL_STREAM_NAME", "LSL_STREAM_TYPE", "LSL_SOURCE_ID")


@dataclass(frozen=True)
class StreamSpec:
    """One stream to follow: its key and its full settings.

    The key names the stream everywhere: Grafana Live ``stream/<key>/...``, the InfluxDB tag
    ``stream_id``, the metrics label ``stream``, the logs and the status line (for one classic
    stream, see ``tagged``). It is
    GRAFANA_STREAM_ID when set; else the config file's table name (``[streams.P1]`` -> ``P1``);
    else the selector's source_id, else its name (or type) with ``-<host>`` when a host is
    given; for a discovered stream, its source_id, else ``<name>-<hostname>``. Always in
    ``[A-Za-z0-9_-]`` (anything else becomes ``_``), at most 64 characters.
    """

    key: str
    settings: Settings
    #: Whether this stream's rows carry the ``stream_id`` tag. Every stream of a multi-stream
    #: rig does; one stream chosen the classic way (LSL_STREAM_NAME/TYPE/SOURCE_ID) does not, and
    #: keeps its Live id GRAFANA_STREAM_ID (default ``eeg``), so existing archives, wide-table
    #: column budgets and dashboards continue unchanged.
    tagged: bool = True

    @property
    def layout_key(self) -> str:
        """What the frames carry as ``layout.key`` (and so the archive as ``stream_id``)."""
        return self.key if self.tagged else ""


@dataclass(frozen=True)
class Rig:
    """What ``run`` follows. ``base``: the process-wide settings (sinks, page, metrics);
    ``streams``: the configured streams; ``discover``: a selector whose matches are followed as
    they appear, each with ``base``'s settings."""

    base: Settings
    streams: tuple[StreamSpec, ...]
    discover: LslSettings | None = None
    discover_interval_sec: float = 2.0

    @property
    def name(self) -> str:
        """Names the process (its Grafana tokens): the one stream's Live id, else its streams' keys."""
        if len(self.streams) == 1 and not self.discover and self.streams[0].settings.grafana is not None:
            return self.streams[0].settings.grafana.stream_id
        parts = [s.key for s in self.streams] + ([self.discover.describe()] if self.discover else [])
        return safe_name("_".join(parts), "bridge")


def selector_key(lsl: LslSettings) -> str:
    """A configured stream's key from its selector (see :class:`StreamSpec`)."""
    if lsl.source_id:
        return safe_name(lsl.source_id, "stream")
    base = lsl.name or lsl.type or "stream"
    return safe_name(f"{base}-{lsl.hostname}" if lsl.hostname else base, "stream")


def with_key(key: str, settings: Settings) -> StreamSpec:
    """A stream of a multi-stream rig: its Live id is its key; its wide rows carry one more tag."""
    grafana = replace(settings.grafana, stream_id=key) if settings.grafana is not None else None
    spectrum = replace(settings.spectrum, extra_columns=settings.spectrum.extra_columns + 1)
    return StreamSpec(key=key, settings=replace(settings, grafana=grafana, spectrum=spectrum))


def parse_selector(text: str, option: str) -> dict[str, str]:
    """``name:EEG-P1+host:lab-1`` -> {"name": "EEG-P1", "host": "lab-1"}, or one sentence."""
    selector: dict[str, str] = {}
    for part in text.split("+"):
        kind, sep, value = part.partition(":")
        kind, value = kind.strip().lower(), value.strip()
        if not sep or kind not in _SELECTOR_OPTIONS or not value:
            raise ConfigError(
                f"{option} '{text}': each selector is kind:value joined by + (kinds: name, type, source_id, host), "
                "e.g. name:EEG-P1 or type:EEG+host:lab-1."
            )
        selector[kind] = value
    return selector


def _file_tables(path: Path) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"Cannot read the config file '{path}': {exc.strerror or exc}.") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"The config file '{path}' is not valid TOML: {exc}.") from None
    streams = data.pop("streams", {})
    if not isinstance(streams, dict) or not all(isinstance(t, dict) for t in streams.values()):
        raise ConfigError(f"{path}: 'streams' must be tables, one per stream: [streams.P1], [streams.P2].")
    return data, streams


def _file_values(table: Mapping[str, Any], where: str) -> dict[str, str]:
    """A TOML table's settings by their environment names (any case), as the environment has them."""
    known = {f.alias for f in Options.model_fields.values()} | {"LSL_STREAM_HOST"}
    values: dict[str, str] = {}
    for key, value in table.items():
        name = key.upper()
        if name not in known:
            raise ConfigError(f"{where}: unknown setting '{key}' (settings have the environment variables' names).")
        if isinstance(value, dict):
            raise ConfigError(f"{where}: '{key}' must be a value, not a table.")
        if isinstance(value, bool):
            value = "true" if value else "false"
        elif isinstance(value, list):
            value = ",".join(str(v) for v in value)
        values[name] = str(value)
    return values


def _stream_settings(raw: Mapping[str, Any], where: str, *, label: str | None = None) -> tuple[str, Settings]:
    """One configured stream's key and settings (validated by the same table as the environment)."""
    host = raw.get("LSL_STREAM_HOST")
    options = {k: v for k, v in raw.items() if k != "LSL_STREAM_HOST"}
    if not any(options.get(k) for k in _SINGLE) and not host:
        raise ConfigError(f"{where}: choose the stream with LSL_STREAM_NAME, LSL_STREAM_TYPE or LSL_SOURCE_ID.")
    try:
        settings = build_settings(validate_options(options), check_hosts=False)
    except ConfigError as exc:
        if not where:
            raise
        raise ConfigError(f"{where}: {exc}") from None
    lsl = replace(settings.lsl, hostname=host or None)
    spool = settings.spool
    if host and not options.get("SPOOL_DIR"):
        name = stream_spool_name(lsl.source_id, f"{lsl.name or lsl.type}@{host}", None)
        spool = replace(spool, directory=spool.root / name) if name else spool
    settings = replace(settings, lsl=lsl, spool=spool)
    key = options.get("GRAFANA_STREAM_ID") or (safe_name(label, "stream") if label else selector_key(lsl))
    return key, settings


def load_rig(env: Mapping[str, str], flags: Mapping[str, Any], config: Path | None = None) -> Rig:
    """Every stream's settings, validated; one sentence (ConfigError) naming the table and key."""
    file_globals: dict[str, str] = {}
    tables: dict[str, dict[str, str]] = {}
    if config is not None:
        top, stream_tables = _file_tables(config)
        file_globals = _file_values(top, str(config))
        for label, table in stream_tables.items():
            where = f"{config} [streams.{label}]"
            values = _file_values(table, where)
            shared = sorted(GLOBAL_ONLY & values.keys())
            if shared:
                raise ConfigError(f"{where}: {shared[0]} is one per bridge: set it at the top of the file, not per stream.")
            tables[label] = values
    raw = raw_options(env, flags, base=file_globals)
    options = validate_options({k: v for k, v in raw.items() if k != "LSL_STREAM_HOST"})
    base = build_settings(options)
    several = bool(tables) or bool(options.lsl_streams) or bool(options.lsl_discover)
    # With several streams SPOOL_DIR is where their spools live, one directory per stream.
    root = Path(options.spool_dir).expanduser() if several and options.spool_dir else None
    if root is not None:
        base = replace(base, spool=replace(base.spool, root=root, directory=None))
    general = {k: v for k, v in raw.items() if k not in _SINGLE and k not in ("LSL_STREAMS", "LSL_DISCOVER", "SPOOL_DIR")}
    streams: list[StreamSpec] = []
    if raw.get("GRAFANA_STREAM_ID") and (tables or options.lsl_streams or options.lsl_discover):
        raise ConfigError(
            "GRAFANA_STREAM_ID names one stream: with several, each stream's key is its id "
            "(set GRAFANA_STREAM_ID in a stream's own table of the config file to choose it)."
        )
    if tables:
        for label, values in tables.items():
            streams.append(with_key(*_stream_settings({**general, **values}, f"{config} [streams.{label}]", label=label)))
    elif options.lsl_streams:
        for text in (t.strip() for t in options.lsl_streams.split(",")):
            if not text:
                continue
            selector = parse_selector(text, "LSL_STREAMS")
            values = {_SELECTOR_OPTIONS[kind]: value for kind, value in selector.items()}
            streams.append(with_key(*_stream_settings({**general, **values}, f"LSL_STREAMS '{text}'")))
    elif any(raw.get(k) for k in _SINGLE):
        key, settings = _stream_settings(raw, "")
        streams.append(StreamSpec(key=key, settings=settings, tagged=False))
    discover = None
    if options.lsl_discover:
        if streams and not tables and not options.lsl_streams:
            raise ConfigError("Set either LSL_DISCOVER or LSL_STREAM_NAME/TYPE/SOURCE_ID, not both.")
        selector = parse_selector(options.lsl_discover, "LSL_DISCOVER")
        discover = LslSettings(
            name=selector.get("name"), type=selector.get("type"), source_id=selector.get("source_id"),
            hostname=selector.get("host"), stale_sec=base.lsl.stale_sec, buffer_sec=base.lsl.buffer_sec,
        )
    if not streams and discover is None:
        raise ConfigError(
            "Choose the stream with LSL_STREAM_NAME, LSL_STREAM_TYPE or LSL_SOURCE_ID, several with LSL_STREAMS "
            "(name:EEG-P1,name:EEG-P2) or a config file, or follow every match with LSL_DISCOVER (type:EEG)."
        )
    if root is not None:
        streams = [_under(spec, root) for spec in streams]
    keys = [s.key for s in streams]
    duplicate = next((k for k in keys if keys.count(k) > 1), None)
    if duplicate:
        raise ConfigError(f"Two streams have the key '{duplicate}': give each its own GRAFANA_STREAM_ID (or selector).")
    spools = [s.settings.spool.directory for s in streams]
    same = next((d for d in spools if spools.count(d) > 1), None)
    if same is not None:
        raise ConfigError(f"Two streams would share the spool {same}: give each its own SPOOL_DIR or selector.")
    return Rig(base=base, streams=tuple(streams), discover=discover,
               discover_interval_sec=options.lsl_discover_interval_sec)


def _under(spec: StreamSpec, root: Path) -> StreamSpec:
    """The stream's spool below ``root`` (SPOOL_DIR with several streams), unless its table set one."""
    spool = spec.settings.spool
    if spool.directory is None or spool.directory.parent != spool.root:
        return spec
    moved = replace(spool, root=root, directory=root / spool.directory.name)
    return replace(spec, settings=replace(spec.settings, spool=moved))


def discovered_spec(rig: Rig, name: str, source_id: str, hostname: str, key: str) -> StreamSpec:
    """A discovered stream's settings: the rig's, pinned to exactly that stream, its own spool."""
    base = rig.base
    lsl = replace(
        rig.discover or base.lsl,
        name=name, source_id=source_id or None, hostname=None if source_id else hostname,
        marker_name=base.lsl.marker_name, marker_type=base.lsl.marker_type,
    )
    spool_name = stream_spool_name(source_id, None, None) if source_id else f"stream-{key}"
    spool = replace(base.spool, directory=(base.spool.root or spool_root()) / spool_name)
    return with_key(key, replace(base, lsl=lsl, spool=spool))
