"""Fixtures for tests against a real InfluxDB 1.x (`influxd`).

One server serves the whole session (starting one per test would dominate run time); tests keep
out of each other's way by writing to their own uniquely named database. Tests that kill or
restart the server get a private one.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator

import pytest

from tests.influxdb_server import InfluxDBServer


def _require_influxd() -> None:
    """Skip locally without influxd, but fail in CI, where a skip would hide missing coverage."""
    if shutil.which("influxd") is not None:
        return
    if os.environ.get("CI"):
        pytest.fail("influxd not on PATH but CI is set: install Debian package 'influxdb'", pytrace=False)
    pytest.skip("influxd not on PATH (Debian package 'influxdb')")


def unique_database_name(prefix: str = "test") -> str:
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


def _started_server() -> Iterator[InfluxDBServer]:
    """Start a server, hand it over, and stop it by its PID whatever happened in between."""
    _require_influxd()
    server = InfluxDBServer()
    try:
        server.start()
        yield server
    finally:
        server.close()


@pytest.fixture(scope="session")
def influxdb_server() -> Iterator[InfluxDBServer]:
    """Shared server: do not kill/restart it, and do not rely on any database you did not create."""
    yield from _started_server()


@pytest.fixture
def influxdb_database(influxdb_server: InfluxDBServer) -> Iterator[str]:
    """A fresh, empty database on the shared server, dropped afterwards to keep its RSS small."""
    name = unique_database_name()
    influxdb_server.create_database(name)
    yield name
    influxdb_server.drop_database(name)


@pytest.fixture
def influxdb_private_server() -> Iterator[InfluxDBServer]:
    """A server of the test's own, free to be killed and restarted; stopped and deleted afterwards."""
    yield from _started_server()
