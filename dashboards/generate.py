"""Generate the Grafana dashboards provisioned with eeg-bridge.

    python dashboards/generate.py          # rewrite dashboards/*.json
    python dashboards/generate.py --check  # exit 1 if the committed JSON is stale

The JSON is generated rather than hand-edited so that every panel shares one set of heatmap
settings (each of which fixes a known Grafana pitfall, see docs/grafana_eeg_heatmap_setup.md)
and every query is copied verbatim from ``dashboards/queries.py``. Each dashboard also gets the
same bridge-health row (from the ``bridge_health`` points) and the LSL-marker annotation (from
``eeg_markers``), in its own query language. A test regenerates the dashboards in memory and
compares them with the committed files.

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


def _load(name: str, path: Path) -> Any:
    """Load a module by path: ``dashboards/`` is a folder of files, not a package, and the bridge's
    ``grafana_layout`` is standard library only so that this script runs before anything is installed."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


queries = _load("eeg_bridge_dashboard_queries", HERE / "queries.py")
layout = _load("eeg_bridge_grafana_layout", HERE.parent / "bridge" / "sinks" / "grafana_layout.py")

Json = dict[str, Any]

# ---- what the dashboards connect to (uids are provisioned in provisioning/datasources/) -----
INFLUXQL_DS: Json = {"type": "influxdb", "uid": "eeg-influxdb-influxql"}
FLUX_DS: Json = {"type": "influxdb", "uid": "eeg-influxdb-flux"}
LIVE_DS: Json = {"type": "datasource", "uid": "grafana"}

#: The bridge's default GRAFANA_STREAM_ID. Dashboard JSON cannot read environment variables,
#: so the live dashboard exposes it as a text-box variable (also settable by URL,
#: ``?var-live_stream=lab2``; the bridge writes its own) instead of hard-coding it.
DEFAULT_STREAM_ID = layout.DEFAULT_STREAM_ID

# ---- cadence ------------------------------------------------------------------------------------
LIVE_WINDOW_SEC = layout.LIVE_WINDOW_SEC
#: Grafana Live keeps at most Max data points rows per channel in the browser, and trims to the
#: window: rate x window x 1.25 (grafana_layout.live_buffer_rows) for 1 kHz / hop 32, the fastest
#: default cadence; the bridge rewrites it for its own frame rate when it updates the dashboard.
LIVE_MAX_DATA_POINTS = layout.live_buffer_rows(layout.PROVISIONED_FRAME_RATE_HZ)
#: The InfluxDB panels of the live dashboard (backfill, health) re-query this often while the Live
#: panels stream (a dashboard refresh keeps Live subscriptions and their browser buffers).
LIVE_REFRESH = "10s"
#: Lower bound of $__interval / v.windowPeriod on history panels: below the frame period every
#: bucket would hold one frame or none, so short ranges get raw frames and no gaps.
HISTORY_MIN_INTERVAL = "250ms"
HISTORY_MAX_DATA_POINTS = 1000

# ---- bridge health row ---------------------------------------------------------------------------
#: The bridge writes one bridge_health point every HEALTH_WRITE_INTERVAL_SEC (default 10 s): a
#: finer $__interval would only add empty buckets (and a rate over two points 10 s apart is the
#: finest there is).
HEALTH_MIN_INTERVAL = "10s"
#: The live dashboard shows 2 minutes, a dozen health points; its health row looks further back.
LIVE_HEALTH_WINDOW = "30m"
HEALTH_PANEL_HEIGHT = 6
#: Grafana custom units ("suffix:<text>"): 3 frames/s, 12 frames.
FRAMES_PER_S = "suffix: frames/s"
FRAMES = "suffix: frames"
MARKER_COLOR = "rgba(255, 96, 96, 1)"

# ---- colour scale: dB of µV²/Hz; scalp EEG sits roughly between these --------------------------
COLOR_MIN_DB = -20
COLOR_MAX_DB = 30
#: Grafana hides heatmap cells <= 1e-9 by default, i.e. every dB value <= 0. Far below any dB
#: value the bridge can write (10*log10(1e-30) = -300 dB).
FILTER_LE = -1e9

TAGS = ["eeg", "eeg-bridge"]
SCHEMA_VERSION = 41  # Grafana 12.x schema; Grafana 11 and 13 load it (older schemas are migrated on load)


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


def influxql_series_target(query_name: str) -> Json:
    """Raw InfluxQL as time series: one series per selected column, named by its AS alias ($col)."""
    return {
        "refId": "A",
        "datasource": INFLUXQL_DS,
        "query": queries.get(query_name).text,
        "rawQuery": True,
        "resultFormat": "time_series",
        "alias": "$col",
    }


def health_target(language: str, panel: str) -> Json:
    name = f"health_{panel}_{language}"
    return influxql_series_target(name) if language == "influxql" else flux_target(name)


def row(title: str, y: int, *, repeat: str | None = None) -> Json:
    panel: Json = {
        "type": "row",
        "title": title,
        "collapsed": False,
        "gridPos": {"h": 1, "w": 24, "x": 0, "y": y},
        "panels": [],
    }
    if repeat is not None:
        panel["repeat"] = repeat
    return panel


def timeseries_panel(title: str, target: Json, *, grid: Json, unit: str, description: str,
                     time_from: str | None, decimals: int | None = None) -> Json:
    defaults: Json = {
        "unit": unit,
        "min": 0,
        "color": {"mode": "palette-classic"},
        "custom": {
            "drawStyle": "line",
            "lineInterpolation": "linear",
            "lineWidth": 1,
            "fillOpacity": 10,
            "showPoints": "auto",
            "pointSize": 4,
            # A gap in the ledger means the bridge was not writing: show it, do not bridge it.
            "spanNulls": False,
            "axisSoftMin": 0,
        },
    }
    if decimals is not None:
        defaults["decimals"] = decimals
    panel: Json = {
        "type": "timeseries",
        "title": title,
        "description": description,
        "datasource": target["datasource"],
        "gridPos": grid,
        "interval": HEALTH_MIN_INTERVAL,
        "targets": [target],
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": {
            "legend": {"showLegend": True, "displayMode": "list", "placement": "bottom", "calcs": ["max"]},
            "tooltip": {"mode": "multi", "sort": "none"},
        },
    }
    if time_from is not None:
        panel["timeFrom"] = time_from
    return panel


def connected_panel(target: Json, *, grid: Json, description: str, time_from: str | None) -> Json:
    panel: Json = {
        "type": "state-timeline",
        "title": "LSL stream connected",
        "description": description,
        "datasource": target["datasource"],
        "gridPos": grid,
        "interval": HEALTH_MIN_INTERVAL,
        "targets": [target],
        "fieldConfig": {
            "defaults": {
                "color": {"mode": "thresholds"},
                "thresholds": {
                    "mode": "absolute",
                    "steps": [{"color": "red", "value": None}, {"color": "green", "value": 1}],
                },
                "mappings": [
                    {
                        "type": "value",
                        "options": {
                            "0": {"text": "disconnected", "color": "red", "index": 0},
                            "1": {"text": "connected", "color": "green", "index": 1},
                        },
                    }
                ],
                "custom": {"fillOpacity": 80, "lineWidth": 0},
            },
            "overrides": [],
        },
        "options": {
            "showValue": "never",
            "mergeValues": True,
            "alignValue": "left",
            "rowHeight": 0.9,
            "legend": {"showLegend": False, "displayMode": "list", "placement": "bottom"},
            "tooltip": {"mode": "single", "sort": "none"},
        },
    }
    if time_from is not None:
        panel["timeFrom"] = time_from
    return panel


def health_row(language: str, y: int, *, time_from: str | None) -> list[Json]:
    """A row of five panels read from the bridge_health points of the selected $stream."""
    h = HEALTH_PANEL_HEIGHT
    description = {q.name: q.description for q in queries.QUERIES}

    def grid(x: int, w: int) -> Json:
        return {"h": h, "w": w, "x": x, "y": y + 1}

    def d(panel: str) -> str:
        return description[f"health_{panel}_{language}"]

    return [
        row("Bridge health ($stream)", y),
        timeseries_panel("Delivery latency", health_target(language, "latency"), grid=grid(0, 5), unit="s",
                         description=d("latency"), time_from=time_from),
        timeseries_panel("Frames dropped", health_target(language, "drops"), grid=grid(5, 5), unit=FRAMES_PER_S,
                         description=d("drops"), time_from=time_from),
        timeseries_panel("LSL staleness", health_target(language, "staleness"), grid=grid(10, 5), unit="s",
                         description=d("staleness"), time_from=time_from),
        timeseries_panel("Queues and spool", health_target(language, "backlog"), grid=grid(15, 5), unit=FRAMES,
                         description=d("backlog"), time_from=time_from, decimals=0),
        connected_panel(health_target(language, "connected"), grid=grid(20, 4), description=d("connected"),
                        time_from=time_from),
    ]


def marker_annotation(language: str) -> Json:
    """LSL markers as annotations, on every panel with a time axis."""
    query = queries.get(f"markers_annotation_{language}")
    annotation: Json = {
        "name": "LSL markers",
        "enable": True,
        "hide": False,
        "iconColor": MARKER_COLOR,
    }
    if language == "influxql":
        # The shape Grafana's InfluxQL annotation editor saves: the query and which columns hold
        # the text and the tags, on the target (fromAnnotations marks it as an annotation query).
        annotation["datasource"] = INFLUXQL_DS
        annotation["target"] = {
            "refId": "Anno",
            "fromAnnotations": True,
            "queryType": "tags",
            "rawQuery": True,
            "query": query.text,
            "textColumn": queries.MARKER_FIELD,
            "tagsColumn": queries.STREAM_TAG,
            "titleColumn": "",
            "timeEndColumn": "",
        }
    else:
        # Flux uses Grafana's standard annotation support: fields named text and tags map
        # themselves, the first time field is the time.
        annotation["datasource"] = FLUX_DS
        annotation["target"] = {"refId": "Anno", "query": query.text}
    return annotation


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
              time_from: str, live_now: bool, annotations: list[Json], refresh: str = "",
              links: tuple[Json, ...] = ()) -> Json:
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": TAGS,
        "editable": True,
        "graphTooltip": 1,  # shared crosshair: the same instant in every channel
        "liveNow": live_now,
        "refresh": refresh,
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
                },
                *annotations,
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
            },
            *links,
        ],
        "templating": {"list": variables},
        "panels": panels,
    }


#: Band power (integrated over the band, dB of µV²) sits higher than a PSD value per Hz.
BAND_COLOR_MIN_DB = -10
BAND_COLOR_MAX_DB = 40
QUALITY_COLORS = (("0", "good", "green"), ("1", "warn", "yellow"), ("2", "bad", "red"))


def live_target(measurement: str) -> Json:
    return {"refId": "A", "datasource": LIVE_DS, "queryType": "measurements",
            "channel": f"stream/${layout.STREAM_ID_VARIABLE}/{measurement}"}


def band_overview_panel(band: str, grid: Json) -> Json:
    """One heatmap per band, channels on the y axis: one Live subscription for every channel.

    Field names are channel names, not numbers, so the heatmap keeps the frame's field order, which
    Grafana Live's converter sorted by name (docs/grafana_eeg_heatmap_setup.md, "Channel order").
    """
    panel = heatmap_panel(
        f"{band} power, every channel",
        [live_target(f"band_{band}")],
        datasource=LIVE_DS,
        grid=grid,
        max_data_points=LIVE_MAX_DATA_POINTS,
        description=f"Absolute {band} band power (dB) per channel, pushed by eeg-bridge as band_{band}.",
    )
    options = panel["options"]
    options["color"] = {**options["color"], "min": BAND_COLOR_MIN_DB, "max": BAND_COLOR_MAX_DB}
    options["rowsFrame"] = {"layout": "unknown", "value": "dB"}
    # Channels sorted A..Z from the top.
    options["yAxis"] = {"axisPlacement": "left", "axisLabel": "Channel", "reverse": True, "unit": "none"}
    return panel


def quality_overview_panel(grid: Json) -> Json:
    """Per-channel quality state over time: one row per channel, one Live subscription."""
    mappings = {code: {"text": text, "color": color, "index": i} for i, (code, text, color) in enumerate(QUALITY_COLORS)}
    mappings[str(layout.FILL_STATE)] = {"text": "no frame", "color": "transparent", "index": len(QUALITY_COLORS)}
    return {
        "type": "state-timeline",
        "title": "Signal quality, every channel",
        "description": "0 good, 1 warn, 2 bad per channel (docs/data-model.md, eeg_quality), pushed as quality.",
        "datasource": LIVE_DS,
        "gridPos": grid,
        "maxDataPoints": LIVE_MAX_DATA_POINTS,
        "targets": [live_target("quality")],
        "fieldConfig": {
            "defaults": {
                "color": {"mode": "thresholds"},
                "thresholds": {"mode": "absolute", "steps": [{"color": "transparent", "value": None}]},
                "mappings": [{"type": "value", "options": mappings}],
                "custom": {"fillOpacity": 90, "lineWidth": 0},
            },
            "overrides": [],
        },
        "options": {
            "showValue": "never",
            "mergeValues": True,
            "alignValue": "left",
            "rowHeight": 1,
            "legend": {"showLegend": True, "displayMode": "list", "placement": "bottom"},
            "tooltip": {"mode": "single", "sort": "none"},
        },
    }


def live_dashboard() -> Json:
    """Overview of every channel on top, then health, then detail spectrograms of chosen channels.

    Nothing live depends on InfluxDB: the overview needs no variable, the detail rows repeat over a
    custom ``$channel`` that the bridge keeps current (bridge/sinks/grafana_dashboard.py). Grafana
    Live keeps only the last pushed frame on the server, so a freshly opened page starts empty; the
    InfluxDB panel under each live heatmap shows what happened before. Subscriptions: one per band,
    one for quality, one per detail channel, under Centrifuge's 128 per browser by default.
    """
    live_stream = {
        "name": layout.STREAM_ID_VARIABLE,
        "label": "Live stream id (GRAFANA_STREAM_ID)",
        "type": "textbox",
        "query": DEFAULT_STREAM_ID,
        "current": {"text": DEFAULT_STREAM_ID, "value": DEFAULT_STREAM_ID},
        "options": [{"selected": True, "text": DEFAULT_STREAM_ID, "value": DEFAULT_STREAM_ID}],
        "hide": 0,
    }
    overview_h = 12
    bands = layout.DEFAULT_BANDS
    overview: list[Json] = [row("Overview: every channel ($live_stream)", 0)]
    cells = [*(("band", b) for b in bands), ("quality", "")]
    for i, (kind, band) in enumerate(cells):
        grid = {"h": overview_h, "w": 8, "x": 8 * (i % 3), "y": 1 + overview_h * (i // 3)}
        overview.append(band_overview_panel(band, grid) if kind == "band" else quality_overview_panel(grid))
    y = 1 + overview_h * math.ceil(len(cells) / 3)
    health = health_row("influxql", y, time_from=LIVE_HEALTH_WINDOW)
    y += 1 + HEALTH_PANEL_HEIGHT
    panels = [
        *overview,
        *health,
        row("$channel", y, repeat=layout.CHANNEL_VARIABLE),
        heatmap_panel(
            "$channel: live",
            [live_target("$channel")],
            datasource=LIVE_DS,
            grid={"h": 9, "w": 24, "x": 0, "y": y + 1},
            max_data_points=LIVE_MAX_DATA_POINTS,
            description="Pushed by eeg-bridge through Grafana Live; starts filling when the page opens.",
        ),
        heatmap_panel(
            "$channel: last minutes (InfluxDB)",
            [influxql_target("live_backfill_influxql")],
            datasource=INFLUXQL_DS,
            grid={"h": 6, "w": 24, "x": 0, "y": y + 10},
            max_data_points=LIVE_MAX_DATA_POINTS,
            description="The archived frames of the same channel, so a refresh never shows an empty page.",
        ),
    ]
    stream = query_variable("stream", "LSL stream (InfluxDB)", INFLUXQL_DS, "streams_influxql", multi=False, refresh=1)
    return dashboard(
        layout.LIVE_DASHBOARD_UID,
        "EEG live spectrogram",
        description="Band power and quality of every channel, and power spectra (dB) of chosen channels, "
        "streamed by eeg-bridge.",
        panels=panels,
        variables=[live_stream, layout.channel_variable([]), stream],
        time_from=f"now-{LIVE_WINDOW_SEC // 60}m",
        live_now=True,
        annotations=[marker_annotation("influxql")],
        refresh=LIVE_REFRESH,
        # GetHomeDashboard serves this file as the home page; the bridge saves its copy, linked here.
        links=(layout.owned_dashboard_link(),),
    )


#: InfluxQL stamps a GROUP BY time() bucket with its START; the heatmap draws a row as the cell that
#: ENDS at its timestamp (rowsToCellsHeatmap names the x field "xMax", public/app/features/transformers/
#: calculateHeatmap/heatmap.ts; fields.ts reads "xMax" as layout le). Unshifted, every cell sits one
#: bucket before its data. This transformation adds $__interval_ms to the time field (calculateField,
#: binary, left matched by type time, so the result stays a time field; the right operand by name, which
#: Grafana interpolates and, finding no field of that name, parses as the number) and drops the original
#: "Time" field (the InfluxQL backend's name for it), so the heatmap takes the bucket end. Flux's
#: aggregateWindow already stamps window ends (timeSrc "_stop").
SHIFT_TO_BUCKET_END: list[Json] = [
    {
        "id": "calculateField",
        "options": {
            "mode": "binary",
            "binary": {
                "left": {"matcher": {"id": "byType", "options": "time"}},
                "operator": "+",
                "right": {"matcher": {"id": "byName", "options": "$__interval_ms"}},
            },
            "timeSeries": False,
            "replaceFields": False,
        },
    },
    {"id": "organize", "options": {"excludeByName": {"Time": True, "time": True}, "indexByName": {}, "renameByName": {}}},
]


def band_variable() -> Json:
    bands = queries.DEFAULT_BANDS
    return {
        "name": "band",
        "label": "Band",
        "type": "custom",
        "query": ",".join(bands),
        "multi": False,
        "includeAll": False,
        "current": {"selected": True, "text": "alpha", "value": "alpha"},
        "options": [{"selected": b == "alpha", "text": b, "value": b} for b in bands],
        "hide": 0,
        "description": "SPECTRUM_BANDS default; a band configured otherwise: add its name here.",
    }


def bands_row(language: str, y: int) -> list[Json]:
    """Band power of every selected channel as a heatmap and as lines, and the quality timeline."""
    influxql = language == "influxql"
    datasource = INFLUXQL_DS if influxql else FLUX_DS
    description = {q.name: q.description for q in queries.QUERIES}

    def target(name: str) -> Json:
        query = f"{name}_{language}"
        if not influxql:
            return flux_target(query)
        return {**influxql_series_target(query), "alias": "$tag_channel"}

    heatmap = heatmap_panel(
        "$band power per channel",
        [target("bands_heatmap")],
        datasource=datasource,
        grid={"h": 10, "w": 12, "x": 0, "y": y + 1},
        max_data_points=HISTORY_MAX_DATA_POINTS,
        interval=HISTORY_MIN_INTERVAL,
        transformations=SHIFT_TO_BUCKET_END if influxql else None,
        description=description[f"bands_heatmap_{language}"],
    )
    options = heatmap["options"]
    options["color"] = {**options["color"], "min": BAND_COLOR_MIN_DB, "max": BAND_COLOR_MAX_DB}
    options["rowsFrame"] = {"layout": "unknown", "value": "dB"}
    options["yAxis"] = {"axisPlacement": "left", "axisLabel": "Channel", "reverse": True, "unit": "none"}
    quality = quality_overview_panel({"h": 10, "w": 12, "x": 12, "y": y + 1})
    quality.update({
        "title": "Signal quality per channel",
        "description": description[f"quality_timeline_{language}"],
        "datasource": datasource,
        "targets": [target("quality_timeline")],
        "maxDataPoints": HISTORY_MAX_DATA_POINTS,
        "interval": HISTORY_MIN_INTERVAL,
    })
    relative = timeseries_panel(
        "$band relative power per channel", target("bands_relative"), grid={"h": 8, "w": 24, "x": 0, "y": y + 11},
        unit="percentunit", description=description[f"bands_relative_{language}"], time_from=None,
    )
    relative["interval"] = HISTORY_MIN_INTERVAL
    relative["fieldConfig"]["defaults"]["max"] = 1
    return [row("Band power and quality ($band)", y), heatmap, quality, relative]


def history_dashboard(language: str) -> Json:
    """The archive for any time range: band power and quality of every channel, then one spectrogram
    heatmap per channel, downsampled to the panel width."""
    if language == "influxql":
        target = influxql_target("heatmap_downsampled_influxql")
        datasource, label = INFLUXQL_DS, "InfluxQL"
        # InfluxQL names mean() columns mean_000.00; the heatmap needs the bare bin names back
        # to place each row at its frequency. Then each bucket is stamped with its end.
        transformations = [
            {"id": "renameByRegex", "options": {"regex": "^mean_(.*)$", "renamePattern": "$1"}},
            *SHIFT_TO_BUCKET_END,
        ]
    else:
        target = flux_target("heatmap_downsampled_flux")
        datasource, label, transformations = FLUX_DS, "Flux", []
    health = health_row(language, 0, time_from=None)
    y = 1 + HEALTH_PANEL_HEIGHT
    bands = bands_row(language, y)
    y += 1 + 10 + 8
    panel = heatmap_panel(
        "$channel",
        [target],
        datasource=datasource,
        grid={"h": 8, "w": 24, "x": 0, "y": y + 1},
        max_data_points=HISTORY_MAX_DATA_POINTS,
        interval=HISTORY_MIN_INTERVAL,
        transformations=transformations,
        repeat="channel",
        description="Mean PSD per frequency bin over each time bucket ($__interval), drawn ending at the bucket's end.",
    )
    return dashboard(
        f"eeg-spectrogram-history-{language}",
        f"EEG spectrogram history ({label})",
        description=f"Archived spectra, band power and signal quality from InfluxDB via {label}, for any time range.",
        panels=[*health, *bands, row("Spectrograms", y), panel],
        variables=[*stream_and_channel_variables(datasource, language, refresh=2), band_variable()],
        time_from="now-1h",
        live_now=False,
        annotations=[marker_annotation(language)],
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
