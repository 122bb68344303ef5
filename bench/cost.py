"""Section 4: what real-time streaming costs, for the bridge, the floor and the obvious pipeline.

Each runs alone (one after the other) against the same kind of stream, the Grafana stand-in and a
fresh real InfluxDB 1.x (the floor needs neither), for the same duration. The bridge's targets
(CPU in % of one core, peak RSS, no growing lag) are judged here; the floor and the
straightforward pipeline are the yardsticks beside it. Method: :mod:`bench.live`.
"""

from __future__ import annotations

from typing import Any

from bench import live

#: (channels, rate) -> CPU target in % of one core.
CPU_TARGET = {(64, 1000.0): 4.0, (256, 2000.0): 20.0}
RSS_TARGET_MB = 200.0
#: "No growing lag": median latency at the end of the run within this of the start.
LAG_GROWTH_LIMIT_MS = 10.0
KINDS: tuple[live.Kind, ...] = ("floor", "bridge", "baseline")


def judge(result: dict[str, Any], cpu_target: float) -> dict[str, Any]:
    growth = result["lag"].get("growth_ms")
    received, expected = result["frames_received"], result["frames_expected"]
    archive = result.get("archive", {})
    archived, computed = archive.get("frames_archived"), archive.get("frames_computed")
    checks = {
        "cpu": result["cpu_pct"] is not None and result["cpu_pct"] < cpu_target,
        "rss": result["peak_rss_mb"] is not None and result["peak_rss_mb"] < RSS_TARGET_MB,
        "lag": growth is not None and growth <= LAG_GROWTH_LIMIT_MS,
        # every frame of the window reached Grafana (none dropped as stale), and the archive is complete
        "live_complete": expected > 0 and received >= int(expected) - 1,
        # rows stored == final frames_computed, both after the clean stop: a lost tail shows
        "archive_complete": archived is not None and archived == computed,
    }
    return {"cpu_target_pct": cpu_target, "rss_target_mb": RSS_TARGET_MB, "lag_limit_ms": LAG_GROWTH_LIMIT_MS,
            "checks": checks, "pass": all(checks.values()) and result["error"] is None}


def run(
    seconds: float, warmup: float = 10.0, log: Any = print, kinds: tuple[live.Kind, ...] = KINDS,
    bridge_env: tuple[tuple[str, str], ...] = (),
) -> list[dict[str, Any]]:
    out = []
    for (channels, rate), cpu_target in CPU_TARGET.items():
        for kind in kinds:
            scenario = live.Scenario(kind, channels, rate, 256, 128, duration_s=seconds, warmup_s=warmup,
                                     influx=kind != "floor", env=bridge_env if kind == "bridge" else ())
            log(f"  cost: {scenario.label}, {seconds:g} s")
            result = live.run(scenario, log).to_dict()
            if kind == "bridge":
                result["judgement"] = judge(result, cpu_target)
            out.append(result)
    return out
