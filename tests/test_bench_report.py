"""The README quotes benchmark figures only as rendered from the committed results, and the
benchmark's "nothing lost" is an exact comparison."""

from __future__ import annotations

from bench import cost, report


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


def test_nothing_lost_means_archived_equals_the_final_computed_count() -> None:
    assert cost.judge(_cost_result(1021, 1021), 4.0)["checks"]["archive_complete"]
    assert not cost.judge(_cost_result(1020, 1021), 4.0)["checks"]["archive_complete"]  # a lost tail
    assert not cost.judge(_cost_result(1022, 1021), 4.0)["checks"]["archive_complete"]  # counted twice, or stale
    assert not cost.judge(_cost_result(None, 1021), 4.0)["checks"]["archive_complete"]
