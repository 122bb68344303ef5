"""Shared pytest set-up. Fixtures live in one module per real part they start."""

pytest_plugins = [
    "tests.fixtures_lsl",
    "tests.fixtures_grafana",
    "tests.fixtures_influxdb",
    "tests.bridge_process",
    "tests.fixtures_browser",
]
