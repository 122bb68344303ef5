"""The InfluxDB fixtures start a real, private server that behaves like the one the archive targets."""

from __future__ import annotations

import pytest

from tests.fixtures_influxdb import _require_influxd
from tests.influxdb_server import InfluxDBError, InfluxDBServer

# Not on a millisecond (or microsecond) boundary: proves ns precision survives the round trip.
T0_NS = 1_732_252_800_125_000_001
CADENCE_NS = 500_000_000
BODY = (
    f"eeg_spectrum,channel=Fz,stream_name=SimEEG 000.00=12.345,001.95=-14.020 {T0_NS}\n"
    f"eeg_spectrum,channel=Cz,stream_name=SimEEG 000.00=11.002,001.95=0.001 {T0_NS}\n"
    f"eeg_spectrum,channel=Fz,stream_name=SimEEG 000.00=-3.100,001.95=250.000 {T0_NS + CADENCE_NS}\n"
).encode()
EXPECTED_FZ = [[T0_NS, 12.345, -14.02], [T0_NS + CADENCE_NS, -3.1, 250.0]]


def _select(server: InfluxDBServer, db: str, where: str = "\"channel\" = 'Fz'") -> list[list[object]]:
    result = server.query(f'SELECT "000.00", "001.95" FROM "eeg_spectrum" WHERE {where}', db=db)
    (series,) = result["results"][0]["series"]
    assert series["columns"] == ["time", "000.00", "001.95"]
    return series["values"]


@pytest.mark.influxdb
def test_written_values_and_ns_timestamps_read_back_exactly(
    influxdb_server: InfluxDBServer, influxdb_database: str
) -> None:
    influxdb_server.write(BODY, influxdb_database)

    assert _select(influxdb_server, influxdb_database) == EXPECTED_FZ
    assert influxdb_server.series(influxdb_database, "eeg_spectrum") == [
        "eeg_spectrum,channel=Cz,stream_name=SimEEG",
        "eeg_spectrum,channel=Fz,stream_name=SimEEG",
    ]


@pytest.mark.influxdb
def test_server_is_private_to_its_temp_dir_and_loopback(influxdb_server: InfluxDBServer) -> None:
    assert influxdb_server.url == f"http://127.0.0.1:{influxdb_server.http_port}"
    assert {p.name for p in influxdb_server.root.iterdir()} >= {"meta", "data", "wal", "influxd.log"}
    assert influxdb_server.rss_bytes() > 0


@pytest.mark.influxdb
def test_kill_and_restart_keep_data_and_url(influxdb_private_server: InfluxDBServer) -> None:
    server = influxdb_private_server
    server.create_database("archive")
    server.write(BODY, "archive")
    url, first_pid = server.url, server.pid

    server.kill()  # nothing flushed: the data must come back from the WAL
    assert not server.running
    server.start()
    assert (server.url, server.running) == (url, True)
    assert server.pid != first_pid
    assert _select(server, "archive") == EXPECTED_FZ

    server.stop()  # clean shutdown path: SIGTERM
    server.start()
    assert _select(server, "archive") == EXPECTED_FZ


@pytest.mark.influxdb
def test_a_400_is_a_partial_write(influxdb_server: InfluxDBServer, influxdb_database: str) -> None:
    """1.6.7 stores the valid lines of a batch with a bad line and still answers 400."""
    bad_line = "eeg_spectrum,channel=Pz,stream_name=SimEEG 000.00=oops 1"
    good = BODY.decode().splitlines()
    body = "\n".join([good[0], bad_line, good[2]]).encode()

    response = influxdb_server.write(body, influxdb_database, check=False)

    assert response.status_code == 400
    header = response.headers["X-Influxdb-Error"]
    assert header.startswith("partial write: unable to parse")
    assert bad_line in header
    assert response.json()["error"] == header
    assert _select(influxdb_server, influxdb_database) == EXPECTED_FZ
    with pytest.raises(InfluxDBError) as raised:
        influxdb_server.write(body, influxdb_database)
    assert raised.value.status == 400


@pytest.mark.influxdb
def test_query_raises_on_a_failed_statement(
    influxdb_server: InfluxDBServer, influxdb_database: str
) -> None:
    """1.x reports statement errors inside a 200; the helper must not let them pass as 'no data'."""
    with pytest.raises(InfluxDBError, match="error parsing query"):
        influxdb_server.query("SELECT FROM", db=influxdb_database)
    with pytest.raises(InfluxDBError, match="database not found"):
        influxdb_server.query('SELECT * FROM "m"', db="no_such_database")


@pytest.mark.parametrize(("ci", "outcome"), [("", pytest.skip.Exception), ("1", pytest.fail.Exception)])
def test_missing_influxd_skips_locally_and_fails_in_ci(
    monkeypatch: pytest.MonkeyPatch, ci: str, outcome: type[BaseException]
) -> None:
    monkeypatch.setenv("PATH", "")
    monkeypatch.setenv("CI", ci)
    with pytest.raises(outcome, match="influxd not on PATH"):
        _require_influxd()
