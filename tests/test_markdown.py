"""``--perf-markdown``: verdict first, changes in a table, everything else folded."""

from __future__ import annotations

import pytest

from pytest_perfguard.markdown import markdown_summary as _markdown_summary
from pytest_perfguard.markdown import row_kind as _row_kind
from pytest_perfguard.model import Check, TestResult


def markdown_summary(results: list[dict], **kwargs) -> str:
    return _markdown_summary([TestResult.from_json(r) for r in results], **kwargs)


def row_kind(row: dict) -> str:
    return _row_kind(Check.from_json(row))


def row(metric: str, verdict: str, now: float = 0.002, **kw: object) -> dict:
    return {"metric": metric, "budget": kw.pop("budget", "1ms"), "now": now, "unit": "s/call",
            "verdict": verdict, "message": "", "baseline": kw.pop("baseline", None), "ratio": kw.pop("ratio", None),
            "against": "baseline" if "vs baseline" in metric else "budget", "stat": kw.pop("stat", ""),
            "reason": kw.pop("reason", "")}


def test_verdict_first_then_changes_then_details() -> None:
    md = markdown_summary([
        {"nodeid": "t.py::slow", "rows": [row("latency p50", "fail", ratio=2.0)]},
        {"nodeid": "t.py::reg", "rows": [row("latency vs baseline", "regressed", baseline=0.001, ratio=2.0)]},
        {"nodeid": "t.py::fast", "rows": [row("latency vs baseline", "improved", now=0.0005, baseline=0.001,
                                              ratio=0.5)]},
        {"nodeid": "t.py::ok", "rows": [row("latency p50", "pass", now=0.0005)]},
    ], context=["baseline: b.json"])
    lines = md.splitlines()
    assert lines[0] == "## perfguard: failed"
    assert lines[2] == "**FAILED**: 1 regression, 1 budget breach in 4 perf tests; 1 improvement"
    assert md.index("### Regressions") < md.index("### Budget breaches") < md.index("### Improvements")
    assert "| `t.py::reg` | latency vs baseline | 1ms | 1.00 ms/call | 2.00 ms/call | 2.00x | **regressed** |" in md
    details = md[md.index("<details>"):]
    assert "`t.py::ok`" in details and "`t.py::ok`" not in md[:md.index("<details>")]
    assert "All 4 rows" in details


def test_every_unchanged_and_improved_row_says_why() -> None:
    """The reason travels with the row (not only in --perf-json), and the figures name their statistic."""
    md = markdown_summary([
        {"nodeid": "t.py::same", "rows": [row("latency vs baseline", "unchanged", now=0.00157, baseline=0.001,
                                              ratio=1.57, stat="p10", reason="p10 level 1.570x: not significant")]},
        {"nodeid": "t.py::fast", "rows": [row("latency vs baseline", "improved", now=0.0005, baseline=0.001, ratio=0.5,
                                              stat="fastest rounds", reason="fastest rounds 0.500x: better")]},
        {"nodeid": "t.py::ok", "rows": [row("latency p50", "pass", now=0.0005, ratio=0.5)]},
    ])
    assert md.splitlines()[2].startswith("**PASSED**")
    header = next(line for line in md.splitlines() if line.startswith("| test |"))
    assert header == "| test | metric | budget | baseline | now | ratio | verdict | why |"
    assert ("| `t.py::same` | latency vs baseline (p10) | 1ms | 1.00 ms/call | 1.57 ms/call | 1.57x | unchanged | "
            "p10 level 1.570x: not significant |") in md
    assert ("| `t.py::fast` | latency vs baseline (fastest rounds) | 1ms | 1.00 ms/call | 500.00 us/call | 0.50x | "
            "**improved** | fastest rounds 0.500x: better |") in md
    # a budget's ratio is now over the budget, and says so: never read as now over the baseline column
    assert "| `t.py::ok` | latency p50 | 1ms | n/a | 500.00 us/call | 0.50x of budget | pass |  |" in md


def test_passing_run_and_failures_without_rows() -> None:
    assert "**PASSED**: 1 perf tests" in markdown_summary([{"nodeid": "a", "rows": [row("latency p50", "pass")]}])
    md = markdown_summary([{"nodeid": "a", "rows": [], "outcome": "failed"}])
    assert "**FAILED**: 1 failed test" in md and "the test failed" in md


def test_pipes_in_names_do_not_break_the_table() -> None:
    md = markdown_summary([{"nodeid": "t.py::x[a|b]", "rows": [row("latency p50", "fail")]}])
    assert "x[a\\|b]" in md


@pytest.mark.parametrize("verdict,kind", [("regressed", "regressed"), ("fail", "breach"), ("insufficient", "breach"),
                                          ("improved", "improved"), ("pass", "other"), ("unchanged", "other")])
def test_row_kind(verdict: str, kind: str) -> None:
    assert row_kind({"verdict": verdict}) == kind


def test_perf_markdown_end_to_end(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import time
        from pytest_perfguard import perf_budget

        @perf_budget(latency="1us")
        def test_too_slow(perf):
            perf(time.sleep, 0.001)

        @perf_budget(latency="1s")
        def test_fine(perf):
            perf(sum, range(100))
        """
    )
    result = pytester.runpytest("--perf", "--perf-markdown=out/summary.md", "--perf-profile=never",
                                "--perf-max-time=0.02", "--perf-min-rounds=3")
    result.assert_outcomes(passed=1, failed=1)
    md = (pytester.path / "out" / "summary.md").read_text()
    assert md.startswith("## perfguard: failed\n\n**FAILED**: 1 budget breach in 2 perf tests")
    assert "test_too_slow" in md.split("<details>")[0] and "no baseline for this machine" in md
