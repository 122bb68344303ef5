"""End to end into a real InfluxDB 1.x: the bridge (a subprocess) on a real LSL outlet with known
content; what is stored is read back with InfluxQL and checked against an independent spectrum."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pylsl
import pytest
import scipy.signal

from tests.bridge_process import BridgeProcess, wait_until
from tests.fixtures_lsl import Player, make_outlet, unique
from tests.history_assertions import assert_heatmap_result, grafana_influxql, load_queries
from tests.influxdb_server import InfluxDBServer

FS, NPERSEG, NOVERLAP = 250.0, 64, 32
HOP = NPERSEG - NOVERLAP
LABELS = ["Fz", "C3", "O1", "O 2"]  # "O 2" must be stored under its safe name "O_2"
STORED_CHANNELS = ["Fz", "C3", "O1", "O_2"]
SAMPLES = 1600  # 6.4 s of signal -> 49 frames
FRAMES = (SAMPLES - NPERSEG) // HOP + 1
#: Written with 3 decimals (0.0005 rounding) of a float32 value (half an ULP below 1e-5 here).
VALUE_TOLERANCE = 0.0005 + 1e-5


def known_signal() -> np.ndarray:
    rng = np.random.default_rng(2024)
    t = np.arange(SAMPLES) / FS
    x = rng.standard_normal((SAMPLES, len(LABELS))) * 5.0
    x[:, 2] += 30 * np.sin(2 * np.pi * 10 * t)  # alpha on O1
    x[:, 0] += 10 * np.sin(2 * np.pi * 50 * t)  # line noise on Fz
    return x.astype(np.float32)


def expected_bins() -> list[str]:
    """Independent of the encoder: zero-padded to 3 integer digits, 2 decimals (steps of 3.9 Hz)."""
    return [f"{f:06.2f}" for f in np.fft.rfftfreq(NPERSEG, 1 / FS)]


def expected_db(x: np.ndarray) -> np.ndarray:
    """(frames, channels, bins) from scipy on the very samples that were pushed."""
    _, _, power = scipy.signal.spectrogram(
        x.T.astype(np.float64), FS, window="hann", nperseg=NPERSEG, noverlap=NOVERLAP, scaling="density", mode="psd"
    )
    return np.transpose(10 * np.log10(power + 1e-30), (2, 0, 1))


@dataclass
class Archived:
    db: str
    stream: str
    process: BridgeProcess
    exit_code: int
    signal: np.ndarray
    player_start: float  # LSL local_clock of sample 0
    clock_offset: float  # time.time() - local_clock() as seen by the test


def run_bridge_into(
    server: InfluxDBServer, db: str, bridges: Callable[..., BridgeProcess], players: list[Player], tmp_path: Path, schema: str
) -> Archived:
    stream = unique("arch")
    outlet = make_outlet(stream, channels=len(LABELS), rate=FS, labels=LABELS)
    process = bridges(
        {
            "LSL_STREAM_NAME": stream,
            "GRAFANA_URL": "",
            "INFLUXDB_URL": server.url,
            "INFLUXDB_API": "v1",
            "INFLUXDB_BUCKET": db,
            "INFLUXDB_SCHEMA": schema,
            "SPECTRUM_NPERSEG": str(NPERSEG),
            "SPECTRUM_NOVERLAP": str(NOVERLAP),
            "BATCH_SIZE": "7",
            "BATCH_INTERVAL_SEC": "0.5",
            "SPOOL_DIR": str(tmp_path / f"spool-{schema}"),
        }
    )
    process.wait_for_output("connected to")
    x = known_signal()
    player = Player(outlet, x, FS, chunk=16)
    players.append(player)
    player.start()
    offset = time.time() - pylsl.local_clock()
    assert player.done.wait(60)
    wait_until(lambda: len(stored_times(server, db, schema)) >= FRAMES, 60, lambda: process.output()[-2000:])
    code = process.terminate()
    return Archived(db, stream, process, code, x, player.start_time, offset)


def stored_times(server: InfluxDBServer, db: str, schema: str) -> list[int]:
    """Times of the frames stored so far for one channel (and, in the long schema, one bin)."""
    if schema == "wide":
        q = 'SELECT "000.00" FROM "eeg_spectrum" WHERE "channel" = \'Fz\''
    else:
        q = 'SELECT "power" FROM "eeg_spectrum" WHERE "channel" = \'Fz\' AND "frequency_bin" = \'000.00\''
    series = server.query(q, db=db)["results"][0].get("series", [])
    return [row[0] for row in series[0]["values"]] if series else []


@pytest.fixture
def wide(influxdb_server: InfluxDBServer, influxdb_database: str, bridges, players, tmp_path: Path) -> Archived:
    return run_bridge_into(influxdb_server, influxdb_database, bridges, players, tmp_path, "wide")


@pytest.fixture
def long(influxdb_server: InfluxDBServer, influxdb_database: str, bridges, players, tmp_path: Path) -> Archived:
    return run_bridge_into(influxdb_server, influxdb_database, bridges, players, tmp_path, "long")


def check_times(times: np.ndarray, archived: Archived) -> None:
    """Unix-time ns of the window centres, on the exact hop cadence."""
    expected = (archived.player_start + (np.arange(FRAMES) * HOP + NPERSEG / 2) / FS + archived.clock_offset) * 1e9
    assert np.all(np.abs(times - expected) < 20e6)  # same machine: the clock offsets agree to ms
    assert np.all(np.abs(np.diff(times) - HOP / FS * 1e9) < 1e4)  # 128 ms steps, within 10 µs
    assert abs(times[0] / 1e9 - time.time()) < 120


def test_wide_archive_is_complete_exact_and_on_time(wide: Archived, influxdb_server: InfluxDBServer) -> None:
    assert wide.exit_code == 0, wide.process.output()[-2000:]
    db = wide.db
    tags = influxdb_server.query('SHOW TAG KEYS FROM "eeg_spectrum"', db=db)["results"][0]["series"][0]["values"]
    assert [t[0] for t in tags] == ["channel", "stream_name"]
    fields = influxdb_server.query('SHOW FIELD KEYS FROM "eeg_spectrum"', db=db)["results"][0]["series"][0]["values"]
    assert [f[0] for f in fields] == expected_bins() and {f[1] for f in fields} == {"float"}
    channels = influxdb_server.query('SHOW TAG VALUES FROM "eeg_spectrum" WITH KEY = "channel"', db=db)
    assert sorted(v[1] for v in channels["results"][0]["series"][0]["values"]) == sorted(STORED_CHANNELS)
    reference = expected_db(wide.signal)
    assert reference.shape[0] == FRAMES
    for c, channel in enumerate(STORED_CHANNELS):
        result = influxdb_server.query(
            f'SELECT * FROM "eeg_spectrum" WHERE "channel" = \'{channel}\' AND "stream_name" = \'{wide.stream}\'', db=db
        )
        (series,) = result["results"][0]["series"]
        assert series["columns"] == ["time", *expected_bins(), "channel", "stream_name"]
        rows = series["values"]
        assert len(rows) == FRAMES  # every computed frame exactly once
        values = np.array([row[1 : 1 + len(expected_bins())] for row in rows], dtype=np.float64)
        assert np.max(np.abs(values - reference[:, c, :])) <= VALUE_TOLERANCE
        check_times(np.array([row[0] for row in rows], dtype=np.int64), wide)


def test_long_archive_is_complete_and_exact(long: Archived, influxdb_server: InfluxDBServer) -> None:
    assert long.exit_code == 0, long.process.output()[-2000:]
    db = long.db
    tags = influxdb_server.query('SHOW TAG KEYS FROM "eeg_spectrum"', db=db)["results"][0]["series"][0]["values"]
    assert [t[0] for t in tags] == ["channel", "frequency_bin", "stream_name"]
    fields = influxdb_server.query('SHOW FIELD KEYS FROM "eeg_spectrum"', db=db)["results"][0]["series"][0]["values"]
    assert fields == [["power", "float"]]
    count = influxdb_server.query('SELECT COUNT("power") FROM "eeg_spectrum"', db=db)["results"][0]["series"][0]
    assert count["values"][0][1] == FRAMES * len(STORED_CHANNELS) * len(expected_bins())
    reference = expected_db(long.signal)
    result = influxdb_server.query(
        'SELECT "power" FROM "eeg_spectrum" WHERE "channel" = \'O1\' GROUP BY "frequency_bin"', db=db
    )
    series = result["results"][0]["series"]
    assert [s["tags"]["frequency_bin"] for s in series] == expected_bins()
    for b, one in enumerate(series):
        values = np.array([row[1] for row in one["values"]])
        assert values.size == FRAMES
        assert np.max(np.abs(values - reference[:, 2, b])) <= VALUE_TOLERANCE
    check_times(np.array([row[0] for row in series[0]["values"]], dtype=np.int64), long)


def test_shipped_heatmap_query_reads_what_the_bridge_wrote(wide: Archived, influxdb_server: InfluxDBServer) -> None:
    """The dashboards' raw InfluxQL heatmap query, interpolated as Grafana does, on bridge data."""
    queries = load_queries()
    raw = [q for q in queries.QUERIES if q.language == "influxql" and q.schema == "wide" and "raw" in q.name]
    assert raw, "no raw wide InfluxQL heatmap query shipped"
    rows = influxdb_server.query(
        f'SELECT * FROM "eeg_spectrum" WHERE "channel" = \'O1\' AND "stream_name" = \'{wide.stream}\'', db=wide.db
    )["results"][0]["series"][0]["values"]
    times = np.array([r[0] for r in rows], dtype=np.int64)
    values = np.array([r[1 : 1 + len(expected_bins())] for r in rows], dtype=np.float64)
    for query in raw:
        text = grafana_influxql(
            query.text,
            from_ms=int(times[0] // 10**6) - 1000,
            to_ms=int(times[-1] // 10**6) + 1000,
            variables={"stream": wide.stream, "channel": "O1"},
        )
        assert_heatmap_result(influxdb_server.query(text, db=wide.db), expected_bins(), times, values)


def test_offline_recording_is_uploaded_by_replay(
    influxdb_server: InfluxDBServer, influxdb_database: str, bridges, players: list[Player], tmp_path: Path
) -> None:
    """No InfluxDB during the session: everything goes to the spool; `eeg-bridge replay` uploads it."""
    stream = unique("offline")
    outlet = make_outlet(stream, channels=len(LABELS), rate=FS, labels=LABELS)
    spool = tmp_path / "offline-spool"
    common = {"SPOOL_DIR": str(spool), "INFLUXDB_API": "v1", "INFLUXDB_BUCKET": influxdb_database}
    process = bridges({**common, "LSL_STREAM_NAME": stream, "GRAFANA_URL": "", "INFLUXDB_URL": "",
                       "SPECTRUM_NPERSEG": str(NPERSEG), "SPECTRUM_NOVERLAP": str(NOVERLAP), "HEALTH_WRITE_INTERVAL_SEC": "0"})
    process.wait_for_output("connected to")
    player = Player(outlet, known_signal(), FS, chunk=16)
    players.append(player)
    player.start()
    assert player.done.wait(60)

    def spooled() -> int:
        return sum(int(p.name.split("-")[1]) for p in spool.glob("*.lp"))

    wait_until(lambda: spooled() == FRAMES, 60, process.output)  # durable within BATCH_INTERVAL_SEC
    assert process.terminate() == 0
    assert spooled() == FRAMES
    assert stored_times(influxdb_server, influxdb_database, "wide") == []
    replay = bridges({**common, "INFLUXDB_URL": influxdb_server.url}, args=("replay",))
    assert replay.proc is not None and replay.proc.wait(120) == 0, replay.output()
    assert len(stored_times(influxdb_server, influxdb_database, "wide")) == FRAMES
    assert not list(spool.glob("*.lp"))
    assert f"replay done: {FRAMES} frames uploaded" in replay.output()
