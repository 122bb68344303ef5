"""The whole bridge as a subprocess: a real LSL outlet in, the Grafana Live stand-in and a real
InfluxDB out. What the browser would get and what the archive holds are checked against an
independent spectrum of the samples that were pushed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.bridge_process import REPO, wait_until
from tests.fixtures_grafana import ADMIN_TOKEN, EDITOR_TOKEN
from tests.fixtures_lsl import Player, make_outlet, unique
from tests.grafana_standin import GrafanaLiveStandIn, live_channel
from tests.influxdb_server import InfluxDBServer
from tests.test_archive import FRAMES, FS, HOP, LABELS, NOVERLAP, NPERSEG, STORED_CHANNELS, VALUE_TOLERANCE, expected_bins, expected_db, known_signal

LIVE_DASHBOARD = REPO / "dashboards" / "eeg-live-spectrogram.json"


def bridge_env(name: str, grafana: GrafanaLiveStandIn, server: InfluxDBServer, db: str, tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        "LSL_STREAM_NAME": name,
        "GRAFANA_URL": grafana.url,
        "GRAFANA_TOKEN": EDITOR_TOKEN,
        "GRAFANA_QUEUE_FRAMES": "1000",  # a loaded CI machine must not make this test drop stale frames
        "INFLUXDB_URL": server.url,
        "INFLUXDB_API": "v1",
        "INFLUXDB_BUCKET": db,
        "SPECTRUM_NPERSEG": str(NPERSEG),
        "SPECTRUM_NOVERLAP": str(NOVERLAP),
        "BATCH_INTERVAL_SEC": "0.5",
        "SPOOL_DIR": str(tmp_path / "spool"),
        **extra,
    }


def stored_rows(server: InfluxDBServer, db: str, channel: str = "Fz") -> int:
    q = f'SELECT COUNT("000.00") FROM "eeg_spectrum" WHERE "channel" = \'{channel}\''
    series = server.query(q, db=db)["results"][0].get("series")
    return int(series[0]["values"][0][1]) if series else 0


def nodes(node: object) -> list[dict]:
    """Every JSON object inside a dashboard, depth first."""
    found: list[dict] = []
    if isinstance(node, dict):
        found.append(node)
        node = list(node.values())
    if isinstance(node, list):
        for value in node:
            found.extend(nodes(value))
    return found


def dashboard_live_channels() -> set[str]:
    """The channel strings the live dashboard subscribes to, interpolated as Grafana would."""
    dashboard = json.loads(LIVE_DASHBOARD.read_text())
    stream_id = {v["name"]: v for v in dashboard["templating"]["list"]}["live_stream"]["query"]
    return {n["channel"].replace("$live_stream", stream_id) for n in nodes(dashboard) if isinstance(n.get("channel"), str)}


def dashboard_filter_le() -> float:
    heatmaps = [n for n in nodes(json.loads(LIVE_DASHBOARD.read_text())) if n.get("type") == "heatmap"]
    assert heatmaps
    return max(h["options"]["filterValues"]["le"] for h in heatmaps)


def test_live_and_archive_receive_every_frame(
    grafana_live: GrafanaLiveStandIn, influxdb_server: InfluxDBServer, influxdb_database: str, bridges, players: list[Player], tmp_path: Path
) -> None:
    name = unique("e2e")
    outlet = make_outlet(name, channels=len(LABELS), rate=FS, labels=LABELS)
    process = bridges(bridge_env(name, grafana_live, influxdb_server, influxdb_database, tmp_path))
    process.wait_for_output("connected to")
    x = known_signal()
    player = Player(outlet, x, FS, chunk=16)
    players.append(player)
    player.start()
    assert player.done.wait(60)
    channels = [live_channel("eeg", c) for c in STORED_CHANNELS]
    wait_until(lambda: all(grafana_live.frames_published()[c] >= FRAMES for c in channels), 60, process.output)
    wait_until(lambda: stored_rows(influxdb_server, influxdb_database) >= FRAMES, 60, process.output)
    assert process.terminate() == 0  # SIGTERM: flush and exit 0
    assert stored_rows(influxdb_server, influxdb_database) == FRAMES

    pushes = [r for r in grafana_live.requests() if r.target.startswith("/api/live/push/")]
    assert len(pushes) == FRAMES  # one request per frame, all channels in it
    assert {r.status for r in pushes} == {200}
    assert {r.headers["authorization"] for r in pushes} == {f"Bearer {EDITOR_TOKEN}"}
    assert grafana_live.mismatches() == []  # identical field set on every push
    reference = expected_db(x)
    le = dashboard_filter_le()
    for c, channel in enumerate(channels):
        frames = grafana_live.frames(channel)
        assert len(frames) == FRAMES
        # labels_column format: an (empty, untagged) labels column, the time, one float per bin
        assert {f.field_names for f in frames} == {("labels", "time", *expected_bins())}
        assert {v for f in frames for v in f.column("labels")} == {""}
        rows = grafana_live.browser_rows(channel)
        times = np.array([row.time_ns for row in rows])
        assert np.all(np.diff(times) > 0)
        assert np.all(np.abs(np.diff(times) - HOP / FS * 1e9) < 1e4)  # uniform cadence: cell width
        values = np.array([[row.values[b] for b in expected_bins()] for row in rows], dtype=np.float64)
        assert np.max(np.abs(values - reference[:, c, :])) <= VALUE_TOLERANCE
        assert np.all(values > le)  # nothing hidden by the heatmap's filterValues
    # the dashboard subscribes to exactly the channels the bridge publishes on (one per channel name)
    # (the overview's band_<name>/quality channels are tested in tests/test_live_overview.py)
    subscribed = {c for c in dashboard_live_channels() if "$channel" in c}
    assert len(subscribed) == 1
    (template,) = subscribed
    assert {template.replace("$channel", c) for c in STORED_CHANNELS} == set(channels)


@pytest.mark.slow
def test_websocket_push_survives_server_pings(
    grafana_live_factory, influxdb_server: InfluxDBServer, influxdb_database: str, bridges, players: list[Player], tmp_path: Path
) -> None:
    """Production ping timing (every 25 s, dropped after ~28 s without a pong): a run of > 30 s."""
    grafana = grafana_live_factory()
    name = unique("ws")
    outlet = make_outlet(name, channels=len(LABELS), rate=FS, labels=LABELS)
    process = bridges(bridge_env(name, grafana, influxdb_server, influxdb_database, tmp_path,
                                 GRAFANA_PUSH="ws", GRAFANA_TOKEN=ADMIN_TOKEN))
    process.wait_for_output("connected to")
    player = Player(outlet, known_signal(), FS, chunk=16, loop=True)
    players.append(player)
    player.start()
    grafana.wait_for(lambda: grafana.ws_connections() and grafana.ws_connections()[0].pongs_received >= 1, timeout=90,
                     what="a pong to the server's first ping")
    first_count = len(grafana.ws_messages())
    grafana.wait_for(lambda: (grafana.ws_connections()[0].opened_ns + 32 * 10**9) < (grafana.ws_messages()[-1].received_ns),
                     timeout=90, what="messages 32 s after the connection opened")
    assert len(grafana.ws_messages()) > first_count
    assert len(grafana.ws_connections()) == 1 and grafana.ws_connections()[0].is_open  # never dropped
    assert all(m.error is None for m in grafana.ws_messages())
    assert grafana.mismatches() == []
    player.stop()
    assert process.terminate() == 0


def test_websocket_push_needs_admin_and_says_so(
    grafana_live: GrafanaLiveStandIn, influxdb_server: InfluxDBServer, influxdb_database: str, bridges, players: list[Player], tmp_path: Path
) -> None:
    name = unique("ws403")
    outlet = make_outlet(name, channels=2, rate=FS)
    process = bridges(bridge_env(name, grafana_live, influxdb_server, influxdb_database, tmp_path, GRAFANA_PUSH="ws"))
    process.wait_for_output("connected to")
    players.append(Player(outlet, np.zeros((500, 2), np.float32), FS, loop=True).start())
    process.wait_for_output("needs the Admin (WebSocket push) role")
    # the archive is unaffected
    wait_until(lambda: stored_rows(influxdb_server, influxdb_database, "ch0") > 0, 60, process.output)
    assert process.terminate() == 0
