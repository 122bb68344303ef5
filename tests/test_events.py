"""LSL markers and the loss ledger, archived next to the spectra."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pylsl

from bridge.archive.events import SameTime, encode_health, encode_markers
from bridge.archive.spool import Spool
from bridge.config import InfluxSettings, TlsSettings
from bridge.observe.metrics import Metrics
from bridge.sinks.influxdb import INBOX_FRAMES, InfluxSink
from dashboards import queries
from tests.bridge_process import free_port, wait_until
from tests.fault_tools import scrape
from tests.fixtures_lsl import Player, make_outlet, unique
from tests.influxdb_server import InfluxDBServer


def test_marker_lines_escape_everything_that_matters() -> None:
    lines = encode_markers("eeg_markers", "Task Markers", [('say "hi"\\now', 5), ("a,b=c\nd", 6)])
    assert lines.points == 2
    assert lines.body == (
        b'eeg_markers,stream_name=Task\\ Markers marker="say \\"hi\\"\\\\now" 5\n'
        b'eeg_markers,stream_name=Task\\ Markers marker="a,b=c d" 6\n'
    )


def test_markers_sharing_a_time_get_their_own_series_at_that_exact_time() -> None:
    """InfluxDB keeps one point per series and time: the 2nd, 3rd... marker at one nanosecond
    get tag n=1, n=2..., also when they arrive in separate chunks (one SameTime per stream)."""
    same_time = SameTime()
    first = encode_markers("eeg_markers", "M", [("a", 5), ("b", 5), ("c", 6)], same_time)
    second = encode_markers("eeg_markers", "M", [("d", 6), ("e", 6), ("f", 7)], same_time)
    assert (first.points, second.points) == (3, 3)
    assert first.body + second.body == (
        b'eeg_markers,stream_name=M marker="a" 5\n'
        b'eeg_markers,n=1,stream_name=M marker="b" 5\n'
        b'eeg_markers,stream_name=M marker="c" 6\n'
        b'eeg_markers,n=1,stream_name=M marker="d" 6\n'
        b'eeg_markers,n=2,stream_name=M marker="e" 6\n'
        b'eeg_markers,stream_name=M marker="f" 7\n'
    )


def test_events_the_archive_cannot_take_are_counted(tmp_path: Path) -> None:
    settings = InfluxSettings(
        url="http://influx.test", api="v1", token=None, org="lab", bucket="eeg", username=None, password=None,
        measurement="eeg_spectrum", schema="wide", batch_size=10, batch_interval_sec=1.0, timeout_sec=2.0,
        max_body_bytes=5_000_000, tls=TlsSettings(ca_bundle=None, insecure=False),
    )
    metrics = Metrics()
    sink = InfluxSink(settings, metrics, Spool(tmp_path / "spool", 10**9), writer=None)  # not started: nothing taken
    health = encode_health("bridge_health", "S", metrics, 1)
    for _ in range(INBOX_FRAMES):
        sink.offer_events(health)
    assert metrics.value("eeg_bridge_events_dropped_total", kind="health") == 0
    sink.offer_events(encode_markers("eeg_markers", "M", [("a", 1), ("b", 2)]))
    sink.offer_events(health)
    assert metrics.value("eeg_bridge_events_dropped_total", kind="marker") == 2
    assert metrics.value("eeg_bridge_events_dropped_total", kind="health") == 1


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
    eeg, markers, port = unique("eeg"), unique("markers"), free_port()
    outlet = make_outlet(eeg, channels=2, rate=250.0)
    marker_outlet = make_outlet(markers, channels=1, rate=0.0, fmt="string", type_="Markers")
    created = pylsl.local_clock()
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
            "METRICS_PORT": str(port),
        }
    )
    # Pushed the moment the bridge says it follows the stream: they must all arrive.
    process.wait_for_output("following marker stream")
    announced = pylsl.local_clock()
    players.append(Player(outlet, np.random.default_rng(0).standard_normal((250 * 3, 2)).astype(np.float32), 250.0, loop=True).start())
    offset = time.time() - pylsl.local_clock()
    stamp = pylsl.local_clock()
    burst = [("stimulus/left", stamp), ('say "go", now', stamp), ("third at the same time", stamp),
             ("next", stamp + 0.001)]
    marker_outlet.push_chunk([[text] for text, _ in burst], [t for _, t in burst])

    def stored(q: str) -> list[list]:
        series = influxdb_server.query(q, db=influxdb_database)["results"][0].get("series", [])
        return series[0]["values"] if series else []

    wait_until(lambda: len(stored('SELECT "marker" FROM "eeg_markers"')) == len(burst), 60, process.output)
    # one more at the time of the last one, in a later chunk
    late = ("late, same time as next", stamp + 0.001)
    marker_outlet.push_sample([late[0]], late[1])
    sent = burst + [late]
    wait_until(lambda: len(stored('SELECT "marker" FROM "eeg_markers"')) == len(sent), 60, process.output)
    wait_until(lambda: len(stored('SELECT "frames_computed" FROM "bridge_health" WHERE "frames_computed" > 0')) >= 1, 60, process.output)
    unwatched = scrape(port).value("eeg_bridge_marker_unwatched_seconds_total")
    assert process.terminate() == 0
    # the window the bridge reports: from the outlet's creation to the inlet's opening
    assert 0 < unwatched <= announced - created

    # Through the dashboards' annotation query, as Grafana runs it: every marker, at its own time.
    annotation = queries.get("markers_annotation_influxql").text.replace("$timeFilter", "time >= 0")
    rows = stored(annotation)
    expected = [(int(round((t + offset) * 1e9)), text) for text, t in sent]
    assert sorted((r[1] for r in rows)) == sorted(text for text, _ in sent)
    assert {r[2] for r in rows} == {markers}
    assert [r[0] for r in rows] == sorted(r[0] for r in rows)
    by_text = {r[1]: r[0] for r in rows}
    for time_ns, text in expected:
        assert abs(by_text[text] - time_ns) < 20_000_000  # the LSL-to-Unix offset, taken at another moment
    same = {text: by_text[text] for text, _ in burst[:3]}
    assert len(set(same.values())) == 1  # the burst kept its one exact time
    assert by_text["next"] == by_text[late[0]]
    health = stored('SELECT * FROM "bridge_health"')
    columns = influxdb_server.query('SELECT * FROM "bridge_health" LIMIT 1', db=influxdb_database)["results"][0]["series"][0]["columns"]
    assert {"frames_computed", "influxdb_sent", "influxdb_dropped", "seconds_since_sample", "stream_name"} <= set(columns)
    frames = [row[columns.index("frames_computed")] for row in health]
    assert frames == sorted(frames)  # counters only grow
    # the last point, written at the clean stop after the last frame, holds the final count:
    # exactly the rows stored for each channel
    counts = influxdb_server.query('SELECT count(*) FROM "eeg_spectrum" GROUP BY "channel"', db=influxdb_database)
    per_channel = {s["tags"]["channel"]: set(s["values"][0][1:]) for s in counts["results"][0]["series"]}
    assert len(per_channel) == 2 and frames[-1] > 0
    assert all(c == {frames[-1]} for c in per_channel.values()), (per_channel, frames[-1])
