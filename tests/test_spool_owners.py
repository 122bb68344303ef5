"""Several bridges on one machine, on real processes: one spool per owner, and every segment goes
where it was recorded for (issue 12, points 1-3). A real InfluxDB 1.x, real LSL outlets."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from bridge.archive.spool import Destination, Spool
from tests.bridge_process import BridgeProcess, free_port, wait_until
from tests.fault_tools import FaultProxy, spooled_frames, try_scrape
from tests.fixtures_lsl import Player, make_outlet, unique
from tests.influxdb_server import InfluxDBServer

FS, NPERSEG, NOVERLAP, CHANNELS = 250.0, 64, 32, 2
SAMPLES = 1600
FRAMES = (SAMPLES - NPERSEG) // (NPERSEG - NOVERLAP) + 1  # 49
REPLAY_DATA_LEFT, REPLAY_QUARANTINED = 1, 4  # documented exit-status bits of `eeg-bridge replay`


def bridge_env(stream: str, server_url: str, database: str, home: Path, **extra: str) -> dict[str, str]:
    return {
        "HOME": str(home), "LSL_STREAM_NAME": stream, "GRAFANA_URL": "", "INFLUXDB_URL": server_url,
        "INFLUXDB_API": "v1", "INFLUXDB_BUCKET": database, "SPECTRUM_NPERSEG": str(NPERSEG),
        "SPECTRUM_NOVERLAP": str(NOVERLAP), "HEALTH_WRITE_INTERVAL_SEC": "0", "BATCH_INTERVAL_SEC": "0.5",
        "SHUTDOWN_TIMEOUT_SEC": "30", **extra,
    }


def default_spool(home: Path, stream: str) -> Path:
    """The documented default: one spool per stream under ~/.local/state/eeg-bridge/spool."""
    return home / ".local" / "state" / "eeg-bridge" / "spool" / f"name-{stream}"


def record(stream: str, players: list[Player]) -> Player:
    outlet = make_outlet(stream, channels=CHANNELS, rate=FS)
    player = Player(outlet, np.random.default_rng(1).standard_normal((SAMPLES, CHANNELS)).astype(np.float32), FS, chunk=16)
    players.append(player)
    return player


def stored(server: InfluxDBServer, db: str) -> dict[str, int]:
    """Points of one field per stream_name in ``db`` (frames x channels)."""
    result = server.query('SELECT COUNT("000.00") FROM "eeg_spectrum" GROUP BY "stream_name"', db=db)
    return {s["tags"]["stream_name"]: int(s["values"][0][1]) for s in result["results"][0].get("series", [])}


def record_while_influxdb_is_down(
    bridges: Callable[..., BridgeProcess], players: list[Player], env: dict[str, str], spool: Path
) -> None:
    """Run a bridge until all FRAMES of a fresh recording are in ``spool``, then stop it (exit 0)."""
    player = record(env["LSL_STREAM_NAME"], players)
    process = bridges(env)
    process.wait_for_output("connected to")
    player.start()
    assert player.done.wait(60)
    wait_until(lambda: spooled_frames(spool) == FRAMES, 60, lambda: process.output()[-3000:])
    assert process.terminate() == 0, process.output()[-3000:]
    assert spooled_frames(spool) == FRAMES  # nothing could be uploaded: all of it stays


def test_two_bridges_on_two_streams_each_archive_only_their_own_stream(
    influxdb_private_server: InfluxDBServer, bridges, players: list[Player], tmp_path: Path
) -> None:
    """The reported bug: default settings, InfluxDB down while both record, up after a restart."""
    server, home = influxdb_private_server, tmp_path / "home"
    streams = {unique("eega"): "db_a", unique("eegb"): "db_b"}
    for db in streams.values():
        server.create_database(db)
    server.stop()
    recordings = {s: record(s, players) for s in streams}
    ports = {s: free_port() for s in streams}
    first = {s: bridges(bridge_env(s, server.url, db, home, METRICS_PORT=str(ports[s]))) for s, db in streams.items()}
    for stream, process in first.items():
        process.wait_for_output("connected to")
        recordings[stream].start()
    for stream, process in first.items():
        wait_until(lambda: (l := try_scrape(ports[stream])) is not None and l.spool_frames == FRAMES, 60,
                   lambda: process.output()[-3000:])
    for process in first.values():
        assert process.terminate() == 0, process.output()[-3000:]
    for stream in streams:
        assert spooled_frames(default_spool(home, stream)) == FRAMES  # each in its own directory

    server.start()
    again = [bridges(bridge_env(s, server.url, db, home)) for s, db in streams.items()]
    wait_until(lambda: all(sum(stored(server, db).values()) >= FRAMES * CHANNELS for db in streams.values()), 90,
               lambda: "\n".join(p.output()[-2000:] for p in again))
    for process in again:
        assert process.terminate() == 0, process.output()[-3000:]
    for stream, db in streams.items():
        assert stored(server, db) == {stream: FRAMES * CHANNELS}  # its own frames, all, and nothing else
        assert spooled_frames(default_spool(home, stream)) == 0


def test_a_spool_has_one_owner_and_says_which_process_holds_it(
    influxdb_server: InfluxDBServer, influxdb_database: str, bridges, tmp_path: Path
) -> None:
    spool = tmp_path / "shared-spool"
    env = bridge_env(unique("owner"), "", influxdb_database, tmp_path / "home", SPOOL_DIR=str(spool))
    owner = bridges(env)
    owner.wait_for_output("waiting for an LSL stream")
    second = bridges({**env, "LSL_STREAM_NAME": unique("other")})
    assert second.proc is not None and second.proc.wait(60) == 2
    assert second.output().strip().splitlines() == [
        f"eeg-bridge: SPOOL_DIR '{spool}' is in use by process {owner.pid} ({owner_command(owner)}): each bridge "
        "needs a spool of its own; stop that process or set another SPOOL_DIR."
    ]
    replay = bridges({**env, "INFLUXDB_URL": influxdb_server.url}, args=("replay",))
    assert replay.proc is not None and replay.proc.wait(60) == 2
    assert f"is in use by process {owner.pid} " in replay.output() and "which uploads it itself" in replay.output()
    assert owner.alive()
    assert owner.terminate() == 0
    free = bridges({**env, "INFLUXDB_URL": influxdb_server.url}, args=("replay",))
    assert free.proc is not None and free.proc.wait(60) == 0, free.output()


def owner_command(process: BridgeProcess) -> str:
    return Path(f"/proc/{process.pid}/cmdline").read_bytes().rstrip(b"\0").replace(b"\0", b" ").decode()


def test_a_restart_with_another_database_sends_old_frames_where_they_were_recorded_for(
    influxdb_private_server: InfluxDBServer, bridges, players: list[Player], tmp_path: Path
) -> None:
    server, home, stream = influxdb_private_server, tmp_path / "home", unique("moved")
    server.create_database("before")
    server.create_database("after")
    server.stop()
    record_while_influxdb_is_down(bridges, players, bridge_env(stream, server.url, "before", home), default_spool(home, stream))
    server.start()
    restarted = bridges(bridge_env(stream, server.url, "after", home))
    restarted.wait_for_output("were recorded for database 'before' on " + server.url)
    wait_until(lambda: spooled_frames(default_spool(home, stream)) == 0, 90, lambda: restarted.output()[-3000:])
    assert restarted.terminate() == 0
    assert stored(server, "before") == {stream: FRAMES * CHANNELS}
    assert stored(server, "after") == {}


def test_frames_recorded_for_another_server_stay_until_replayed_there(
    influxdb_server: InfluxDBServer, bridges, players: list[Player], tmp_path: Path
) -> None:
    """The old server (a proxy URL in front of the same influxd, answering 503 while recording) is
    not the new one: nothing goes to the new place; the log names the command, which works."""
    server, home, stream = influxdb_server, tmp_path / "home", unique("elsewhere")
    old_db, new_db = f"old_{stream[-10:]}", f"new_{stream[-10:]}"
    server.create_database(old_db)
    server.create_database(new_db)
    proxy = FaultProxy(server.url).start()
    try:
        proxy.set_mode("unavailable", retry_after="1")
        spool = default_spool(home, stream)
        record_while_influxdb_is_down(bridges, players, bridge_env(stream, proxy.url, old_db, home), spool)
        restarted = bridges(bridge_env(stream, server.url, new_db, home))
        restarted.wait_for_output("they stay there")
        line = next(l for l in restarted.output().splitlines() if "they stay there" in l)
        assert (
            f"influxdb: {FRAMES} frames in the spool at {spool} were recorded for database '{old_db}' on {proxy.url} "
            "(API v1) (another server: this run has no credentials for it); they stay there: upload them once this "
            f"bridge has stopped (it holds the spool) with: SPOOL_DIR={spool} INFLUXDB_URL={proxy.url} eeg-bridge "
            "replay (with that server's INFLUXDB_USERNAME and INFLUXDB_PASSWORD if auth is on)"
        ) in line
        assert restarted.terminate() == 0
        assert spooled_frames(spool) == FRAMES
        assert stored(server, new_db) == {} and stored(server, old_db) == {}

        proxy.set_mode("pass")
        replay = bridges({"HOME": str(home), "SPOOL_DIR": str(spool), "INFLUXDB_URL": proxy.url}, args=("replay",))
        assert replay.proc is not None and replay.proc.wait(120) == 0, replay.output()
        assert stored(server, old_db) == {stream: FRAMES * CHANNELS} and stored(server, new_db) == {}
        assert spooled_frames(spool) == 0
    finally:
        proxy.close()
        server.drop_database(old_db)
        server.drop_database(new_db)


def test_replay_quarantines_what_it_cannot_use_uploads_the_rest_and_says_so(
    influxdb_server: InfluxDBServer, influxdb_database: str, bridges, tmp_path: Path
) -> None:
    spool_dir = tmp_path / "spool"
    spool = Spool(spool_dir, max_bytes=1 << 30, destination=Destination(url="", api="v1", org="", bucket=influxdb_database))
    good = [b"".join(b"m,seg=%d v=%d %d\n" % (k, i, 1_000 + i) for i in range(400)) for k in range(3)]
    spool.append(good[0], frames=40)
    spool.append(b"this is not line protocol\n" * 400, frames=40)  # the server answers 400
    spool.append(good[1], frames=40)
    spool.append(good[2], frames=40)
    spool.unlock()
    last = sorted(spool_dir.glob("*.lp"))[-1]
    last.write_bytes(last.read_bytes()[:-100])  # a truncated copy
    (spool_dir / "segment-0001.lp").write_bytes(good[2])  # an older naming
    replay = bridges({"SPOOL_DIR": str(spool_dir), "INFLUXDB_URL": influxdb_server.url,
                      "INFLUXDB_MAX_BODY_BYTES": "10000"}, args=("replay",))
    assert replay.proc is not None and replay.proc.wait(120) == REPLAY_QUARANTINED, replay.output()
    rows = influxdb_server.query('SELECT COUNT("v") FROM "m" GROUP BY "seg"', db=influxdb_database)["results"][0]["series"]
    assert {s["tags"]["seg"]: s["values"][0][1] for s in rows} == {"0": 400, "1": 400}
    quarantined = sorted(p.name for p in (spool_dir / "quarantine").iterdir())
    assert quarantined == sorted([
        "0000000000000001-000040-0.lp", "0000000000000001-000040-0.error.txt",
        last.name, last.name.removesuffix(".lp") + ".error.txt", "segment-0001.lp", "segment-0001.error.txt",
    ])
    assert "unable to parse" in (spool_dir / "quarantine" / "0000000000000001-000040-0.error.txt").read_text()
    assert re.search(r"replay: 3 files of \S+ were moved to \S+quarantine", replay.output())
    assert not list(spool_dir.glob("*.lp"))


def test_empty_variables_mean_unset(bridges, tmp_path: Path) -> None:
    """What compose files and .env templates write: every optional option left empty."""
    home, stream = tmp_path / "home", unique("empty")
    empty = {name: "" for name in ("METRICS_PORT", "SPOOL_DIR", "SPOOL_MAX_BYTES", "BATCH_SIZE", "LOG_LEVEL",
                                   "INFLUXDB_BUCKET", "INFLUXDB_TOKEN", "TLS_CA_BUNDLE", "SPECTRUM_FMIN", "LSL_STREAM_TYPE")}
    process = bridges({**empty, "HOME": str(home), "LSL_STREAM_NAME": stream, "GRAFANA_URL": "", "INFLUXDB_URL": ""})
    process.wait_for_output("waiting for an LSL stream")
    assert default_spool(home, stream).is_dir()  # SPOOL_DIR= is the per-stream default
    assert process.terminate() == 0, process.output()


@pytest.mark.parametrize("selector,directory", [
    ({"LSL_SOURCE_ID": "amp 1/serial", "LSL_STREAM_NAME": "EEG"}, "source_id-amp_1_serial-"),
    ({"LSL_STREAM_NAME": "EEG", "LSL_STREAM_TYPE": "EEG"}, "name-EEG"),
    ({"LSL_STREAM_TYPE": "EEG"}, "type-EEG"),
])
def test_the_default_spool_is_per_stream(selector: dict[str, str], directory: str, tmp_path: Path, monkeypatch) -> None:
    from bridge.config import build_settings, load_options

    monkeypatch.setenv("HOME", str(tmp_path))
    settings = build_settings(load_options(selector), check_hosts=False)
    assert settings.spool.directory is not None
    assert settings.spool.directory.parent == tmp_path / ".local" / "state" / "eeg-bridge" / "spool"
    assert settings.spool.directory.name.startswith(directory)
    assert ("/" not in settings.spool.directory.name) and len(settings.spool.directory.name) < 120


def test_a_rejected_segment_does_not_end_the_shutdown_upload(
    influxdb_server: InfluxDBServer, influxdb_database: str, bridges, tmp_path: Path
) -> None:
    """A stop while an earlier run's spool is being uploaded (slowly: each write takes 0.3 s) keeps
    uploading past a segment the server rejects, instead of giving up on the rest."""
    spool_dir, segments = tmp_path / "spool", 12
    proxy = FaultProxy(influxdb_server.url).start()
    try:
        proxy.set_mode("stall", stall_sec=0.3)
        spool = Spool(spool_dir, max_bytes=1 << 30, destination=Destination(url=proxy.url, api="v1", org="", bucket=influxdb_database))
        for k in range(segments):
            spool.append(b"".join(b"m,seg=%d v=%d %d\n" % (k, i, 1_000 + i) for i in range(400)), frames=40)
            if k == 1:
                spool.append(b"this is not line protocol\n" * 300, frames=40)  # the server answers 400
        spool.unlock()
        process = bridges({"LSL_STREAM_NAME": unique("absent"), "GRAFANA_URL": "", "INFLUXDB_URL": proxy.url,
                           "INFLUXDB_API": "v1", "INFLUXDB_BUCKET": influxdb_database, "SPOOL_DIR": str(spool_dir),
                           "INFLUXDB_MAX_BODY_BYTES": "10000", "SHUTDOWN_TIMEOUT_SEC": "120", "HEALTH_WRITE_INTERVAL_SEC": "0"})
        process.wait_for_output("uploading them first")
        assert process.terminate() == 0, process.output()[-3000:]
    finally:
        proxy.close()
    rows = influxdb_server.query('SELECT COUNT("v") FROM "m" GROUP BY "seg"', db=influxdb_database)["results"][0]["series"]
    assert {s["tags"]["seg"]: s["values"][0][1] for s in rows} == {str(k): 400 for k in range(segments)}
    assert not list(spool_dir.glob("*.lp"))
    assert [p.name for p in (spool_dir / "quarantine").glob("*.lp")] == ["0000000000000002-000040-0.lp"]


def test_segments_of_the_old_shared_default_spool_are_mentioned(bridges, tmp_path: Path) -> None:
    """Before spools were per stream they defaulted to ~/.local/state/eeg-bridge/spool itself."""
    home = tmp_path / "home"
    root = home / ".local" / "state" / "eeg-bridge" / "spool"
    root.mkdir(parents=True)
    for seq in range(3):
        (root / f"{seq:016d}-000010-0.lp").write_bytes(b"m v=1 1\n")
    process = bridges({"HOME": str(home), "LSL_STREAM_NAME": unique("new"), "GRAFANA_URL": "", "INFLUXDB_URL": ""})
    process.wait_for_output("waiting for an LSL stream")
    assert process.terminate() == 0
    assert (
        f"3 segment files from an older eeg-bridge are in {root} (spools are per stream now); they record no destination, "
        f"so they are not uploaded automatically: 'SPOOL_DIR={root} eeg-bridge replay' moves them to quarantine/"
    ) in process.output()
    assert len(list(root.glob("*.lp"))) == 3  # untouched


def test_replay_without_a_spool_dir_uploads_every_spool_and_skips_the_one_in_use(
    influxdb_server: InfluxDBServer, influxdb_database: str, bridges, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    offline = Destination(url="", api="v1", org="", bucket=influxdb_database)
    for k, stream in enumerate(("first", "second")):
        spool = Spool(default_spool(home, stream), max_bytes=1 << 30, destination=offline)
        spool.append(b"".join(b"m,spool=%d v=%d %d\n" % (k, i, 1_000 + i) for i in range(50)), frames=5)
        spool.unlock()
    busy_stream = unique("busy")
    busy = bridges(bridge_env(busy_stream, "", influxdb_database, home))  # recording, INFLUXDB_URL empty
    busy.wait_for_output("waiting for an LSL stream")
    replay = bridges({"HOME": str(home), "INFLUXDB_URL": influxdb_server.url}, args=("replay",))
    assert replay.proc is not None and replay.proc.wait(120) == 0, replay.output()
    rows = influxdb_server.query('SELECT COUNT("v") FROM "m" GROUP BY "spool"', db=influxdb_database)["results"][0]["series"]
    assert {s["tags"]["spool"]: s["values"][0][1] for s in rows} == {"0": 50, "1": 50}
    assert f"SPOOL_DIR '{default_spool(home, busy_stream)}' is in use by process {busy.pid} " in replay.output()
    assert busy.alive() and busy.terminate() == 0
