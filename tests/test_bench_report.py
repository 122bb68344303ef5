"""The README quotes benchmark figures only as rendered from the committed results, and the
benchmark's "nothing lost" is an exact comparison."""

from __future__ import annotations

from bench import cost, live, report


def test_readme_sections_are_rendered_from_the_committed_results() -> None:
    """Each generated README section equals what bench/report.py renders from bench/results now:
    new results without `python -m bench.report --readme` (or a hand edit) fail here."""
    readme = report.README.read_text()
    sections = report.readme_sections()
    assert "performance" in sections
    for name, body in sections.items():
        assert report.section(readme, name) == body, f"README's {name} section is stale: run python -m bench.report --readme"


def _cost_result(archived: int | None, computed: int | None) -> dict:
    return {"lag": {"growth_ms": 0.0}, "frames_received": 100, "frames_expected": 100.0, "cpu_pct": 1.0,
            "peak_rss_mb": 50.0, "error": None, "archive": {"frames_archived": archived, "frames_computed": computed}}


def _judge(archived: int | None, computed: int | None) -> dict:
    return cost.judge(_cost_result(archived, computed), 0.5, 5.0, 200.0)


def test_nothing_lost_means_archived_equals_the_final_computed_count() -> None:
    assert _judge(1021, 1021)["checks"]["archive_complete"]
    assert not _judge(1020, 1021)["checks"]["archive_complete"]  # a lost tail
    assert not _judge(1022, 1021)["checks"]["archive_complete"]  # counted twice, or stale
    assert not _judge(None, 1021)["checks"]["archive_complete"]


def test_bridge_cpu_is_judged_as_a_multiple_of_the_floor_of_the_same_run() -> None:
    j = cost.judge(_cost_result(1, 1), 0.25, 5.0, 200.0)  # 1.0 % over a 0.25 % floor
    assert j["floor_multiple"] == 4.0 and j["checks"]["cpu"]
    assert not cost.judge(_cost_result(1, 1), 0.1, 5.0, 200.0)["checks"]["cpu"]  # 10x
    assert "cpu" not in cost.judge(_cost_result(1, 1), 0.1, None, 200.0)["checks"]  # no goal at this size


def _run_results() -> dict:
    """The committed run's results, as the README renders them."""
    import json

    return json.loads((report.RESULTS_DIR / "latest.json").read_text())


def test_the_readme_table_holds_no_retired_goal() -> None:
    """Issue 17: the spectra >= 5x goal (retired: above the ceiling of scipy's arithmetic) and the
    fixed CPU-% goals of issue 6 are no longer printed as targets."""
    rows = report.summary_rows(_run_results())
    targets = " ".join(row[2] for row in rows)
    assert ">= 5x" not in targets and "% of one core" not in targets and not any(
        row[2].startswith("< ") and row[2].endswith(" %") for row in rows)
    spectra = [row for row in rows if row[0].startswith("Spectra")]
    assert spectra and all("ceiling" in row[1] for row in spectra)


def test_one_floor_in_every_cpu_figure_of_a_run() -> None:
    """Every multiple of the floor in the README section uses the cost section's floor run,
    also the three-sink figures (which once measured a floor of their own)."""
    results = _run_results()
    floors = cost.floors(results["cost"])
    text = report.readme_performance(results)
    for (channels, rate), floor in floors.items():
        bridge = next(r for r in results["cost"] if r["scenario"]["kind"] == "bridge" and r["scenario"]["channels"] == channels)
        assert f"{bridge['cpu_pct'] / floor['cpu_pct']:.1f}x the floor ({bridge['cpu_pct']:.1f} % of one core; floor {floor['cpu_pct']:.1f} %)" in text
        for t in results.get("threesinks") or []:
            if t["channels"] == channels:
                three = t["three"]["cpu_pct"]
                assert f"**{three:.1f} %** ({three / floor['cpu_pct']:.1f}x)" in text


def test_metric_readers_ignore_extra_labels() -> None:
    """bench/ reads the bridge's Prometheus text by label, not by the exact label string: a
    ``stream`` label on every series (or any other) changes nothing."""
    plain = {'eeg_bridge_sink_frames_dropped_total{reason="stale",sink="grafana"}': 3.0, "eeg_bridge_spool_frames": 7.0}
    labelled = {'eeg_bridge_sink_frames_dropped_total{reason="stale",sink="grafana",stream="sim"}': 3.0,
                'eeg_bridge_sink_frames_dropped_total{reason="stale",sink="view",stream="sim"}': 5.0,
                'eeg_bridge_spool_frames{stream="sim"}': 7.0}
    for metrics in (plain, labelled):
        assert live.metric_sum(metrics, "eeg_bridge_sink_frames_dropped_total", reason="stale", sink="grafana") == 3.0
        assert live.metric_sum(metrics, "eeg_bridge_spool_frames") == 7.0
    assert live.parse_series('m{a="x\\"y",stream="s"}') == ("m", {"a": 'x\\"y', "stream": "s"})
