"""Generate the Grafana dashboards provisioned with eeg-bridge.

    python dashboards/generate.py          # rewrite dashboards/*.json
    python dashboards/generate.py --check  # exit 1 if the committed JSON is stale

The JSON is generated rather than hand-edited so that every panel shares one set of heatmap
settings (each of which fixes a known Grafana pitfall, see docs/grafana_eeg_heatmap_setup.md)
and every query is copied verbatim from ``dashboards/queries.py``. A test regenerates the
dashboards in memory and compares them with the committed files.

Standard library only: it runs before anything is installed.
"""

import argparse
import importlib.util
import json
import math
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def _load_queries() -> Any:
    """Load queries.py by path: ``dashboards/`` is a folder of files, not a package."""
    spec = importlib.util.spec_from_file_location("eeg_bridge_dashboard_queries", HERE / "queries.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


queries = _load_queries()

Json = dict[str, Any]

# ---- what the dashboards connect to (uids are provisioned in provisioning/datasources/) -----
INFLUXQL_DS: Json = {"type": "influxdb", "uid": "eeg-influxdb-influxql"}
FLUX_DS: Json = {"type": "influxdb", "uid": "eeg-influxdb-flux"}
LIVE_DS: Json = {"type": "datasource", "uid": "grafana"}

#: The bridge's default GRAFANA_STREAM_ID. Dashboard JSON cannot read environment variables,
#: so the live dashboard exposes it as a text-box variable (also settable by URL,
#: ``?var-live_stream=lab2``) instead of hard-coding it into every channel address.
DEFAULT_STREAM_ID = "eeg"

# ---- cadence: default SPECTRUM_* settings, 500 Hz stream, nperseg 256, noverlap 128 ----------
DEFAULT_FRAME_RATE_HZ = 500 / (256 - 128)  # ~3.9 frames/s
LIVE_WINDOW_SEC = 120
#: Grafana Live keeps at most Max data points rows per channel in the browser; twice the
#: default cadence over the visible window leaves room for a bridge run with a smaller hop.
LIVE_MAX_DATA_POINTS = 100 * math.ceil(2 * DEFAULT_FRAME_RATE_HZ * LIVE_WINDOW_SEC / 100)
#: Lower bound of $__interval / v.windowPeriod on history panels: below the frame period every
#: bucket would hold one frame or none, so short ranges get raw frames and no gaps.
HISTORY_MIN_INTERVAL = "250ms"
HISTORY_MAX_DATA_POINTS = 1000

# ---- colour scale: dB of µV²/Hz; scalp EEG sits roughly between these --------------------------
COLOR_MIN_DB = -20
COLOR_MAX_DB = 30
#: Grafana hides heatmap cells <= 1e-9 by default, i.e. every dB value <= 0. Far below any dB
#: value the bridge can write (10*log10(1e-30) = -300 dB).
FILTER_LE = -1e9

TAGS = ["eeg", "eeg-bridge"]
SCHEMA_VERSION = 41  # Grafana 12.x; Grafana 11 loads it unchanged


def heatmap_panel(
    title: str,
    targets: list[Json],
    *,
    datasource: Json,
    grid: Json,
    max_data_points: int,
    description: str,
    interval: str | None = None,
    transformations: list[Json] | None = None,
    repeat: str | None = None,
) -> Json:
    """A heatmap of one channel, from frames of ``time + one numeric field per bin``."""
    panel: Json = {
        "type": "heatmap",
        "title": title,
        "description": description,
        "datasource": datasource,
        "gridPos": grid,
        "maxDataPoints": max_data_points,
        "targets": targets,
        "fieldConfig": {
            "defaults": {
                "custom": {
                    "hideFrom": {"legend": False, "tooltip": False, "viz": False},
                    "scaleDistribution": {"type": "linear"},
                }
            },
            "overrides": [],
        },
        "options": {
            # The bridge already computed the spectrum: each field is one frequency bin.
            "calculate": False,
            "cellGap": 0,
            "cellValues": {"unit": "dB", "decimals": 1},
            "color": {
                "mode": "scheme",
                "scheme": "Viridis",
                "fill": "dark-orange",
                "scale": "linear",
                "exponent": 0.5,
                "steps": 128,
                "reverse": False,
                # Fixed, so colours mean the same dB in every panel and every frame.
                "min": COLOR_MIN_DB,
                "max": COLOR_MAX_DB,
            },
            "exemplars": {"color": "rgba(255,0,255,0.7)"},
            "filterValues": {"le": FILTER_LE},
            "legend": {"show": True},
            # Field names are bin centre frequencies: centre each row on its value.
            "rowsFrame": {"layout": "unknown", "value": "PSD"},
            "showValue": "never",
            "tooltip": {"mode": "single", "yHistogram": False, "showColorScale": True},
            "yAxis": {"axisPlacement": "left", "axisLabel": "Frequency", "reverse": False, "unit": "hertz"},
        },
    }
    if interval is not None:
        panel["interval"] = interval
    if transformations:
        panel["transformations"] = transformations
    if repeat is not None:
        panel.update({"repeat": repeat, "repeatDirection": "v"})
    return panel


def influxql_target(query_name: str) -> Json:
    """Raw InfluxQL as a table, so the frame is ``Time`` + one column per bin, not one series per bin."""
    return {
        "refId": "A",
        "datasource": INFLUXQL_DS,
        "query": queries.get(query_name).text,
        "rawQuery": True,
        "resultFormat": "table",
    }


def flux_target(query_name: str) -> Json:
    return {"refId": "A", "datasource": FLUX_DS, "query": queries.get(query_name).text}


def query_variable(name: str, label: str, datasource: Json, query_name: str, *, multi: bool, refresh: int) -> Json:
    text = queries.get(query_name).text
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": datasource,
        "query": text,
        "definition": text,
        "refresh": refresh,
        "sort": 1,
        "multi": multi,
        "includeAll": multi,
        # Multi-value variables start on All, so every channel gets its heatmap without a click.
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]} if multi else {},
        "options": [],
        "regex": "",
        "hide": 0,
    }


def stream_and_channel_variables(datasource: Json, language: str, refresh: int) -> list[Json]:
    return [
        query_variable("stream", "LSL stream", datasource, f"streams_{language}", multi=False, refresh=refresh),
        query_variable("channel", "Channel", datasource, f"channels_{language}", multi=True, refresh=refresh),
    ]


def dashboard(uid: str, title: str, *, description: str, panels: list[Json], variables: list[Json],
              time_from: str, live_now: bool) -> Json:
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": TAGS,
        "editable": True,
        "graphTooltip": 1,  # shared crosshair: the same instant in every channel
        "liveNow": live_now,
        "refresh": "",
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "time": {"from": time_from, "to": "now"},
        "timepicker": {},
        "timezone": "browser",
        "fiscalYearStartMonth": 0,
        "weekStart": "",
        "annotations": {
            "list": [
                {
                    "builtIn": 1,
                    "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                    "enable": True,
                    "hide": True,
                    "iconColor": "rgba(0, 211, 255, 1)",
                    "name": "Annotations & Alerts",
                    "type": "dashboard",
                }
            ]
        },
        "links": [
            {
                "title": "EEG dashboards",
                "type": "dashboards",
                "tags": TAGS,
                "asDropdown": True,
                "includeVars": True,
                "keepTime": False,
                "targetBlank": False,
                "icon": "external link",
                "tooltip": "",
                "url": "",
            }
        ],
        "templating": {"list": variables},
        "panels": panels,
    }


def live_dashboard() -> Json:
    """Live heatmaps from Grafana Live, each above the same channel's last minutes from InfluxDB.

    Grafana Live keeps only the last pushed frame on the server, so a freshly opened page starts
    empty; the InfluxDB panel underneath shows what happened before. One repeated row per
    channel keeps each pair together.
    """
    live_stream = {
        "name": "live_stream",
        "label": "Live stream id (GRAFANA_STREAM_ID)",
        "type": "textbox",
        "query": DEFAULT_STREAM_ID,
        "current": {"text": DEFAULT_STREAM_ID, "value": DEFAULT_STREAM_ID},
        "options": [{"selected": True, "text": DEFAULT_STREAM_ID, "value": DEFAULT_STREAM_ID}],
        "hide": 0,
    }
    live_target = {
        "refId": "A",
        "datasource": LIVE_DS,
        "queryType": "measurements",
        "channel": "stream/$live_stream/$channel",
    }
    panels = [
        {
            "type": "row",
            "title": "$channel",
            "collapsed": False,
            "gridPos": {"h": 1, "w": 24, "x": 0, "y": 0},
            "repeat": "channel",
            "panels": [],
        },
        heatmap_panel(
            "$channel: live",
            [live_target],
            datasource=LIVE_DS,
            grid={"h": 9, "w": 24, "x": 0, "y": 1},
            max_data_points=LIVE_MAX_DATA_POINTS,
            description="Pushed by eeg-bridge through Grafana Live; starts filling when the page opens.",
        ),
        heatmap_panel(
            "$channel: last minutes (InfluxDB)",
            [influxql_target("live_backfill_influxql")],
            datasource=INFLUXQL_DS,
            grid={"h": 6, "w": 24, "x": 0, "y": 10},
            max_data_points=LIVE_MAX_DATA_POINTS,
            description="The archived frames of the same channel, so a refresh never shows an empty page.",
        ),
    ]
    return dashboard(
        "eeg-live-spectrogram",
        "EEG live spectrogram",
        description="Per-channel power spectra (dB) streamed by eeg-bridge.",
        panels=panels,
        variables=[live_stream, *stream_and_channel_variables(INFLUXQL_DS, "influxql", refresh=1)],
        time_from=f"now-{LIVE_WINDOW_SEC // 60}m",
        live_now=True,
    )


def history_dashboard(language: str) -> Json:
    """The archive for any time range, one heatmap per channel, downsampled to the panel width."""
    if language == "influxql":
        target = influxql_target("heatmap_downsampled_influxql")
        datasource, label = INFLUXQL_DS, "InfluxQL"
        # InfluxQL names mean() columns mean_000.00; the heatmap needs the bare bin names back
        # to place each row at its frequency.
        transformations = [{"id": "renameByRegex", "options": {"regex": "^mean_(.*)$", "renamePattern": "$1"}}]
    else:
        target = flux_target("heatmap_downsampled_flux")
        datasource, label, transformations = FLUX_DS, "Flux", []
    panel = heatmap_panel(
        "$channel",
        [target],
        datasource=datasource,
        grid={"h": 8, "w": 24, "x": 0, "y": 0},
        max_data_points=HISTORY_MAX_DATA_POINTS,
        interval=HISTORY_MIN_INTERVAL,
        transformations=transformations,
        repeat="channel",
        description="Mean PSD per frequency bin over each time bucket ($__interval).",
    )
    return dashboard(
        f"eeg-spectrogram-history-{language}",
        f"EEG spectrogram history ({label})",
        description=f"Archived spectra from InfluxDB via {label}, for any time range.",
        panels=[panel],
        variables=stream_and_channel_variables(datasource, language, refresh=2),
        time_from="now-1h",
        live_now=False,
    )


def dashboards() -> dict[str, Json]:
    """File name -> dashboard, for everything the provisioning provider loads."""
    return {
        "eeg-live-spectrogram.json": live_dashboard(),
        "eeg-spectrogram-history-influxql.json": history_dashboard("influxql"),
        "eeg-spectrogram-history-flux.json": history_dashboard("flux"),
    }


def render(board: Json) -> str:
    return json.dumps(board, indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only compare with the committed files")
    args = parser.parse_args(argv)
    stale = []
    for name, board in dashboards().items():
        path, text = HERE / name, render(board)
        if args.check:
            if not path.is_file() or path.read_text(encoding="utf-8") != text:
                stale.append(name)
        else:
            path.write_text(text, encoding="utf-8")
    if stale:
        print(f"stale, run python dashboards/generate.py: {', '.join(stale)}", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
