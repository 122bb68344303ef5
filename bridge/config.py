"""Configuration: parsed and validated once, at the edge, into typed per-stage settings.

Every option has one fixed environment variable name (users' scripts and docs rely on them)
and a matching command-line flag that overrides it. Validation is done by pydantic so that
types, ranges and cross-field rules live next to the option they constrain; errors are turned
into one sentence naming the variable, because the users are researchers, not Python readers.

Secrets (tokens, passwords) come only from the environment or ``*_FILE`` paths (Docker
secrets), never from flags, which would show in ``ps``. They are ``SecretStr`` so that a stray
``repr`` or log line prints ``**********``.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Mapping
from urllib.parse import urlsplit

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

from bridge.dsp.bands import DEFAULT_BANDS, parse_bands
from bridge.dsp.derived import DerivedSettings
from bridge.dsp.quality import QualitySettings, parse_thresholds
from bridge.dsp.spectrum import StftParams
from bridge.dsp.windows import get_window

SECRET_OPTIONS = ("GRAFANA_TOKEN", "GRAFANA_ADMIN_PASSWORD", "INFLUXDB_TOKEN", "INFLUXDB_PASSWORD", "VIEW_TOKEN")
#: Options whose empty value means something (a sink or a feature off; their descriptions say
#: "empty"); every other empty or blank value means "not set", as compose files and .env
#: templates write ``METRICS_PORT=``.
EMPTY_IS_A_VALUE = ("GRAFANA_URL", "INFLUXDB_URL", "SPECTRUM_BANDS")


class ConfigError(ValueError):
    """A configuration problem, phrased as one sentence for the user."""


def spool_root() -> Path:
    """Where the default spools live: one directory per stream below this one."""
    return Path.home() / ".local" / "state" / "eeg-bridge" / "spool"


def stream_spool_name(source_id: str | None, name: str | None, type_: str | None) -> str | None:
    """The default spool's directory name for the stream selector (None without one).

    Known from the settings before any stream is resolved, so a bridge locks its spool before it
    connects. The most specific selector wins (source_id > name > type) and names its kind, so
    ``LSL_STREAM_NAME=EEG`` and ``LSL_STREAM_TYPE=EEG`` never share a spool; a value that had to be
    made file-name safe gets a digest of the original, so "a b" and "a_b" do not share one either.
    """
    for kind, value in (("source_id", source_id), ("name", name), ("type", type_)):
        if value:
            safe = re.sub(r"[^A-Za-z0-9._-]", "_", value)[:80].lstrip(".")
            if safe != value:
                safe += "-" + hashlib.sha256(value.encode()).hexdigest()[:8]
            return f"{kind}-{safe}"
    return None


class Options(BaseModel):
    """The flat option table: field alias = environment variable = ``--flag`` spelling."""

    model_config = ConfigDict(populate_by_name=False, extra="forbid", frozen=True)

    # --- LSL source -------------------------------------------------------------------------
    lsl_stream_name: str | None = Field(None, alias="LSL_STREAM_NAME", description="LSL stream name to connect to.")
    lsl_stream_type: str | None = Field(None, alias="LSL_STREAM_TYPE", description="LSL stream type, e.g. EEG.")
    lsl_source_id: str | None = Field(None, alias="LSL_SOURCE_ID", description="LSL source_id (unique per device).")
    lsl_streams: str | None = Field(None, alias="LSL_STREAMS", description="Several streams: comma-separated selectors, each kind:value joined by + (kinds name, type, source_id, host), e.g. name:EEG-P1,name:EEG-P2.")
    lsl_discover: str | None = Field(None, alias="LSL_DISCOVER", description="Follow every stream matching this selector (e.g. type:EEG or type:EEG+host:lab-1), including ones that appear later.")
    lsl_discover_interval_sec: float = Field(2.0, gt=0, alias="LSL_DISCOVER_INTERVAL_SEC", description="How often LSL_DISCOVER looks for new streams.")
    lsl_stale_sec: float = Field(3.0, gt=0, alias="LSL_STALE_SEC", description="Seconds without a sample before the stream counts as lost and is re-resolved.")
    lsl_buffer_sec: int = Field(30, ge=1, alias="LSL_BUFFER_SEC", description="Seconds of samples liblsl may buffer if the bridge stalls.")
    lsl_marker_stream_name: str | None = Field(None, alias="LSL_MARKER_STREAM_NAME", description="Also follow this LSL marker (string) stream; markers become InfluxDB events and Grafana annotations.")
    lsl_marker_stream_type: str | None = Field(None, alias="LSL_MARKER_STREAM_TYPE", description="Marker stream type (e.g. Markers), instead of or with its name.")
    # --- spectra ----------------------------------------------------------------------------
    spectrum_mode: Literal["raw", "precomputed"] = Field("raw", alias="SPECTRUM_MODE", description="raw: compute a sliding STFT from EEG samples; precomputed: every sample already is a spectrum.")
    spectrum_nperseg: int = Field(256, ge=2, alias="SPECTRUM_NPERSEG", description="Samples per STFT window.")
    spectrum_noverlap: int = Field(128, ge=0, alias="SPECTRUM_NOVERLAP", description="Samples shared by consecutive windows (hop = nperseg - noverlap).")
    spectrum_window: str = Field("hann", alias="SPECTRUM_WINDOW", description="Window name understood by scipy.signal.get_window.")
    spectrum_fmin: float | None = Field(None, ge=0, alias="SPECTRUM_FMIN", description="Lowest frequency bin kept, Hz.")
    spectrum_fmax: float | None = Field(None, gt=0, alias="SPECTRUM_FMAX", description="Highest frequency bin kept, Hz.")
    spectrum_channels: str | None = Field(None, alias="SPECTRUM_CHANNELS", description="Comma-separated channel labels or 0-based indices to keep (default: all).")
    precomputed_frequencies: str | None = Field(None, alias="PRECOMPUTED_FREQUENCIES", description="Precomputed mode: frequency axis as 'f0,f1,...' or 'start:stop:step' (default: the stream's <desc><frequencies>).")
    precomputed_scale: Literal["db", "power"] = Field("db", alias="PRECOMPUTED_SCALE", description="Precomputed mode: values are dB already, or power to convert with 10*log10.")
    # --- band power and channel quality (docs/data-model.md: eeg_bands, eeg_quality) ----------
    spectrum_bands: str = Field(DEFAULT_BANDS, alias="SPECTRUM_BANDS", description="Bands for band power, name:low-high in Hz (low inclusive, high exclusive), comma-separated; empty = no band power.")
    derived_every_frames: int | None = Field(None, ge=0, alias="DERIVED_EVERY_FRAMES", description="Band power and quality on every Nth frame (0 = neither; default: about 4 a second, every frame up to 4 frames/s).")
    quality_enabled: bool = Field(True, alias="QUALITY_ENABLED", description="Judge every channel's signal quality (flat, railed, line noise, high-frequency noise).")
    line_freq: Literal[50, 60] = Field(50, alias="LINE_FREQ", description="Mains frequency for the line-noise check, Hz (50 or 60).")
    quality_flat_std: float = Field(0.5, ge=0, alias="QUALITY_FLAT_STD", description="A window whose standard deviation is below this (stream units) is flat: bad.")
    quality_rail: float | None = Field(None, gt=0, alias="QUALITY_RAIL", description="Float streams: samples at or beyond +-this count as railed (integer streams use their type's limits).")
    quality_rail_fraction: str = Field("0.001,0.05", alias="QUALITY_RAIL_FRACTION", description="Fraction of a window's samples at the rails for warn,bad.")
    quality_dc_offset: float | None = Field(None, gt=0, alias="QUALITY_DC_OFFSET", description="A window mean at or beyond +-this (stream units) counts as railed: warn (default: no check).")
    quality_line_noise_db: str = Field("15,25", alias="QUALITY_LINE_NOISE_DB", description="PSD at LINE_FREQ over its neighbourhood, dB, for warn,bad.")
    quality_hf_ratio_db: str = Field("6,12", alias="QUALITY_HF_RATIO_DB", description="Mean PSD above the bands over mean PSD within them, dB, for warn,bad.")
    # --- Grafana Live -----------------------------------------------------------------------
    grafana_url: str = Field("http://localhost:3000", alias="GRAFANA_URL", description="Grafana base URL; empty disables live push.")
    grafana_token: SecretStr | None = Field(None, alias="GRAFANA_TOKEN", description="Service-account token (Editor for HTTP push, Admin for WebSocket push).")
    grafana_stream_id: str = Field("eeg", pattern=r"^[A-Za-z0-9_-]{1,64}$", alias="GRAFANA_STREAM_ID", description="Grafana Live stream id of one stream: channels are stream/<id>/<channel>. With several streams each stream's key is its id (see Several streams).")
    grafana_push: Literal["http", "ws"] = Field("http", alias="GRAFANA_PUSH", description="http: one POST per frame; ws: one WebSocket message per frame (needs Admin).")
    grafana_admin_user: str | None = Field(None, alias="GRAFANA_ADMIN_USER", description="With GRAFANA_ADMIN_PASSWORD and no token: create the bridge's own service-account token at start.")
    grafana_admin_password: SecretStr | None = Field(None, alias="GRAFANA_ADMIN_PASSWORD", description="Grafana admin password (see GRAFANA_ADMIN_USER).")
    grafana_minted_token_ttl_sec: int = Field(2592000, ge=60, alias="GRAFANA_MINTED_TOKEN_TTL_SEC", description="Lifetime of a token the bridge mints from the admin login (renewed on 401; earlier ones deleted).")
    grafana_timeout_sec: float = Field(1.0, gt=0, alias="GRAFANA_TIMEOUT_SEC", description="Per-push timeout; live frames older than this are worthless anyway.")
    grafana_queue_frames: int = Field(4, ge=1, alias="GRAFANA_QUEUE_FRAMES", description="Live queue length; when full the oldest frame is dropped (counted).")
    # --- InfluxDB ---------------------------------------------------------------------------
    influxdb_url: str = Field("http://localhost:8086", alias="INFLUXDB_URL", description="InfluxDB base URL; empty archives to the spool only (upload later with 'eeg-bridge replay').")
    influxdb_api: Literal["v2", "v1"] = Field("v2", alias="INFLUXDB_API", description="v2: /api/v2/write via influxdb-client (2.x, 1.8+, 3.x); v1: native /write (1.x).")
    influxdb_token: SecretStr | None = Field(None, alias="INFLUXDB_TOKEN", description="InfluxDB API token (v2).")
    influxdb_org: str = Field("phoprivate", alias="INFLUXDB_ORG", description="InfluxDB organisation (v2).")
    influxdb_bucket: str = Field("neuroscience", min_length=1, alias="INFLUXDB_BUCKET", description="Bucket (v2), or database[/retention_policy] (v1).")
    influxdb_username: str | None = Field(None, alias="INFLUXDB_USERNAME", description="User name (v1, when auth is enabled).")
    influxdb_password: SecretStr | None = Field(None, alias="INFLUXDB_PASSWORD", description="Password (v1).")
    influxdb_measurement: str = Field("eeg_spectrum", min_length=1, alias="INFLUXDB_MEASUREMENT", description="Measurement name for spectra.")
    influxdb_schema: Literal["wide", "long"] = Field("wide", alias="INFLUXDB_SCHEMA", description="wide: one field per bin; long: tag frequency_bin, field power.")
    influxdb_max_columns: int = Field(500, ge=0, alias="INFLUXDB_MAX_COLUMNS", description="Columns per table the server allows (InfluxDB 3: 500); a wide layout needing more is refused at start. 0: no check.")
    batch_size: int = Field(10, ge=1, alias="BATCH_SIZE", description="Frames per InfluxDB write.")
    batch_interval_sec: float = Field(1.0, gt=0, alias="BATCH_INTERVAL_SEC", description="Longest a frame waits before its batch is written (and made durable).")
    influxdb_timeout_sec: float = Field(10.0, gt=0, alias="INFLUXDB_TIMEOUT_SEC", description="Per-write timeout.")
    influxdb_max_body_bytes: int = Field(5_000_000, ge=10_000, alias="INFLUXDB_MAX_BODY_BYTES", description="Largest write body; bigger batches are split (1.x allows 25 MB, 3.x 10 MB).")
    influxdb_marker_measurement: str = Field("eeg_markers", min_length=1, alias="INFLUXDB_MARKER_MEASUREMENT", description="Measurement for LSL markers (string field marker).")
    influxdb_health_measurement: str = Field("bridge_health", min_length=1, alias="INFLUXDB_HEALTH_MEASUREMENT", description="Measurement for the bridge's own loss ledger.")
    influxdb_bands_measurement: str = Field("eeg_bands", min_length=1, alias="INFLUXDB_BANDS_MEASUREMENT", description="Measurement for band power (field per band in dB, plus <band>_rel).")
    influxdb_quality_measurement: str = Field("eeg_quality", min_length=1, alias="INFLUXDB_QUALITY_MEASUREMENT", description="Measurement for channel quality (its numbers, state and flags).")
    health_write_interval_sec: float = Field(10.0, ge=0, alias="HEALTH_WRITE_INTERVAL_SEC", description="Write the loss ledger to InfluxDB this often (0 = never).")
    spool_dir: str | None = Field(None, alias="SPOOL_DIR", description="Directory of the durable archive spool (default: one per stream, ~/.local/state/eeg-bridge/spool/<stream>).")
    spool_max_bytes: int = Field(1 << 30, ge=1_000_000, alias="SPOOL_MAX_BYTES", description="Spool size limit; beyond it the oldest data is dropped (counted, logged).")
    # --- live page ------------------------------------------------------------------------------
    view_port: int | None = Field(None, ge=0, le=65535, alias="VIEW_PORT", description="Serve the live page (spectrograms, overview, markers) on this port; 0 = any free port (off by default).")
    view_host: str = Field("127.0.0.1", min_length=1, alias="VIEW_HOST", description="Address the live page binds to; anything but loopback requires VIEW_TOKEN.")
    view_history_sec: float = Field(60.0, ge=0, le=3600, alias="VIEW_HISTORY_SEC", description="Seconds of frames the live page starts with on load or reconnect.")
    view_token: SecretStr | None = Field(None, alias="VIEW_TOKEN", description="Token the live page asks for once per browser session (required off loopback).")
    # --- transport security ------------------------------------------------------------------
    tls_ca_bundle: str | None = Field(None, alias="TLS_CA_BUNDLE", description="CA bundle file for HTTPS to Grafana and InfluxDB.")
    tls_insecure: bool = Field(False, alias="TLS_INSECURE", description="Disable TLS certificate verification (unsafe; logged as a warning).")
    # --- observability --------------------------------------------------------------------------
    metrics_port: int | None = Field(None, ge=1, le=65535, alias="METRICS_PORT", description="Serve /metrics and /healthz on this port (off by default).")
    metrics_host: str = Field("127.0.0.1", alias="METRICS_HOST", description="Address the metrics server binds to.")
    health_sink_failing_sec: float = Field(30.0, gt=0, alias="HEALTH_SINK_FAILING_SEC", description="/healthz reports not-ready once a sink has been failing this long.")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", alias="LOG_LEVEL", description="Log level.")
    log_format: Literal["text", "json"] = Field("text", alias="LOG_FORMAT", description="text for people, json for log shippers.")
    status_interval_sec: float = Field(1.0, gt=0, alias="STATUS_INTERVAL_SEC", description="Status line refresh (terminal) or summary period x10 (otherwise).")
    shutdown_timeout_sec: float = Field(15.0, ge=0, alias="SHUTDOWN_TIMEOUT_SEC", description="On stop, how long to keep uploading the spool before leaving the rest for next start.")

    @field_validator("lsl_stream_name", "lsl_stream_type", "lsl_source_id", "grafana_admin_user",
                     "lsl_marker_stream_name", "lsl_marker_stream_type",
                     "influxdb_username", "spectrum_channels", "precomputed_frequencies", "tls_ca_bundle")
    @classmethod
    def _strip(cls, value: str | None) -> str | None:
        return value.strip() if value is not None else None

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("spectrum_window")
    @classmethod
    def _known_window(cls, value: str) -> str:
        get_window(value, 16)  # raises ValueError with a sentence for unknown names
        return value

    @field_validator("grafana_url", "influxdb_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        value = value.strip().rstrip("/")
        if value:
            parts = urlsplit(value)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(f"'{value}' is not an http(s) URL like http://localhost:8086")
            try:
                parts.port
            except ValueError:
                raise ValueError(f"'{value}' has an invalid port") from None
        return value

    @model_validator(mode="after")
    def _cross_checks(self) -> Options:
        if self.spectrum_noverlap >= self.spectrum_nperseg:
            raise ValueError(f"SPECTRUM_NOVERLAP ({self.spectrum_noverlap}) must be smaller than SPECTRUM_NPERSEG ({self.spectrum_nperseg})")
        if self.spectrum_fmin is not None and self.spectrum_fmax is not None and self.spectrum_fmin >= self.spectrum_fmax:
            raise ValueError(f"SPECTRUM_FMIN ({self.spectrum_fmin:g}) must be below SPECTRUM_FMAX ({self.spectrum_fmax:g})")
        if self.grafana_push == "ws" and self.grafana_url and not self.grafana_url.startswith(("http://", "https://")):
            raise ValueError("GRAFANA_URL must be http(s); the WebSocket address is derived from it")
        if self.tls_ca_bundle and not Path(self.tls_ca_bundle).is_file():
            raise ValueError(f"TLS_CA_BUNDLE '{self.tls_ca_bundle}' is not a readable file")
        if self.precomputed_frequencies:
            parse_frequencies(self.precomputed_frequencies)
        if self.view_port is not None and not is_loopback(self.view_host) and not (
            self.view_token and self.view_token.get_secret_value()
        ):
            raise ValueError(
                f"VIEW_HOST {self.view_host} is reachable from other machines: set VIEW_TOKEN (or VIEW_TOKEN_FILE) "
                "so that only people with the token can watch, or bind the page to 127.0.0.1"
            )
        return self

    @field_validator("spectrum_bands")
    @classmethod
    def _bands(cls, value: str) -> str:
        value = value.strip()
        if value:
            parse_bands(value)  # one sentence naming the bad band
        return value

    @field_validator("quality_rail_fraction", "quality_line_noise_db", "quality_hf_ratio_db")
    @classmethod
    def _thresholds(cls, value: str) -> str:
        parse_thresholds(value, "the value")
        return value


def is_loopback(host: str) -> bool:
    """Only these addresses keep the page on this machine; a name other than localhost may not."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:
        return False


def parse_frequencies(text: str) -> np.ndarray:
    """'1,2,4' or 'start:stop:step' (stop inclusive) -> strictly increasing frequency axis."""
    try:
        if ":" in text:
            start, stop, step = (float(p) for p in text.split(":"))
            if step <= 0:
                raise ValueError
            freqs = np.arange(start, stop + step / 2, step)
        else:
            freqs = np.array([float(p) for p in text.split(",")])
    except ValueError:
        raise ValueError(f"PRECOMPUTED_FREQUENCIES '{text}' must be 'f0,f1,...' or 'start:stop:step'") from None
    if freqs.size == 0 or np.any(freqs < 0) or np.any(np.diff(freqs) <= 0) or not np.all(np.isfinite(freqs)):
        raise ValueError(f"PRECOMPUTED_FREQUENCIES '{text}' must be non-negative and strictly increasing")
    return freqs


# ---- typed settings handed to the stages -----------------------------------------------------


@dataclass(frozen=True)
class LslSettings:
    name: str | None
    type: str | None
    source_id: str | None
    stale_sec: float
    buffer_sec: int
    marker_name: str | None = None
    marker_type: str | None = None
    hostname: str | None = None

    def describe(self) -> str:
        """The selector in LSL_STREAMS spelling (``name:EEG+host:lab-1``), for logs."""
        parts = [f"{kind}:{value}" for kind, value in
                 (("name", self.name), ("type", self.type), ("source_id", self.source_id), ("host", self.hostname)) if value]
        return "+".join(parts) or "any stream"


@dataclass(frozen=True)
class SpectrumSettings:
    mode: Literal["raw", "precomputed"]
    stft: StftParams
    channels: tuple[str, ...] | None
    precomputed_frequencies: np.ndarray | None
    precomputed_scale: Literal["db", "power"]
    derived: DerivedSettings = DerivedSettings()
    #: INFLUXDB_MAX_COLUMNS when the wide schema is limited by it; None: any number of bins.
    max_columns: int | None = None
    #: Columns of a wide table besides the bins (time, tags): one more when rows carry stream_id.
    extra_columns: int = 3

    def bins_problem(self, bins: int) -> str | None:
        """The sentence refusing a layout of ``bins`` bins, or None when it fits."""
        if self.max_columns is None or bins + self.extra_columns <= self.max_columns:
            return None
        return (
            f"A wide layout of {bins} frequency bins needs {bins + self.extra_columns} columns per table, more than "
            f"INFLUXDB_MAX_COLUMNS ({self.max_columns}, InfluxDB 3's default limit is 500): set "
            "INFLUXDB_SCHEMA=long, or keep fewer bins with SPECTRUM_FMAX (or SPECTRUM_FMIN), or raise "
            "INFLUXDB_MAX_COLUMNS for a server without that limit."
        )


@dataclass(frozen=True)
class TlsSettings:
    ca_bundle: str | None
    insecure: bool

    def context(self) -> ssl.SSLContext:
        """The one TLS policy for every client: verify (system store or the CA bundle) unless
        the user explicitly, and loudly, switched it off."""
        context = ssl.create_default_context(cafile=self.ca_bundle)
        if self.insecure:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context


@dataclass(frozen=True)
class GrafanaSettings:
    url: str
    token: SecretStr | None
    #: Grafana Live id: GRAFANA_STREAM_ID for one stream, each stream's key with several.
    stream_id: str
    push: Literal["http", "ws"]
    admin_user: str | None
    admin_password: SecretStr | None
    timeout_sec: float
    queue_frames: int
    tls: TlsSettings
    token_ttl_sec: int = 2592000


@dataclass(frozen=True)
class InfluxSettings:
    url: str
    api: Literal["v2", "v1"]
    token: SecretStr | None
    org: str
    bucket: str
    username: str | None
    password: SecretStr | None
    measurement: str
    schema: Literal["wide", "long"]
    batch_size: int
    batch_interval_sec: float
    timeout_sec: float
    max_body_bytes: int
    tls: TlsSettings
    marker_measurement: str = "eeg_markers"
    health_measurement: str = "bridge_health"
    health_interval_sec: float = 10.0
    bands_measurement: str = "eeg_bands"
    quality_measurement: str = "eeg_quality"

    @property
    def database(self) -> tuple[str, str | None]:
        """v1 reading of the bucket: ``database[/retention_policy]``."""
        db, _, rp = self.bucket.partition("/")
        return db, rp or None


@dataclass(frozen=True)
class SpoolSettings:
    #: None only for ``replay`` without SPOOL_DIR or a stream selector: every spool under ``root``.
    directory: Path | None
    max_bytes: int
    root: Path


@dataclass(frozen=True)
class ObservabilitySettings:
    metrics_port: int | None
    metrics_host: str
    health_sink_failing_sec: float
    log_level: str
    log_format: Literal["text", "json"]
    status_interval_sec: float


@dataclass(frozen=True)
class ViewSettings:
    port: int
    host: str
    history_sec: float
    token: SecretStr | None


@dataclass(frozen=True)
class Settings:
    lsl: LslSettings
    spectrum: SpectrumSettings
    grafana: GrafanaSettings | None
    influxdb: InfluxSettings
    spool: SpoolSettings
    observability: ObservabilitySettings
    shutdown_timeout_sec: float
    view: ViewSettings | None = None


def _read_secret_files(env: Mapping[str, str]) -> dict[str, str]:
    values: dict[str, str] = {}
    for name in SECRET_OPTIONS:
        path = env.get(f"{name}_FILE")
        if not path:
            continue
        if env.get(name):
            raise ConfigError(f"Set either {name} or {name}_FILE, not both.")
        try:
            values[name] = Path(path).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"Cannot read {name}_FILE '{path}': {exc.strerror or exc}.") from None
    return values


def _sentence(error: ValidationError) -> str:
    first = error.errors()[0]
    loc = [str(p) for p in first.get("loc", ()) if p != "__root__"]
    message = str(first.get("msg", "invalid value")).removeprefix("Value error, ")
    if not loc:
        return message[0].upper() + message[1:] + "."
    name = loc[0]
    shown = "" if name in SECRET_OPTIONS else f"={first.get('input')!r}"
    return f"Invalid {name}{shown}: {message}."


def _is_set(name: str, value: Any) -> bool:
    """Empty or blank means "not set" (the default applies), except where empty is a value."""
    if value is None:
        return False
    return name in EMPTY_IS_A_VALUE or not isinstance(value, str) or bool(value.strip())


def raw_options(env: Mapping[str, str], overrides: Mapping[str, Any] | None = None,
                base: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The options that are set, by env name: ``base`` (a config file), then env, then overrides."""
    known = {f.alias for f in Options.model_fields.values()}
    raw: dict[str, Any] = {k: v for k, v in (base or {}).items() if _is_set(k, v)}
    raw.update({k: v for k, v in env.items() if k in known and _is_set(k, v)})
    raw.update(_read_secret_files(env))
    raw.update({k: v for k, v in (overrides or {}).items() if k in known and _is_set(k, v)})
    return raw


def validate_options(raw: Mapping[str, Any]) -> Options:
    try:
        return Options.model_validate(dict(raw))
    except ValidationError as exc:
        raise ConfigError(_sentence(exc)) from None


def load_options(env: Mapping[str, str], overrides: Mapping[str, Any] | None = None) -> Options:
    """Merge env and CLI overrides (by env name) and validate; raise ConfigError on bad input."""
    return validate_options(raw_options(env, overrides))


def _check_resolvable(url: str, name: str) -> None:
    host = urlsplit(url).hostname
    try:
        socket.getaddrinfo(host, None)
    except (socket.gaierror, UnicodeError):
        raise ConfigError(f"{name} host '{host}' cannot be resolved; check the address.") from None


def _derived_settings(options: Options) -> DerivedSettings:
    quality = None
    if options.quality_enabled:
        quality = QualitySettings(
            line_freq=float(options.line_freq),
            flat_std=options.quality_flat_std,
            rail=options.quality_rail,
            rail_fraction=parse_thresholds(options.quality_rail_fraction, "QUALITY_RAIL_FRACTION"),
            dc_offset=options.quality_dc_offset,
            line_noise_db=parse_thresholds(options.quality_line_noise_db, "QUALITY_LINE_NOISE_DB"),
            hf_ratio_db=parse_thresholds(options.quality_hf_ratio_db, "QUALITY_HF_RATIO_DB"),
        )
    bands = parse_bands(options.spectrum_bands) if options.spectrum_bands else ()
    return DerivedSettings(
        bands=bands,
        every=options.derived_every_frames,
        quality=quality,
        strict="spectrum_bands" in options.model_fields_set,
    )


def _spool_settings(options: Options) -> SpoolSettings:
    root = spool_root()
    if options.spool_dir:
        directory: Path | None = Path(options.spool_dir).expanduser()
    else:
        name = stream_spool_name(options.lsl_source_id, options.lsl_stream_name, options.lsl_stream_type)
        directory = root / name if name else None
    return SpoolSettings(directory=directory, max_bytes=options.spool_max_bytes, root=root)


def build_settings(options: Options, *, check_hosts: bool = True) -> Settings:
    """Turn the validated option table into the typed settings each stage receives."""
    tls = TlsSettings(ca_bundle=options.tls_ca_bundle, insecure=options.tls_insecure)
    try:
        tls.context()
    except ssl.SSLError as exc:
        raise ConfigError(f"Cannot load TLS_CA_BUNDLE '{options.tls_ca_bundle}': {exc.reason or exc}.") from None
    if check_hosts:
        if options.grafana_url:
            _check_resolvable(options.grafana_url, "GRAFANA_URL")
        if options.influxdb_url:
            _check_resolvable(options.influxdb_url, "INFLUXDB_URL")
    channels = None
    if options.spectrum_channels:
        channels = tuple(c.strip() for c in options.spectrum_channels.split(",") if c.strip())
    grafana = None
    if options.grafana_url:
        grafana = GrafanaSettings(
            url=options.grafana_url,
            token=options.grafana_token,
            stream_id=options.grafana_stream_id,
            push=options.grafana_push,
            admin_user=options.grafana_admin_user,
            admin_password=options.grafana_admin_password,
            timeout_sec=options.grafana_timeout_sec,
            queue_frames=options.grafana_queue_frames,
            tls=tls,
            token_ttl_sec=options.grafana_minted_token_ttl_sec,
        )
    settings = Settings(
        lsl=LslSettings(
            name=options.lsl_stream_name,
            type=options.lsl_stream_type,
            source_id=options.lsl_source_id,
            stale_sec=options.lsl_stale_sec,
            buffer_sec=options.lsl_buffer_sec,
            marker_name=options.lsl_marker_stream_name,
            marker_type=options.lsl_marker_stream_type,
        ),
        spectrum=SpectrumSettings(
            mode=options.spectrum_mode,
            stft=StftParams(
                nperseg=options.spectrum_nperseg,
                noverlap=options.spectrum_noverlap,
                window=options.spectrum_window,
                fmin=options.spectrum_fmin,
                fmax=options.spectrum_fmax,
            ),
            channels=channels,
            precomputed_frequencies=(
                parse_frequencies(options.precomputed_frequencies) if options.precomputed_frequencies else None
            ),
            precomputed_scale=options.precomputed_scale,
            derived=_derived_settings(options),
            max_columns=(
                options.influxdb_max_columns
                if options.influxdb_schema == "wide" and options.influxdb_max_columns > 0
                else None
            ),
        ),
        grafana=grafana,
        influxdb=InfluxSettings(
            url=options.influxdb_url,
            api=options.influxdb_api,
            token=options.influxdb_token,
            org=options.influxdb_org,
            bucket=options.influxdb_bucket,
            username=options.influxdb_username,
            password=options.influxdb_password,
            measurement=options.influxdb_measurement,
            schema=options.influxdb_schema,
            marker_measurement=options.influxdb_marker_measurement,
            health_measurement=options.influxdb_health_measurement,
            health_interval_sec=options.health_write_interval_sec,
            bands_measurement=options.influxdb_bands_measurement,
            quality_measurement=options.influxdb_quality_measurement,
            batch_size=options.batch_size,
            batch_interval_sec=options.batch_interval_sec,
            timeout_sec=options.influxdb_timeout_sec,
            max_body_bytes=options.influxdb_max_body_bytes,
            tls=tls,
        ),
        spool=_spool_settings(options),
        observability=ObservabilitySettings(
            metrics_port=options.metrics_port,
            metrics_host=options.metrics_host,
            health_sink_failing_sec=options.health_sink_failing_sec,
            log_level=options.log_level,
            log_format=options.log_format,
            status_interval_sec=options.status_interval_sec,
        ),
        shutdown_timeout_sec=options.shutdown_timeout_sec,
        view=None if options.view_port is None else ViewSettings(
            port=options.view_port,
            host=options.view_host.strip(),
            history_sec=options.view_history_sec,
            token=options.view_token if options.view_token and options.view_token.get_secret_value() else None,
        ),
    )
    if options.spectrum_mode == "raw" and options.spectrum_fmin is None and options.spectrum_fmax is None:
        # Without SPECTRUM_FMIN/FMAX the bin count is nperseg // 2 + 1 whatever the stream's rate;
        # otherwise it is known once the stream is (bridge/pipeline.py build_engine checks it then).
        problem = settings.spectrum.bins_problem(options.spectrum_nperseg // 2 + 1)
        if problem is not None:
            raise ConfigError(problem)
    return settings
