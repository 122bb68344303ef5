"""Every InfluxQL and Flux query the repository ships, in one place.

The dashboards (``dashboards/generate.py``) and the set-up guide
(``docs/grafana_eeg_heatmap_setup.md``) only ever copy text from here, and tests run or
semantically check each entry, so a query that works in one place works in all of them.

The text is exactly what goes into Grafana: it still holds Grafana's template variables
(``$stream``, ``$channel`` in InfluxQL; ``${stream}``, ``${channel:regex}`` in Flux) and macros
(``$timeFilter``, ``$__interval``; ``v.defaultBucket``, ``v.timeRangeStart``, ``v.timeRangeStop``,
``v.windowPeriod``). :meth:`Query.render` substitutes literals for running a query outside
Grafana.

Names and layout follow ``docs/data-model.md``: measurement ``eeg_spectrum``, tags
``stream_name`` and ``channel``; wide schema = one float field per frequency bin, named by a
zero-padded number (``000.00``); long schema = tag ``frequency_bin`` and field ``power``. The
bridge's own points, written the same way under either schema: ``bridge_health`` (the loss
ledger, tag ``stream_name``, float fields) and ``eeg_markers`` (LSL markers, tag ``stream_name``
= the marker stream, string field ``marker``).
A bridge run with another ``INFLUXDB_MEASUREMENT`` (``INFLUXDB_HEALTH_MEASUREMENT``,
``INFLUXDB_MARKER_MEASUREMENT``) needs the constant below changed here and the dashboards
regenerated (dashboard JSON cannot read environment variables).

Template variables are matched with regular expressions, never with ``=``:

- ``$channel`` is a multi-value variable with *All*. Grafana interpolates it for InfluxQL as
  regex-escaped values joined by ``|`` in parentheses (``(Cz|Fz)``; a single value in a
  repeated panel comes out escaped, without parentheses), which is only meaningful inside
  ``=~ /^...$/``. The Flux queries ask for the same with ``${channel:regex}``.
- ``$stream`` is single-valued, but Grafana 11+ also regex-escapes a single-valued variable
  whenever it finds it between two ``/`` of the query's text, which any heatmap query here would
  trigger (``/^[0-9]/ ... '$stream' ... /^$channel$/``): in a ``'...'`` string a stream name with
  a dot would then turn into ``'a\\.b'``, which InfluxQL rejects, and a name with a quote ends the
  string early whatever Grafana does. So every query, the variable queries included, matches the
  stream with ``=~ /^$stream$/`` (InfluxQL) or ``=~ /^${stream:regex}$/`` (Flux): Grafana's
  ``escapeRegex`` turns any name LSL allows (quotes, backslashes, slashes, dots) into a regex that
  matches exactly that name, and neither language has a quoting rule a name could break there.

This module is imported by file path from tests and the generator, so it depends on the
standard library only, and it avoids ``from __future__ import annotations``: a dataclass with
string annotations needs its module in ``sys.modules``, which a plain load-by-path skips.
"""

import re
from dataclasses import dataclass
from typing import Literal, Mapping, Sequence

MEASUREMENT = "eeg_spectrum"
STREAM_TAG = "stream_name"
CHANNEL_TAG = "channel"
BIN_TAG = "frequency_bin"
POWER_FIELD = "power"

#: The loss ledger (bridge/archive/events.py ``encode_health``): tag ``stream_name`` (the EEG stream),
#: float fields, counters cumulative since the bridge started.
HEALTH_MEASUREMENT = "bridge_health"
#: Sinks with per-sink ledger fields ``<sink>_sent``, ``_retries``, ``_dropped``,
#: ``_queue_depth``, ``_latency_seconds``.
HEALTH_SINKS = ("grafana", "influxdb")
#: LSL markers (bridge/archive/events.py ``encode_markers``): tag ``stream_name`` = the MARKER stream's
#: name (not the EEG stream's, so the annotation does not filter on ``$stream``), string field.
MARKER_MEASUREMENT = "eeg_markers"
MARKER_FIELD = "marker"

#: Band power and channel quality (docs/data-model.md, bridge options INFLUXDB_BANDS_MEASUREMENT /
#: INFLUXDB_QUALITY_MEASUREMENT): tags stream_name, channel; fields <band> (dB), <band>_rel, and
#: std, dc_offset, rail_fraction, line_noise_db, hf_ratio_db, state (0 good, 1 warn, 2 bad), flags.
BANDS_MEASUREMENT = "eeg_bands"
QUALITY_MEASUREMENT = "eeg_quality"
QUALITY_STATE_FIELD = "state"
#: The SPECTRUM_BANDS default; the dashboards' $band variable offers these.
DEFAULT_BANDS = ("delta", "theta", "alpha", "beta", "gamma")

#: docs/history-and-downsampling.md: retention policy and measurement of the 1-minute means.
COARSE_RETENTION_POLICY = "coarse"
COARSE_MEASUREMENT = f"{MEASUREMENT}_1m"

#: InfluxQL regex selecting the bin fields of the wide schema and nothing else: bin names start
#: with a digit, tag keys (``channel``, ``stream_name``) do not, so no string column reaches the
#: heatmap.
BIN_FIELDS_REGEX = "/^[0-9]/"

#: The live dashboard's backfill reads raw frames; this bound keeps that query cheap even when
#: someone widens the live dashboard's time range to hours.
BACKFILL_WINDOW = "5m"

Language = Literal["influxql", "flux"]
#: ``wide`` / ``long``: the INFLUXDB_SCHEMA a spectrum query reads. ``events``: the query reads
#: ``bridge_health`` or ``eeg_markers``; ``bands``: ``eeg_bands`` or ``eeg_quality``; the bridge writes
#: both the same way under either schema.
Schema = Literal["wide", "long", "events", "bands"]

#: Characters Grafana's ``escapeRegex`` (@grafana/data) prefixes with a backslash.
_REGEX_SPECIAL = re.compile(r"[\\^$*+?.()|\[\]{}/]")
_PLACEHOLDER = re.compile(r"\$\{(\w+)(?::(\w+))?\}|\$(\w+)")


def escape_regex(value: str) -> str:
    """What Grafana's ``escapeRegex`` does to each value of a ``:regex``-formatted variable."""
    return _REGEX_SPECIAL.sub(lambda m: "\\" + m.group(0), value)


@dataclass(frozen=True)
class Query:
    """One query as Grafana receives it, plus what it is for."""

    name: str
    language: Language
    schema: Schema
    text: str
    description: str

    def render(self, variables: Mapping[str, str | Sequence[str]]) -> str:
        """Replace Grafana's ``$name`` / ``${name}`` / ``${name:regex}`` placeholders by text.

        A plain placeholder takes the value literally (it must be one string). ``:regex`` does
        what Grafana's regex format does: each value regex-escaped, several joined as ``(a|b)``.
        Names are matched whole, so ``$__interval`` is never mistaken for a variable ``$__i``;
        unknown placeholders are left as they are, which makes a forgotten variable fail loudly
        on the server instead of silently matching nothing. (The InfluxQL tests interpolate with
        a fuller model of Grafana, tests/history_assertions.py ``grafana_influxql``.)
        """

        def substitute(match: "re.Match[str]") -> str:
            name = match.group(1) or match.group(3)
            if name not in variables:
                return match.group(0)
            value, fmt = variables[name], match.group(2)
            if fmt == "regex":
                values = [value] if isinstance(value, str) else list(value)
                escaped = [escape_regex(v) for v in values]
                return escaped[0] if len(escaped) == 1 else "(" + "|".join(escaped) + ")"
            if fmt is not None:
                raise ValueError(f"format :{fmt} of ${{{name}}} is not supported here")
            if not isinstance(value, str):
                raise ValueError(f"${name} takes one value; several need a format such as ${{{name}:regex}}")
            return value

        return _PLACEHOLDER.sub(substitute, self.text)


_M = f'"{MEASUREMENT}"'
_WHERE_STREAM = f'"{STREAM_TAG}" =~ /^$stream$/'
_WHERE_CHANNEL = f'{_WHERE_STREAM} AND "{CHANNEL_TAG}" =~ /^$channel$/'

_FLUX_RANGE = """from(bucket: v.defaultBucket)
  |> range(start: v.timeRangeStart, stop: v.timeRangeStop)"""
_FLUX_HEAD = f"""{_FLUX_RANGE}
  |> filter(fn: (r) => r._measurement == "{MEASUREMENT}")
  |> filter(fn: (r) => r.{STREAM_TAG} =~ /^${{stream:regex}}$/ and r.{CHANNEL_TAG} =~ /^${{channel:regex}}$/)"""
_FLUX_DOWNSAMPLE = "\n  |> aggregateWindow(every: v.windowPeriod, fn: mean, createEmpty: false)"


def _flux_wide_frame(column_key: str, *leftovers: str) -> str:
    """Pivot to one row per frame, then drop every column that is not time or a bin.

    Left in place, the group-key columns would turn into labels and string fields that the
    heatmap cannot place on its y axis.
    """
    dropped = ", ".join(f'"{c}"' for c in ("_start", "_stop", "_measurement", STREAM_TAG, CHANNEL_TAG, *leftovers))
    return (
        f'\n  |> pivot(rowKey: ["_time"], columnKey: ["{column_key}"], valueColumn: "_value")'
        f"\n  |> drop(columns: [{dropped}])"
    )


# ---- bridge health ---------------------------------------------------------------------------
# One panel each; InfluxQL names its series with AS (the panels use alias $col), Flux keeps the
# ledger's field names. max() per interval for gauges and counters (a counter's max is its last
# value), min() for stream_connected so that a disconnection anywhere in a bucket shows.

_H = f'"{HEALTH_MEASUREMENT}"'
_HEALTH_WHERE = f"WHERE {_WHERE_STREAM} AND $timeFilter"
_HEALTH_GROUP = "GROUP BY time($__interval) fill(none)"


def _health_influxql(selections: str) -> str:
    return f"SELECT {selections} FROM {_H} {_HEALTH_WHERE} {_HEALTH_GROUP}"


def _health_flux(fields: Sequence[str], fn: str, *extra: str) -> str:
    wanted = " or ".join(f'r._field == "{f}"' for f in fields)
    lines = [
        _FLUX_RANGE,
        f'  |> filter(fn: (r) => r._measurement == "{HEALTH_MEASUREMENT}" and r.{STREAM_TAG} =~ /^${{stream:regex}}$/)',
        f"  |> filter(fn: (r) => {wanted})",
        f"  |> aggregateWindow(every: v.windowPeriod, fn: {fn}, createEmpty: false)",
        *(f"  |> {step}" for step in extra),
        '  |> keep(columns: ["_time", "_value", "_field"])',
    ]
    return "\n".join(lines)


def _per_sink(template: str) -> str:
    return ", ".join(template.format(sink=sink) for sink in HEALTH_SINKS)


def _health_queries() -> tuple[Query, ...]:
    panels = {
        "latency": (
            _per_sink('max("{sink}_latency_seconds") AS "{sink}"'),
            [f"{sink}_latency_seconds" for sink in HEALTH_SINKS],
            "max",
            (),
            "Seconds from a frame's newest sample to its delivery, per sink (worst per interval).",
        ),
        "drops": (
            _per_sink('non_negative_derivative(max("{sink}_dropped"), 1s) AS "{sink}"'),
            [f"{sink}_dropped" for sink in HEALTH_SINKS],
            "max",
            ("derivative(unit: 1s, nonNegative: true)",),
            "Frames given up per second, per sink: the rate of increase of the cumulative "
            "*_dropped counters. A bridge restart resets them; the negative step is left out.",
        ),
        "staleness": (
            'max("seconds_since_sample") AS "seconds since last sample"',
            ["seconds_since_sample"],
            "max",
            (),
            "LSL staleness: seconds since the last sample arrived (worst per interval).",
        ),
        "backlog": (
            _per_sink('max("{sink}_queue_depth") AS "{sink} queue"') + ', max("spool_frames") AS "spool"',
            [*(f"{sink}_queue_depth" for sink in HEALTH_SINKS), "spool_frames"],
            "max",
            (),
            "Frames waiting: each sink's queue and the archive spool on disk (largest per interval).",
        ),
        "connected": (
            'min("stream_connected") AS "connected"',
            ["stream_connected"],
            "min",
            (),
            "1 while the LSL inlet is open, 0 otherwise (0 if it was down at any time in the interval).",
        ),
    }
    found: list[Query] = []
    for panel, (selections, fields, fn, extra, description) in panels.items():
        found.append(Query(f"health_{panel}_influxql", "influxql", "events", _health_influxql(selections), description))
        found.append(Query(f"health_{panel}_flux", "flux", "events", _health_flux(fields, fn, *extra), description))
    return tuple(found)


def _band_quality_queries() -> tuple[Query, ...]:
    """One series per channel, per time bucket: a heatmap with channels on the y axis (InfluxQL as
    time series named $tag_channel, joined by the panel; Flux pivoted to one column per channel)."""
    where = f"WHERE {_WHERE_CHANNEL} AND $timeFilter"
    group = f'GROUP BY time($__interval), "{CHANNEL_TAG}" fill(none)'
    # After group() the group key is empty, so pivot keeps only _time and one column per channel.
    flux_tail = "\n  |> group()" f'\n  |> pivot(rowKey: ["_time"], columnKey: ["{CHANNEL_TAG}"], valueColumn: "_value")'

    def flux(measurement: str, field: str, fn: str) -> str:
        return (
            f"{_FLUX_RANGE}\n"
            f'  |> filter(fn: (r) => r._measurement == "{measurement}" and r._field == "{field}")\n'
            f"  |> filter(fn: (r) => r.{STREAM_TAG} =~ /^${{stream:regex}}$/ and r.{CHANNEL_TAG} =~ /^${{channel:regex}}$/)\n"
            f"  |> aggregateWindow(every: v.windowPeriod, fn: {fn}, createEmpty: false)" + flux_tail
        )

    band = "Mean absolute power (dB) of band $band per channel and time bucket, from eeg_bands."
    rel = "Mean relative power of band $band (fraction of the power in all bands) per channel, from eeg_bands."
    state = (
        "Worst quality state per channel and time bucket (max of 0 good, 1 warn, 2 bad), from eeg_quality: "
        "a bucket shows bad if the channel was bad at any frame in it."
    )
    return (
        Query("bands_heatmap_influxql", "influxql", "bands",
              f'SELECT mean("$band") FROM "{BANDS_MEASUREMENT}" {where} {group}', band),
        Query("bands_relative_influxql", "influxql", "bands",
              f'SELECT mean("${{band}}_rel") FROM "{BANDS_MEASUREMENT}" {where} {group}', rel),
        Query("quality_timeline_influxql", "influxql", "bands",
              f'SELECT max("{QUALITY_STATE_FIELD}") FROM "{QUALITY_MEASUREMENT}" {where} {group}', state),
        Query("bands_heatmap_flux", "flux", "bands", flux(BANDS_MEASUREMENT, "${band}", "mean"), band),
        Query("bands_relative_flux", "flux", "bands", flux(BANDS_MEASUREMENT, "${band}_rel", "mean"), rel),
        Query("quality_timeline_flux", "flux", "bands", flux(QUALITY_MEASUREMENT, QUALITY_STATE_FIELD, "max"), state),
    )


QUERIES: tuple[Query, ...] = (
    # ---- InfluxQL, wide schema ------------------------------------------------------------
    Query(
        name="heatmap_raw_influxql",
        language="influxql",
        schema="wide",
        text=f"SELECT {BIN_FIELDS_REGEX} FROM {_M} WHERE {_WHERE_CHANNEL} AND $timeFilter",
        description=(
            "Every stored frame of one channel: one row per frame, one column per bin. "
            "Only for short ranges; use heatmap_downsampled_influxql beyond a few minutes."
        ),
    ),
    Query(
        name="heatmap_downsampled_influxql",
        language="influxql",
        schema="wide",
        text=(
            f"SELECT mean({BIN_FIELDS_REGEX}) FROM {_M} WHERE {_WHERE_CHANNEL} AND $timeFilter "
            "GROUP BY time($__interval) fill(none)"
        ),
        description=(
            "Mean dB per bin over Grafana's $__interval, so any range returns about as many rows "
            "as the panel has pixels. InfluxQL names the columns mean_000.00; the panel's "
            "renameByRegex transformation restores 000.00 so the y axis reads in Hz."
        ),
    ),
    Query(
        name="live_backfill_influxql",
        language="influxql",
        schema="wide",
        text=(
            f"SELECT {BIN_FIELDS_REGEX} FROM {_M} WHERE {_WHERE_CHANNEL} AND $timeFilter "
            f"AND time > now() - {BACKFILL_WINDOW}"
        ),
        description=(
            "The last minutes of the channel under each live heatmap, so a refresh or a dashboard "
            f"switch (which empties Grafana Live's browser buffer) never shows a blank page; capped "
            f"at {BACKFILL_WINDOW} of raw frames whatever the dashboard range."
        ),
    ),
    Query(
        name="streams_influxql",
        language="influxql",
        schema="wide",
        text=f'SHOW TAG VALUES FROM {_M} WITH KEY = "{STREAM_TAG}"',
        description="Template variable $stream: every LSL stream name ever archived.",
    ),
    Query(
        name="channels_influxql",
        language="influxql",
        schema="wide",
        text=f'SHOW TAG VALUES FROM {_M} WITH KEY = "{CHANNEL_TAG}" WHERE {_WHERE_STREAM}',
        description="Template variable $channel: the channels of the selected stream.",
    ),
    # ---- InfluxQL, long schema (INFLUXDB_SCHEMA=long) -------------------------------------
    Query(
        name="heatmap_long_influxql",
        language="influxql",
        schema="long",
        text=(
            f'SELECT mean("{POWER_FIELD}") AS "{POWER_FIELD}" FROM {_M} WHERE {_WHERE_CHANNEL} '
            f'AND $timeFilter GROUP BY time($__interval), "{BIN_TAG}" fill(none)'
        ),
        description=(
            "Long schema: one series per bin. Needs a Grafana 'Grouping to matrix' transformation "
            f"(column {BIN_TAG}, row Time, cell {POWER_FIELD}) to become the one-column-per-bin "
            "frame the heatmap reads; use Format as Table."
        ),
    ),
    # ---- Flux, wide schema ----------------------------------------------------------------
    Query(
        name="heatmap_raw_flux",
        language="flux",
        schema="wide",
        text=_FLUX_HEAD + _flux_wide_frame("_field"),
        description=(
            "Every stored frame of one channel. Flux keeps each field in its own table; pivot "
            "joins them into one row per frame, drop removes tag columns so the frame is time + bins."
        ),
    ),
    Query(
        name="heatmap_downsampled_flux",
        language="flux",
        schema="wide",
        text=_FLUX_HEAD + _FLUX_DOWNSAMPLE + _flux_wide_frame("_field"),
        description=(
            "Mean dB per bin over Grafana's v.windowPeriod before the pivot, so any range returns "
            "about as many rows as the panel has pixels. aggregateWindow keeps field names, no renaming."
        ),
    ),
    Query(
        name="streams_flux",
        language="flux",
        schema="wide",
        text=(
            'import "influxdata/influxdb/schema"\n\n'
            f'schema.tagValues(bucket: v.defaultBucket, tag: "{STREAM_TAG}", '
            f'predicate: (r) => r._measurement == "{MEASUREMENT}", start: v.timeRangeStart, stop: v.timeRangeStop)'
        ),
        description="Template variable $stream: streams archived within the dashboard time range.",
    ),
    Query(
        name="channels_flux",
        language="flux",
        schema="wide",
        text=(
            'import "influxdata/influxdb/schema"\n\n'
            f'schema.tagValues(bucket: v.defaultBucket, tag: "{CHANNEL_TAG}", '
            f'predicate: (r) => r._measurement == "{MEASUREMENT}" and r.{STREAM_TAG} =~ /^${{stream:regex}}$/, '
            "start: v.timeRangeStart, stop: v.timeRangeStop)"
        ),
        description="Template variable $channel: the channels of the selected stream.",
    ),
    # ---- Flux, long schema ----------------------------------------------------------------
    Query(
        name="heatmap_long_flux",
        language="flux",
        schema="long",
        text=(
            _FLUX_HEAD
            + f'\n  |> filter(fn: (r) => r._field == "{POWER_FIELD}")'
            + _FLUX_DOWNSAMPLE
            + _flux_wide_frame(BIN_TAG, "_field")
        ),
        description=(
            f"Long schema: the pivot turns the {BIN_TAG} tag into one column per bin, giving the "
            "same frame as the wide queries, no Grafana transformation needed."
        ),
    ),
    # ---- InfluxQL, 1-minute means (docs/history-and-downsampling.md) ----------------------
    Query(
        name="heatmap_coarse_influxql",
        language="influxql",
        schema="wide",
        text=(
            f'SELECT mean(/^mean_/) FROM "{COARSE_RETENTION_POLICY}"."{COARSE_MEASUREMENT}" '
            f"WHERE {_WHERE_CHANNEL} AND $timeFilter GROUP BY time($__interval) fill(none)"
        ),
        description=(
            "The 1-minute means that the downsampling recipe keeps for a year, for ranges beyond "
            "the raw retention; panel Min interval 1m. Columns come back as mean_mean_000.00: rename "
            "with regex ^(?:mean_)+(.*)$."
        ),
    ),
    # ---- band power and quality (measurements eeg_bands, eeg_quality) ---------------------
    *_band_quality_queries(),
    # ---- bridge health (measurement bridge_health) ----------------------------------------
    *_health_queries(),
    # ---- LSL markers as annotations (measurement eeg_markers) -----------------------------
    Query(
        name="markers_annotation_influxql",
        language="influxql",
        schema="events",
        text=f'SELECT "{MARKER_FIELD}", "{STREAM_TAG}" FROM "{MARKER_MEASUREMENT}" WHERE $timeFilter',
        description=(
            "Annotation query: one row per marker at its own timestamp; Grafana's InfluxDB "
            f"annotation takes the text from column {MARKER_FIELD} (textColumn) and a tag from "
            f"{STREAM_TAG} (tagsColumn, the marker stream). Every marker stream, whatever $stream."
        ),
    ),
    Query(
        name="markers_annotation_flux",
        language="flux",
        schema="events",
        text=(
            f"{_FLUX_RANGE}\n"
            f'  |> filter(fn: (r) => r._measurement == "{MARKER_MEASUREMENT}" and r._field == "{MARKER_FIELD}")\n'
            "  |> group()\n"
            f'  |> keep(columns: ["_time", "_value", "{STREAM_TAG}"])\n'
            f'  |> rename(columns: {{_value: "text", {STREAM_TAG}: "tags"}})\n'
            '  |> sort(columns: ["_time"])'
        ),
        description=(
            "Annotation query (standard annotation support): one table of time, text (the marker) "
            "and tags (the marker stream), the field names Grafana maps to an annotation's text "
            "and tags without any configuration."
        ),
    ),
)

_BY_NAME = {query.name: query for query in QUERIES}
if len(_BY_NAME) != len(QUERIES):
    raise RuntimeError("query names in dashboards/queries.py must be unique")


def get(name: str) -> Query:
    """Look a query up by name; a KeyError lists the valid names to make typos obvious."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise KeyError(f"no query named {name!r}; known: {', '.join(_BY_NAME)}") from None
