"""Every shipped InfluxQL query, interpolated as Grafana does, run on a real InfluxDB 1.6.7.

The data comes from an independent writer below (plain f-strings following docs/data-model.md),
not from the bridge, so a shared misunderstanding cannot make both sides agree; a few tests then
write what the bridge's own encoders produce (bridge/archive/events.py) to show the two agree. The
downsampling recipe is read out of docs/history-and-downsampling.md and run the same way.

Template variables go through tests/history_assertions.py ``grafana_influxql``, a model of
Grafana's InfluxDB datasource: ``$channel`` is multi-value (a repeated panel's one value, or a
selection), ``$stream`` single-valued; one stream name holds regex metacharacters on purpose.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from tests.fixtures_influxdb import unique_database_name
from tests.history_assertions import (
    MEAN_TOLERANCE_DB,
    annotation_events,
    assert_downsampled_heatmap_result,
    assert_frame_result,
    assert_heatmap_result,
    assert_long_heatmap_result,
    assert_tag_values,
    duration_ns,
    grafana_influxql,
    interval_means,
    load_queries,
    single_statement,
)
from tests.influxdb_server import InfluxDBServer, quote_ident

pytestmark = pytest.mark.influxdb

queries = load_queries()

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "history-and-downsampling.md"
INFLUXQL_DASHBOARD = ROOT / "dashboards" / "eeg-spectrogram-history-influxql.json"
DOC_DATABASE = '"neuroscience"'

# docs/data-model.md, restated here on purpose rather than imported from the bridge.
MEASUREMENT = "eeg_spectrum"
# The second name holds regex metacharacters (Grafana regex-escapes $stream inside /.../), the third
# quotes, a backslash and a slash: any name LSL allows must work in every query.
QUOTED_STREAM = 'Bob\'s "EEG" C:\\rig / v1.0'
STREAMS: dict[str, tuple[str, ...]] = {
    "SimEEG": ("Cz", "Fz", "Pz"),
    "Lab EEG 2 (v1.0)": ("C3", "Fz", "O1-ref"),
    QUOTED_STREAM: ("Cz", "T7"),
}
BINS = tuple(f"{k * 500 / 64:06.2f}" for k in range(33))  # 500 Hz, nperseg 64: 000.00 ... 250.00
FRAMES = 200
CADENCE_NS = 750_000_000  # not a divisor of 10 s: buckets hold 13 or 14 frames
MINUTE_NS = 60 * 10**9
PAIRS = [(stream, channel) for stream, channels in STREAMS.items() for channel in channels]
# Frames 20..179: a Grafana range that cuts the data on both sides.
VISIBLE = slice(20, 180)
INTERVALS = ("10s", "1m")

# The bridge's own points (docs/data-model.md, bridge/archive/events.py), restated here too.
HEALTH_MEASUREMENT = "bridge_health"
MARKER_MEASUREMENT = "eeg_markers"
SINKS = ("grafana", "influxdb")
HEALTH_COUNTERS = ("samples_received", "samples_missing", "gaps", "reconnects", "frames_computed") + tuple(
    f"{sink}_{name}" for sink in SINKS for name in ("sent", "retries", "dropped")
)
HEALTH_GAUGES = ("stream_connected", "seconds_since_sample", "spool_frames") + tuple(
    f"{sink}_{name}" for sink in SINKS for name in ("queue_depth", "latency_seconds")
)
HEALTH_PANELS = ("latency", "drops", "staleness", "backlog", "connected")
HEALTH_CADENCE_NS = 10 * 10**9  # HEALTH_WRITE_INTERVAL_SEC's default


@dataclass(frozen=True)
class History:
    """What `filled_history` wrote: enough to recompute any expected query result."""

    wide_db: str
    long_db: str
    streams: dict[str, tuple[str, ...]]
    bins: tuple[str, ...]
    times_ns: npt.NDArray[np.int64]
    values: dict[tuple[str, str], npt.NDArray[np.float64]]  # (stream, channel) -> frames x bins


def _tag(value: str) -> str:
    return value.replace(",", r"\,").replace("=", r"\=").replace(" ", r"\ ")


def wide_lines(stream: str, channel: str, times_ns: npt.NDArray[np.int64], values: npt.NDArray[np.float64]) -> bytes:
    head = f"{MEASUREMENT},channel={_tag(channel)},stream_name={_tag(stream)}"
    return "".join(
        f"{head} {','.join(f'{name}={v:.3f}' for name, v in zip(BINS, row))} {t}\n"
        for t, row in zip(times_ns.tolist(), values.tolist())
    ).encode()


def long_lines(stream: str, channel: str, times_ns: npt.NDArray[np.int64], values: npt.NDArray[np.float64]) -> bytes:
    return "".join(
        f"{MEASUREMENT},channel={_tag(channel)},frequency_bin={name},stream_name={_tag(stream)} power={v:.3f} {t}\n"
        for t, row in zip(times_ns.tolist(), values.tolist())
        for name, v in zip(BINS, row)
    ).encode()


def frame_values(rng: np.random.Generator, frames: int) -> npt.NDArray[np.float64]:
    """Whole milli-dB divided by 1000: the same doubles the server parses from '%.3f' text."""
    return rng.integers(-60_000, 60_001, size=(frames, len(BINS))) / 1000


@pytest.fixture(scope="module")
def filled_history(influxdb_server: InfluxDBServer) -> Iterator[History]:
    """2 streams x 3 channels x 200 frames, written once in both schemas (two databases).

    Half an hour ago (inside any retention policy), starting 17.125 s into a minute so the
    first and last minutes are partial.
    """
    first = (time.time_ns() // MINUTE_NS - 30) * MINUTE_NS + 17_125_000_000
    times = first + CADENCE_NS * np.arange(FRAMES, dtype=np.int64)
    rng = np.random.default_rng(20241122)
    history = History(
        wide_db=unique_database_name("wide"),
        long_db=unique_database_name("long"),
        streams=STREAMS,
        bins=BINS,
        times_ns=times,
        values={pair: frame_values(rng, FRAMES) for pair in PAIRS},
    )
    for db in (history.wide_db, history.long_db):
        influxdb_server.create_database(db)
    try:
        for (stream, channel), values in history.values.items():
            influxdb_server.write(wide_lines(stream, channel, times, values), history.wide_db)
            influxdb_server.write(long_lines(stream, channel, times, values), history.long_db)
        yield history
    finally:
        for db in (history.wide_db, history.long_db):
            influxdb_server.drop_database(db)


def _string(value: str) -> str:
    """An InfluxQL string literal (backslash and single quote escaped)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _ms(ns: int) -> int:
    assert ns % 10**6 == 0, "test ranges sit on whole milliseconds, as Grafana's do"
    return ns // 10**6


def _run(
    server: InfluxDBServer,
    name: str,
    db: str,
    time_range_ms: tuple[int, int],
    interval: str = "10s",
    variables: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    query = queries.get(name)
    assert query.language == "influxql"
    from_ms, to_ms = time_range_ms
    text = grafana_influxql(query.text, from_ms=from_ms, to_ms=to_ms, interval=interval, variables=variables)
    return server.query(text, db=db)


def _visible_range(history: History) -> tuple[int, int]:
    times = history.times_ns[VISIBLE]
    return _ms(int(times[0])), _ms(int(times[-1]))


def test_every_influxql_query_is_covered() -> None:
    """A query added to dashboards/queries.py must get a test here before it ships."""
    tested = {
        "heatmap_raw_influxql",
        "heatmap_downsampled_influxql",
        "live_backfill_influxql",
        "streams_influxql",
        "channels_influxql",
        "heatmap_long_influxql",
        "heatmap_coarse_influxql",
        *(f"health_{panel}_influxql" for panel in HEALTH_PANELS),
        "markers_annotation_influxql",
        "bands_heatmap_influxql",
        "bands_relative_influxql",
        "quality_timeline_influxql",
    }
    assert {q.name for q in queries.QUERIES if q.language == "influxql"} == tested


def test_queries_use_the_data_model_names() -> None:
    assert (queries.MEASUREMENT, queries.STREAM_TAG, queries.CHANNEL_TAG) == (MEASUREMENT, "stream_name", "channel")
    assert (queries.BIN_TAG, queries.POWER_FIELD) == ("frequency_bin", "power")
    assert (queries.HEALTH_MEASUREMENT, queries.HEALTH_SINKS) == (HEALTH_MEASUREMENT, SINKS)
    assert (queries.MARKER_MEASUREMENT, queries.MARKER_FIELD) == (MARKER_MEASUREMENT, "marker")


# ---- $channel as Grafana interpolates a multi-value variable for InfluxQL --------------------


def _interpolated_where(name: str, **variables: str | list[str]) -> str:
    text = grafana_influxql(queries.get(name).text, from_ms=1000, to_ms=2000, variables=variables)
    return text.split(" WHERE ", 1)[1]


def test_multi_value_channel_is_interpolated_as_grafana_does() -> None:
    """Selection: regex-escaped values joined by | in parentheses; a repeated panel: one escaped value.

    $stream is single-valued but sits between slashes, so Grafana escapes it too.
    """
    stream = "Lab EEG 2 (v1.0)"
    assert _interpolated_where("heatmap_raw_influxql", stream=stream, channel=["C3", "O1-ref"]) == (
        '"stream_name" =~ /^Lab EEG 2 \\(v1\\.0\\)$/ AND "channel" =~ /^(C3|O1-ref)$/ '
        "AND time >= 1000ms and time <= 2000ms"
    )
    assert _interpolated_where("heatmap_raw_influxql", stream="SimEEG", channel="Fz").startswith(
        '"stream_name" =~ /^SimEEG$/ AND "channel" =~ /^Fz$/ AND'
    )
    assert _interpolated_where("heatmap_raw_influxql", stream="SimEEG", channel=["Fz"]).startswith(
        '"stream_name" =~ /^SimEEG$/ AND "channel" =~ /^(Fz)$/ AND'
    )
    odd = ["a.b", "c/d", "(x)", "p+q", "[1]", "^$|*?{}\\"]
    assert f'"channel" =~ /^({"|".join(ESCAPED[v] for v in odd)})$/' in _interpolated_where(
        "heatmap_downsampled_influxql", stream="SimEEG", channel=odd
    )
    # The variable query matches the stream by regex too, so quotes cannot end a string early.
    assert grafana_influxql(
        queries.get("channels_influxql").text, from_ms=0, to_ms=1, variables={"stream": QUOTED_STREAM}
    ).endswith('"stream_name" =~ /^Bob\'s "EEG" C:\\\\rig \\/ v1\\.0$/')


#: Grafana's escapeRegex of the values above, written out by hand.
ESCAPED = {
    "a.b": "a\\.b",
    "c/d": "c\\/d",
    "(x)": "\\(x\\)",
    "p+q": "p\\+q",
    "[1]": "\\[1\\]",
    "^$|*?{}\\": "\\^\\$\\|\\*\\?\\{\\}\\\\",
}


def test_no_query_compares_a_multi_value_variable_with_equals() -> None:
    """`"channel" = '$channel'` only worked while every panel repeated per channel."""
    for query in queries.QUERIES:
        if query.language != "influxql":
            continue
        assert "'$channel'" not in query.text, query.name
        if "$channel" in query.text:
            assert '"channel" =~ /^$channel$/' in query.text, query.name
        if "/" in query.text:  # Grafana would regex-escape $stream: it must be inside a regex too
            assert "'$stream'" not in query.text, query.name


@pytest.mark.parametrize("selection", [["Cz", "Pz"], list(STREAMS["SimEEG"])], ids=["two", "all"])
def test_multi_channel_selection_on_the_server(
    influxdb_server: InfluxDBServer, filled_history: History, selection: list[str]
) -> None:
    """Outside a repeated panel the query reads exactly the selected channels: the raw query merges
    their frames into one series, the downsampled one averages over all of them."""
    stream = "SimEEG"
    times = filled_history.times_ns[VISIBLE]
    values = np.concatenate([filled_history.values[stream, c][VISIBLE] for c in selection])
    order = np.argsort(np.tile(times, len(selection)), kind="stable")
    all_times, all_values = np.tile(times, len(selection))[order], values[order]
    variables = {"stream": stream, "channel": selection}

    result = _run(
        influxdb_server, "heatmap_raw_influxql", filled_history.wide_db, _visible_range(filled_history),
        variables=variables,
    )
    (series,) = single_statement(result)["series"]
    assert series["columns"] == ["time", *BINS]
    got_times = np.array([row[0] for row in series["values"]], dtype=np.int64)
    got = np.array([row[1:] for row in series["values"]], dtype=np.float64)
    np.testing.assert_array_equal(got_times, all_times, err_msg="merged frames in time order")
    # Frames sharing a timestamp come back in an order of the server's choosing: sort both by
    # (time, values) before comparing.
    got_order = np.lexsort((*got.T[::-1], got_times))
    expected_order = np.lexsort((*all_values.T[::-1], all_times))
    np.testing.assert_array_equal(got[got_order], all_values[expected_order])

    result = _run(
        influxdb_server, "heatmap_downsampled_influxql", filled_history.wide_db, _visible_range(filled_history),
        interval="1m", variables=variables,
    )
    assert_downsampled_heatmap_result(result, BINS, all_times, all_values, "1m", prefix="mean_")


def test_escaped_channel_values_select_exactly_those_channels(
    influxdb_server: InfluxDBServer, influxdb_database: str
) -> None:
    """Channel values full of regex metacharacters (the bridge never writes such names, other
    writers might): once escaped as Grafana does, InfluxQL's regex matches exactly them."""
    channels = ["a.b", "aXb", "c/d", "(x)", "x", "p+q", "pq", "[1]", "1"]
    selected = ["a.b", "c/d", "(x)", "p+q", "[1]"]
    first = 1_600_000_000 * 10**9
    times = first + CADENCE_NS * np.arange(len(channels), dtype=np.int64)
    rng = np.random.default_rng(3)
    values = frame_values(rng, len(channels))
    for k, channel in enumerate(channels):
        influxdb_server.write(wide_lines("SimEEG", channel, times[k : k + 1], values[k : k + 1]), influxdb_database)
    result = _run(
        influxdb_server, "heatmap_raw_influxql", influxdb_database, (_ms(int(times[0])), _ms(int(times[-1]))),
        variables={"stream": "SimEEG", "channel": selected},
    )
    keep = [channels.index(c) for c in selected]
    assert_heatmap_result(result, BINS, times[keep], values[keep])


@pytest.mark.parametrize(("stream", "channel"), PAIRS)
def test_heatmap_raw(influxdb_server: InfluxDBServer, filled_history: History, stream: str, channel: str) -> None:
    assert queries.get("heatmap_raw_influxql").schema == "wide"
    result = _run(
        influxdb_server,
        "heatmap_raw_influxql",
        filled_history.wide_db,
        _visible_range(filled_history),
        variables={"stream": stream, "channel": channel},
    )
    assert_heatmap_result(
        result, BINS, filled_history.times_ns[VISIBLE], filled_history.values[stream, channel][VISIBLE]
    )


@pytest.mark.parametrize("interval", INTERVALS)
@pytest.mark.parametrize(("stream", "channel"), [PAIRS[1], PAIRS[-1]])
def test_heatmap_downsampled(
    influxdb_server: InfluxDBServer, filled_history: History, stream: str, channel: str, interval: str
) -> None:
    assert queries.get("heatmap_downsampled_influxql").schema == "wide"
    result = _run(
        influxdb_server,
        "heatmap_downsampled_influxql",
        filled_history.wide_db,
        _visible_range(filled_history),
        interval=interval,
        variables={"stream": stream, "channel": channel},
    )
    assert_downsampled_heatmap_result(
        result,
        BINS,
        filled_history.times_ns[VISIBLE],
        filled_history.values[stream, channel][VISIBLE],
        interval,
        prefix="mean_",
    )


@pytest.mark.parametrize("interval", INTERVALS)
@pytest.mark.parametrize(("stream", "channel"), [PAIRS[0], PAIRS[-1]])
def test_heatmap_long(
    influxdb_server: InfluxDBServer, filled_history: History, stream: str, channel: str, interval: str
) -> None:
    assert queries.get("heatmap_long_influxql").schema == "long"
    result = _run(
        influxdb_server,
        "heatmap_long_influxql",
        filled_history.long_db,
        _visible_range(filled_history),
        interval=interval,
        variables={"stream": stream, "channel": channel},
    )
    assert_long_heatmap_result(
        result,
        queries.BIN_TAG,
        queries.POWER_FIELD,
        BINS,
        filled_history.times_ns[VISIBLE],
        filled_history.values[stream, channel][VISIBLE],
        interval,
    )


@pytest.mark.parametrize("schema", ["wide", "long"])
def test_variable_queries(influxdb_server: InfluxDBServer, filled_history: History, schema: str) -> None:
    """The variables serve dashboards of either schema: both carry the same two tags."""
    db = filled_history.wide_db if schema == "wide" else filled_history.long_db
    time_range = _visible_range(filled_history)
    assert_tag_values(_run(influxdb_server, "streams_influxql", db, time_range), "stream_name", list(STREAMS))
    for stream, channels in STREAMS.items():
        result = _run(influxdb_server, "channels_influxql", db, time_range, variables={"stream": stream})
        assert_tag_values(result, "channel", channels)


def test_live_backfill_returns_only_the_last_minutes(
    influxdb_server: InfluxDBServer, influxdb_database: str
) -> None:
    """Frames span twice the backfill window up to now; only those newer than now() - window return.

    The server's now() falls between two client clock readings, so the cut is only known within
    that span: the result must be a suffix of the frames, cut inside it.
    """
    window_ns = duration_ns(queries.BACKFILL_WINDOW)
    count = 2 * window_ns // CADENCE_NS
    now_ns = time.time_ns()
    first = now_ns - count * CADENCE_NS
    times = first - first % 10**6 + CADENCE_NS * np.arange(count, dtype=np.int64)
    rng = np.random.default_rng(7)
    values = {channel: frame_values(rng, count) for channel in ("Fz", "Cz")}
    for channel, frames in values.items():
        influxdb_server.write(wide_lines("SimEEG", channel, times, frames), influxdb_database)

    before_ns = time.time_ns()
    result = _run(
        influxdb_server,
        "live_backfill_influxql",
        influxdb_database,
        ((before_ns - 3600 * 10**9) // 10**6, before_ns // 10**6 + 1),  # far wider than the window
        variables={"stream": "SimEEG", "channel": "Fz"},
    )
    after_ns = time.time_ns()

    (series,) = result["results"][0]["series"]
    cut = int(np.searchsorted(times, series["values"][0][0]))
    assert times[cut] > before_ns - window_ns
    assert cut == 0 or times[cut - 1] <= after_ns - window_ns
    assert cut > 0, "frames older than the window must be left out"
    assert_heatmap_result(result, BINS, times[cut:], values["Fz"][cut:])


# ---- downsampling recipe (docs/history-and-downsampling.md) --------------------------------


def doc_statements(tag: str, db: str) -> list[str]:
    """Statements of the doc's ```sql <tag> block, whitespace-normalised, for database `db`."""
    blocks = re.findall(rf"^```sql {re.escape(tag)}\n(.*?)^```", DOC.read_text(), re.MULTILINE | re.DOTALL)
    assert len(blocks) == 1, f"expected one ```sql {tag} block in {DOC.name}"
    statements = [" ".join(s.split()) for s in blocks[0].split(";")]
    return [s.replace(DOC_DATABASE, quote_ident(db)) for s in statements if s]


def _rfc3339(ns: int) -> str:
    assert ns % 10**9 == 0
    return datetime.fromtimestamp(ns // 10**9, UTC).strftime("'%Y-%m-%dT%H:%M:%SZ'")


def _written(result: dict[str, Any]) -> int:
    (series,) = result["results"][0]["series"]
    assert series["columns"] == ["time", "written"]
    return int(series["values"][0][1])


@pytest.fixture
def recipe_database(influxdb_server: InfluxDBServer) -> Iterator[str]:
    """A database the recipe itself creates (it must start without the RPs)."""
    name = unique_database_name("recipe")
    yield name
    influxdb_server.drop_database(name)


def test_downsampling_recipe(influxdb_server: InfluxDBServer, filled_history: History, recipe_database: str) -> None:
    db = recipe_database
    recipe = doc_statements("influxql-recipe", db)
    for statement in recipe:
        influxdb_server.query(statement, method="POST")
    for (stream, channel), values in filled_history.values.items():
        influxdb_server.write(wide_lines(stream, channel, filled_history.times_ns, values), db)  # default RP

    policies = influxdb_server.query(f"SHOW RETENTION POLICIES ON {quote_ident(db)}")
    (series,) = policies["results"][0]["series"]
    rows = {row[0]: dict(zip(series["columns"], row)) for row in series["values"]}
    assert (rows["raw"]["duration"], rows["raw"]["default"]) == ("168h0m0s", True)
    assert (rows["coarse"]["duration"], rows["coarse"]["default"]) == ("8760h0m0s", False)

    (create_cq,) = [s for s in recipe if s.startswith("CREATE CONTINUOUS QUERY")]
    shown = influxdb_server.query("SHOW CONTINUOUS QUERIES")["results"][0]["series"]
    assert [row[0] for s in shown if s["name"] == db for row in s["values"]] == ["eeg_spectrum_1m"]

    # The CQ's own body for the first two minutes, the doc's backfill statement for the last one.
    times = filled_history.times_ns
    first_minute = int(times[0] - times[0] % MINUTE_NS)
    split = first_minute + 2 * MINUTE_NS
    end = int(times[-1] - times[-1] % MINUTE_NS) + MINUTE_NS
    assert end == split + MINUTE_NS, "the data should span exactly three minutes"
    body = re.fullmatch(r".* BEGIN (SELECT .*) END", create_cq)
    assert body is not None and " WHERE " not in body.group(1)
    cq_select = body.group(1).replace(
        " GROUP BY ", f" WHERE time >= {_rfc3339(first_minute)} AND time < {_rfc3339(split)} GROUP BY ", 1
    )
    (backfill,) = doc_statements("influxql-backfill", db)
    backfill, replaced = re.subn(
        r"time >= '[^']*' AND time < '[^']*'", f"time >= {_rfc3339(split)} AND time < {_rfc3339(end)}", backfill
    )
    assert replaced == 1
    assert _written(influxdb_server.query(cq_select, db=db, method="POST")) == 2 * len(PAIRS)
    assert _written(influxdb_server.query(backfill, db=db, method="POST")) == len(PAIRS)

    assert influxdb_server.series(db, "eeg_spectrum_1m") == sorted(
        f"eeg_spectrum_1m,channel={_tag(c)},stream_name={_tag(s)}" for s, c in PAIRS
    )
    coarse_query = queries.get("heatmap_coarse_influxql").text
    for stream, channel in PAIRS:
        minutes = influxdb_server.query(
            f"SELECT /^mean_/ FROM \"coarse\".\"eeg_spectrum_1m\" WHERE \"stream_name\" = {_string(stream)} "
            f"AND \"channel\" = {_string(channel)}",
            db=db,
        )
        values = filled_history.values[stream, channel]
        assert_downsampled_heatmap_result(minutes, BINS, times, values, "1m", prefix="mean_")

        minute_times, minute_means = interval_means(times, values, MINUTE_NS)
        result = influxdb_server.query(
            grafana_influxql(
                coarse_query,
                from_ms=_ms(first_minute),
                to_ms=_ms(end),
                interval="2m",
                variables={"stream": stream, "channel": channel},
            ),
            db=db,
        )
        assert_downsampled_heatmap_result(result, BINS, minute_times, minute_means, "2m", prefix="mean_mean_")


# ---- the bridge-health row (measurement bridge_health) ------------------------------------


def health_lines(stream: str, times_ns: npt.NDArray[np.int64], ledger: Mapping[str, npt.NDArray[np.float64]]) -> bytes:
    """One point per time with every ledger field as a float, as `encode_health` writes them."""
    head = f"{HEALTH_MEASUREMENT},stream_name={_tag(stream)}"
    names = list(ledger)
    return "".join(
        f"{head} {','.join(f'{name}={float(ledger[name][k])!r}' for name in names)} {t}\n"
        for k, t in enumerate(times_ns.tolist())
    ).encode()


@dataclass(frozen=True)
class Health:
    db: str
    times_ns: npt.NDArray[np.int64]
    ledgers: dict[str, dict[str, npt.NDArray[np.float64]]]  # stream -> field -> value per point


def _ledger(rng: np.random.Generator, count: int, restart: int) -> dict[str, npt.NDArray[np.float64]]:
    """Counters that grow by random steps (some steps 0) and start again from 0 at a restart;
    gauges at random. Whole numbers or multiples of 1/8: exact in float and in text."""
    ledger: dict[str, npt.NDArray[np.float64]] = {}
    for name in HEALTH_COUNTERS:
        steps = rng.integers(0, 40, size=count) * rng.integers(0, 2, size=count)
        counter = np.cumsum(steps).astype(np.float64)
        counter[restart:] = np.cumsum(steps[restart:])  # a restarted bridge counts from 0
        ledger[name] = counter
    for name in HEALTH_GAUGES:
        ledger[name] = rng.integers(0, 2, size=count).astype(np.float64) if name == "stream_connected" else (
            rng.integers(0, 800, size=count) / 8
        )
    return ledger


@pytest.fixture(scope="module")
def health_history(influxdb_server: InfluxDBServer) -> Iterator[Health]:
    """Both streams, one point per 10 s for 40 minutes, 3.5 s into each 10 s; the bridge is down
    (no points) for two minutes, and restarts (counters from 0) at another point."""
    count = 240
    first = (time.time_ns() // MINUTE_NS - 45) * MINUTE_NS + 3_500_000_000
    times = first + HEALTH_CADENCE_NS * np.arange(count, dtype=np.int64)
    down = np.ones(count, dtype=bool)
    down[100:112] = False
    rng = np.random.default_rng(11)
    health = Health(unique_database_name("health"), times[down], {})
    influxdb_server.create_database(health.db)
    try:
        for stream in STREAMS:
            ledger = {k: v[down] for k, v in _ledger(rng, count, restart=170).items()}
            health.ledgers[stream] = ledger
            influxdb_server.write(health_lines(stream, health.times_ns, ledger), health.db)
        yield health
    finally:
        influxdb_server.drop_database(health.db)


def bucket_aggregate(
    times_ns: npt.NDArray[np.int64], values: npt.NDArray[np.float64], interval_ns: int, fn: str
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    """max() / min() of each column per non-empty `GROUP BY time(interval)` bucket."""
    starts = times_ns - times_ns % interval_ns
    buckets, first_index = np.unique(starts, return_index=True)
    ufunc = np.maximum if fn == "max" else np.minimum
    return buckets, ufunc.reduceat(values, first_index, axis=0)


def non_negative_rates(
    buckets: npt.NDArray[np.int64], maxima: npt.NDArray[np.float64]
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    """`non_negative_derivative(max(x), 1s)` per bucket: change since the previous non-empty
    bucket over the time between their starts; a decrease (restart) gives no value (NaN here),
    a bucket where every column decreased gives no row."""
    rates = np.diff(maxima, axis=0) / (np.diff(buckets) / 1e9)[:, None]
    rates[rates < 0] = np.nan
    rows = ~np.all(np.isnan(rates), axis=1)
    return buckets[1:][rows], rates[rows]


def _health_range(health: Health) -> tuple[int, int]:
    """A range that cuts the points on both sides, mid-bucket."""
    return _ms(int(health.times_ns[15]) - 1_000_000_000), _ms(int(health.times_ns[-20]))


HEALTH_EXPECTED = {
    # panel: (aggregate, [(column alias, ledger field)])
    "latency": ("max", [(sink, f"{sink}_latency_seconds") for sink in SINKS]),
    "drops": ("rate", [(sink, f"{sink}_dropped") for sink in SINKS]),
    "staleness": ("max", [("seconds since last sample", "seconds_since_sample")]),
    "backlog": ("max", [*((f"{sink} queue", f"{sink}_queue_depth") for sink in SINKS), ("spool", "spool_frames")]),
    "connected": ("min", [("connected", "stream_connected")]),
}


@pytest.mark.parametrize("interval", ["10s", "1m"])
@pytest.mark.parametrize("stream", list(STREAMS))
@pytest.mark.parametrize("panel", HEALTH_PANELS)
def test_health_queries(
    influxdb_server: InfluxDBServer, health_history: Health, panel: str, stream: str, interval: str
) -> None:
    """Each health panel's query returns, per bucket, what numpy computes from the written ledger.

    A derivative needs the bucket before the first one: InfluxQL reads one interval more before
    the range's start, so the first bucket (which holds the start) gets a rate against the points
    in [start - interval, its own start).
    """
    assert set(HEALTH_EXPECTED) == set(HEALTH_PANELS)
    fn, columns = HEALTH_EXPECTED[panel]
    time_range = _health_range(health_history)
    interval_ns = duration_ns(interval)
    start_ns, end_ns = time_range[0] * 10**6, time_range[1] * 10**6
    read_from = start_ns - interval_ns if fn == "rate" else start_ns
    times = health_history.times_ns
    inside = (times >= read_from) & (times <= end_ns)
    ledger = health_history.ledgers[stream]
    values = np.stack([ledger[field][inside] for _, field in columns], axis=1)
    buckets, aggregated = bucket_aggregate(times[inside], values, interval_ns, "min" if fn == "min" else "max")
    if fn == "rate":
        assert (np.diff(values, axis=0) < 0).any(), "the range should hold the restart"
        buckets, aggregated = non_negative_rates(buckets, aggregated)
        shown = buckets >= start_ns - start_ns % interval_ns
        buckets, aggregated = buckets[shown], aggregated[shown]
        assert np.nanmax(aggregated) > 0
    result = _run(
        influxdb_server, f"health_{panel}_influxql", health_history.db, time_range, interval=interval,
        variables={"stream": stream},
    )
    assert_frame_result(result, [alias for alias, _ in columns], buckets, aggregated, atol=MEAN_TOLERANCE_DB)


def test_drop_rate_of_a_hand_written_counter(influxdb_server: InfluxDBServer, influxdb_database: str) -> None:
    """The numbers themselves: 0, 0, 30, 30, 50, (bridge down 20 s), 80, 5 (restart), 35 frames
    dropped at 10 s steps -> 0, 3, 0, 2, 1 (30 over 30 s), none, 3 frames/s."""
    dropped = [0, 0, 30, 30, 50, None, None, 80, 5, 35]
    first = 1_650_000_000 * 10**9 + 1_250_000_000
    lines = "".join(
        f"{HEALTH_MEASUREMENT},stream_name=SimEEG grafana_dropped={float(v)!r},influxdb_dropped=0.0 "
        f"{first + k * HEALTH_CADENCE_NS}\n"
        for k, v in enumerate(dropped)
        if v is not None
    )
    influxdb_server.write(lines.encode(), influxdb_database)
    bucket0 = first - first % HEALTH_CADENCE_NS
    result = _run(
        influxdb_server, "health_drops_influxql", influxdb_database,
        (_ms(first - 1_250_000_000), _ms(first + 10 * HEALTH_CADENCE_NS)), variables={"stream": "SimEEG"},
    )
    (series,) = single_statement(result)["series"]
    assert series["columns"] == ["time", "grafana", "influxdb"]
    # At the restart (k = 8) grafana_dropped fell: no grafana value, the influxdb one is still there.
    assert series["values"] == [
        [bucket0 + k * HEALTH_CADENCE_NS, pytest.approx(rate) if rate is not None else None, 0]
        for k, rate in [(1, 0), (2, 3), (3, 0), (4, 2), (7, 1), (8, None), (9, 3)]
    ]


def test_health_points_from_the_bridge_encoder(influxdb_server: InfluxDBServer, influxdb_database: str) -> None:
    """What bridge/archive/events.py `encode_health` writes from a real loss ledger feeds the same panels:
    every field the queries read exists, and the drop rate is the ledger's."""
    from bridge.archive.events import encode_health
    from bridge.observe.metrics import Metrics

    metrics = Metrics()
    sinks = {name: metrics.sink(name) for name in SINKS}
    first = 1_650_000_000 * 10**9 + 4_000_000_000
    body, drops = b"", [0, 12, 12, 40]
    for k, total in enumerate(drops):
        sinks["grafana"].drop("stale", total - (drops[k - 1] if k else 0))
        sinks["influxdb"].queue_depth.set(3 * k)
        metrics.stream_connected.set(1)
        body += encode_health(HEALTH_MEASUREMENT, "Lab EEG 2 (v1.0)", metrics, first + k * HEALTH_CADENCE_NS).body
    line = body.decode().splitlines()[0]
    written = {pair.split("=")[0] for pair in line.split(" ")[-2].split(",")}
    assert written == set(HEALTH_COUNTERS) | set(HEALTH_GAUGES), "docs/data-model.md and encode_health disagree"
    for query in queries.QUERIES:
        if query.name.startswith("health_"):
            used = set(re.findall(r'"(\w+)"', query.text)) | set(re.findall(r'r._field == "(\w+)"', query.text))
            assert used & written, query.name
            assert used - written <= {HEALTH_MEASUREMENT, "stream_name", *SINKS, "connected", "spool", "_time",
                                      "_value", "_field"}, (query.name, used - written)
    influxdb_server.write(body, influxdb_database)
    time_range = (_ms(first - 4_000_000_000), _ms(first + 4 * HEALTH_CADENCE_NS))
    variables = {"stream": "Lab EEG 2 (v1.0)"}
    (series,) = single_statement(
        _run(influxdb_server, "health_drops_influxql", influxdb_database, time_range, variables=variables)
    )["series"]
    bucket0 = first - first % HEALTH_CADENCE_NS
    assert series["values"] == [
        [bucket0 + k * HEALTH_CADENCE_NS, pytest.approx(r), 0] for k, r in [(1, 1.2), (2, 0), (3, 2.8)]
    ]
    (series,) = single_statement(
        _run(influxdb_server, "health_backlog_influxql", influxdb_database, time_range, variables=variables)
    )["series"]
    assert [row[2] for row in series["values"]] == [0, 3, 6, 9]


# ---- LSL markers as annotations (measurement eeg_markers) ---------------------------------


def _field_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def marker_lines(stream: str, markers: list[tuple[str, int]]) -> bytes:
    return "".join(
        f"{MARKER_MEASUREMENT},stream_name={_tag(stream)} marker={_field_string(text)} {t}\n" for text, t in markers
    ).encode()


#: Marker texts that line protocol and InfluxQL must carry unchanged.
MARKER_TEXTS = [
    "stimulus/onset",
    'say "hi"',
    "a, b=c d",
    "back\\slash",
    "trailing\\",
    "ünïcode ✓",
    "123",
    "",
    "=~ /^$channel$/",
]


def _influxql_annotation() -> dict[str, Any]:
    board = json.loads(INFLUXQL_DASHBOARD.read_text(encoding="utf-8"))
    (annotation,) = [a for a in board["annotations"]["list"] if a["name"] == "LSL markers"]
    return annotation["target"]


def test_marker_annotation_query(influxdb_server: InfluxDBServer, influxdb_database: str) -> None:
    """Markers of two marker streams, at ns times off any ms boundary (two at the same instant):
    the query returns those inside the range, in time order, string values in the marker
    column, the marker stream in the tag column, times exact; Grafana's column mapping (from
    the provisioned annotation) makes them the expected annotation events."""
    first = 1_700_000_000 * 10**9 + 123_456_789
    task = [(text, first + k * 1_000_000_007) for k, text in enumerate(MARKER_TEXTS)]
    buttons = [("press", first + 3 * 1_000_000_007), ("release", first + 20 * 1_000_000_007)]
    influxdb_server.write(marker_lines("Task Markers", task), influxdb_database)
    influxdb_server.write(marker_lines("Buttons", buttons), influxdb_database)
    # Noise the query must not return: another measurement with a marker field.
    influxdb_server.write(f'other,stream_name=x marker="no" {first + 5}\n'.encode(), influxdb_database)

    time_range = (first // 10**6 + 1, (first + 15 * 1_000_000_007) // 10**6)  # cuts off task[0] and a button
    result = _run(influxdb_server, "markers_annotation_influxql", influxdb_database, time_range)
    expected = sorted(
        [(t, text, "Task Markers") for text, t in task] + [(t, text, "Buttons") for text, t in buttons],
        key=lambda row: (row[0], row[2]),
    )
    expected = [row for row in expected if time_range[0] * 10**6 <= row[0] <= time_range[1] * 10**6]
    assert len(expected) == len(task) - 1 + len(buttons) - 1
    (series,) = single_statement(result)["series"]
    assert series["name"] == MARKER_MEASUREMENT
    assert series["columns"] == ["time", "marker", "stream_name"]
    got = sorted((tuple(row) for row in series["values"]), key=lambda row: (row[0], row[2]))
    assert got == expected
    assert [row[0] for row in series["values"]] == sorted(row[0] for row in expected)

    target = _influxql_annotation()
    assert target["query"] == queries.get("markers_annotation_influxql").text
    events = annotation_events(result, text_column=target["textColumn"], tags_column=target["tagsColumn"])
    assert sorted(events, key=lambda e: (e["time"], e["tags"])) == [
        {"time": t // 10**6, "text": text, "tags": [stream]} for t, text, stream in expected
    ]


def test_markers_from_the_bridge_encoder(influxdb_server: InfluxDBServer, influxdb_database: str) -> None:
    """What bridge/archive/events.py `encode_markers` writes comes back through the shipped query unchanged
    (a newline, which would end the line, becomes a space)."""
    from bridge.archive.events import encode_markers

    first = 1_700_000_000 * 10**9 + 987_654_321
    markers = [(text, first + k) for k, text in enumerate([*MARKER_TEXTS, "two\nlines"])]
    influxdb_server.write(encode_markers(MARKER_MEASUREMENT, "Task Markers", markers).body, influxdb_database)
    result = _run(
        influxdb_server, "markers_annotation_influxql", influxdb_database, (first // 10**6, first // 10**6 + 1)
    )
    (series,) = single_statement(result)["series"]
    assert series["values"] == [[t, text.replace("\n", " "), "Task Markers"] for text, t in markers]


def test_the_doc_shows_the_shipped_coarse_query() -> None:
    """docs/history-and-downsampling.md and dashboards/queries.py hold the same coarse query."""
    blocks = re.findall(r"^```sql influxql-coarse-query\n(.*?)^```", DOC.read_text(), re.MULTILINE | re.DOTALL)
    assert blocks == [queries.get("heatmap_coarse_influxql").text + "\n"]


# ---- where the heatmap draws a bucket (Grafana's transformations + heatmap rule) -----------------

Field = dict[str, Any]  # {"name", "type": "time" | "number", "values"}


def grafana_table_fields(result: Mapping[str, Any]) -> list[Field]:
    """A one-series InfluxQL result as Grafana's table frame: ``Time`` (ms), then the columns."""
    (series,) = single_statement(result)["series"]
    rows = series["values"]
    fields: list[Field] = [{"name": "Time", "type": "time", "values": [row[0] // 10**6 for row in rows]}]
    for i, name in enumerate(series["columns"][1:], start=1):
        fields.append({"name": name, "type": "number", "values": [row[i] for row in rows]})
    return fields


def _interpolate(text: str, scoped: Mapping[str, str]) -> str:
    return re.sub(r"\$(\w+)", lambda m: scoped.get(m[1], m[0]), text)


def apply_transformations(fields: list[Field], transformations: list[Mapping[str, Any]],
                          scoped: Mapping[str, str]) -> list[Field]:
    """The panel's transformations as @grafana/data runs them on one frame (the ones shipped):
    renameByRegex (regex.test then name.replace), calculateField in binary mode with the left side
    matched by type (each matching field followed by a copy of its type holding the result; the right
    side a field by interpolated name, else the interpolated text as a number:
    findFieldValuesWithNameOrConstant), organize's excludeByName."""
    for transformation in transformations:
        options = transformation["options"]
        if transformation["id"] == "renameByRegex":
            pattern = re.compile(options["regex"])
            replacement = options["renamePattern"].replace("$1", r"\1")
            fields = [{**f, "name": pattern.sub(replacement, f["name"]) if pattern.search(f["name"]) else f["name"]}
                      for f in fields]
        elif transformation["id"] == "calculateField":
            assert options["mode"] == "binary" and options["timeSeries"] is False and not options["replaceFields"]
            binary = options["binary"]
            assert binary["left"]["matcher"]["id"] == "byType" and binary["operator"] == "+"
            right_name = _interpolate(binary["right"]["matcher"]["options"], scoped)
            named = [f for f in fields if f["name"] == right_name]
            out: list[Field] = []
            for field in fields:
                out.append(field)
                if field["type"] == binary["left"]["matcher"]["options"]:
                    right = named[0]["values"] if named else [float(right_name)] * len(field["values"])
                    out.append({**field, "name": f"{field['name']} + {right_name}",
                                "values": [a + b for a, b in zip(field["values"], right)]})
            fields = out
        elif transformation["id"] == "organize":
            excluded = {name for name, hide in options["excludeByName"].items() if hide}
            fields = [f for f in fields if f["name"] not in excluded]
        else:
            raise AssertionError(f"transformation {transformation['id']} not modelled")
    return fields


def heatmap_cells(fields: list[Field]) -> tuple[list[tuple[int, int]], list[str], list[list[float]]]:
    """Cells as the heatmap draws them (fields.ts + rowsToCellsHeatmap): x is the first time field,
    rows the numeric fields (numerically sorted when every name is a number); every cell has the
    width of the first gap and ENDS at its row's time (x field "xMax": layout le). Returns
    [(start_ms, end_ms)], the row names, and per cell its values."""
    time_field = next(f for f in fields if f["type"] == "time")
    numbers = [f for f in fields if f["type"] == "number"]
    if all(re.fullmatch(r"[+-]?\d+(\.\d*)?", f["name"]) for f in numbers):
        numbers.sort(key=lambda f: float(f["name"]))
    xs = time_field["values"]
    width = xs[1] - xs[0]
    cells = [(x - width, x) for x in xs]
    values = [[f["values"][i] for f in numbers] for i in range(len(xs))]
    return cells, [f["name"] for f in numbers], values


def _history_spectrogram_panel() -> dict[str, Any]:
    board = json.loads(INFLUXQL_DASHBOARD.read_text(encoding="utf-8"))
    (panel,) = [p for p in board["panels"] if p.get("title") == "$channel"]
    return panel


@pytest.mark.parametrize("interval", INTERVALS)
@pytest.mark.parametrize(("stream", "channel"), [PAIRS[0], PAIRS[-1]])
def test_influxql_history_draws_each_frame_in_the_cell_that_contains_it(
    influxdb_server: InfluxDBServer, filled_history: History, stream: str, channel: str, interval: str
) -> None:
    """InfluxQL stamps a bucket with its start; the heatmap draws a row as the cell ending there.
    With the dashboard's transformations a frame at T lies in (cell start, cell end] of the cell
    that holds its bucket's mean; without them it would lie one bucket later than its cell."""
    panel = _history_spectrogram_panel()
    result = _run(influxdb_server, "heatmap_downsampled_influxql", filled_history.wide_db,
                  _visible_range(filled_history), interval=interval, variables={"stream": stream, "channel": channel})
    interval_ms = duration_ns(interval) // 10**6
    fields = apply_transformations(grafana_table_fields(result), panel["transformations"],
                                   {"__interval_ms": str(interval_ms), "__interval": interval})
    cells, rows, values = heatmap_cells(fields)
    assert rows == list(BINS)
    assert cells[0][1] - cells[0][0] == interval_ms
    times = filled_history.times_ns[VISIBLE]
    frames = filled_history.values[stream, channel][VISIBLE]
    starts, means = interval_means(times, frames, duration_ns(interval))
    for t_ns in times.tolist():
        t_ms = t_ns / 10**6
        (index,) = [i for i, (lo, hi) in enumerate(cells) if lo < t_ms <= hi]
        bucket = int(np.searchsorted(starts, t_ns - t_ns % duration_ns(interval)))
        np.testing.assert_allclose(values[index], means[bucket], rtol=0, atol=MEAN_TOLERANCE_DB)


def test_flux_history_needs_no_shift() -> None:
    """aggregateWindow stamps window ends by default (timeSrc "_stop"): nothing to shift."""
    board = json.loads((ROOT / "dashboards" / "eeg-spectrogram-history-flux.json").read_text(encoding="utf-8"))
    (panel,) = [p for p in board["panels"] if p.get("title") == "$channel"]
    assert not panel.get("transformations")
    text = queries.get("heatmap_downsampled_flux").text
    assert "aggregateWindow(every: v.windowPeriod" in text and "timeSrc" not in text


# ---- band power and quality (eeg_bands, eeg_quality; docs/data-model.md) -------------------------

BANDS = ("delta", "theta", "alpha", "beta", "gamma")
QUALITY_NUMBERS = ("std", "dc_offset", "rail_fraction", "line_noise_db", "hf_ratio_db")


@dataclass(frozen=True)
class BandHistory:
    db: str
    times_ns: npt.NDArray[np.int64]
    band_db: dict[tuple[str, str], npt.NDArray[np.float64]]  # frames x bands
    band_rel: dict[tuple[str, str], npt.NDArray[np.float64]]
    state: dict[tuple[str, str], npt.NDArray[np.int64]]


@pytest.fixture(scope="module")
def band_history(influxdb_server: InfluxDBServer) -> Iterator[BandHistory]:
    """Contract-shaped points (docs/data-model.md), written here, not by the bridge."""
    first = (time.time_ns() // MINUTE_NS - 20) * MINUTE_NS + 3_125_000_000
    times = first + CADENCE_NS * np.arange(FRAMES, dtype=np.int64)
    rng = np.random.default_rng(13)
    history = BandHistory(unique_database_name("bands"), times, {}, {}, {})
    influxdb_server.create_database(history.db)
    lines = []
    for pair in PAIRS:
        stream, channel = pair
        history.band_db[pair] = rng.integers(-10_000, 40_001, (FRAMES, len(BANDS))) / 1000
        history.band_rel[pair] = rng.integers(0, 1001, (FRAMES, len(BANDS))) / 1000
        history.state[pair] = rng.integers(0, 3, FRAMES)
        tags = f"channel={_tag(channel)},stream_name={_tag(stream)}"
        for k, t in enumerate(times.tolist()):
            bands = ",".join(f"{b}={history.band_db[pair][k, i]:.3f},{b}_rel={history.band_rel[pair][k, i]:.3f}"
                             for i, b in enumerate(BANDS))
            lines.append(f"eeg_bands,{tags} {bands} {t}\n")
            numbers = ",".join(f"{n}={1.5 * j:.3f}" for j, n in enumerate(QUALITY_NUMBERS) if j != 3)  # one NaN left out
            lines.append(f"eeg_quality,{tags} {numbers},state={history.state[pair][k]}i,flags=0i {t}\n")
    try:
        influxdb_server.write("".join(lines).encode(), history.db)
        yield history
    finally:
        influxdb_server.drop_database(history.db)


def _per_channel_series(result: Mapping[str, Any]) -> dict[str, tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]]:
    series = single_statement(result).get("series", [])
    return {
        s["tags"]["channel"]: (np.array([r[0] for r in s["values"]], np.int64), np.array([r[1] for r in s["values"]]))
        for s in series
    }


@pytest.mark.parametrize("interval", INTERVALS)
@pytest.mark.parametrize("stream", list(STREAMS))
def test_band_and_quality_queries(influxdb_server: InfluxDBServer, band_history: BandHistory, stream: str,
                                  interval: str) -> None:
    times = band_history.times_ns[VISIBLE]
    time_range = _ms(int(times[0])), _ms(int(times[-1]))
    channels = list(STREAMS[stream])
    variables = {"stream": stream, "channel": channels, "band": "alpha"}
    alpha = BANDS.index("alpha")
    checks = {
        "bands_heatmap_influxql": lambda pair: band_history.band_db[pair][VISIBLE, alpha : alpha + 1],
        "bands_relative_influxql": lambda pair: band_history.band_rel[pair][VISIBLE, alpha : alpha + 1],
    }
    for name, expected in checks.items():
        got = _per_channel_series(_run(influxdb_server, name, band_history.db, time_range, interval, variables))
        assert sorted(got) == sorted(channels), name
        for channel in channels:
            starts, means = interval_means(times, expected((stream, channel)), duration_ns(interval))
            np.testing.assert_array_equal(got[channel][0], starts)
            np.testing.assert_allclose(got[channel][1], means[:, 0], rtol=0, atol=MEAN_TOLERANCE_DB)
    got = _per_channel_series(_run(influxdb_server, "quality_timeline_influxql", band_history.db, time_range,
                                   interval, variables))
    assert sorted(got) == sorted(channels)
    for channel in channels:
        state = band_history.state[stream, channel][VISIBLE]
        starts = times - times % duration_ns(interval)
        buckets = np.unique(starts)
        worst = np.array([state[starts == b].max() for b in buckets], dtype=np.float64)
        np.testing.assert_array_equal(got[channel][0], buckets)
        np.testing.assert_array_equal(got[channel][1], worst)


def test_band_and_quality_queries_read_what_the_bridge_encoder_writes(influxdb_server: InfluxDBServer,
                                                                     influxdb_database: str) -> None:
    """The dashboards' band and quality queries on lines from the bridge's own DerivedEncoder."""
    from bridge.codecs.line_protocol import DerivedEncoder
    from bridge.frame import Band, ChannelQuality, FrameLayout, SpectrumFrame

    bands = tuple(Band(n, lo, hi) for n, lo, hi in
                  (("delta", 1, 4), ("theta", 4, 8), ("alpha", 8, 13), ("beta", 13, 30), ("gamma", 30, 45)))
    channels = ("Cz", "T7")
    layout = FrameLayout(QUOTED_STREAM, channels, np.linspace(0, 125, 33), 250.0, bands)
    rng = np.random.default_rng(8)
    first = (time.time_ns() // MINUTE_NS - 10) * MINUTE_NS + 1_125_000_000
    frames, band_db, states = [], [], []
    for k in range(40):
        db = rng.uniform(-10, 40, (len(bands), 2)).astype(np.float32)
        state = rng.integers(0, 3, 2).astype(np.int8)
        quality = ChannelQuality(state, np.zeros(2, np.uint8), np.zeros((5, 2), np.float32))
        t = first + k * CADENCE_NS
        frames.append(SpectrumFrame(layout, k, t, t, np.zeros(layout.shape, np.float32), band_db=db,
                                    band_rel=np.full_like(db, 0.2), quality=quality))
        band_db.append(db)
        states.append(state)
    influxdb_server.write(DerivedEncoder().encode_many(frames).body, influxdb_database)
    times = first + CADENCE_NS * np.arange(40, dtype=np.int64)
    time_range = _ms(int(times[0])), _ms(int(times[-1]))
    variables = {"stream": QUOTED_STREAM, "channel": list(channels), "band": "alpha"}
    alpha = [b.name for b in bands].index("alpha")
    got = _per_channel_series(_run(influxdb_server, "bands_heatmap_influxql", influxdb_database, time_range,
                                   "10s", variables))
    for c, channel in enumerate(channels):
        written = np.array([float(f"{db[alpha, c]:.3f}") for db in band_db])[:, None]
        starts, means = interval_means(times, written, duration_ns("10s"))
        np.testing.assert_array_equal(got[channel][0], starts)
        np.testing.assert_allclose(got[channel][1], means[:, 0], rtol=0, atol=MEAN_TOLERANCE_DB)
    got = _per_channel_series(_run(influxdb_server, "quality_timeline_influxql", influxdb_database, time_range,
                                   "10s", variables))
    for c, channel in enumerate(channels):
        state = np.array([s[c] for s in states])
        buckets = np.unique(times - times % duration_ns("10s"))
        worst = [state[(times - times % duration_ns("10s")) == b].max() for b in buckets]
        np.testing.assert_array_equal(got[channel][1], np.array(worst, dtype=np.float64))
