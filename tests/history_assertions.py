"""Run the shipped InfluxQL queries the way Grafana would, and check what comes back.

Shared by the query tests (data from an independent writer) and the bridge's end-to-end archive
tests (data written by the bridge): both must see the same frame shapes, so the checks live here.
Expected values are always recomputed with numpy from what was written, never taken from the server.
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import numpy.typing as npt

QUERIES_PATH = Path(__file__).resolve().parents[1] / "dashboards" / "queries.py"

MEAN_TOLERANCE_DB = 1e-9
"""Server and numpy sum in different orders; anything beyond float rounding is a real error."""

# Grafana's own variable syntax: $name, [[name]] / [[name:format]], ${name} / ${name:format}.
_GRAFANA_VARIABLE = re.compile(r"\$(\w+)|\[\[(\w+?)(?::(\w+))?\]\]|\$\{(\w+)(?:\.([^:^}]+))?(?::([^}]+))?\}")
_DURATION = re.compile(r"(\d+)(ms|s|m|h|d)")
_NS_PER_UNIT = {"ms": 10**6, "s": 10**9, "m": 60 * 10**9, "h": 3600 * 10**9, "d": 86400 * 10**9}

#: The shipped dashboards' multi-value (and include-All) variables; tests/test_dashboards.py
#: checks that this is what the dashboards declare.
DASHBOARD_MULTI_VARIABLES = frozenset({"channel"})

# @grafana/data escapeRegex: /[\\^$*+?.()|[\]{}\/]/g -> '\\$&'
_REGEX_SPECIAL = re.compile(r"[\\^$*+?.()|\[\]{}/]")
# JavaScript parseFloat: the longest leading decimal number (after whitespace), or NaN.
_JS_FLOAT_PREFIX = re.compile(r"\s*[+-]?(?:Infinity|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)")
# Grafana's InfluxDB datasource, interpolateQueryExpr: text between two slashes, and the
# variable's own "inside a /regex/" test. JavaScript '.' matches no newline, like Python's.
_BETWEEN_SLASHES = re.compile(r"(?<=/).+?(?=/)")


def escape_regex(value: str) -> str:
    """Grafana's ``escapeRegex`` (@grafana/data), restated here rather than imported from queries.py."""
    return _REGEX_SPECIAL.sub(lambda m: "\\" + m.group(0), value)


def _js_parse_float_is_nan(value: str) -> bool:
    return _JS_FLOAT_PREFIX.match(value) is None


def interpolate_query_expr(value: str | Sequence[str], name: str, *, multi: bool, query: str) -> str:
    """One variable in a raw InfluxQL query, as Grafana 11/12's InfluxDB datasource formats it.

    (public/app/plugins/datasource/influxdb/datasource.ts ``interpolateQueryExpr``.) A string that
    JavaScript's parseFloat reads as a number is left as it is. A multi-value variable is
    regex-escaped: one string (a repeated panel's value) alone, a selection as ``(a|b)``. A
    single-valued variable is regex-escaped only when the query's text holds it between two
    slashes, i.e. apparently inside a regex; otherwise it goes in raw.
    """
    if isinstance(value, str) and not _js_parse_float_is_nan(value):
        return value
    if multi:
        if isinstance(value, str):
            return escape_regex(value)
        return "(" + "|".join(escape_regex(v) for v in value) + ")"
    if not isinstance(value, str):
        raise AssertionError(f"${name} is single-valued here, it cannot take {list(value)}")
    in_regex = re.compile(r"/(?:\^)?(.*)(\$" + name + r")(.*)(?:\$)?/")
    if _BETWEEN_SLASHES.search(query) and in_regex.search(query):
        return escape_regex(value)
    return value


def _regex_format(value: str | Sequence[str]) -> str:
    """Grafana's ``:regex`` variable format (scenes formatRegistry)."""
    if isinstance(value, str):
        return escape_regex(value)
    escaped = [escape_regex(v) for v in value]
    return escaped[0] if len(escaped) == 1 else "(" + "|".join(escaped) + ")"


def load_queries() -> ModuleType:
    """dashboards/ is not a package (the generator and the docs import it by path too)."""
    spec = importlib.util.spec_from_file_location("queries", QUERIES_PATH)
    assert spec is not None and spec.loader is not None, f"cannot load {QUERIES_PATH}"
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def duration_ns(interval: str) -> int:
    """Grafana interval text ('500ms', '10s', '1m') in ns."""
    match = _DURATION.fullmatch(interval)
    assert match, f"not a Grafana interval: {interval!r}"
    return int(match.group(1)) * _NS_PER_UNIT[match.group(2)]


def grafana_influxql(
    text: str,
    *,
    from_ms: int,
    to_ms: int,
    interval: str = "10s",
    variables: Mapping[str, str | Sequence[str]] | None = None,
    multi: Collection[str] = DASHBOARD_MULTI_VARIABLES,
) -> str:
    """Interpolate an InfluxQL panel or variable query as Grafana does before sending it.

    `$timeFilter` becomes the absolute ms range and `$__interval` the interval (Grafana's backend
    does both). Template variables go through :func:`interpolate_query_expr`, the datasource's own
    formatting, on the query's original text; `multi` names the multi-value variables, whose
    value is either one string (a repeated panel) or the selected values (a list). A placeholder
    Grafana would not know fails here instead of reaching the server.
    """
    original = text
    text = text.replace("$timeFilter", f"time >= {from_ms}ms and time <= {to_ms}ms")
    macros = {
        "__interval": interval,
        "interval": interval,
        "__interval_ms": str(duration_ns(interval) // 10**6),
        "__from": str(from_ms),
        "__to": str(to_ms),
    }
    variables = dict(variables or {})
    assert not set(variables) & set(macros)

    def substitute(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2) or match.group(4)
        fmt = match.group(3) or match.group(6)
        if name in macros:
            return macros[name]
        assert name in variables, f"query uses {match.group(0)}, which this test does not define"
        value = variables[name]
        if fmt is None:
            return interpolate_query_expr(value, name, multi=name in multi, query=original)
        assert fmt in {"regex", "raw"}, f"format :{fmt} not modelled here"
        if fmt == "raw":
            assert isinstance(value, str)
            return value
        return _regex_format(value)

    return _GRAFANA_VARIABLE.sub(substitute, text)


def interval_means(
    times_ns: npt.NDArray[np.int64], values: npt.NDArray[np.float64], interval_ns: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    """Mean of each column per `GROUP BY time(interval)` bucket, labelled by bucket start.

    InfluxDB's buckets sit on epoch-aligned boundaries whatever the query's time range, and
    fill(none) drops the empty ones: exactly the buckets that hold at least one frame.
    """
    starts = times_ns - times_ns % interval_ns
    buckets, first_index = np.unique(starts, return_index=True)
    sums = np.add.reduceat(values, first_index, axis=0)
    counts = np.diff(np.append(first_index, len(starts)))
    return buckets, sums / counts[:, None]


def single_statement(result: Mapping[str, Any]) -> Mapping[str, Any]:
    (statement,) = result["results"]
    assert "error" not in statement, statement["error"]
    return statement


def assert_frame_result(
    result: Mapping[str, Any],
    columns: Sequence[str],
    times_ns: npt.NDArray[np.int64],
    values: npt.NDArray[np.float64],
    atol: float = 0.0,
) -> None:
    """One series: `time` plus exactly `columns` in that order; rows match times and values."""
    statement = single_statement(result)
    series = statement.get("series", [])
    assert len(series) == 1, f"expected one series, got {[s.get('tags') for s in series]}"
    (frame,) = series
    assert frame["columns"] == ["time", *columns]
    rows = frame["values"]
    got_times = np.array([row[0] for row in rows], dtype=np.int64)
    np.testing.assert_array_equal(got_times, times_ns, err_msg="row timestamps")
    got = np.array([[np.nan if v is None else v for v in row[1:]] for row in rows], dtype=np.float64)
    got = got.reshape(len(rows), len(columns))
    if atol == 0.0:
        np.testing.assert_array_equal(got, values, err_msg="cell values")
    else:
        np.testing.assert_allclose(got, values, rtol=0.0, atol=atol, err_msg="cell values")


def _assert_numeric_order(bins: Sequence[str]) -> None:
    """The heatmap's y axis follows column order; zero-padded names make text order numeric."""
    assert list(bins) == sorted(bins, key=float), f"bins not in numeric order: {bins}"


def assert_heatmap_result(
    result: Mapping[str, Any],
    bins: Sequence[str],
    times_ns: npt.NDArray[np.int64],
    values: npt.NDArray[np.float64],
) -> None:
    """Raw frames: one column per bin, every written frame, the exact written values.

    `values` must be the doubles the written text parses to (`float(f"{v:.3f}")`), not the
    unrounded spectrum: the comparison is exact.
    """
    _assert_numeric_order(bins)
    assert_frame_result(result, bins, times_ns, values)


def assert_downsampled_heatmap_result(
    result: Mapping[str, Any],
    bins: Sequence[str],
    times_ns: npt.NDArray[np.int64],
    values: npt.NDArray[np.float64],
    interval: str,
    prefix: str = "mean_",
) -> None:
    """`mean(...) GROUP BY time(interval) fill(none)`: bucket starts and per-bin means.

    `prefix` is what InfluxQL prepends (`mean_`) and the dashboard's rename transformation strips;
    `times_ns`/`values` are the frames the query's time range selects.
    """
    _assert_numeric_order(bins)
    buckets, means = interval_means(times_ns, values, duration_ns(interval))
    columns = [prefix + name for name in bins]
    assert_frame_result(result, columns, buckets, means, atol=MEAN_TOLERANCE_DB)


def assert_long_heatmap_result(
    result: Mapping[str, Any],
    bin_tag: str,
    field: str,
    bins: Sequence[str],
    times_ns: npt.NDArray[np.int64],
    values: npt.NDArray[np.float64],
    interval: str,
) -> None:
    """Long schema grouped by the bin tag: one series per bin, in numeric order, each holding
    the per-interval means of that bin, so 'Grouping to matrix' yields the wide frame."""
    _assert_numeric_order(bins)
    series = single_statement(result).get("series", [])
    assert [s["tags"] for s in series] == [{bin_tag: name} for name in bins]
    buckets, means = interval_means(times_ns, values, duration_ns(interval))
    for column, one in enumerate(series):
        assert_frame_result(
            {"results": [{"series": [one]}]}, [field], buckets, means[:, column : column + 1], MEAN_TOLERANCE_DB
        )


def assert_tag_values(result: Mapping[str, Any], key: str, expected: Sequence[str]) -> None:
    """A variable query: exactly the written tag values, in the server's (sorted) order."""
    series = single_statement(result).get("series", [])
    rows = [row for s in series for row in s["values"]]
    assert rows == [[key, value] for value in sorted(expected)]


def annotation_events(result: Mapping[str, Any], *, text_column: str, tags_column: str) -> list[dict[str, Any]]:
    """The annotation events Grafana's InfluxDB datasource makes of an InfluxQL annotation result.

    A restatement of ``InfluxSeries.getAnnotations`` (public/app/plugins/datasource/influxdb):
    per series, the ``time`` column is the time (ms, as Grafana asks with ``epoch=ms``; `result`
    here has ns), the text comes from `text_column`, every column named in the comma-separated
    `tags_column` adds its non-empty values, split on commas, to the tags.
    """
    tag_names = set(tags_column.replace(" ", "").split(","))
    events = []
    for series in single_statement(result).get("series", []):
        columns = series["columns"]
        assert "time" in columns and text_column in columns, f"{text_column!r} not among {columns}"
        time_at, text_at = columns.index("time"), columns.index(text_column)
        tags_at = [i for i, name in enumerate(columns) if name in tag_names]
        for row in series["values"]:
            tags = [tag for i in tags_at if row[i] for tag in row[i].split(",")]
            events.append({"time": row[time_at] // 10**6, "text": row[text_at], "tags": tags})
    return events
