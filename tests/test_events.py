"""LSL markers and the loss ledger, archived next to the spectra."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pylsl

from bridge.archive.events import encode_health, encode_markers
from bridge.observe.metrics import Metrics
from tests.bridge_process import wait_until
from tests.fixtures_lsl import Player, make_outlet, unique
from tests.influxdb_server import InfluxDBServer


def test_marker_lines_escape_everything_that_matters() -> None:
    lines = encode_markers("eeg_markers", "Task Markers", [('say "hi"\\now', 5), ("a,b=c\nd", 6)])
    assert lines.points == 2
    assert lines.body == (
        b'eeg_markers,stream_name=Task\\ Markers marker="say \\"hi\\"\\\\now" 5\n'
        b'eeg_markers,stream_name=Task\\ Markers marker="a,b=c d" 6\n'
    )


def test_health_point_carries_the_whole_ledger() -> None:
    metrics = Metrics()
    metrics.frames_computed.inc(7)
    sink = metrics.sink("influxdb")
    sink.succeeded(5)
    sink.drop("rejected", 2)
    line = encode_health("bridge_health", "SimEEG", metrics, 123).body.decode()
    head, fields, ts = line.rstrip("\n").split(" ")
    assert head == "bridge_health,stream_name=SimEEG" and ts == "123"
    values = dict(f.split("=") for f in fields.split(","))
    assert values["frames_computed"] == "7.0"
    assert values["influxdb_sent"] == "5.0" and values["influxdb_dropped"] == "2.0"


def test_markers_and_health_reach_the_archive(
    influxdb_server: InfluxDBServer, influxdb_database: str, bridges, players: list[Player], tmp_path: Path
) -> None:
    eeg, markers = unique("eeg"), unique("markers")
    outlet = make_outlet(eeg, channels=2, rate=250.0)
    marker_outlet = make_outlet(markers, channels=1, rate=0.0, fmt="string", type_="Markers")
    process = bridges(
        {
            "LSL_STREAM_NAME": eeg,
            "LSL_MARKER_STREAM_NAME": markers,
            "GRAFANA_URL": "",
            "INFLUXDB_URL": influxdb_server.url,
            "INFLUXDB_API": "v1",
            "INFLUXDB_BUCKET": influxdb_database,
            "SPECTRUM_NPERSEG": "64",
            "SPECTRUM_NOVERLAP": "32",
            "BATCH_INTERVAL_SEC": "0.3",
            "HEALTH_WRITE_INTERVAL_SEC": "0.5",
            "SPOOL_DIR": str(tmp_path / "spool"),
        }
    )
    process.wait_for_output("following marker stream")
    players.append(Player(outlet, np.random.default_rng(0).standard_normal((250 * 3, 2)).astype(np.float32), 250.0, loop=True).start())
    offset = time.time() - pylsl.local_clock()
    sent = [("stimulus/left", pylsl.local_clock()), ('say "go", now', pylsl.local_clock() + 0.001)]
    for text, stamp in sent:
        marker_outlet.push_sample([text], stamp)

    def stored(q: str) -> list[list]:
        series = influxdb_server.query(q, db=influxdb_database)["results"][0].get("series", [])
        return series[0]["values"] if series else []

    wait_until(lambda: len(stored('SELECT "marker" FROM "eeg_markers"')) == 2, 60, process.output)
    wait_until(lambda: len(stored('SELECT "frames_computed" FROM "bridge_health" WHERE "frames_computed" > 0')) >= 1, 60, process.output)
    assert process.terminate() == 0
    rows = stored('SELECT "marker", "stream_name" FROM "eeg_markers"')
    assert [r[1] for r in rows] == [text for text, _ in sent]
    assert {r[2] for r in rows} == {markers}
    for (time_ns, *_), (_, stamp) in zip(rows, sent):
        assert abs(time_ns / 1e9 - (stamp + offset)) < 0.02
    health = stored('SELECT * FROM "bridge_health"')
    columns = influxdb_server.query('SELECT * FROM "bridge_health" LIMIT 1', db=influxdb_database)["results"][0]["series"][0]["columns"]
    assert {"frames_computed", "influxdb_sent", "influxdb_dropped", "seconds_since_sample", "stream_name"} <= set(columns)
    frames = [row[columns.index("frames_computed")] for row in health]
    assert frames == sorted(frames)  # counters only grow
