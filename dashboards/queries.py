"""Every InfluxQL and Flux query the repository ships, in one place.

The dashboards (``dashboards/generate.py``) and the set-up guide
(``docs/grafana_eeg_heatmap_setup.md``) only ever copy text from here, and tests run or
semantically check each entry, so a query that works in one place works in all of them.

The text is exactly what goes into Grafana: it still holds Grafana's template variables
(``$stream``, ``$channel`` in InfluxQL; ``${stream}``, ``${channel}`` in Flux) and macros
(``$timeFilter``, ``$__interval``; ``v.defaultBucket``, ``v.timeRangeStart``, ``v.timeRangeStop``,
``v.windowPeriod``). :meth:`Query.render` substitutes literals for running a query outside
Grafana.

Names and layout follow ``docs/data-model.md``: measurement ``eeg_spectrum``, tags
``stream_name`` and ``channel``; wide schema = one float field per frequency bin, named by a
zero-padded number (``000.00``); long schema = tag ``frequency_bin`` and field ``power``.
A bridge run with another ``INFLUXDB_MEASUREMENT`` needs :data:`MEASUREMENT` changed here and
the dashboards regenerated (dashboard JSON cannot read environment variables).

This module is imported by file path from tests and the generator, so it depends on the
standard library only, and it avoids ``from __future__ import annotations``: a dataclass with
string annotations needs its module in ``sys.modules``, which a plain load-by-path skips.
"""

import re
from dataclasses import dataclass
from typing import Literal, Mapping

MEASUREMENT = "eeg_spectrum"
STREAM_TAG = "stream_name"
CHANNEL_TAG = "channel"
BIN_TAG = "frequency_bin"
POWER_FIELD = "power"

#: InfluxQL regex selecting the bin fields of the wide schema and nothing else: bin names start
#: with a digit, tag keys (``channel``, ``stream_name``) do not, so no string column reaches the
#: heatmap.
BIN_FIELDS_REGEX = "/^[0-9]/"

#: The live dashboard's backfill reads raw frames; this bound keeps that query cheap even when
#: someone widens the live dashboard's time range to hours.
BACKFILL_WINDOW = "5m"

Language = Literal["influxql", "flux"]
Schema = Literal["wide", "long"]


@dataclass(frozen=True)
class Query:
    """One query as Grafana receives it, plus what it is for."""

    name: str
    language: Language
    schema: Schema
    text: str
    description: str

    def render(self, variables: Mapping[str, str]) -> str:
        """Replace Grafana's ``$name`` / ``${name}`` placeholders by literal text.

        Longer names are replaced first so that ``$__interval`` is never mistaken for a
        variable called ``$__i``; unknown placeholders are left as they are, which makes a
        forgotten variable fail loudly on the server instead of silently matching nothing.
        """
        text = self.text
        for key in sorted(variables, key=len, reverse=True):
            text = text.replace("${" + key + "}", variables[key])
            text = re.sub(re.escape("$" + key) + r"(?![A-Za-z0-9_])", lambda _: variables[key], text)
        return text


_M = f'"{MEASUREMENT}"'
_WHERE_CHANNEL = f"\"{STREAM_TAG}\" = '$stream' AND \"{CHANNEL_TAG}\" = '$channel'"

_FLUX_HEAD = f"""from(bucket: v.defaultBucket)
  |> range(start: v.timeRangeStart, stop: v.timeRangeStop)
  |> filter(fn: (r) => r._measurement == "{MEASUREMENT}")
  |> filter(fn: (r) => r.{STREAM_TAG} == "${{stream}}" and r.{CHANNEL_TAG} == "${{channel}}")"""
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
        text=f"SHOW TAG VALUES FROM {_M} WITH KEY = \"{CHANNEL_TAG}\" WHERE \"{STREAM_TAG}\" = '$stream'",
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
            f'predicate: (r) => r._measurement == "{MEASUREMENT}" and r.{STREAM_TAG} == "${{stream}}", '
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
