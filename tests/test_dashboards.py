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
    """(board, panel, target) with the panel's datasource filled in where the target has none."""
    for name, panel in heatmaps():
        for target in panel["targets"]:
            yield name, panel, {"datasource": panel["datasource"], **target}


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
        assert options["yAxis"]["unit"] == "hertz", where
        assert options["rowsFrame"]["layout"] in {"unknown", "le", "ge"}, where
        color = options["color"]
        assert isinstance(color["min"], (int, float)) and isinstance(color["max"], (int, float)), where
        assert LOWEST_DB < color["min"] < color["max"], where


def test_live_dashboard_scrolls_and_buffers_the_visible_window() -> None:
    board = BOARDS["eeg-live-spectrogram.json"]
    assert board["liveNow"] is True
    window = board["time"]
    assert window["to"] == "now"
    minutes = int(re.fullmatch(r"now-(\d+)m", window["from"]).group(1))
    hop = OPTION_DEFAULTS["spectrum_nperseg"] - OPTION_DEFAULTS["spectrum_noverlap"]
    frames_visible = math.ceil(minutes * 60 * 500 / hop)  # the simulator's 500 Hz
    live = [p for p in panels(board) if p["type"] == "heatmap" and p["datasource"]["uid"] == "grafana"]
    assert live
    for panel in live:
        assert panel["maxDataPoints"] >= frames_visible


def test_live_channels_address_the_bridge_defaults() -> None:
    board = BOARDS["eeg-live-spectrogram.json"]
    stream_id = variables(board)["live_stream"]["current"]["value"]
    assert stream_id == OPTION_DEFAULTS["grafana_stream_id"]
    live_targets = [t for _, _, t in targets() if t["datasource"]["uid"] == "grafana"]
    assert live_targets
    for target in live_targets:
        assert target["datasource"] == {"type": "datasource", "uid": "grafana"}
        assert target["queryType"] == "measurements"
        address = target["channel"].replace("$live_stream", stream_id).replace("$channel", "Fz")
        assert address == f"stream/{stream_id}/Fz"
        assert re.fullmatch(r"stream/[A-Za-z0-9_-]+/[A-Za-z0-9_-]+", address) and len(address) <= 160


def test_each_live_heatmap_has_the_same_channel_from_influxdb_underneath() -> None:
    board = BOARDS["eeg-live-spectrogram.json"]
    (row,) = [p for p in board["panels"] if p["type"] == "row"]
    assert row["repeat"] == "channel" and row["collapsed"] is False
    live, backfill = [p for p in board["panels"] if p["type"] == "heatmap"]
    assert live["datasource"]["uid"] == "grafana" and backfill["datasource"]["type"] == "influxdb"
    assert backfill["gridPos"]["y"] == live["gridPos"]["y"] + live["gridPos"]["h"]
    assert backfill["targets"][0]["query"] == queries.get("live_backfill_influxql").text


def test_every_query_text_comes_from_queries_py() -> None:
    known = {(q.language, q.text) for q in queries.QUERIES}
    sources = provisioned_datasources()
    seen = 0
    for name, board in BOARDS.items():
        items = [t for n, _, t in targets() if n == name]
        items += [v for v in board["templating"]["list"] if v["type"] == "query"]
        for item in items:
            uid = item["datasource"]["uid"]
            if uid in BUILTIN_UIDS:
                continue
            language = "flux" if sources[uid]["jsonData"]["version"] == "Flux" else "influxql"
            assert (language, item["query"]) in known, f"{name}: query not in queries.py: {item['query']!r}"
            seen += 1
    assert seen >= 8


def test_influxql_table_format_and_mean_columns_renamed_back() -> None:
    for name, panel, target in targets():
        if target["datasource"]["uid"] != generate.INFLUXQL_DS["uid"]:
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
        assert "channel" in channel["query"] and "stream" in channel["query"].replace("stream_name", ""), name
        assert channel["multi"] and channel["includeAll"], name
    for name, panel in heatmaps():
        if "history" in name:
            assert panel["repeat"] == "channel"
            assert panel["interval"], "history panels need a minimum interval for GROUP BY time()"


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
