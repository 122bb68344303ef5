"""Protocol-faithful stand-in for Grafana Live push (HTTP and WebSocket) and the browser watching it.

Specification: /work/shared/reference/grafana-live.md. Where the reference is silent, behaviour follows
Grafana's own source (pkg/services/live: pushhttp, pushws, pushurl, telemetry/telegraf, managedstream;
grafana-plugin-sdk-go live/data) and influxdata/line-protocol v1, the parser Grafana uses for push
bodies. Comments mark those spots "Grafana:"; choices the stand-in had to make are marked "Stand-in:".

Besides Live push it models, each citing the Grafana source it follows: the service-account API
(pkg/services/serviceaccounts: status codes and errutil bodies, organisation-wide token names,
expiry), the dashboard API the bridge uses to keep the live dashboard's channel list current
(pkg/api/dashboard.go, pkg/services/dashboards/errors.go), and a browser opening a dashboard:
variables resolved before panels repeat (a query variable whose datasource fails leaves its repeated
panels out), Centrifuge's 128 subscriptions per client (centrifugal/centrifuge Config
ClientChannelLimit, "Zero value means 128"; Grafana leaves it at zero), and the per-channel
StreamingDataFrame buffer (packages/grafana-data/src/dataframe/StreamingDataFrame.ts: millisecond
times, trimmed to maxLength rows and to maxDelta ms).

One asyncio loop in a background thread serves HTTP and WebSocket on one port, like Grafana. Tests
read everything through thread-safe accessors and wait on conditions with `wait_for`, never on sleeps.

Also runs as a process for benchmarks and demos:
    python -m tests.grafana_standin --port 3000 --token glsa_demo=Editor --token glsa_ws=Admin
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import dataclasses
import itertools
import json
import logging
import math
import operator
import re
import secrets
import signal
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from decimal import Decimal
from http import HTTPStatus
from types import TracebackType
from typing import Literal, NamedTuple, TypeVar, get_args
from urllib.parse import parse_qs, unquote, urlsplit

from websockets.exceptions import PayloadTooBig
from websockets.frames import DATA_OPCODES, Opcode
from websockets.protocol import State
from websockets.server import ServerProtocol

__all__ = [
    "BrowserRow",
    "Credential",
    "Field",
    "LineProtocolError",
    "LiveFrame",
    "Mode",
    "Point",
    "RequestRecord",
    "Role",
    "SchemaMismatch",
    "WsConnectionRecord",
    "WsMessageRecord",
    "GrafanaLiveStandIn",
    "live_channel",
    "parse_line_protocol",
    "points_to_frames",
]

log = logging.getLogger(__name__)

Role = Literal["Viewer", "Editor", "Admin"]
Credential = Literal["Viewer", "Editor", "Admin", "expired", "revoked"]
Mode = Literal["ok", "down", "error_5xx", "hang", "reset"]
FrameFormat = Literal["labels_column", "wide"]
FieldValue = float | int | bool | str
Value = float | int | bool | str | None
Schema = tuple[tuple[str, str, bool, tuple[tuple[str, str], ...]], ...]
T = TypeVar("T")

_ROLE_RANK: dict[str, int] = {"Viewer": 0, "Editor": 1, "Admin": 2}
_FRAME_FORMATS: tuple[str, ...] = get_args(FrameFormat)
MAX_CHANNEL_LENGTH = 160
_CHANNEL_PART = re.compile(r"[A-Za-z0-9_-]+")
_CONTROL_TIMEOUT_S = 10.0


# ---------------------------------------------------------------------------------------------------
# InfluxDB line protocol, as influxdata/line-protocol v1 reads it (Grafana's push parser)
# ---------------------------------------------------------------------------------------------------


class LineProtocolError(ValueError):
    """A push body Grafana's parser rejects; the whole request then fails with 500."""


@dataclasses.dataclass(frozen=True)
class Point:
    """One parsed line. Tags are sorted and de-duplicated, as the v1 parser stores them."""

    measurement: str
    tags: tuple[tuple[str, str], ...]
    fields: tuple[tuple[str, FieldValue], ...]
    time_ns: int


_WS = r"[ \t\v\f]"
_NAME = r"(?!#)(?:[^\t\n\v\f\r ,\\]|\\[^\t\n\v\f\r])+"
_KEY = r"(?:[^\t\n\v\f\r ,=\\]|\\[^\t\n\v\f\r])+"
# No NaN/Inf spelling exists, so `f=NaN` matches nothing and fails the body, as in Grafana.
_VALUE = (
    r'(?:"(?:[^"\\]|\\.)*"'
    r"|-?(?:0|[1-9]\d*)i|(?:0|[1-9]\d*)u"
    r"|-?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
    r"|t|T|true|True|TRUE|f|F|false|False|FALSE)"
    r"(?=[, \t\v\f\r\n]|\Z)"
)
_POINT = (
    rf"(?P<measurement>{_NAME})(?P<tags>(?:,{_KEY}={_KEY})*){_WS}+"
    rf"(?P<fields>{_KEY}={_VALUE}(?:,{_KEY}={_VALUE})*)(?:{_WS}+(?P<timestamp>-?\d+))?"
)
_LINE = re.compile(rf"(?s){_WS}*(?:#[^\n]*|{_POINT})?{_WS}*(?:\r?\n|\Z)")
_TAG = re.compile(rf",({_KEY})=({_KEY})")
_FIELD = re.compile(rf"(?s)({_KEY})=({_VALUE})")
_KEY_UNESCAPE = re.compile(r'\\([,"= ])')
_NAME_UNESCAPE = re.compile(r"\\([, ])")
_STRING_UNESCAPE = re.compile(r'\\(["\\])')
_BOOLS = {v: True for v in ("t", "T", "true", "True", "TRUE")} | {
    v: False for v in ("f", "F", "false", "False", "FALSE")
}
_INT64 = range(-(2**63), 2**63)
_UINT64 = range(2**64)


def _unescape_key(text: str) -> str:
    # Grafana (line-protocol v1): keys and tag values are unescaped only when they hold an escaped
    # space, comma or equals sign; then `\"` is unescaped too.
    if "\\" in text and any(c in text for c in " ,="):
        return _KEY_UNESCAPE.sub(r"\1", text)
    return text


def _field_value(raw: str) -> FieldValue:
    """Convert one value token the line regex already accepted; its last character tells the type."""
    last = raw[-1]
    if last.isdigit() or last == ".":
        value = float(raw)
        if math.isinf(value):
            raise ValueError(f"float out of range: {raw}")
        return value
    if last == '"':
        return _STRING_UNESCAPE.sub(r"\1", raw[1:-1])
    if last in "iu":
        number = int(raw[:-1])
        if number not in (_INT64 if last == "i" else _UINT64):
            raise ValueError(f"integer out of range: {raw}")
        return number
    return _BOOLS[raw]


def _field_tokens(fields: str) -> list[tuple[str, str]]:
    if '"' in fields or "\\" in fields:
        return _FIELD.findall(fields)
    # Nothing quoted or escaped: commas and equals signs are plain separators (the fast path).
    return [tuple(pair.split("=", 1)) for pair in fields.split(",")]  # type: ignore[misc]


def _point(match: re.Match[str], now_ns: Callable[[], int]) -> Point:
    tags = {_unescape_key(k): _unescape_key(v) for k, v in _TAG.findall(match["tags"])}
    # Grafana (line-protocol v1): a repeated field key keeps its first position and last value.
    fields = {_unescape_key(k): _field_value(v) for k, v in _field_tokens(match["fields"])}
    if match["timestamp"] is None:
        # Grafana: the handler stamps each line without a timestamp with time.Now(), line by line.
        time_ns = now_ns()
    else:
        time_ns = int(match["timestamp"])  # always nanoseconds: Grafana has no precision parameter
        if time_ns not in _INT64:
            raise ValueError(f"timestamp out of range: {match['timestamp']}")
    return Point(
        _NAME_UNESCAPE.sub(r"\1", match["measurement"]),
        tuple(sorted(tags.items())),
        tuple(fields.items()),
        time_ns,
    )


def parse_line_protocol(body: bytes, now_ns: Callable[[], int] = time.time_ns) -> list[Point]:
    """Parse a whole push body, all or nothing, the way Grafana does before publishing anything.

    Blank lines and `#` comments are skipped. Invalid UTF-8 is replaced rather than rejected, since
    Go parses bytes. Raises LineProtocolError naming the first bad line.
    """
    text = body.decode("utf-8", errors="replace")  # Stand-in: Go would carry the bytes through
    points: list[Point] = []
    pos, line_no = 0, 1
    while pos < len(text):
        match = _LINE.match(text, pos)
        if match is None:
            bad = text[pos:].split("\n", 1)[0]
            raise LineProtocolError(f"line {line_no}: invalid line protocol: {bad[:120]!r}")
        if match["measurement"] is not None:
            try:
                points.append(_point(match, now_ns))
            except ValueError as exc:
                raise LineProtocolError(f"line {line_no}: {exc}") from exc
        line_no += match[0].count("\n")
        pos = match.end()
    return points


# ---------------------------------------------------------------------------------------------------
# Conversion to data frames (Grafana telemetry/telegraf converter with float64 numbers)
# ---------------------------------------------------------------------------------------------------


class Field(NamedTuple):
    """One frame column. `type` is the Go item type: string, time (values in Unix ns), float64, bool.

    A named tuple rather than a dataclass: a spectrum body makes thousands per request.
    """

    name: str
    type: str
    nullable: bool
    values: tuple[Value, ...]
    labels: tuple[tuple[str, str], ...] = ()

    @property
    def key(self) -> str:
        """The column's identity in a browser row: its name, plus `{labels}` when it has labels."""
        if not self.labels:
            return self.name
        return f"{self.name}{{{', '.join(f'{k}={v}' for k, v in self.labels)}}}"


@dataclasses.dataclass(frozen=True)
class BrowserRow:
    """One buffered row in the simulated browser: the time plus every other column by `Field.key`.

    `time_ms` is what the browser works with: Grafana sends times as epoch milliseconds and the
    sub-millisecond rest in a separate `nanos` array that StreamingDataFrame ignores, so two rows
    less than 1 ms apart have the same time in every panel. `time_ns` is kept for tests.
    """

    time_ns: int
    values: Mapping[str, Value]

    @property
    def time_ms(self) -> int:
        return self.time_ns // 1_000_000


@dataclasses.dataclass(frozen=True)
class LiveFrame:
    """One publication on a channel: what Grafana sends to browsers and keeps as the channel's last frame."""

    channel: str
    fields: tuple[Field, ...]
    published_ns: int

    @property
    def schema(self) -> Schema:
        return tuple((f.name, f.type, f.nullable, f.labels) for f in self.fields)

    @property
    def field_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields)

    @property
    def row_count(self) -> int:
        return len(self.fields[0].values)

    def column(self, key: str) -> tuple[Value, ...]:
        """Values of the column whose `Field.key` is `key`."""
        for f in self.fields:
            if f.key == key:
                return f.values
        raise KeyError(key)

    def rows(self) -> list[BrowserRow]:
        time_field = next(f for f in self.fields if f.type == "time")
        others = [f for f in self.fields if f is not time_field]
        return [
            BrowserRow(int(t), {f.key: f.values[i] for f in others})  # type: ignore[arg-type]
            for i, t in enumerate(time_field.values)
        ]


def _typed(raw: FieldValue) -> tuple[str, Value]:
    # Grafana: every number becomes a nullable float64; a *string* "NaN" becomes a null float64.
    if isinstance(raw, bool):
        return "bool", raw
    if isinstance(raw, str):
        return ("float64", None) if raw == "NaN" else ("string", raw)
    return "float64", float(raw)


def _go_format(raw: float | int | bool) -> str:
    """Go's fmt %v, which Grafana uses to put a number or bool into an existing string column."""
    if isinstance(raw, bool):
        return "true" if raw else "false"
    if isinstance(raw, int):
        return str(raw)
    if raw == 0:
        return "-0" if math.copysign(1.0, raw) < 0 else "0"
    shortest = Decimal(repr(raw)).normalize()
    exponent = shortest.adjusted()
    if -4 <= exponent < 6:
        return format(shortest, "f")
    sign, digits, _ = shortest.as_tuple()
    mantissa = str(digits[0]) + ("." + "".join(map(str, digits[1:])) if len(digits) > 1 else "")
    return f"{'-' if sign else ''}{mantissa}e{'-' if exponent < 0 else '+'}{abs(exponent):02d}"


_by_key = operator.itemgetter(0)


class _LabelsColumnFrame:
    """All lines of one measurement in one body, as ONE frame: labels, time, then the fields."""

    def __init__(self) -> None:
        self.labels: list[str] = []
        self.times: list[int] = []
        self.columns: dict[str, tuple[str, list[Value]]] = {}

    def append(self, point: Point) -> None:
        row = len(self.times)
        # Grafana: data.Labels.String(), keys sorted, "k=v, k=v"; no tags gives "".
        self.labels.append(", ".join(f"{k}={v}" for k, v in point.tags))
        self.times.append(point.time_ns)
        columns = self.columns
        for key, raw in sorted(point.fields, key=_by_key):  # lexicographic: "10.0" < "2.0"
            field_type, value = ("float64", raw) if type(raw) is float else _typed(raw)
            column = columns.get(key)
            if column is None:
                columns[key] = (field_type, [None] * row + [value])
                continue
            if field_type != column[0]:
                # Grafana: a type clash is logged; the value is stringified into a string column,
                # otherwise nulled.
                keep = column[0] == "string" and value is not None
                value = _go_format(raw) if keep else None  # type: ignore[arg-type]
            values = column[1]
            if len(values) < row:
                values.extend([None] * (row - len(values)))
            values.append(value)

    def fields(self) -> tuple[Field, ...]:
        rows = len(self.times)
        return (
            Field("labels", "string", False, tuple(self.labels)),
            Field("time", "time", False, tuple(self.times)),
            *(
                Field(key, field_type, True, (*values, *[None] * (rows - len(values))))
                for key, (field_type, values) in self.columns.items()
            ),
        )


def points_to_frames(
    points: Iterable[Point], frame_format: FrameFormat
) -> list[tuple[str, tuple[Field, ...]]]:
    """Frames Grafana publishes for one body, in order, each with the measurement it goes to.

    labels_column: one frame per measurement, one row per line. wide (Grafana's other format): one
    single-row frame per (measurement, timestamp), the fields of every such line side by side, each
    carrying its line's tags as labels.
    """
    if frame_format == "labels_column":
        frames: dict[str, _LabelsColumnFrame] = {}
        for point in points:
            frames.setdefault(point.measurement, _LabelsColumnFrame()).append(point)
        return [(measurement, frame.fields()) for measurement, frame in frames.items()]
    wide: dict[tuple[str, int], list[Field]] = {}
    for point in points:
        fields = wide.setdefault(
            (point.measurement, point.time_ns), [Field("time", "time", False, (point.time_ns,))]
        )
        for key, raw in sorted(point.fields, key=_by_key):
            field_type, value = _typed(raw)
            fields.append(Field(key, field_type, True, (value,), point.tags))
    return [(measurement, tuple(fields)) for (measurement, _), fields in wide.items()]


def live_channel(stream_id: str, measurement: str) -> str:
    """The Grafana Live channel a measurement pushed to `stream_id` is published on."""
    return f"stream/{stream_id}/{measurement}"


def _channel_problem(stream_id: str, measurement: str) -> str | None:
    for what, part in (("stream id", stream_id), ("measurement", measurement)):
        if not _CHANNEL_PART.fullmatch(part):
            return f"{what} {part!r} has characters outside [A-Za-z0-9_-]"
    channel = live_channel(stream_id, measurement)
    if len(channel) > MAX_CHANNEL_LENGTH:
        return f"channel is {len(channel)} characters long, over {MAX_CHANNEL_LENGTH}"
    return None


# ---------------------------------------------------------------------------------------------------
# What the stand-in records
# ---------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class RequestRecord:
    """One HTTP request as received (WebSocket handshakes included), and what it got back.

    `status` is None when the connection was reset instead of answered. `error` says why the
    stand-in refused it, the way Grafana would log it.
    """

    received_ns: int
    method: str
    target: str
    headers: Mapping[str, str]
    body: bytes
    status: int | None
    error: str | None
    #: Who Grafana took the caller for ("anonymous" when a failed credential fell through to the
    #: anonymous client); None when the request was refused before authentication.
    identity: str | None = None


@dataclasses.dataclass(frozen=True)
class WsMessageRecord:
    """One WebSocket push message; `error` is set when it was skipped (nothing published)."""

    received_ns: int
    connection_id: int
    body: bytes
    error: str | None


@dataclasses.dataclass(frozen=True)
class WsConnectionRecord:
    """One WebSocket push connection; `close_code` is None when it ended without a close frame."""

    connection_id: int
    stream_id: str
    identity: str
    opened_ns: int
    pings_sent: int = 0
    pongs_received: int = 0
    closed_ns: int | None = None
    close_code: int | None = None
    close_reason: str | None = None

    @property
    def is_open(self) -> bool:
        return self.closed_ns is None


@dataclasses.dataclass(frozen=True)
class SchemaMismatch:
    """A channel's field set changed between two pushes: the browser wipes its buffer."""

    channel: str
    previous: Schema
    current: Schema
    at_ns: int


class _BrowserBuffer:
    """The browser's per-channel buffer (StreamingDataFrame): rows of every push, then trimmed.

    Grafana (StreamingDataFrame.ts circPush): after appending, keep the last `maxLength` rows, then,
    if the time span (ms) of what is left exceeds `maxDelta`, cut at the row closest to
    `newest - maxDelta` (closestIdx, ties to the older row). maxLength is the panel's Max data points,
    maxDelta the dashboard's time span when its range ends at now. A new schema wipes the rows.
    """

    def __init__(self, max_rows: int, max_delta_ms: float = math.inf) -> None:
        self.rows: list[BrowserRow] = []
        self.max_rows = max_rows
        self.max_delta_ms = max_delta_ms
        self.schema: Schema | None = None

    def receive(self, frame: LiveFrame) -> None:
        if frame.schema != self.schema:
            self.rows.clear()
            self.schema = frame.schema
        rows = self.rows + frame.rows()
        cut = max(0, len(rows) - self.max_rows)
        if self.max_delta_ms != math.inf and rows:
            times = [r.time_ms for r in rows]
            if times[-1] - times[cut] > self.max_delta_ms:
                cut = _closest_index(times[-1] - self.max_delta_ms, times, cut)
        self.rows = rows[cut:]


def _closest_index(target: float, times: Sequence[int], lo: int) -> int:
    """Grafana's closestIdx: binary search from `lo`, the lower index when equally close."""
    hi = len(times) - 1
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if times[mid] < target:
            lo = mid
        else:
            hi = mid
    return lo if target - times[lo] <= times[hi] - target else hi


# ---------------------------------------------------------------------------------------------------
# Service accounts and dashboards (the HTTP API the bridge calls with an admin login or its token)
# ---------------------------------------------------------------------------------------------------

#: Grafana: errutil public errors of pkg/services/serviceaccounts/models.go, all 400 (BadRequest or
#: ValidationFailed), body {"message", "messageId", "statusCode"}.
SA_ACCOUNT_EXISTS = ("serviceaccounts.ErrAlreadyExists", "service account already exists")
SA_TOKEN_EXISTS = (
    "serviceaccounts.ErrTokenAlreadyExists",
    "service account token with given name already exists in the organization",
)
SA_INVALID_TTL = ("serviceaccounts.ErrInvalidInput", "invalid SecondsToLive value")
SA_NOT_FOUND = ("serviceaccounts.ErrNotFound", "service account not found")
#: centrifugal/centrifuge Config.ClientChannelLimit: "Zero value means 128"; Grafana does not set it.
CLIENT_CHANNEL_LIMIT = 128


def _errutil(status: int, ident: tuple[str, str]) -> _Reply:
    message_id, message = ident
    return _json_reply(status, {"message": message, "messageId": message_id, "statusCode": status}, message_id)


@dataclasses.dataclass
class _SaToken:
    id: int
    name: str
    key: str
    created_s: float
    expires_s: float | None  # Grafana: secondsToLive 0 means no expiry

    def expired(self, now: float) -> bool:
        return self.expires_s is not None and self.expires_s <= now

    def dto(self, now: float) -> dict[str, object]:
        # Grafana (serviceaccounts/api/token.go TokenDTO).
        return {
            "id": self.id,
            "name": self.name,
            "created": _iso(self.created_s),
            "expiration": None if self.expires_s is None else _iso(self.expires_s),
            "secondsUntilExpiration": 0 if self.expires_s is None else max(0.0, self.expires_s - now),
            "hasExpired": self.expired(now),
        }


@dataclasses.dataclass
class _ServiceAccount:
    id: int
    name: str
    role: Role
    disabled: bool
    tokens: dict[int, _SaToken] = dataclasses.field(default_factory=dict)

    def dto(self) -> dict[str, object]:
        return {
            "id": self.id,
            "name": self.name,
            "login": f"sa-{self.name}",
            "orgId": 1,
            "isDisabled": self.disabled,
            "role": self.role,
            "tokens": len(self.tokens),
            "avatarUrl": "",
        }


@dataclasses.dataclass
class _StoredDashboard:
    id: int
    board: dict[str, object]
    version: int
    provisioned: bool
    allow_ui_updates: bool
    #: Grafana (pkg/api/dashboard.go postDashboard -> dashboard_service.go GetDashboardModel): the
    #: folder comes from the save command's folderUid, "" being the root folder.
    folder_uid: str = ""


def _iso(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


@dataclasses.dataclass(frozen=True)
class PanelView:
    """One panel instance as a browser shows it.

    `channels` are the Live channels it subscribes to; `refused` those Centrifuge refused
    (ErrorLimitExceeded past the client's 128th channel) or that are not valid channel addresses
    (an empty path segment, as a repeat over a variable without values produces): such a panel
    stays empty.
    """

    title: str
    datasource_uid: str
    channels: tuple[str, ...]
    refused: tuple[str, ...]
    max_data_points: int | None

    @property
    def live(self) -> bool:
        return self.datasource_uid == "grafana"

    @property
    def shows_data(self) -> bool:
        return not self.refused


@dataclasses.dataclass(frozen=True)
class DashboardView:
    """What a browser opening a dashboard renders: variables as resolved, then every panel instance."""

    variables: Mapping[str, tuple[str, ...]]
    panels: tuple[PanelView, ...]

    def live_panels(self) -> list[PanelView]:
        return [p for p in self.panels if p.live]

    def subscriptions(self) -> list[str]:
        seen: dict[str, None] = {}
        for panel in self.panels:
            for channel in panel.channels:
                seen.setdefault(channel)
        return list(seen)


QueryVariableSource = Callable[[Mapping[str, object]], "Sequence[str] | None"]


def _custom_values(query: str) -> list[str]:
    """Grafana custom variable: comma-separated values (`text : value` pairs keep the value)."""
    values = []
    for part in re.split(r"(?<!\\),", query):
        part = part.strip()
        if not part:
            continue
        values.append(part.split(" : ", 1)[1] if " : " in part else part)
    return values


def _interpolate(text: str, values: Mapping[str, str]) -> str:
    return re.sub(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)", lambda m: values.get(m[1] or m[2], m[0]), text)


def render_dashboard(
    board: Mapping[str, object],
    *,
    query_variable: QueryVariableSource | None = None,
    channel_limit: int = CLIENT_CHANNEL_LIMIT,
) -> DashboardView:
    """Resolve a dashboard's variables and lay out its panels the way Grafana's frontend does.

    Grafana (dashboard scenes): variables resolve before panels; a custom or textbox variable needs
    no datasource; a query variable asks its datasource (`query_variable` answers, None meaning the
    datasource failed). A row repeated over a variable without values renders one placeholder
    instance with the value "" (public/app/features/dashboard-scene/scene/layout-default/
    RowRepeaterBehavior.ts, emptyVariablePlaceholderOption), so its Live panel asks for an invalid
    channel and stays empty. A multi-value variable's current "$__all" selects every option. Live
    panels subscribe in panel order; Centrifuge refuses every channel past `channel_limit` distinct
    ones. The dashboard page itself holds one of them before any panel:
    public/app/features/live/dashboard/dashboardWatcher.ts subscribes to
    grafana/dashboard/uid/<uid> to learn of saves, so panels get `channel_limit - 1`.
    """
    if board.get("uid"):
        channel_limit -= 1  # the dashboardWatcher's grafana/dashboard/uid/<uid>
    resolved: dict[str, tuple[str, ...]] = {}
    templating = board.get("templating", {})
    for variable in templating.get("list", []):  # type: ignore[union-attr]
        kind, name = variable.get("type"), variable["name"]
        if kind == "custom":
            options = _custom_values(str(variable.get("query", "")))
        elif kind in ("textbox", "constant"):
            options = [str(variable.get("query", ""))]
        elif kind == "query":
            answer = query_variable(variable) if query_variable is not None else None
            options = list(answer or [])
        else:
            options = []
        current = (variable.get("current") or {}).get("value", [])
        current_list = [current] if isinstance(current, str) else list(current)
        if "$__all" in current_list or (not current_list and kind == "query"):
            chosen = options if variable.get("includeAll") or kind == "query" else options[:1]
        else:
            chosen = [v for v in current_list if v in options] if kind == "custom" else current_list
            if kind == "query":
                chosen = [v for v in chosen if v in options]
        resolved[name] = tuple(chosen)

    instances: list[tuple[Mapping[str, object], dict[str, str]]] = []
    row_repeat: str | None = None
    for panel in board.get("panels", []):  # type: ignore[union-attr]
        if panel.get("type") == "row":
            row_repeat = panel.get("repeat")
            continue
        repeats = [r for r in (row_repeat, panel.get("repeat")) if r]
        scopes: list[dict[str, str]] = [{k: v[0] for k, v in resolved.items() if len(v) == 1}]
        for var in repeats:
            values = resolved.get(var, ()) or ("",)  # the placeholder instance of an empty variable
            scopes = [{**scope, var: value} for scope in scopes for value in values]
        instances.extend((panel, scope) for scope in scopes)

    subscribed: dict[str, bool] = {}
    views = []
    for panel, scope in instances:
        uid = str((panel.get("datasource") or {}).get("uid", ""))
        channels: list[str] = []
        if uid == "grafana":
            for target in panel.get("targets", []):  # type: ignore[union-attr]
                channel = _interpolate(str(target.get("channel", "")), scope)
                channels.append(channel)
                valid = re.fullmatch(r"stream/[A-Za-z0-9_-]+/[A-Za-z0-9_-]+", channel) is not None
                if channel not in subscribed:
                    subscribed[channel] = valid and sum(subscribed.values()) < channel_limit
        views.append(
            PanelView(
                _interpolate(str(panel.get("title", "")), scope),
                uid,
                tuple(channels),
                tuple(c for c in channels if not subscribed[c]),
                panel.get("maxDataPoints"),  # type: ignore[arg-type]
            )
        )
    return DashboardView(resolved, tuple(views))


# ---------------------------------------------------------------------------------------------------
# Minimal HTTP/1.1 plumbing
# ---------------------------------------------------------------------------------------------------


class _BadRequest(Exception):
    def __init__(self, status: int = 400) -> None:
        super().__init__(status)
        self.status = status


@dataclasses.dataclass(frozen=True)
class _HttpRequest:
    head: bytes
    method: str
    target: str
    version: str
    headers: tuple[tuple[str, str], ...]
    body: bytes
    received_ns: int

    @property
    def header_map(self) -> dict[str, str]:
        merged: dict[str, str] = {}
        for name, value in self.headers:
            key = name.lower()
            merged[key] = f"{merged[key]}, {value}" if key in merged else value
        return merged

    @property
    def keep_alive(self) -> bool:
        return self.version == "HTTP/1.1" and self.header_map.get("connection", "").lower() != "close"


@dataclasses.dataclass(frozen=True)
class _Reply:
    status: int
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()
    error: str | None = None
    identity: str | None = None


def _json_reply(status: int, payload: Mapping[str, object], error: str) -> _Reply:
    body = json.dumps(payload).encode()
    return _Reply(status, body, (("Content-Type", "application/json"),), error)


_UNAUTHORIZED = _json_reply(401, {"message": "Unauthorized"}, "no credentials")


def _api_key_error(kind: str, message: str) -> _Reply:
    # Grafana: errutil public error of the API key client.
    payload = {"message": message, "messageId": f"api-key.{kind}", "statusCode": 401}
    return _json_reply(401, payload, f"api key {kind}")


async def _read_request(reader: asyncio.StreamReader) -> _HttpRequest | None:
    """Next request on a connection, or None when the client closed it between requests."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if exc.partial.strip():
            raise _BadRequest() from exc
        return None
    except asyncio.LimitOverrunError as exc:
        raise _BadRequest(431) from exc
    request_line, *header_lines = head[:-4].decode("latin-1").split("\r\n")
    parts = request_line.split(" ")
    if len(parts) != 3 or parts[2] not in ("HTTP/1.0", "HTTP/1.1"):
        raise _BadRequest()
    headers = []
    for line in header_lines:
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise _BadRequest()
        headers.append((name, value.strip()))
    request = _HttpRequest(head, parts[0], parts[1], parts[2], tuple(headers), b"", 0)
    fields = request.header_map
    if "chunked" in fields.get("transfer-encoding", "").lower():
        body = await _read_chunked(reader)
    elif "content-length" in fields:
        try:
            length = int(fields["content-length"])
        except ValueError as exc:
            raise _BadRequest() from exc
        body = await reader.readexactly(length)
    else:
        body = b""
    return dataclasses.replace(request, body=body, received_ns=time.time_ns())


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    chunks = []
    while True:
        try:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
        except ValueError as exc:
            raise _BadRequest() from exc
        if size == 0:
            break
        chunks.append(await reader.readexactly(size))
        await reader.readexactly(2)
    while await reader.readuntil(b"\r\n") != b"\r\n":  # trailers
        pass
    return b"".join(chunks)


def _http_response(reply: _Reply, *, close: bool) -> bytes:
    lines = [
        f"HTTP/1.1 {reply.status} {HTTPStatus(reply.status).phrase}",
        f"Content-Length: {len(reply.body)}",
        *(f"{name}: {value}" for name, value in reply.headers),
    ]
    if close:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + reply.body


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with RST instead of FIN, so the client sees 'connection reset by peer'."""
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


def _flush(writer: asyncio.StreamWriter, protocol: ServerProtocol) -> bool:
    """Write what the WebSocket protocol produced; True once it asked to end the connection."""
    ended = False
    for chunk in protocol.data_to_send():
        if not chunk:
            ended = True
        elif not writer.is_closing():
            writer.write(chunk)
    return ended


def _ws_close_cause(protocol: ServerProtocol) -> tuple[int | None, str]:
    error = protocol.parser_exc
    if isinstance(error, PayloadTooBig):
        return 1009, "message too big"
    if error is None and protocol.close_rcvd is not None:
        return protocol.close_rcvd.code, "client closed"
    if error is None or isinstance(error, EOFError):
        return None, "connection lost"
    return (protocol.close_sent.code if protocol.close_sent else None), f"protocol error: {error}"


_PUSH_PATH = re.compile(r"/api/live/push/([^/]+)")


@dataclasses.dataclass(frozen=True)
class _Identity:
    name: str
    role: Role


# ---------------------------------------------------------------------------------------------------
# The stand-in
# ---------------------------------------------------------------------------------------------------


class GrafanaLiveStandIn:
    """Grafana Live push endpoints on 127.0.0.1, with test controls and a simulated browser.

    tokens: token -> role, or "expired" / "revoked". users: basic-auth name -> (password, role),
    honoured while `basic_auth_enabled`. require_live_push_permission: False (the default) is what
    Grafana's source shows: the HTTP push route is guarded by reqSignedIn only (pkg/api/api.go), so
    any signed-in identity, a Viewer too, may push; True plays a deployment that refuses Viewers 403
    (Stand-in: no such check exists in Grafana's code; kept to test the bridge's 403 handling).
    ws_ping_interval / ws_pong_timeout: Grafana pings every 25 s and drops a connection whose last
    pong (or opening) is older than interval * 10 / 9 (~28 s); shorten both in tests.
    browser_max_rows: the browser buffer length per channel (panel Max data points).
    browser_max_delta_ms: the browser buffer's time span (the dashboard's range ending at now).
    sa_search_rendezvous: hold service-account searches until this many have arrived, so that
    bridges starting together all miss the account and race to create it (0: no hold).
    anonymous_enabled: [auth.anonymous] enabled (org role Viewer). Grafana
    (pkg/services/authn/authnimpl/service.go): a request whose credential fails, or that has none,
    falls through to the anonymous client and becomes an anonymous Viewer; reqSignedIn
    (pkg/middleware/auth.go) lets it pass while anonymous access is on, ReqOrgAdmin refuses it 403.
    editors_may_create_in_root: False plays an organisation where Editors lack dashboards:create
    on the root folder: a save without folderUid is then 403.
    home_dashboard_path: [dashboards] default_home_dashboard_path; GET /api/dashboards/home reads
    it from disk on every call (pkg/api/dashboard.go GetHomeDashboard), never from the database.
    history_limit: how many requests, messages, frames per channel and mismatches are kept.
    """

    def __init__(
        self,
        *,
        tokens: Mapping[str, Credential] | None = None,
        users: Mapping[str, tuple[str, Role]] | None = None,
        basic_auth_enabled: bool = True,
        require_live_push_permission: bool = False,
        ws_ping_interval: float = 25.0,
        ws_pong_timeout: float | None = None,
        ws_max_message_size: int = 1 << 20,
        browser_max_rows: int = 1000,
        browser_max_delta_ms: float = math.inf,
        sa_search_rendezvous: int = 0,
        anonymous_enabled: bool = False,
        editors_may_create_in_root: bool = True,
        home_dashboard_path: str | None = None,
        history_limit: int = 10_000,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self._tokens = dict(tokens or {})
        self._users = dict(users or {})
        self._basic_auth_enabled = basic_auth_enabled
        self._require_push_permission = require_live_push_permission
        self._ping_interval = ws_ping_interval
        self._pong_timeout = ws_pong_timeout if ws_pong_timeout is not None else ws_ping_interval * 10 / 9
        self._max_message_size = ws_max_message_size
        self._browser_max_rows = browser_max_rows
        self._browser_max_delta_ms = browser_max_delta_ms
        self._sa_rendezvous_size = sa_search_rendezvous
        self._sa_rendezvous_arrived = 0
        self._sa_rendezvous_open: asyncio.Event | None = None
        self._anonymous = anonymous_enabled
        self._editors_in_root = editors_may_create_in_root
        self._home_path = home_dashboard_path
        #: uid -> (file JSON, provider folder uid) of every dashboard the file provisioner loaded.
        self._provisioned_files: dict[str, tuple[dict[str, object], str]] = {}
        #: uid -> messages published on grafana/dashboard/uid/<uid> (one per save).
        self._dashboard_events: collections.Counter[str] = collections.Counter()
        # Service accounts and dashboards (guarded by _cond like the rest).
        self._accounts: dict[int, _ServiceAccount] = {}
        self._account_ids = itertools.count(1)
        self._sa_token_ids = itertools.count(1)
        self._dashboards: dict[str, _StoredDashboard] = {}
        self._dashboard_ids = itertools.count(1)
        self._host = host
        self._port = port

        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._connections: dict[asyncio.Task[None], asyncio.StreamWriter] = {}
        self._mode_changed: asyncio.Event | None = None
        self._drop_reason = "server down"
        self._connection_ids = itertools.count(1)

        # Everything below is shared with test threads and guarded by _cond.
        self._cond = threading.Condition()
        self._changes = 0
        self._mode: Mode = "ok"
        self._error_status = 503
        self._retry_after: int | None = None
        self._hung = 0
        self._requests: collections.deque[RequestRecord] = collections.deque(maxlen=history_limit)
        self._status_counts: collections.Counter[int | None] = collections.Counter()
        self._ws_messages: collections.deque[WsMessageRecord] = collections.deque(maxlen=history_limit)
        self._ws_connections: dict[int, WsConnectionRecord] = {}
        self._frame_counts: collections.Counter[str] = collections.Counter()
        self._frames: collections.defaultdict[str, collections.deque[LiveFrame]] = collections.defaultdict(
            lambda: collections.deque(maxlen=history_limit)
        )
        self._last_frames: dict[str, LiveFrame] = {}
        self._mismatches: collections.deque[SchemaMismatch] = collections.deque(maxlen=history_limit)
        self._browser: dict[str, _BrowserBuffer] = {}
        self._invalid_channels: dict[str, str] = {}

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> GrafanaLiveStandIn:
        """Listen on the configured port (0: a free one) from a background thread."""
        if self._loop is not None:
            raise RuntimeError("already started")
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="grafana-standin", daemon=True)
        self._thread.start()
        try:
            self._run(self._boot())
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Drop every connection, hung ones included, and end the thread. Safe to call twice."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        try:
            if loop.is_running():
                self._run(self._shutdown())
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(_CONTROL_TIMEOUT_S)
            if not thread.is_alive():
                loop.close()
            self._loop = self._thread = None

    def __enter__(self) -> GrafanaLiveStandIn:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- addresses -------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        """Base URL, as GRAFANA_URL would be configured. Unchanged across down/up."""
        return f"http://{self._host}:{self._port}"

    def push_url(self, stream_id: str = "eeg") -> str:
        return f"{self.url}/api/live/push/{stream_id}"

    def ws_push_url(self, stream_id: str = "eeg") -> str:
        return f"ws://{self._host}:{self._port}/api/live/push/{stream_id}"

    # -- fault controls ----------------------------------------------------------------------------

    def set_mode(self, mode: Mode, *, status: int = 503, retry_after: int | None = None) -> None:
        """Switch behaviour for requests from now on; returns once in effect.

        ok: normal. down: listening socket closed (connection refused) and every open connection
        dropped; leaving it listens again on the same port. error_5xx: every request gets `status`
        (with Retry-After if given). hang: requests are read but not answered until the mode
        changes, then handled under the new mode. reset: each request is read, then the connection
        is reset (RST). Open WebSocket connections survive every mode but down.
        """
        if mode not in get_args(Mode):
            raise ValueError(f"unknown mode {mode!r}")
        self._run(self._apply_mode(mode, status, retry_after))

    @property
    def mode(self) -> Mode:
        with self._cond:
            return self._mode

    @property
    def hung_requests(self) -> int:
        """Requests received and held unanswered by mode hang."""
        with self._cond:
            return self._hung

    def wait_for(self, predicate: Callable[[], T], timeout: float = 10.0, what: str = "") -> T:
        """Return predicate's first truthy result, re-checking on every stand-in event (and every
        50 ms for outside conditions); TimeoutError after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            with self._cond:
                seen = self._changes
            result = predicate()
            if result:
                return result
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"timed out after {timeout} s waiting for {what or predicate}")
            with self._cond:
                if self._changes == seen:
                    self._cond.wait(min(remaining, 0.05))

    # -- observations (snapshots, safe from any thread) -------------------------------------------

    def requests(self) -> list[RequestRecord]:
        with self._cond:
            return list(self._requests)

    def status_counts(self) -> collections.Counter[int | None]:
        """Answered requests by status; None counts connections reset instead of answered."""
        with self._cond:
            return collections.Counter(self._status_counts)

    def last_request_headers(self) -> Mapping[str, str] | None:
        """Headers (lower-case names) of the latest request, e.g. to check the Authorization sent."""
        with self._cond:
            return self._requests[-1].headers if self._requests else None

    def ws_connections(self) -> list[WsConnectionRecord]:
        with self._cond:
            return list(self._ws_connections.values())

    def ws_messages(self) -> list[WsMessageRecord]:
        with self._cond:
            return list(self._ws_messages)

    def frames_published(self) -> collections.Counter[str]:
        """Frames published so far per channel (not bounded by history_limit)."""
        with self._cond:
            return collections.Counter(self._frame_counts)

    def frames(self, channel: str) -> list[LiveFrame]:
        """Every frame published on `channel` (the latest history_limit), oldest first."""
        with self._cond:
            return list(self._frames.get(channel, ()))

    def last_frame(self, channel: str) -> LiveFrame | None:
        """The one frame Grafana keeps per channel: all a dashboard opened now would start from."""
        with self._cond:
            return self._last_frames.get(channel)

    def mismatches(self, channel: str | None = None) -> list[SchemaMismatch]:
        with self._cond:
            return [m for m in self._mismatches if channel is None or m.channel == channel]

    def browser_rows(self, channel: str) -> list[BrowserRow]:
        """What a panel subscribed to `channel` since the start holds now."""
        with self._cond:
            buffer = self._browser.get(channel)
            return list(buffer.rows) if buffer else []

    def invalid_channels(self) -> dict[str, str]:
        """Channels published to that no browser can subscribe to, with the reason."""
        with self._cond:
            return dict(self._invalid_channels)

    # -- event-loop side ---------------------------------------------------------------------------

    def _run(self, coro: object) -> None:
        assert self._loop is not None
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)  # type: ignore[arg-type]
        future.result(_CONTROL_TIMEOUT_S)

    def _changed(self) -> None:
        """Call with _cond held after any change tests may wait on."""
        self._changes += 1
        self._cond.notify_all()

    async def _boot(self) -> None:
        self._mode_changed = asyncio.Event()
        await self._listen()

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(
            self._serve_connection, self._host, self._port, reuse_address=True
        )
        self._port = self._server.sockets[0].getsockname()[1]

    async def _drop_connections(self, reason: str) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        self._drop_reason = reason
        tasks = list(self._connections)
        for task, writer in list(self._connections.items()):
            writer.transport.abort()
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _apply_mode(self, mode: Mode, status: int, retry_after: int | None) -> None:
        if mode == "down":
            await self._drop_connections("server down")
        elif self._server is None:
            await self._listen()
        with self._cond:
            self._mode, self._error_status, self._retry_after = mode, status, retry_after
            self._changed()
        assert self._mode_changed is not None
        self._mode_changed.set()
        self._mode_changed = asyncio.Event()

    async def _shutdown(self) -> None:
        await self._drop_connections("server stopped")
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in others:
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)

    async def _serve_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections[task] = writer
        try:
            while await self._serve_request(reader, writer):
                await writer.drain()
        except _BadRequest as exc:
            writer.write(_http_response(_Reply(exc.status), close=True))
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            pass  # dropped on purpose (down/stop); ending normally keeps asyncio from logging it
        except Exception:
            log.exception("stand-in connection failed")
        finally:
            del self._connections[task]
            writer.close()

    async def _serve_request(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Answer one request; True to keep the connection for the next."""
        request = await _read_request(reader)
        if request is None:
            return False
        await self._hold_while_hanging()
        if self._mode == "reset":
            self._record(request, None, "reset by mode reset")
            _reset(writer)
            return False
        if self._mode == "error_5xx":
            # Stand-in: a proxy-style plain-text error; Grafana's own 5xx bodies are not specified.
            headers = () if self._retry_after is None else (("Retry-After", str(self._retry_after)),)
            reply = _Reply(self._error_status, HTTPStatus(self._error_status).phrase.encode(), headers)
            return self._respond(writer, request, dataclasses.replace(reply, error="mode error_5xx"))
        path = unquote(urlsplit(request.target).path)
        if path.startswith(("/api/serviceaccounts", "/api/dashboards")):
            if path == "/api/serviceaccounts/search":
                await self._sa_rendezvous()
            return self._respond(writer, request, self._admin_api(request, path))
        route = _PUSH_PATH.fullmatch(path)
        if route is None or request.method not in ("POST", "GET"):  # Grafana: no such route
            return self._respond(writer, request, _json_reply(404, {"message": "Not found"}, "no route"))
        if request.method == "POST":
            return self._respond(writer, request, self._http_push(request, route[1]))
        await self._websocket(request, route[1], reader, writer)
        return False

    async def _hold_while_hanging(self) -> None:
        if self._mode != "hang":
            return
        with self._cond:
            self._hung += 1
            self._changed()
        try:
            while self._mode == "hang":
                assert self._mode_changed is not None
                await self._mode_changed.wait()
        finally:
            with self._cond:
                self._hung -= 1
                self._changed()

    def _respond(
        self, writer: asyncio.StreamWriter, request: _HttpRequest, reply: _Reply, *, close: bool = False
    ) -> bool:
        """Record, then answer (so a client holding the answer finds the record); True to keep alive."""
        self._record(request, reply.status, reply.error, reply.identity)
        keep_alive = request.keep_alive and not close
        writer.write(_http_response(reply, close=not keep_alive))
        return keep_alive

    def _record(
        self, request: _HttpRequest, status: int | None, error: str | None, identity: str | None = None
    ) -> None:
        if error is not None:
            log.info("push refused (%s): %s %s", status, request.method, error)
        record = RequestRecord(
            request.received_ns,
            request.method,
            request.target,
            request.header_map,
            request.body,
            status,
            error,
            identity,
        )
        with self._cond:
            self._requests.append(record)
            self._status_counts[status] += 1
            self._changed()

    # -- service accounts and dashboards ---------------------------------------------------------

    def provision_dashboard(
        self, board: Mapping[str, object], *, allow_ui_updates: bool, folder_uid: str = ""
    ) -> None:
        """Load a dashboard as the file provisioner does (provisioning/dashboards/*.yaml).

        `folder_uid` is the provider's `folder` (its uid); run_provisioner replays the file later.
        """
        with self._cond:
            uid = str(board["uid"])
            copy = json.loads(json.dumps(board))
            self._dashboards[uid] = _StoredDashboard(
                next(self._dashboard_ids), copy, 1, True, allow_ui_updates, folder_uid
            )
            self._provisioned_files[uid] = (json.loads(json.dumps(board)), folder_uid)
            self._changed()

    def _store(self, stored: _StoredDashboard, board: dict[str, object], folder_uid: str) -> None:
        """One dashboard save: a new version, and one message on grafana/dashboard/uid/<uid>.

        Grafana (pkg/api/dashboard.go postDashboard): after every successful save the live service
        publishes on grafana/dashboard/uid/<uid>; the frontend's dashboardWatcher.ts
        (public/app/features/live/dashboard/) then reloads every viewer's page (or shows the
        "dashboard changed" modal to someone editing it). Guarded by _cond.
        """
        stored.board, stored.version, stored.folder_uid = board, stored.version + 1, folder_uid
        self._dashboard_events[str(board.get("uid", ""))] += 1

    def dashboard_reloads(self, uid: str) -> int:
        """Messages published on grafana/dashboard/uid/<uid>: page reloads every open viewer got."""
        with self._cond:
            return self._dashboard_events[uid]

    def dashboard_folder(self, uid: str) -> str | None:
        """The folder uid a dashboard is in ("" the root folder), None when there is none."""
        with self._cond:
            stored = self._dashboards.get(uid)
            return None if stored is None else stored.folder_uid

    def run_provisioner(self) -> list[str]:
        """One pass of the file provisioner (every updateIntervalSeconds); the uids it re-saved.

        Grafana (pkg/services/provisioning/dashboards/file_reader.go saveDashboard): a file whose
        checksum is unchanged is skipped, except by the "fix empty folder_uid from already
        provisioned dashboards" step: when the provider has a folder and the dashboard of the
        file's uid sits in the root folder, the file's version is saved again into the provider's
        folder, replacing whatever was saved through the API.
        """
        resaved = []
        with self._cond:
            for uid, (board, folder_uid) in self._provisioned_files.items():
                stored = self._dashboards.get(uid)
                if stored is None or not folder_uid or stored.folder_uid:
                    continue
                stored.provisioned = True
                self._store(stored, json.loads(json.dumps(board)), folder_uid)
                resaved.append(uid)
            self._changed()
        return resaved

    def dashboard(self, uid: str) -> dict[str, object] | None:
        with self._cond:
            stored = self._dashboards.get(uid)
            return json.loads(json.dumps(stored.board)) if stored else None

    def open_dashboard(
        self, uid: str, *, query_variable: QueryVariableSource | None = None
    ) -> DashboardView:
        """A browser opening dashboard `uid` now (see render_dashboard)."""
        board = self.dashboard(uid)
        if board is None:
            raise KeyError(uid)
        return render_dashboard(board, query_variable=query_variable)

    def service_accounts(self) -> list[dict[str, object]]:
        """Every account with its tokens (names, expiry), for assertions."""
        now = time.time()
        with self._cond:
            return [
                {**a.dto(), "token_list": [t.dto(now) for t in a.tokens.values()]} for a in self._accounts.values()
            ]

    def expire_service_account_tokens(self) -> None:
        """Let every minted token run out now (as secondsToLive would later)."""
        with self._cond:
            for account in self._accounts.values():
                for token in account.tokens.values():
                    token.expires_s = time.time() - 1
            self._changed()

    def _minted(self, key: str) -> tuple[_ServiceAccount, _SaToken] | None:
        for account in self._accounts.values():
            for token in account.tokens.values():
                if secrets.compare_digest(token.key, key):
                    return account, token
        return None

    async def _sa_rendezvous(self) -> None:
        if self._sa_rendezvous_size <= 0:
            return
        if self._sa_rendezvous_open is None:
            self._sa_rendezvous_open = asyncio.Event()
        self._sa_rendezvous_arrived += 1
        if self._sa_rendezvous_arrived >= self._sa_rendezvous_size:
            self._sa_rendezvous_open.set()
            self._sa_rendezvous_size = 0  # one race per stand-in
        await asyncio.wait_for(self._sa_rendezvous_open.wait(), _CONTROL_TIMEOUT_S)

    def _admin_api(self, request: _HttpRequest, path: str) -> _Reply:
        identity = self._authenticate(request.header_map)
        if isinstance(identity, _Reply):
            return identity
        try:
            body = json.loads(request.body) if request.body else {}
        except ValueError:
            return _json_reply(400, {"message": "bad request data"}, "bad json")
        with self._cond:
            reply = self._admin_route(request.method, path, request.target, body, identity)
            self._changed()
        return reply

    def _admin_route(
        self, method: str, path: str, target: str, body: dict[str, object], identity: _Identity
    ) -> _Reply:
        now = time.time()
        if path.startswith("/api/dashboards"):
            return self._dashboard_route(method, path, body, identity)
        if identity.role != "Admin":
            # Grafana: service accounts need serviceaccounts:* actions, held by org Admins.
            return _json_reply(403, {"message": "You'll need additional permissions to perform this action."}, "not Admin")
        if path == "/api/serviceaccounts/search" and method == "GET":
            query = parse_qs(urlsplit(target).query).get("query", [""])[0].lower()
            found = [a.dto() for a in self._accounts.values() if query in a.name.lower()]
            return _json_reply(200, {"totalCount": len(found), "serviceAccounts": found, "page": 1, "perPage": 1000}, "")
        if path == "/api/serviceaccounts" and method == "POST":
            name = str(body.get("name", ""))
            if not name:
                return _json_reply(400, {"message": "Bad request data"}, "no name")
            if any(a.name == name for a in self._accounts.values()):
                return _errutil(400, SA_ACCOUNT_EXISTS)
            role = body.get("role") if body.get("role") in _ROLE_RANK else "Viewer"
            account = _ServiceAccount(next(self._account_ids), name, role, bool(body.get("isDisabled")))  # type: ignore[arg-type]
            self._accounts[account.id] = account
            return _json_reply(201, account.dto(), "")
        match = re.fullmatch(r"/api/serviceaccounts/(\d+)(/tokens(?:/(\d+))?)?", path)
        account = self._accounts.get(int(match[1])) if match else None
        if match is None:
            return _json_reply(404, {"message": "Not found"}, "no route")
        if account is None:
            return _errutil(404, SA_NOT_FOUND)
        if match[2] is None and method == "PATCH":
            if body.get("role") in _ROLE_RANK:
                account.role = body["role"]  # type: ignore[assignment]
            return _json_reply(200, {"id": account.id, "name": account.name, "serviceaccount": account.dto(),
                                     "message": "Service account updated"}, "")
        if match[2] is not None and match[3] is None and method == "GET":
            return _json_reply(200, [t.dto(now) for t in account.tokens.values()], "")  # type: ignore[arg-type]
        if match[2] is not None and match[3] is None and method == "POST":
            name = str(body.get("name", ""))
            ttl = body.get("secondsToLive", 0)
            if not isinstance(ttl, int) or ttl < 0:
                return _errutil(400, SA_INVALID_TTL)
            # Grafana: token names are unique in the organisation, not per account.
            if any(t.name == name for a in self._accounts.values() for t in a.tokens.values()):
                return _errutil(400, SA_TOKEN_EXISTS)
            token = _SaToken(next(self._sa_token_ids), name, f"glsa_{secrets.token_hex(16)}_{secrets.token_hex(4)}",
                             now, now + ttl if ttl else None)
            account.tokens[token.id] = token
            return _json_reply(200, {"id": token.id, "name": token.name, "key": token.key}, "")
        if match[3] is not None and method == "DELETE":
            if account.tokens.pop(int(match[3]), None) is None:
                return _json_reply(404, {"message": "Failed to delete service account token"}, "no token")
            return _json_reply(200, {"message": "Service account token deleted"}, "")
        return _json_reply(404, {"message": "Not found"}, "no route")

    def _dashboard_route(self, method: str, path: str, body: dict[str, object], identity: _Identity) -> _Reply:
        if path == "/api/dashboards/home" and method == "GET":
            # Grafana (pkg/api/dashboard.go GetHomeDashboard): without a home dashboard in the
            # preferences, default_home_dashboard_path is read from disk on each call and
            # returned as is; what the API saved under the same uid is never consulted.
            if self._home_path is None:
                return _json_reply(404, {"message": "Dashboard not found"}, "no home")
            with open(self._home_path, encoding="utf-8") as file:
                board = json.load(file)
            return _json_reply(200, {"dashboard": board, "meta": {"isHome": True, "canSave": False}}, "")
        match = re.fullmatch(r"/api/dashboards/uid/([^/]+)", path)
        if match and method == "GET":
            stored = self._dashboards.get(match[1])
            if stored is None:
                return _json_reply(404, {"message": "Dashboard not found"}, "no dashboard")
            board = {**stored.board, "id": stored.id, "version": stored.version}
            meta = {"provisioned": stored.provisioned, "canSave": _ROLE_RANK[identity.role] >= 1,
                    "folderUid": stored.folder_uid}
            return _json_reply(200, {"dashboard": board, "meta": meta}, "")
        if path == "/api/dashboards/db" and method == "POST":
            if _ROLE_RANK[identity.role] < _ROLE_RANK["Editor"]:
                return _json_reply(403, {"message": "Access denied to save dashboard"}, "viewer save")
            board = body.get("dashboard")
            if not isinstance(board, dict) or not board.get("uid"):
                return _json_reply(400, {"message": "Dashboard title cannot be empty"}, "no dashboard")
            stored = self._dashboards.get(str(board["uid"]))
            if stored is not None and stored.provisioned and not stored.allow_ui_updates:
                # Grafana (dashboards/errors.go ErrDashboardCannotSaveProvisionedDashboard).
                return _json_reply(400, {"message": "Cannot save provisioned dashboard"}, "provisioned")
            if stored is not None and not body.get("overwrite") and board.get("version") != stored.version:
                return _json_reply(412, {"status": "version-mismatch",
                                         "message": "The dashboard has been changed by someone else"}, "version")
            folder_uid = str(body.get("folderUid") or "")
            if not folder_uid and identity.role != "Admin" and not self._editors_in_root:
                # Grafana (dashboard_service.go, save permission check): creating in the root
                # folder needs dashboards:create on folders:uid:general.
                return _json_reply(403, {"message": "Access denied to save dashboard"}, "no root create")
            if stored is None:
                stored = _StoredDashboard(next(self._dashboard_ids), {}, 0, False, True)
                self._dashboards[str(board["uid"])] = stored
            clean = {k: v for k, v in board.items() if k not in ("id", "version")}
            # Grafana (dashboard_service.go GetDashboardModel): FolderUID is the command's, so a
            # save without folderUid moves a dashboard to the root folder.
            self._store(stored, clean, folder_uid)
            return _json_reply(200, {"id": stored.id, "uid": board["uid"], "status": "success",
                                     "version": stored.version, "url": f"/d/{board['uid']}"}, "")
        return _json_reply(404, {"message": "Not found"}, "no route")

    # -- authentication ----------------------------------------------------------------------------

    def _authenticate(self, headers: Mapping[str, str]) -> _Identity | _Reply:
        identity = self._authenticate_credential(headers)
        if isinstance(identity, _Reply) and self._anonymous:
            # Grafana (pkg/services/authn/authnimpl/service.go): when every client that tried the
            # request failed, the anonymous client (enabled by [auth.anonymous]) still gets it; the
            # failed token or password is logged, not answered. The caller is an anonymous Viewer.
            return _Identity("anonymous", "Viewer")
        return identity

    def _authenticate_credential(self, headers: Mapping[str, str]) -> _Identity | _Reply:
        scheme, _, credentials = headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer":
            return self._token_identity(credentials.strip())
        if scheme.lower() != "basic":
            return _UNAUTHORIZED
        try:
            user, _, password = base64.b64decode(credentials.strip(), validate=True).decode().partition(":")
        except ValueError:
            return _UNAUTHORIZED
        if user == "api_key":  # Grafana: accepted whether or not basic auth is enabled
            return self._token_identity(password)
        if not self._basic_auth_enabled:
            return _UNAUTHORIZED
        known = self._users.get(user)
        if known is None or known[0] != password:
            payload = {
                "message": "Invalid username or password",
                "messageId": "password-auth.failed",
                "statusCode": 401,
            }
            return _json_reply(401, payload, "wrong user or password")
        return _Identity(f"user:{user}", known[1])

    def _token_identity(self, token: str) -> _Identity | _Reply:
        credential = self._tokens.get(token)
        if credential is None:
            with self._cond:
                minted = self._minted(token)
            if minted is not None:
                account, sa_token = minted
                # Grafana (apikey client): an expired key is refused; the role is the account's now.
                if sa_token.expired(time.time()):
                    return _api_key_error("expired", "Expired API key")
                return _Identity(f"sa:{account.name}", account.role)
            return _api_key_error("invalid", "Invalid API key")
        if credential == "expired":
            return _api_key_error("expired", "Expired API key")
        if credential == "revoked":
            return _api_key_error("revoked", "Revoked API key")
        return _Identity(f"token:{token[:12]}", credential)

    # -- HTTP push ---------------------------------------------------------------------------------

    def _http_push(self, request: _HttpRequest, stream_id: str) -> _Reply:
        identity = self._authenticate(request.header_map)
        if isinstance(identity, _Reply):
            return identity
        if self._require_push_permission and _ROLE_RANK[identity.role] < _ROLE_RANK["Editor"]:
            # Stand-in: a stricter deployment's refusal (Grafana's own route only needs a signed-in
            # identity); the body is Grafana's access-control wording.
            payload = {
                "title": "Access denied",
                "message": "You'll need additional permissions to perform this action. "
                "Permissions needed: live:push",
            }
            return _json_reply(403, payload, f"{identity.role} lacks live:push")
        frame_format = _frame_format(request.target)
        if frame_format not in _FRAME_FORMATS:
            return _Reply(400, error=f"unsupported frame format {frame_format!r}")
        try:
            points = parse_line_protocol(request.body)
        except LineProtocolError as exc:
            return _Reply(500, error=str(exc))
        self._publish(stream_id, points, frame_format)  # type: ignore[arg-type]
        return _Reply(200, identity=identity.name)

    def _publish(self, stream_id: str, points: list[Point], frame_format: FrameFormat) -> None:
        converted = points_to_frames(points, frame_format)
        now = time.time_ns()
        with self._cond:
            for measurement, fields in converted:
                frame = LiveFrame(live_channel(stream_id, measurement), fields, now)
                previous = self._last_frames.get(frame.channel)
                if previous is not None and previous.schema != frame.schema:
                    self._mismatches.append(SchemaMismatch(frame.channel, previous.schema, frame.schema, now))
                self._last_frames[frame.channel] = frame
                self._frame_counts[frame.channel] += 1
                self._frames[frame.channel].append(frame)
                # Stand-in: the reference only says to keep channels valid. Grafana publishes without
                # checking; it is the browser's subscription that an invalid channel fails.
                problem = _channel_problem(stream_id, measurement)
                if problem is not None:
                    self._invalid_channels[frame.channel] = problem
                    continue
                buffer = self._browser.setdefault(
                    frame.channel, _BrowserBuffer(self._browser_max_rows, self._browser_max_delta_ms)
                )
                buffer.receive(frame)
            self._changed()

    # -- WebSocket push ----------------------------------------------------------------------------

    async def _websocket(
        self,
        request: _HttpRequest,
        stream_id: str,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        headers = request.header_map
        identity = self._authenticate(headers)
        if isinstance(identity, _Reply):
            self._respond(writer, request, identity, close=True)
            return
        if identity.role != "Admin":
            # Grafana (pkg/services/live/live.go): the push WebSocket route is behind ReqOrgAdmin
            # (pkg/middleware/auth.go), which answers 403 to any non-Admin, an anonymous Viewer too.
            refusal = _json_reply(403, {"message": "Permission denied"}, f"{identity.role} is not Admin")
            self._respond(writer, request, refusal, close=True)
            return
        origin = urlsplit(headers.get("origin", "")).netloc
        if origin and origin.lower() != headers.get("host", "").lower():
            # Grafana: gorilla's same-host origin check.
            self._respond(writer, request, _Reply(403, b"Forbidden\n", error="foreign origin"), close=True)
            return
        protocol = ServerProtocol(max_size=self._max_message_size)
        protocol.receive_data(request.head)
        handshake = protocol.events_received()
        response = protocol.accept(handshake[0]) if handshake else None
        if response is None or response.status_code != 101:
            # Grafana: gorilla answers any failed upgrade with 400 (websockets would say 426 for some).
            refusal = _Reply(400, b"Bad Request\n", error="not a WebSocket handshake")
            self._respond(writer, request, refusal, close=True)
            return
        self._record(request, 101, None)
        conn_id = next(self._connection_ids)
        with self._cond:  # before the 101 goes out, so a client that is in finds its record
            record = WsConnectionRecord(conn_id, stream_id, identity.name, time.time_ns())
            self._ws_connections[conn_id] = record
            self._changed()
        protocol.send_response(response)
        _flush(writer, protocol)
        await self._ws_session(reader, writer, protocol, conn_id, stream_id, _frame_format(request.target))

    async def _ws_session(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        protocol: ServerProtocol,
        conn_id: int,
        stream_id: str,
        frame_format: str,
    ) -> None:
        loop = asyncio.get_running_loop()
        pinger = asyncio.create_task(self._ping(conn_id, writer, protocol))
        message = bytearray()
        code: int | None = None
        reason = "connection lost"
        try:
            # Grafana (gorilla): the read deadline starts at pongWait and only a pong extends it;
            # data messages do not keep a connection alive.
            async with asyncio.timeout_at(loop.time() + self._pong_timeout) as read_deadline:
                while True:
                    data = await reader.read(1 << 16)
                    if data:
                        protocol.receive_data(data)
                    else:
                        protocol.receive_eof()
                    for event in protocol.events_received():
                        if event.opcode is Opcode.PONG:
                            read_deadline.reschedule(loop.time() + self._pong_timeout)
                            self._bump(conn_id, pongs_received=1)
                        elif event.opcode in DATA_OPCODES:
                            message += event.data
                            if event.fin:
                                self._ws_message(conn_id, stream_id, frame_format, bytes(message))
                                message.clear()
                    if _flush(writer, protocol) or not data:
                        code, reason = _ws_close_cause(protocol)
                        break
        except TimeoutError:
            reason = "pong timeout"
        except asyncio.CancelledError:
            reason = self._drop_reason
            raise
        except ConnectionError:
            pass
        finally:
            pinger.cancel()
            writer.close()
            with self._cond:
                record = self._ws_connections[conn_id]
                self._ws_connections[conn_id] = dataclasses.replace(
                    record, closed_ns=time.time_ns(), close_code=code, close_reason=reason
                )
                self._changed()

    async def _ping(self, conn_id: int, writer: asyncio.StreamWriter, protocol: ServerProtocol) -> None:
        while True:
            await asyncio.sleep(self._ping_interval)
            if protocol.state is not State.OPEN:
                return
            protocol.send_ping(b"")
            _flush(writer, protocol)
            self._bump(conn_id, pings_sent=1)

    def _bump(self, conn_id: int, **increments: int) -> None:
        with self._cond:
            record = self._ws_connections[conn_id]
            changes = {name: getattr(record, name) + step for name, step in increments.items()}
            self._ws_connections[conn_id] = dataclasses.replace(record, **changes)
            self._changed()

    def _ws_message(self, conn_id: int, stream_id: str, frame_format: str, body: bytes) -> None:
        """Grafana: one body per message, no acknowledgement; a bad message is logged and skipped."""
        received = time.time_ns()
        points: list[Point] = []
        error = None
        if frame_format not in _FRAME_FORMATS:
            error = f"unsupported frame format {frame_format!r}"
        else:
            try:
                points = parse_line_protocol(body)
            except LineProtocolError as exc:
                error = str(exc)
        if error is not None:
            log.info("WebSocket push message skipped: %s", error)
        with self._cond:  # the message and its frames become visible together
            self._ws_messages.append(WsMessageRecord(received, conn_id, body, error))
            if error is None:
                self._publish(stream_id, points, frame_format)  # type: ignore[arg-type]
            self._changed()


def _frame_format(target: str) -> str:
    # Grafana (pushurl): first value, lower-cased, empty means labels_column; other parameters ignored.
    values = parse_qs(urlsplit(target).query, keep_blank_values=True).get("gf_live_frame_format", [""])
    return values[0].lower() or "labels_column"


# ---------------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------------


def _credential_spec(spec: str, default: Credential) -> tuple[str, Credential]:
    name, sep, credential = spec.rpartition("=")
    if sep and credential in get_args(Credential):
        return name, credential  # type: ignore[return-value]
    return spec, default


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m tests.grafana_standin",
        description="Grafana Live push stand-in (see the module docstring).",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=3000, help="0 picks a free port (printed)")
    parser.add_argument(
        "--token", action="append", default=[], metavar="TOKEN[=ROLE]",
        help="accepted token; ROLE is Viewer, Editor (default), Admin, expired or revoked",
    )
    parser.add_argument(
        "--user", action="append", default=[], metavar="NAME:PASSWORD[=ROLE]",
        help="basic-auth user; ROLE defaults to Admin",
    )
    parser.add_argument(
        "--refuse-viewer-push", action="store_true",
        help="refuse HTTP push by Viewers with 403 (not Grafana's own behaviour: its route needs a signed-in identity only)",
    )
    parser.add_argument("--ping-interval", type=float, default=25.0)
    parser.add_argument("--pong-timeout", type=float, default=None, help="default: ping interval * 10 / 9")
    args = parser.parse_args(argv)

    tokens = dict(_credential_spec(spec, "Editor") for spec in args.token)
    users: dict[str, tuple[str, Role]] = {}
    for spec in args.user:
        login, role = _credential_spec(spec, "Admin")
        name, _, password = login.partition(":")
        users[name] = (password, role)  # type: ignore[assignment]

    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    with GrafanaLiveStandIn(
        tokens=tokens,
        users=users,
        require_live_push_permission=args.refuse_viewer_push,
        ws_ping_interval=args.ping_interval,
        ws_pong_timeout=args.pong_timeout,
        host=args.host,
        port=args.port,
    ) as standin:
        print(f"Grafana Live stand-in listening on {standin.url}", flush=True)
        while not stop.wait(0.5):
            pass
        print(f"requests by status: {dict(standin.status_counts())}", file=sys.stderr)
        print(f"frames published: {dict(standin.frames_published())}", file=sys.stderr)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    main()
