"""Every Flux query in dashboards/queries.py passes InfluxData's own semantic checker.

No InfluxDB 2.x server runs on the build machines, so the queries cannot be executed here.
tests/flux_check/check.mjs runs the Flux language server (npm @influxdata/flux-lsp-browser,
WebAssembly) which parses, type-checks and checks builtin function signatures. A deliberately
broken query must be rejected, or the checker proves nothing.

Needs ``npm ci --prefix tests/flux_check``; without it these tests skip, except under CI.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHECKER = ROOT / "tests" / "flux_check" / "check.mjs"
LSP_PACKAGE = ROOT / "tests" / "flux_check" / "node_modules" / "@influxdata" / "flux-lsp-browser"

#: What Grafana defines for every Flux query (it substitutes these itself before sending).
GRAFANA_OPTION_V = 'option v = {timeRangeStart: -1h, timeRangeStop: now(), windowPeriod: 10s, defaultBucket: "neuroscience"}'
#: Template variables as Grafana would substitute them for one repeated panel.
VARIABLES: dict[str, str | list[str]] = {"stream": "SimEEG", "channel": "Fz", "band": "alpha"}
#: ... and for a panel that is not repeated, with several channels selected (or All).
MULTI_VARIABLES: dict[str, str | list[str]] = {
    "stream": "Lab EEG 2 (v1.0)", "channel": ["Cz", "Fz", "O1-ref"], "band": "alpha"
}
#: Any name LSL allows: quotes, a backslash, a slash.
QUOTED_VARIABLES: dict[str, str | list[str]] = {
    "stream": 'Bob\'s "EEG" C:\\rig / v1.0', "channel": ["Cz", "T7"], "band": "alpha"
}


def _load_queries() -> ModuleType:
    spec = importlib.util.spec_from_file_location("queries_under_test", ROOT / "dashboards" / "queries.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


queries = _load_queries()
FLUX = [q for q in queries.QUERIES if q.language == "flux"]


def _checker_missing() -> str | None:
    if shutil.which("node") is None:
        return "node is not installed"
    if not LSP_PACKAGE.is_dir():
        return "Flux checker not installed: run npm ci --prefix tests/flux_check"
    return None


@pytest.fixture(scope="module")
def checker() -> None:
    reason = _checker_missing()
    if reason is None:
        return
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


def as_plain_flux(text: str, variables: dict[str, str | list[str]] = VARIABLES) -> str:
    """Grafana's query -> a script Flux accepts: variables filled in, ``option v`` declared.

    Flux wants imports first, so the option goes right after them.
    """
    script = queries.Query("", "flux", "wide", text, "").render(variables)
    lines = script.split("\n")
    n_imports = sum(1 for line in lines if line.startswith("import "))
    return "\n".join([*lines[:n_imports], GRAFANA_OPTION_V, *lines[n_imports:]])


def check(scripts: list[str]) -> list[dict]:
    done = subprocess.run(
        ["node", str(CHECKER), "--json"], input=json.dumps(scripts), capture_output=True, text=True, timeout=120
    )
    assert done.returncode in (0, 1), f"checker failed to run: {done.stderr.strip()}"
    results = json.loads(done.stdout)
    assert len(results) == len(scripts)
    return results


def test_there_are_flux_queries_for_both_schemas() -> None:
    assert {q.schema for q in FLUX} == {"wide", "long", "events", "bands"}
    assert {"heatmap_raw_flux", "heatmap_downsampled_flux", "streams_flux", "channels_flux"} <= {q.name for q in FLUX}


def test_health_and_marker_queries_exist_in_both_languages() -> None:
    """The Flux dashboard gets the same health row and annotations as the InfluxQL ones."""
    events = {q.name for q in queries.QUERIES if q.schema == "events"}
    stems = {name.rsplit("_", 1)[0] for name in events}
    assert stems == {f"health_{p}" for p in ("latency", "drops", "staleness", "backlog", "connected")} | {
        "markers_annotation"
    }
    assert events == {f"{stem}_{language}" for stem in stems for language in ("influxql", "flux")}


def invalid(scripts: list[str]) -> dict[str, object]:
    """The shipped Flux queries (in FLUX order) the checker rejects, with its errors."""
    return {q.name: r["errors"] for q, r in zip(FLUX, check(scripts)) if not r["valid"]}


def test_every_flux_query_passes_the_semantic_check(checker) -> None:
    assert invalid([as_plain_flux(q.text) for q in FLUX]) == {}


def test_flux_queries_stay_valid_with_a_multi_value_selection(checker) -> None:
    """${channel:regex} with several channels becomes (Cz|Fz|O1-ref): still a valid Flux regex."""
    rendered = [as_plain_flux(q.text, MULTI_VARIABLES) for q in FLUX]
    assert any("=~ /^(Cz|Fz|O1-ref)$/" in script for script in rendered)
    assert invalid(rendered) == {}


def test_flux_queries_stay_valid_for_a_stream_name_with_quotes_and_backslashes(checker) -> None:
    """${stream:regex} escapes what a regex needs; a quote or backslash cannot end a string early."""
    rendered = [as_plain_flux(q.text, QUOTED_VARIABLES) for q in FLUX]
    assert any('=~ /^Bob\'s "EEG" C:\\\\rig \\/ v1\\.0$/' in script for script in rendered)
    assert invalid(rendered) == {}


def test_no_flux_query_puts_the_stream_in_a_string() -> None:
    for query in FLUX:
        assert '"${stream}"' not in query.text, query.name


def test_render_formats_variables_as_grafana_does() -> None:
    query = queries.Query("", "flux", "wide", 'r.a == "${stream}" and r.b =~ /^${channel:regex}$/ and $__x', "")
    assert query.render({"stream": "a.b", "channel": "Fz"}) == 'r.a == "a.b" and r.b =~ /^Fz$/ and $__x'
    assert query.render({"stream": "s", "channel": ["a.b", "c/d", "(x)"]}) == (
        'r.a == "s" and r.b =~ /^(a\\.b|c\\/d|\\(x\\))$/ and $__x'
    )
    with pytest.raises(ValueError):
        query.render({"stream": ["s", "t"], "channel": "Fz"})


@pytest.mark.parametrize(
    "broken",
    [
        # unknown function
        'from(bucket: v.defaultBucket) |> range(start: v.timeRangeStart) |> pivut(rowKey: ["_time"], columnKey: ["_field"], valueColumn: "_value")',
        # wrong argument type: rowKey must be an array
        'from(bucket: v.defaultBucket) |> range(start: v.timeRangeStart) |> pivot(rowKey: "_time", columnKey: ["_field"], valueColumn: "_value")',
        # unknown argument
        'from(bucket: v.defaultBucket) |> range(start: v.timeRangeStart) |> aggregateWindow(every: v.windowPeriod, fn: mean, createEmptyy: false)',
        # syntax error
        'from(bucket: v.defaultBucket |> range(start: v.timeRangeStart)',
    ],
    ids=["unknown-function", "wrong-type", "unknown-argument", "syntax"],
)
def test_checker_rejects_broken_flux(checker, broken: str) -> None:
    (result,) = check([as_plain_flux(broken)])
    assert not result["valid"] and result["errors"]


def test_grafana_macros_are_what_makes_the_queries_valid(checker) -> None:
    """Without ``option v`` the queries must fail: the checker really resolves identifiers."""
    (result,) = check([queries.get("heatmap_raw_flux").render(VARIABLES)])
    assert not result["valid"]


def _string_literals(text: str) -> set[str]:
    return set(re.findall(r'"([^"\\]*)"', text))


@pytest.mark.parametrize("query", [q for q in FLUX if q.schema in ("wide", "long")], ids=lambda q: q.name)
def test_flux_query_uses_the_names_the_encoder_writes(query) -> None:
    """docs/data-model.md: measurement eeg_spectrum, tags stream_name/channel; long: frequency_bin, power."""
    text = query.text
    literals = _string_literals(text)
    assert "v.defaultBucket" in text
    assert "eeg_spectrum" in literals
    if query.name.startswith("streams"):
        assert "stream_name" in literals
        return
    assert "r.stream_name =~ /^${stream:regex}$/" in text
    if query.name.startswith("channels"):
        assert "channel" in literals
        return
    # $channel is multi-value: a regex, never ==, or a selection of several channels matches nothing.
    assert "r.channel =~ /^${channel:regex}$/" in text and "r.channel ==" not in text
    assert "range(start: v.timeRangeStart, stop: v.timeRangeStop)" in text
    # The heatmap needs time + one column per bin, and nothing else.
    pivot_key = "_field" if query.schema == "wide" else "frequency_bin"
    assert f'pivot(rowKey: ["_time"], columnKey: ["{pivot_key}"], valueColumn: "_value")' in text
    assert {"_start", "_stop", "_measurement", "stream_name", "channel"} <= literals
    if query.schema == "long":
        assert 'r._field == "power"' in text
    if "downsampled" in query.name or query.schema == "long":
        assert "aggregateWindow(every: v.windowPeriod, fn: mean, createEmpty: false)" in text


@pytest.mark.parametrize("query", [q for q in FLUX if q.name.startswith("health_")], ids=lambda q: q.name)
def test_flux_health_query_reads_the_ledger(query) -> None:
    """bridge_health of the selected stream, one aggregate per window, the fields the bridge writes."""
    text = query.text
    assert f'r._measurement == "{queries.HEALTH_MEASUREMENT}" and r.stream_name =~ /^${{stream:regex}}$/' in text
    assert "range(start: v.timeRangeStart, stop: v.timeRangeStop)" in text
    fields = re.findall(r'r._field == "(\w+)"', text)
    sinks = "|".join(queries.HEALTH_SINKS)
    ledger = rf"(?:{sinks})_(?:latency_seconds|dropped|queue_depth)|spool_frames|seconds_since_sample|stream_connected"
    assert fields and all(re.fullmatch(ledger, f) for f in fields), fields
    fn = "min" if fields == ["stream_connected"] else "max"
    assert f"aggregateWindow(every: v.windowPeriod, fn: {fn}, createEmpty: false)" in text
    if any(f.endswith("_dropped") for f in fields):
        # a rate of the cumulative counters, not the counters themselves
        assert text.index("aggregateWindow") < text.index("derivative(unit: 1s, nonNegative: true)")
    assert text.endswith('|> keep(columns: ["_time", "_value", "_field"])')


def test_flux_marker_annotation_yields_time_text_and_tags() -> None:
    """Grafana's standard annotation mapping takes fields named text and tags, and the first time
    field; ungrouped so the markers of every marker stream form one frame."""
    text = queries.get("markers_annotation_flux").text
    assert f'r._measurement == "{queries.MARKER_MEASUREMENT}" and r._field == "{queries.MARKER_FIELD}"' in text
    assert "${" not in text, "markers come from their own stream, not the EEG $stream"
    assert "|> group()" in text
    assert '|> keep(columns: ["_time", "_value", "stream_name"])' in text
    assert '|> rename(columns: {_value: "text", stream_name: "tags"})' in text


@pytest.mark.parametrize("query", [q for q in FLUX if q.schema == "bands"], ids=lambda q: q.name)
def test_flux_band_and_quality_queries(query) -> None:
    """eeg_bands / eeg_quality of the selected stream and channels, one column per channel."""
    text = query.text
    measurement = "eeg_quality" if "quality" in query.name else "eeg_bands"
    field = "state" if measurement == "eeg_quality" else ("${band}_rel" if "relative" in query.name else "${band}")
    assert f'r._measurement == "{measurement}" and r._field == "{field}"' in text
    assert "r.stream_name =~ /^${stream:regex}$/ and r.channel =~ /^${channel:regex}$/" in text
    fn = "max" if measurement == "eeg_quality" else "mean"
    assert f"aggregateWindow(every: v.windowPeriod, fn: {fn}, createEmpty: false)" in text
    assert text.endswith('|> group()\n  |> pivot(rowKey: ["_time"], columnKey: ["channel"], valueColumn: "_value")')
