"""The provisioned dashboards: generated, consistent with the bridge, and free of known pitfalls.

No Grafana can run here, so these tests pin the settings that shared/reference/grafana-live.md
shows to matter (calculate off, filterValues.le, liveNow, numeric bin names, Live channel
addresses) and check every query against dashboards/queries.py, whose InfluxQL runs on a real
InfluxDB in tests/test_history_queries.py and whose Flux is checked in tests/test_flux_queries.py.
"""

from __future__ import annotations

import importlib.util
import json
import math
import re
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from bridge.config import Options

ROOT = Path(__file__).resolve().parents[1]
DASHBOARDS = ROOT / "dashboards"
DOC = ROOT / "docs" / "grafana_eeg_heatmap_setup.md"

#: The lowest dB value the bridge can write: 10 * log10(0 + 1e-30) (docs/data-model.md).
LOWEST_DB = -300.0
#: Grafana's own datasources, which are not provisioned.
BUILTIN_UIDS = {"grafana", "-- Grafana --"}
#: Bin names as the encoder writes them at 500 Hz / nperseg 256.
SAMPLE_BINS = ("000.00", "001.95", "010.74", "250.00")


def _load(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


generate = _load("dashboards_generate_under_test", DASHBOARDS / "generate.py")
history_assertions = _load("history_assertions_for_dashboards", ROOT / "tests" / "history_assertions.py")
queries = generate.queries
BOARDS: dict[str, dict[str, Any]] = {
    path.name: json.loads(path.read_text(encoding="utf-8")) for path in sorted(DASHBOARDS.glob("*.json"))
}
OPTION_DEFAULTS = {name: field.default for name, field in Options.model_fields.items()}


def panels(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in board["panels"]:
        yield panel
        yield from panel.get("panels", [])


def heatmaps() -> Iterator[tuple[str, dict[str, Any]]]:
    for name, board in BOARDS.items():
        for panel in panels(board):
            if panel["type"] == "heatmap":
                yield name, panel


def targets() -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(board, panel, target) of every heatmap, the panel's datasource filled in where the target has none."""
    for name, panel in heatmaps():
        for target in panel["targets"]:
            yield name, panel, {"datasource": panel["datasource"], **target}


def all_targets() -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(board, panel, target) of every panel that queries, then of every annotation query."""
    for name, board in BOARDS.items():
        for panel in panels(board):
            for target in panel.get("targets", []):
                yield name, panel, {"datasource": panel["datasource"], **target}
        for annotation in board["annotations"]["list"]:
            if "target" in annotation:
                yield name, annotation, {"datasource": annotation["datasource"], **annotation["target"]}


def health_panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    """The panels under the bridge-health row (up to the next row)."""
    found, inside = [], False
    for panel in board["panels"]:
        if panel["type"] == "row":
            inside = panel["title"].startswith("Bridge health")
        elif inside:
            found.append(panel)
    return found


def marker_annotations(board: dict[str, Any]) -> list[dict[str, Any]]:
    return [a for a in board["annotations"]["list"] if a["name"] == "LSL markers"]


def language_of(datasource: dict[str, Any]) -> str:
    return "flux" if provisioned_datasources()[datasource["uid"]]["jsonData"]["version"] == "Flux" else "influxql"


def variables(board: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in board["templating"]["list"]}


def provisioned_datasources() -> dict[str, dict[str, Any]]:
    found = {}
    for path in sorted((ROOT / "provisioning" / "datasources").glob("*.y*ml")):
        for ds in yaml.safe_load(path.read_text(encoding="utf-8"))["datasources"]:
            found[ds["uid"]] = ds
    return found


def test_committed_json_is_what_the_generator_writes() -> None:
    generated = generate.dashboards()
    assert set(generated) == set(BOARDS), "run python dashboards/generate.py"
    for name, board in generated.items():
        assert generate.render(board) == (DASHBOARDS / name).read_text(encoding="utf-8"), (
            f"{name} is stale: run python dashboards/generate.py"
        )


def test_dashboard_uids_are_stable_and_distinct() -> None:
    uids = [board["uid"] for board in BOARDS.values()]
    assert len(set(uids)) == len(uids)
    assert set(uids) == {"eeg-live-spectrogram", "eeg-spectrogram-history-influxql", "eeg-spectrogram-history-flux"}
    for board in BOARDS.values():
        assert "id" not in board and len(board["uid"]) <= 40
        assert board["schemaVersion"] >= 39  # Grafana 11+


def test_every_heatmap_avoids_the_known_pitfalls() -> None:
    found = list(heatmaps())
    assert found
    for name, panel in found:
        options = panel["options"]
        where = f"{name}: {panel['title']}"
        assert options["calculate"] is False, where  # bins are given, not to be re-bucketed
        assert options["filterValues"]["le"] < LOWEST_DB, where  # default 1e-9 hides every dB <= 0
        target = panel["targets"][0]
        if "/band_" in target.get("channel", "") or "eeg_bands" in target.get("query", ""):  # channels on y
            assert options["yAxis"]["unit"] == "none" and options["yAxis"]["axisLabel"] == "Channel", where
        else:
            assert options["yAxis"]["unit"] == "hertz", where
        assert options["rowsFrame"]["layout"] in {"unknown", "le", "ge"}, where
        color = options["color"]
        assert isinstance(color["min"], (int, float)) and isinstance(color["max"], (int, float)), where
        assert LOWEST_DB < color["min"] < color["max"], where


def test_live_dashboard_scrolls_and_buffers_the_visible_window() -> None:
    """The browser keeps Max data points rows per Live channel (StreamingDataFrame maxLength): they
    must hold the whole window at the fastest default cadence, 1 kHz with hop 32 (31.25 frames/s)."""
    board = BOARDS["eeg-live-spectrogram.json"]
    assert board["liveNow"] is True
    window = board["time"]
    assert window["to"] == "now"
    minutes = int(re.fullmatch(r"now-(\d+)m", window["from"]).group(1))
    frames_visible = math.ceil(minutes * 60 * 1000 / 32)
    live = [p for p in panels(board) if p.get("datasource", {}).get("uid") == "grafana"]
    assert len(live) == 7  # five bands, quality, the detail heatmap
    for panel in live:
        assert panel["maxDataPoints"] >= frames_visible, panel["title"]


def test_live_dashboard_refreshes_its_influxdb_panels() -> None:
    board = BOARDS["eeg-live-spectrogram.json"]
    # Before: refresh "" and the backfill / health panels stayed as loaded while Live streamed.
    seconds = history_assertions.duration_ns(board["refresh"]) / 1e9
    assert 0 < seconds <= OPTION_DEFAULTS["health_write_interval_sec"]


def test_live_channels_address_the_bridge_defaults() -> None:
    board = BOARDS["eeg-live-spectrogram.json"]
    stream_id = variables(board)["live_stream"]["current"]["value"]
    assert stream_id == OPTION_DEFAULTS["grafana_stream_id"]
    live_targets = [
        {"datasource": p["datasource"], **t} for p in panels(board) if p.get("datasource", {}).get("uid") == "grafana"
        for t in p["targets"]
    ]
    addresses = []
    for target in live_targets:
        assert target["datasource"] == {"type": "datasource", "uid": "grafana"}
        assert target["queryType"] == "measurements"
        address = target["channel"].replace("$live_stream", stream_id).replace("$channel", "Fz")
        assert re.fullmatch(r"stream/[A-Za-z0-9_-]+/[A-Za-z0-9_-]+", address) and len(address) <= 160
        addresses.append(address)
    bands = ("delta", "theta", "alpha", "beta", "gamma")  # SPECTRUM_BANDS default (docs/data-model.md)
    assert sorted(addresses) == sorted([f"stream/{stream_id}/Fz", f"stream/{stream_id}/quality",
                                        *(f"stream/{stream_id}/band_{b}" for b in bands)])


def test_each_live_heatmap_has_the_same_channel_from_influxdb_underneath() -> None:
    board = BOARDS["eeg-live-spectrogram.json"]
    rows = [p for p in board["panels"] if p["type"] == "row"]
    (row,) = [r for r in rows if r.get("repeat")]
    assert row["repeat"] == "channel" and row["collapsed"] is False
    assert rows[-1] is row, "panels after the repeated row would be repeated with it"
    inside = board["panels"][board["panels"].index(row) + 1:]
    live, backfill = [p for p in inside if p["type"] == "heatmap"]
    assert row["gridPos"]["y"] < live["gridPos"]["y"]
    assert live["datasource"]["uid"] == "grafana" and backfill["datasource"]["type"] == "influxdb"
    assert backfill["gridPos"]["y"] == live["gridPos"]["y"] + live["gridPos"]["h"]
    assert backfill["targets"][0]["query"] == queries.get("live_backfill_influxql").text


def test_overview_row_is_first_and_needs_no_variable() -> None:
    board = BOARDS["eeg-live-spectrogram.json"]
    first = board["panels"][0]
    assert first["type"] == "row" and first["title"].startswith("Overview") and not first.get("repeat")
    overview = board["panels"][1:7]
    assert [p["type"] for p in overview] == ["heatmap"] * 5 + ["state-timeline"]
    for panel in overview:
        assert "$channel" not in json.dumps(panel)
    quality = overview[-1]["fieldConfig"]["defaults"]["mappings"][0]["options"]
    assert {k: v["text"] for k, v in quality.items()} == {"0": "good", "1": "warn", "2": "bad", "-1": "no frame"}


def test_every_query_text_comes_from_queries_py() -> None:
    known = {(q.language, q.text) for q in queries.QUERIES}
    seen = 0
    for name, board in BOARDS.items():
        items = [t for n, _, t in all_targets() if n == name]
        items += [v for v in board["templating"]["list"] if v["type"] == "query"]
        for item in items:
            uid = item["datasource"]["uid"]
            if uid in BUILTIN_UIDS:
                continue
            language = language_of(item["datasource"])
            assert (language, item["query"]) in known, f"{name}: query not in queries.py: {item['query']!r}"
            seen += 1
    # 3 boards x (5 health panels + 1 annotation + 1 stream variable) + the history boards' channel
    # variables, spectrogram heatmap and 3 band/quality panels each + live backfill (the live
    # $channel is a custom variable)
    assert seen == 3 * 7 + 2 * (1 + 1 + 3) + 1


def test_the_dashboards_use_every_health_and_marker_query() -> None:
    used = {
        (language_of(t["datasource"]), t["query"])
        for _, _, t in all_targets()
        if t["datasource"]["uid"] not in BUILTIN_UIDS
    }
    events = {(q.language, q.text) for q in queries.QUERIES if q.schema == "events"}
    assert events <= used


def test_influxql_table_format_and_mean_columns_renamed_back() -> None:
    for name, panel, target in targets():
        if target["datasource"]["uid"] != generate.INFLUXQL_DS["uid"]:
            continue
        if "eeg_bands" in target["query"]:  # one series per channel, named by it
            assert target["resultFormat"] == "time_series" and target["alias"] == "$tag_channel", name
            continue
        assert target["rawQuery"] is True and target["resultFormat"] == "table", name
        renames = [t["options"] for t in panel.get("transformations", []) if t["id"] == "renameByRegex"]
        if "mean(" not in target["query"]:
            assert not renames, name
            continue
        (rename,) = renames
        pattern = re.compile(rename["regex"])
        replacement = rename["renamePattern"].replace("$1", r"\1")
        for bin_name in SAMPLE_BINS:
            assert pattern.sub(replacement, f"mean_{bin_name}") == bin_name


def test_every_datasource_uid_is_provisioned() -> None:
    sources = provisioned_datasources()
    for name, board in BOARDS.items():
        for node in _walk(board):
            if isinstance(node, dict) and isinstance(node.get("datasource"), dict):
                uid = node["datasource"]["uid"]
                assert uid in sources or uid in BUILTIN_UIDS, f"{name}: datasource {uid} is not provisioned"


def test_variables_come_from_stored_tags() -> None:
    for name, board in BOARDS.items():
        found = variables(board)
        stream, channel = found["stream"], found["channel"]
        assert "stream_name" in stream["query"], name
        if name == "eeg-live-spectrogram.json":
            # kept current by the bridge, no datasource; no All (256 would pass the 128-channel limit)
            assert channel["type"] == "custom" and channel["multi"] and not channel["includeAll"], name
            continue
        assert "channel" in channel["query"] and "stream" in channel["query"].replace("stream_name", ""), name
        assert channel["multi"] and channel["includeAll"], name
        assert not channel.get("allValue"), "All must expand to the values, for the regex (a|b|c)"
        multi = {v["name"] for v in board["templating"]["list"] if v.get("multi") or v.get("includeAll")}
        # The query tests interpolate these as multi-value variables (tests/history_assertions.py).
        assert multi == history_assertions.DASHBOARD_MULTI_VARIABLES, name
    for name, panel in heatmaps():
        if "history" in name and panel["title"] == "$channel":
            assert panel["repeat"] == "channel"
            assert panel["interval"], "history panels need a minimum interval for GROUP BY time()"
            rows = [p for p in BOARDS[name]["panels"] if p["type"] == "row"]
            assert rows[-1]["title"] == "Spectrograms" and rows[-1]["gridPos"]["y"] < panel["gridPos"]["y"]


# ---- bridge-health row and marker annotations ------------------------------------------------

HEALTH_PANEL_KINDS = {
    "latency": "s",
    "drops": "suffix: frames/s",
    "staleness": "s",
    "backlog": "suffix: frames",
    "connected": None,
}


@pytest.mark.parametrize("name", sorted(BOARDS))
def test_every_dashboard_has_the_bridge_health_row(name: str) -> None:
    board = BOARDS[name]
    (row,) = [p for p in board["panels"] if p["type"] == "row" and p["title"].startswith("Bridge health")]
    assert row["collapsed"] is False and "repeat" not in row and "$stream" in row["title"]
    found = health_panels(board)
    language = "flux" if name.endswith("-flux.json") else "influxql"
    queries_used = [p["targets"][0]["query"] for p in found]
    assert queries_used == [queries.get(f"health_{kind}_{language}").text for kind in HEALTH_PANEL_KINDS]
    interval_s = OPTION_DEFAULTS["health_write_interval_sec"]
    for panel, (kind, unit) in zip(found, HEALTH_PANEL_KINDS.items()):
        assert panel["gridPos"]["y"] == row["gridPos"]["y"] + 1 and panel["gridPos"]["h"] == found[0]["gridPos"]["h"]
        assert language_of(panel["datasource"]) == language
        # No finer buckets than the bridge writes points: a rate needs two points.
        assert history_assertions.duration_ns(panel["interval"]) >= interval_s * 10**9
        if unit is None:
            assert panel["type"] == "state-timeline"
            mapped = panel["fieldConfig"]["defaults"]["mappings"][0]["options"]
            assert mapped["0"]["text"] == "disconnected" and mapped["1"]["text"] == "connected"
        else:
            assert panel["type"] == "timeseries" and panel["fieldConfig"]["defaults"]["unit"] == unit
        if language == "influxql":
            (target,) = panel["targets"]
            # One series per AS alias, named by it.
            assert target["rawQuery"] is True and target["resultFormat"] == "time_series" and target["alias"] == "$col"
    assert sum(p["gridPos"]["w"] for p in found) == 24
    xs = [p["gridPos"]["x"] for p in found]
    assert xs == sorted(xs)
    assert all(a["gridPos"]["x"] + a["gridPos"]["w"] == b["gridPos"]["x"] for a, b in zip(found, found[1:]))
    if name == "eeg-live-spectrogram.json":
        # The live range (2 minutes) holds a dozen health points: look further back.
        assert all(p["timeFrom"] == generate.LIVE_HEALTH_WINDOW for p in found)
    else:
        assert all("timeFrom" not in p for p in found)


def test_health_and_marker_names_are_the_bridge_defaults() -> None:
    assert queries.HEALTH_MEASUREMENT == OPTION_DEFAULTS["influxdb_health_measurement"]
    assert queries.MARKER_MEASUREMENT == OPTION_DEFAULTS["influxdb_marker_measurement"]


@pytest.mark.parametrize("name", sorted(BOARDS))
def test_markers_are_annotations_on_every_dashboard(name: str) -> None:
    board = BOARDS[name]
    (annotation,) = marker_annotations(board)
    assert annotation["enable"] is True and annotation["hide"] is False
    target = annotation["target"]
    language = language_of(annotation["datasource"])
    assert language == ("flux" if name.endswith("-flux.json") else "influxql")
    assert target["query"] == queries.get(f"markers_annotation_{language}").text
    if language == "influxql":
        # Grafana's InfluxQL annotations: the query on the target, flagged fromAnnotations, the
        # text from the marker column and the tags from the (marker) stream column.
        assert target["fromAnnotations"] is True and target["rawQuery"] is True
        assert target["textColumn"] == queries.MARKER_FIELD == "marker"
        assert target["tagsColumn"] == queries.STREAM_TAG
        selected = re.findall(r'"(\w+)"', target["query"].split(" FROM ")[0])
        assert selected == [target["textColumn"], target["tagsColumn"]]
        assert "$timeFilter" in target["query"] and "$stream" not in target["query"]
    else:
        # Standard annotation support: fields named text and tags map themselves.
        assert set(target) == {"refId", "query"} and "mappings" not in annotation
        assert 'rename(columns: {_value: "text", stream_name: "tags"})' in target["query"]


def _walk(node: Any) -> Iterator[Any]:
    yield node
    children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
    for child in children:
        yield from _walk(child)


# ---- the set-up guide shows the same queries ----------------------------------------------------

FENCE = re.compile(r"^```(influxql|flux)\n(.*?)^```", re.MULTILINE | re.DOTALL)


@pytest.fixture(scope="module")
def doc_queries() -> list[tuple[str, str]]:
    return [(lang, body.rstrip("\n")) for lang, body in FENCE.findall(DOC.read_text(encoding="utf-8"))]


def test_every_query_in_the_docs_is_one_of_queries_py(doc_queries) -> None:
    known = {(q.language, q.text) for q in queries.QUERIES}
    unknown = [body for lang, body in doc_queries if (lang, body) not in known]
    assert not unknown, "docs show a query that is not in dashboards/queries.py"


def test_the_docs_show_every_query(doc_queries) -> None:
    missing = [q.name for q in queries.QUERIES if (q.language, q.text) not in set(doc_queries)]
    assert not missing, f"docs/grafana_eeg_heatmap_setup.md lacks {missing}"
