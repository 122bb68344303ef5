"""Every shipped InfluxQL query, interpolated as Grafana does, run on a real InfluxDB 1.6.7.

The data comes from an independent writer below (plain f-strings following docs/data-model.md),
not from the bridge, so a shared misunderstanding cannot make both sides agree. The downsampling
recipe is read out of docs/history-and-downsampling.md and run the same way.
"""

from __future__ import annotations

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
    assert_downsampled_heatmap_result,
    assert_heatmap_result,
    assert_long_heatmap_result,
    assert_tag_values,
    duration_ns,
    grafana_influxql,
    interval_means,
    load_queries,
)
from tests.influxdb_server import InfluxDBServer, quote_ident

pytestmark = pytest.mark.influxdb

queries = load_queries()

DOC = Path(__file__).resolve().parents[1] / "docs" / "history-and-downsampling.md"
DOC_DATABASE = '"neuroscience"'

# docs/data-model.md, restated here on purpose rather than imported from the bridge.
MEASUREMENT = "eeg_spectrum"
STREAMS: dict[str, tuple[str, ...]] = {"SimEEG": ("Cz", "Fz", "Pz"), "Lab EEG 2": ("C3", "Fz", "O1-ref")}
BINS = tuple(f"{k * 500 / 64:06.2f}" for k in range(33))  # 500 Hz, nperseg 64: 000.00 ... 250.00
FRAMES = 200
CADENCE_NS = 750_000_000  # not a divisor of 10 s: buckets hold 13 or 14 frames
MINUTE_NS = 60 * 10**9
PAIRS = [(stream, channel) for stream, channels in STREAMS.items() for channel in channels]
# Frames 20..179: a Grafana range that cuts the data on both sides.
VISIBLE = slice(20, 180)
INTERVALS = ("10s", "1m")


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
    }
    assert {q.name for q in queries.QUERIES if q.language == "influxql"} == tested


def test_queries_use_the_data_model_names() -> None:
    assert (queries.MEASUREMENT, queries.STREAM_TAG, queries.CHANNEL_TAG) == (MEASUREMENT, "stream_name", "channel")
    assert (queries.BIN_TAG, queries.POWER_FIELD) == ("frequency_bin", "power")


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
    (coarse_query,) = doc_statements("influxql-coarse-query", db)
    for stream, channel in PAIRS:
        minutes = influxdb_server.query(
            f"SELECT /^mean_/ FROM \"coarse\".\"eeg_spectrum_1m\" WHERE \"stream_name\" = '{stream}' "
            f"AND \"channel\" = '{channel}'",
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
