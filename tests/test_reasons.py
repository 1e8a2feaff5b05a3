"""Every row says why its verdict, and a row's figures are of the statistic it was judged on (deterministic)."""

from __future__ import annotations

import json
import math

import pytest

from pytest_perfguard.gate import FASTEST_ROUNDS, RUN_BESTS, RUN_LEVEL, ABRuns, Saved, baseline_rows, latency_decision
from pytest_perfguard.measure import Measurement
from pytest_perfguard.model import BaselineEntry, SavedRun, TestResult, Verdict
from pytest_perfguard.report import checks_table, summary_table
from pytest_perfguard.runnoise import ProcessOffset, SuiteModel
from pytest_perfguard.table import Table


def spread_rounds(floor: float, n: int = 60) -> list[float]:
    """Rounds whose fastest one is ``floor`` and whose median is ~1.5x it: the two statistics disagree."""
    return [floor * (1.0 + 0.02 * i) for i in range(n)]


def test_a_note_goes_under_its_row_in_the_terminal_and_in_a_column_elsewhere() -> None:
    table = Table(["test", "metric", "verdict"], [["t::a", "latency", "unchanged"], ["", "memory", "pass"]],
                  ["", ""], ["fastest rounds 1.07x: within the 20 % tolerance", ""])
    assert table.text() == ["test  metric   verdict", "-" * 22, "t::a  latency  unchanged",
                            "      why: fastest rounds 1.07x: within the 20 % tolerance", "      memory   pass"]
    assert table.markdown()[0] == "| test | metric | verdict | why |"
    assert table.markdown()[2] == "| `t::a` | latency | unchanged | fastest rounds 1.07x: within the 20 % tolerance |"
    assert table.markdown()[3] == "|  | memory | pass |  |"
    html = table.html()  # a row of its own under the row, as in the terminal
    assert "<th>why</th>" not in html and html.count("<tr") == 4
    assert ('<tr class="note "><td></td><td class="wrap" colspan="2">why: fastest rounds 1.07x: within the 20 % '
            "tolerance</td></tr>") in html
    # no note anywhere: no column
    assert Table(["test", "verdict"], [["t", "pass"]], [""], [""]).markdown()[0] == "| test | verdict |"


def test_a_long_note_wraps_indented_under_its_row() -> None:
    note = "word " * 60
    lines = Table(["test", "verdict"], [["t", "unchanged"]], [""], [note.strip()]).text()
    assert len(lines) > 4 and all(len(line) <= 120 for line in lines)
    assert lines[3].startswith("      why: word") and all(line.startswith("        word") for line in lines[4:])


def test_the_one_run_fallback_shows_the_fastest_rounds_it_judged_not_the_medians() -> None:
    base, head = spread_rounds(0.010), spread_rounds(0.0107)  # fastest rounds 1.07x; medians too, but larger
    result = TestResult("t", measurement=Measurement(samples=head, unit="call"))
    entry = BaselineEntry(samples=tuple(base), unit="call", runs=(SavedRun(0.010, None),))
    (row,) = baseline_rows(result, None, entry, 0.20)
    assert row.verdict == Verdict.UNCHANGED and row.stat == FASTEST_ROUNDS
    # the 3rd fastest of 60 rounds (the fastest 5 %) of each side, not the medians (~1.6x those)
    assert row.now == pytest.approx(sorted(head)[2]) and row.baseline == pytest.approx(sorted(base)[2])
    assert row.ratio == pytest.approx(row.now / row.baseline) == pytest.approx(1.07)
    assert row.interval is not None and row.interval[0] <= row.ratio <= row.interval[1]
    assert row.reason.startswith("fastest rounds 1.070x") and "no change beyond the 20 % tolerance shown" in row.reason
    (text,) = [line for line in summary_table([result.with_checks([row])], with_baseline=True) if "why:" in line]
    assert "fastest rounds 1.070x" in text
    cells = checks_table([("t", [row])], ["metric", "baseline", "now", "ratio", "verdict"]).rows[0]
    assert cells == ["t", "latency vs baseline (fastest rounds)", "10.40 ms/call", "11.13 ms/call", "1.07x", "unchanged"]


def test_an_ab_row_shows_the_run_bests_it_judged() -> None:
    """``perfguard ab`` decides on the runs: its row once showed the pooled medians beside the runs' ratio
    (48.42 -> 23.29 ms beside 0.42x). Now and baseline are the runs' values, and their ratio is the row's."""
    base_runs = [0.010 * (1 + 0.01 * (i % 3)) for i in range(10)]
    head_runs = [b * 0.5 for b in base_runs]
    base = [x for b in base_runs for x in (b, b * 3)]  # pooled rounds: medians far from the run bests
    head = [x for b in head_runs for x in (b, b * 9)]
    d = latency_decision(base, head, 0.05, ABRuns(list(base_runs), list(head_runs)))
    assert d.basis == RUN_BESTS and d.ratio == pytest.approx(d.head / d.base) == pytest.approx(0.5)
    assert d.pooled.ratio > 1.2  # the pooled medians, which the row used to show beside the runs' 0.5x
    result = TestResult("t", measurement=Measurement(samples=head, unit="call", run_bests=head_runs))
    entry = BaselineEntry(samples=tuple(base), unit="call")
    (row,) = baseline_rows(result, None, entry, 0.05, list(base_runs), alpha=0.005)
    assert row.verdict == Verdict.IMPROVED and row.stat == RUN_BESTS
    assert (row.now, row.baseline, row.ratio) == pytest.approx((d.head, d.base, d.ratio))
    assert "faster beyond the 5 % tolerance" in row.reason and "perf-save" not in row.message + row.reason


def test_an_unchanged_row_beside_a_large_ratio_says_it_was_not_significant() -> None:
    """Stored mode: 1.57x from saved runs that vary that much is "unchanged", and the row says so."""
    levels = [0.010, 0.016, 0.008, 0.014, 0.009]  # one test's saved runs, spread by a noisy machine
    entries = {"t": BaselineEntry(samples=(0.010,) * 40, unit="call",
                                  runs=tuple(SavedRun(v, None, f"p{i}") for i, v in enumerate(levels)))}
    model = SuiteModel.of(entries)
    head = [0.0157 * math.exp(0.0)] * 40
    result = TestResult("t", measurement=Measurement(samples=head, unit="call"))
    (row,) = baseline_rows(result, None, entries["t"], 0.05, alpha=0.005, saved=Saved("t", model, ProcessOffset()))
    assert row.verdict == Verdict.UNCHANGED and row.stat == RUN_LEVEL and row.ratio is not None and row.ratio > 1.3
    assert row.ratio == pytest.approx(row.now / row.baseline)
    assert "worse beyond the 5% tolerance but not significant" in row.reason
    assert "within the spread of the saved runs" in row.reason


GATED = """
import os
from pytest_perfguard import perf_budget

SCALE = float(os.environ.get("PG_SCALE", "1.0"))
BASE = [0.010 + 0.0001 * (i % 7) for i in range(60)]

@perf_budget(latency="1s")
def test_a(perf):
    perf.record_latencies([x * SCALE for x in BASE])
"""


def test_terminal_markdown_and_json_say_why_end_to_end(pytester: pytest.Pytester,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    pytester.makepyfile(test_gated=GATED)
    args = ["--perf", "--perf-machine=testbox", "--perf-profile=never", "-p", "no:randomly"]
    monkeypatch.setenv("PG_SCALE", "1.0")
    pytester.runpytest(*args, "--perf-save").assert_outcomes(passed=1)
    same = pytester.runpytest(*args, "--perf-markdown=same.md")
    same.assert_outcomes(passed=1)
    same.stdout.fnmatch_lines(["*latency vs baseline (fastest rounds)*unchanged*", "*why: fastest rounds 1.000x (*"])
    assert "no change beyond the 5 % tolerance shown" in " ".join(same.stdout.str().split())  # however it wraps
    assert "drift" not in same.stdout.str()  # the reference workload's line is gone
    assert "unchanged | fastest rounds 1.000x (" in (pytester.path / "same.md").read_text()  # the why column
    monkeypatch.setenv("PG_SCALE", "0.8")
    faster = pytester.runpytest(*args, "--perf-markdown=fast.md", "--perf-json=fast.json")
    faster.assert_outcomes(passed=1)
    faster.stdout.fnmatch_lines(["*improved*", "*why: fastest rounds 0.800x*"])
    assert "better beyond the 5 % tolerance" in " ".join(faster.stdout.str().split())
    md = (pytester.path / "fast.md").read_text()
    assert "### Improvements" in md and "better beyond the 5 % tolerance; the baseline holds one run" in md
    rows = [r for t in json.loads((pytester.path / "fast.json").read_text())["tests"] for r in t["rows"]]
    improved = [r for r in rows if r["verdict"] == "improved"]
    assert improved and improved[0]["reason"] and improved[0]["stat"] == FASTEST_ROUNDS
    assert improved[0]["ratio"] == pytest.approx(improved[0]["now"] / improved[0]["baseline"])
    faster.stdout.fnmatch_lines(["*one run per test*1 of them improved, which one run cannot confirm*perfguard ab*"])
    # an unconfirmed improvement invites no re-save, anywhere (a winner's curse)
    assert "perf-save" not in json.dumps(rows) + md + "\n".join(
        line for line in faster.stdout.lines if "improved" in line or "why:" in line)
