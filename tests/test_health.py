"""Scraping a running bridge: /healthz follows the stream, /metrics holds an exact ledger."""

from __future__ import annotations

import socket
from pathlib import Path

import httpx
import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from tests.bridge_process import free_port, wait_until
from tests.fixtures_lsl import Player, make_outlet, unique


def scrape(port: int, stream: str) -> dict[str, float]:
    """Every sample by name and labels; the per-stream series must carry ``stream=<stream>``
    (the bridge's key for the stream), which is left out of the returned names."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.startswith(("eeg_bridge_samples_", "eeg_bridge_frames_", "eeg_bridge_stream_")):
                assert sample.labels.get("stream") == stream, sample
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()) if k != "stream")
            values[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return values


def health(port: int) -> tuple[int, dict]:
    response = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=10)
    return response.status_code, response.json()


def test_health_and_ledger_follow_the_stream(bridges, players: list[Player], tmp_path: Path) -> None:
    name, port = unique(), free_port()
    process = bridges({
        "LSL_STREAM_NAME": name, "GRAFANA_URL": "", "INFLUXDB_URL": "", "METRICS_PORT": str(port),
        "SPECTRUM_NPERSEG": "100", "SPECTRUM_NOVERLAP": "50", "LSL_STALE_SEC": "1.5",
        "SPOOL_DIR": str(tmp_path / "spool"),
    })
    wait_until(lambda: f"127.0.0.1:{port}/metrics" in process.output(), 60, process.output)
    status, body = health(port)
    assert status == 503 and body["stream"]["connected"] is False  # no stream yet
    # prometheus-client's threaded server: a client that never finishes its request holds one
    # thread, not the endpoint; unknown paths are 404, not a copy of /metrics.
    with socket.create_connection(("127.0.0.1", port), timeout=10) as stalled:
        stalled.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
        assert health(port)[0] == 503 and "eeg_bridge_samples_received_total" in scrape(port, name)
    assert httpx.get(f"http://127.0.0.1:{port}/other", timeout=10).status_code == 404

    outlet = make_outlet(name, channels=3, rate=200.0)
    process.wait_for_output("connected to")
    player = Player(outlet, np.ones((1000, 3), np.float32), 200.0, chunk=20)
    players.append(player)
    player.start()
    assert player.done.wait(60)
    wait_until(lambda: scrape(port, name).get("eeg_bridge_samples_received_total") == 1000, 60)
    ledger = scrape(port, name)
    assert ledger["eeg_bridge_frames_computed_total"] == (1000 - 100) // 50 + 1
    assert ledger["eeg_bridge_gaps_total"] == 0 and ledger["eeg_bridge_samples_missing_total"] == 0
    assert ledger["eeg_bridge_stream_connected"] == 1
    assert 0 < abs(ledger["eeg_bridge_lsl_time_correction_seconds"]) < 0.05  # measured; same host: tiny

    # the outlet stops sending: after LSL_STALE_SEC the stream counts as lost
    wait_until(lambda: health(port)[0] == 503, 60)
    status, body = health(port)
    assert body["ready"] is False
    wait_until(lambda: scrape(port, name).get("eeg_bridge_stream_reconnects_total", 0) >= 1, 60)
    assert process.terminate() == 0
