"""Exactly once, proven with a capture (issue 12, points 5 and 6).

InfluxDB merges a re-sent point silently, so counting rows cannot see a duplicate. A capture proxy
(tests/fault_tools.py) in front of a real InfluxDB 1.x records every write body; counting each
point (series key, timestamp) over the writes the server accepted shows whether anything was
applied twice. The bridge runs as a real process on a real LSL outlet.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pytest

from tests.bridge_process import BridgeProcess, free_port, wait_until
from tests.fault_tools import FaultProxy, Ledger, accepted_points, spooled_frames, try_scrape
from tests.fixtures_influxdb import _require_influxd
from tests.fixtures_lsl import Player, make_outlet, unique
from tests.influxdb_server import InfluxDBServer

DB = "eeg"
SERVER_MAX_BODY = 8000  # influxd's [http] max-body-size: bigger writes are answered 413


class SmallBodyServer(InfluxDBServer):
    """A private influxd that refuses write bodies over SERVER_MAX_BODY bytes (its own 413)."""

    def environment(self) -> dict[str, str]:
        return {**super().environment(), "INFLUXDB_HTTP_MAX_BODY_SIZE": str(SERVER_MAX_BODY)}


@pytest.fixture
def small_body_server() -> Iterator[SmallBodyServer]:
    _require_influxd()
    server = SmallBodyServer()
    try:
        server.start()
        server.create_database(DB)
        yield server
    finally:
        server.close()


@pytest.fixture
def proxy(influxdb_server: InfluxDBServer) -> Iterator[FaultProxy]:
    front = FaultProxy(influxdb_server.url).start()
    yield front
    front.close()


def env_for(stream: str, url: str, spool: Path, port: int, **extra: str) -> dict[str, str]:
    return {
        "LSL_STREAM_NAME": stream, "GRAFANA_URL": "", "INFLUXDB_URL": url, "INFLUXDB_API": "v1",
        "INFLUXDB_BUCKET": DB, "SPECTRUM_NPERSEG": "128", "SPECTRUM_NOVERLAP": "64", "SPOOL_DIR": str(spool),
        "HEALTH_WRITE_INTERVAL_SEC": "0", "METRICS_PORT": str(port), "BATCH_INTERVAL_SEC": "0.5", **extra,
    }


def frames_for(samples: int) -> int:
    return (samples - 128) // 64 + 1


def ledger_until(port: int, condition: Callable[[Ledger], bool], process: BridgeProcess, timeout: float = 120) -> Ledger:
    found: list[Ledger] = []

    def check() -> bool:
        ledger = try_scrape(port)
        if ledger is not None and condition(ledger):
            found.append(ledger)
            return True
        return False

    wait_until(check, timeout, lambda: f"ledger: {try_scrape(port)}\n{process.output()[-3000:]}")
    return found[0]


def rows_per_channel(server: InfluxDBServer, db: str) -> dict[str, int]:
    result = server.query('SELECT COUNT("000.00") FROM "eeg_spectrum" GROUP BY "channel"', db=db)
    return {s["tags"]["channel"]: int(s["values"][0][1]) for s in result["results"][0].get("series", [])}


def test_every_point_is_accepted_once_through_an_outage_flaky_503s_and_413_splits(
    small_body_server: SmallBodyServer, bridges, players: list[Player], tmp_path: Path
) -> None:
    """Segments of ~64 kB are cut into parts (INFLUXDB_MAX_BODY_BYTES=10000), the server refuses
    parts over 8000 bytes (413: the bridge learns to cut smaller), every third write is answered 503
    and there is an outage in the middle: the parts the server accepted before a failure are never
    sent again, so each point is in exactly one accepted write, and each computed frame is stored."""
    server, channels, rate, samples = small_body_server, 8, 500.0, 6000
    front = FaultProxy(server.url).start()
    try:
        front.flaky_every = 3
        front.set_mode("flaky", retry_after="0")
        stream, port = unique("once"), free_port()
        outlet = make_outlet(stream, channels=channels, rate=rate)
        process = bridges(env_for(stream, front.url, tmp_path / "spool", port, BATCH_SIZE="10",
                                  INFLUXDB_MAX_BODY_BYTES="10000"))
        process.wait_for_output("connected to")
        player = Player(outlet, np.random.default_rng(3).standard_normal((samples, channels)).astype(np.float32), rate, chunk=25)
        players.append(player)
        player.start()
        ledger_until(port, lambda l: l.sent("influxdb") >= 20, process)
        front.set_mode("unavailable", retry_after="1")  # an outage: a backlog builds up in the spool
        ledger_until(port, lambda l: l.spool_frames >= 30, process)
        front.set_mode("flaky", retry_after="0")
        assert player.done.wait(60)
        frames = frames_for(samples)
        final = ledger_until(port, lambda l: l.computed == frames and l.sent("influxdb") == frames and l.spool_frames == 0, process)
        assert process.terminate() == 0, process.output()[-3000:]
    finally:
        front.close()
    assert final.dropped("influxdb") == 0
    writes = front.requests("/write")
    assert {413, 503} <= {w.status for w in writes}  # the faults the test is about did happen
    counts = accepted_points(writes)
    spectra = [key for key in counts if key[0].startswith(b"eeg_spectrum,")]
    assert len(spectra) == frames * channels  # every point of every computed frame was accepted ...
    assert set(counts.values()) == {1}  # ... and every point (spectra, bands, quality) in exactly one write
    assert max(len(w.body) for w in writes if w.status == 204) <= SERVER_MAX_BODY
    assert rows_per_channel(server, DB) == {f"ch{c}": frames for c in range(channels)}


def test_a_body_resent_after_a_crash_changes_nothing(
    influxdb_server: InfluxDBServer, influxdb_database: str, proxy: FaultProxy, bridges, players: list[Player], tmp_path: Path
) -> None:
    """The one window where a body is sent twice: accepted, then the process dies before removing
    the segment. Simulated exactly: the segments are put back after they were uploaded."""
    stream, spool, backup, samples = unique("crash"), tmp_path / "spool", tmp_path / "backup", 2000
    outlet = make_outlet(stream, channels=4, rate=250.0)
    recorder = bridges({**env_for(stream, "", spool, free_port()), "INFLUXDB_BUCKET": influxdb_database})
    recorder.wait_for_output("connected to")
    player = Player(outlet, np.random.default_rng(4).standard_normal((samples, 4)).astype(np.float32), 250.0, chunk=10)
    players.append(player)
    player.start()
    assert player.done.wait(60)
    frames = frames_for(samples)
    wait_until(lambda: spooled_frames(spool) == frames, 60, recorder.output)
    assert recorder.terminate() == 0
    shutil.copytree(spool, backup, ignore=shutil.ignore_patterns("*.lock"))

    def replay() -> list[bytes]:
        since = proxy.set_mode("pass")
        process = bridges({"SPOOL_DIR": str(spool), "INFLUXDB_URL": proxy.url}, args=("replay",))
        assert process.proc is not None and process.proc.wait(120) == 0, process.output()
        return [w.body for w in proxy.requests("/write", since=since) if w.status == 204]

    def stored() -> list[list]:
        return influxdb_server.query('SELECT * FROM "eeg_spectrum"', db=influxdb_database)["results"][0]["series"][0]["values"]

    first = replay()
    rows = stored()
    assert len(rows) == frames * 4 and spooled_frames(spool) == 0
    for segment in backup.glob("*.lp"):  # the crash: accepted, but still in the spool
        shutil.copy2(segment, spool / segment.name)
    second = replay()
    assert b"".join(second) == b"".join(first)  # the very same points, byte for byte ...
    assert stored() == rows  # ... overwrite themselves: same rows, same values
    twice = accepted_points(proxy.requests("/write"))
    assert set(twice.values()) == {2} and sum(k[0].startswith(b"eeg_spectrum,") for k in twice) == frames * 4


def test_the_ledger_counts_each_frame_once_when_the_spool_overflows_in_an_outage(
    influxdb_server: InfluxDBServer, influxdb_database: str, proxy: FaultProxy, bridges, players: list[Player], tmp_path: Path
) -> None:
    """SPOOL_MAX_BYTES reached while InfluxDB is away: the oldest frames not being uploaded are
    dropped (counted), the ones being uploaded are kept and sent (counted): sent + dropped =
    computed exactly, and what is stored is what was counted as sent."""
    channels, rate, samples = 32, 500.0, 8000
    stream, port = unique("ledger"), free_port()
    outlet = make_outlet(stream, channels=channels, rate=rate)
    proxy.set_mode("unavailable", retry_after="1")
    process = bridges({**env_for(stream, proxy.url, tmp_path / "spool", port), "INFLUXDB_BUCKET": influxdb_database,
                       "SPOOL_MAX_BYTES": "1000000"})
    process.wait_for_output("connected to")
    player = Player(outlet, np.random.default_rng(5).standard_normal((samples, channels)).astype(np.float32), rate, chunk=25)
    players.append(player)
    player.start()
    assert player.done.wait(60)
    frames = frames_for(samples)
    ledger_until(port, lambda l: l.computed == frames and l.spool_frames + l.dropped("influxdb") == frames, process)
    proxy.set_mode("pass")
    final = ledger_until(port, lambda l: l.spool_frames == 0 and l.sent("influxdb") + l.dropped("influxdb") == frames, process)
    assert process.terminate() == 0, process.output()[-3000:]
    sent, dropped = final.sent("influxdb"), final.dropped("influxdb", "spool_full")
    assert dropped > 0 and sent + dropped == frames == final.computed
    assert final.dropped("influxdb") == dropped  # no other reason
    assert rows_per_channel(influxdb_server, influxdb_database) == {f"ch{c}": sent for c in range(channels)}
    counts = accepted_points(proxy.requests("/write"))
    assert set(counts.values()) == {1} and sum(k[0].startswith(b"eeg_spectrum,") for k in counts) == sent * channels


class RecordingWriter:
    """The server side of the sink as a stand-in: records every body; a body holding ``bad``
    is refused with 400."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []

    def write(self, body: bytes) -> None:
        from bridge.sinks.retry import PermanentError

        self.bodies.append(body)
        if b"bad" in body:
            raise PermanentError("InfluxDB rejected the data (400).", kind="bad_data", status=400)

    def close(self) -> None:
        pass


def test_a_rejected_joined_upload_is_isolated_and_counted_once(tmp_path: Path) -> None:
    """Three segments in one upload, the middle one bad: the bad one is quarantined and counted
    rejected, the two good ones counted sent, none both; and the lines re-sent while isolating
    are exactly the good ones of the refused write (documented as the 400 exception)."""
    from bridge.archive.spool import Spool
    from bridge.observe.metrics import Metrics
    from bridge.sinks.influxdb import InfluxSink
    from tests.test_sinks import influx_settings

    spool = Spool(tmp_path / "spool", max_bytes=1 << 30)
    metrics, writer = Metrics(), RecordingWriter()
    sink = InfluxSink(influx_settings(), metrics, spool, writer=writer)
    spool.append(b"m v=1 1\nm v=2 2\n", frames=2)
    spool.append(b"m bad 3\n", frames=3)
    spool.append(b"m v=4 4\n", frames=4)
    sink.start()
    try:
        wait_until(lambda: spool.empty, 30)
    finally:
        sink.close(5)
    assert writer.bodies == [b"m v=1 1\nm v=2 2\nm bad 3\nm v=4 4\n", b"m v=1 1\nm v=2 2\n", b"m bad 3\n", b"m v=4 4\n"]
    assert metrics.value("eeg_bridge_sink_frames_sent_total", sink="influxdb") == 6
    assert metrics.value("eeg_bridge_sink_frames_dropped_total", sink="influxdb", reason="rejected") == 3
    assert [p.name for p in spool.quarantine_dir.glob("*.lp")] == ["0000000000000001-000003-0.lp"]
