"""Section 3: bridge-added latency, from pushing a window's last sample to Grafana having the frame.

The bridge runs as a subprocess (``python -m bridge run``) on a real LSL outlet in this process,
pushing to the Grafana Live stand-in; the archive goes to the spool only (``INFLUXDB_URL``
empty), so this measures the live path alone. The cost section repeats the measurement with
a real InfluxDB on, under both sinks' load. Method: :mod:`bench.live`.
"""

from __future__ import annotations

from typing import Any

from bench import live

TARGET_P99_MS = 20.0
HOPS = (32, 128)


def run(seconds: float, warmup: float = 10.0, log: Any = print, bridge_env: tuple[tuple[str, str], ...] = ()) -> list[dict[str, Any]]:
    out = []
    for hop in HOPS:
        scenario = live.Scenario("bridge", 64, 1000.0, 256, 256 - hop, duration_s=seconds, warmup_s=warmup, influx=False, env=bridge_env)
        log(f"  latency: {scenario.label}, {seconds:g} s")
        result = live.run(scenario, log).to_dict()
        p99 = result["latency_ms"].get("p99")
        result["target_p99_ms"] = TARGET_P99_MS
        result["pass"] = bool(p99 is not None and p99 <= TARGET_P99_MS and result["error"] is None)
        out.append(result)
    return out
