"""Slow calls: the time cap cuts their rounds, every check says so, and a comparison with the baseline that
too few rounds cannot back is unjudged (it fails unless --perf-baseline-errors=warn), never passed."""

from __future__ import annotations

import json

import pytest

from pytest_perfguard import measure
from pytest_perfguard.budget import parse_budget
from pytest_perfguard.check import decided, evaluate
from pytest_perfguard.gate import Saved, baseline_rows
from pytest_perfguard.measure import Measurement, Settings, measure_calls
from pytest_perfguard.model import BaselineEntry, TestResult, Verdict
from pytest_perfguard.runnoise import ProcessOffset, SuiteModel
from test_measure import FakeClock

CUT = "5 of 20 rounds: slow calls, cut by --perf-time-cap"


def slow(level: float, n: int = 5, wanted: int = 20) -> Measurement:
    """``n`` rounds of about ``level`` seconds, of ``wanted`` asked for."""
    samples = [level * (1 + 0.01 * i) for i in range(n)]
    return Measurement(samples=samples, loops=1, rounds=n, rounds_wanted=wanted, memory_growth=1e6)


def saved(levels: list[float], n: int = 20) -> BaselineEntry:
    """An entry saved by one run per level (stored mode), each of ``n`` rounds."""
    entry = None
    for i, level in enumerate(levels):
        m = slow(level, n, n)
        entry = BaselineEntry.from_result(TestResult("t", measurement=m, process=f"p{i}"), None, entry)
    assert entry is not None
    return entry


def latency_row(rows):
    return next(r for r in rows if r.label == "latency vs baseline")


def test_an_absolute_budget_judges_a_cut_measurement_and_says_its_round_count():
    checks = evaluate(parse_budget({"latency": "10s"}), slow(13.6), {})
    assert checks[0].verdict == Verdict.FAIL
    assert checks[0].message == f"latency p50 13.87 s/call > budget 10.00 s/call (1.39x; {CUT})"
    passed = evaluate(parse_budget({"latency": "20s"}), slow(13.6), {})
    assert passed[0].verdict == Verdict.PASS and passed[0].message.endswith(f"({CUT})")
    measured = evaluate(None, slow(13.6), {})
    assert measured[0].verdict == Verdict.MEASURED and measured[0].message.endswith(f"({CUT})")
    whole = evaluate(parse_budget({"latency": "10s"}), slow(13.6, n=20), {})
    assert "rounds" not in whole[0].message  # not cut: nothing to say


def test_a_percentile_the_cap_starved_points_at_the_cap():
    checks = evaluate(parse_budget({"latency": {"p95": "1min"}}), slow(13.6, n=5, wanted=59), {})
    assert checks[0].verdict == Verdict.INSUFFICIENT
    assert checks[0].message == ("latency p95: 5 samples cannot back a p95 claim (need >= 59) (5 of 59 rounds: slow "
                                 "calls, cut by --perf-time-cap): raise --perf-time-cap or budget a lower percentile")


def test_stored_mode_judges_five_cut_rounds_and_says_so():
    entry = saved([13.0, 13.3, 12.8, 13.1, 13.2])
    model = SuiteModel.of({"t": entry})
    result = TestResult("t", measurement=slow(13.1), process="h")
    row = latency_row(baseline_rows(result, None, entry, 0.05, alpha=0.01, saved=Saved("t", model, ProcessOffset())))
    assert row.verdict == Verdict.UNCHANGED and row.message.endswith(f"; {CUT})")
    slower = TestResult("t", measurement=slow(26.0), process="h")
    row = latency_row(baseline_rows(slower, None, entry, 0.05, alpha=0.01, saved=Saved("t", model, ProcessOffset())))
    assert row.verdict == Verdict.REGRESSED and CUT in row.message


def test_stored_mode_does_not_compare_fewer_rounds_than_a_comparison_needs():
    entry = saved([13.0, 13.3, 12.8, 13.1, 13.2])
    model = SuiteModel.of({"t": entry})
    three = TestResult("t", measurement=slow(26.0, n=3, wanted=3), process="h")  # --perf-min-rounds=3
    row = latency_row(baseline_rows(three, None, entry, 0.05, alpha=0.01, saved=Saved("t", model, ProcessOffset())))
    assert row.verdict == Verdict.UNJUDGED and row.failed
    assert row.message == ("latency vs baseline not judged: 3 round(s) are too few to compare with the baseline "
                           "(need at least 5)")


def test_a_one_run_baseline_of_cut_rounds_is_unjudged_at_a_small_error_budget_and_says_why():
    """Five rounds against five: even all of one side's rounds beyond the other's happens by chance
    with probability 1/252, more than a share of 0.1 % allows. The row fails, and says how to judge it."""
    entry = saved([13.0], n=5)
    result = TestResult("t", measurement=slow(26.0), process="h")
    row = latency_row(baseline_rows(result, None, entry, 0.05, alpha=0.001))
    assert row.verdict == Verdict.UNJUDGED and row.failed
    assert row.message.startswith("latency vs baseline not judged: too few rounds to judge at 99.8 % confidence "
                                  "(base 5, head 5)")
    assert row.message.endswith(f"({CUT}: raise it to judge this test)")
    # at the default share the same rounds are judged, and the row still says how many there were
    judged = latency_row(baseline_rows(result, None, entry, 0.05, alpha=0.01))
    assert judged.verdict == Verdict.REGRESSED and CUT in judged.message


SLOW_TEST = """
import time
from pytest_perfguard import perf_budget

@perf_budget(latency="{budget}")
def test_slow(perf):
    perf(time.sleep, 0.02)
"""


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest("--perf", "--perf-max-time=0", "--perf-min-round-time=0", "--perf-profile=never",
                              "--perf-machine=box", "--perf-json=out.json", "-p", "no:randomly", *args)


def rounds(pytester: pytest.Pytester) -> tuple[int, int]:
    m = json.loads((pytester.path / "out.json").read_text())["tests"][0]["measurement"]
    return m["rounds"], m["rounds_wanted"]


def test_the_time_cap_cuts_slow_rounds_end_to_end_from_the_cli_and_the_ini(pytester):
    pytester.makepyfile(SLOW_TEST.format(budget="10ms"))  # missed 2x: not decided early (``check.decided``)
    result = run(pytester, "--perf-time-cap=0.05")
    result.assert_outcomes(failed=1)
    assert rounds(pytester) == (5, 20)  # 20 ms calls: 5 rounds (the floor) pass the 50 ms cap
    result.stdout.fnmatch_lines([f"*latency p50 *ms/call > budget 10.00 ms/call (*x; {CUT})*"])
    pytester.makeini("[pytest]\nperfguard_time_cap = 0.05\n")
    run(pytester).assert_outcomes(failed=1)
    assert rounds(pytester) == (5, 20)
    run(pytester, "--perf-time-cap=5").assert_outcomes(failed=1)  # the CLI wins over the ini
    assert rounds(pytester) == (20, 20)  # 20 rounds of 20 ms: within 5 s


@pytest.mark.parametrize("args, ini, error", [
    (["--perf-time-cap=0"], "", "--perf-time-cap / perfguard_time_cap must be a finite number > 0, not 0.0"),
    (["--perf-time-cap=nan"], "", "--perf-time-cap / perfguard_time_cap must be a finite number > 0, not nan"),
    ([], "[pytest]\nperfguard_time_cap = soon\n", "ini perfguard_time_cap = 'soon' is not a valid float"),
])
def test_a_bad_time_cap_is_a_usage_error(pytester, args, ini, error):
    if ini:
        pytester.makeini(ini)
    pytester.makepyfile(SLOW_TEST.format(budget="1s"))
    result = run(pytester, *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*{error}*"])


def test_a_slow_test_never_passes_a_comparison_its_rounds_cannot_back(pytester):
    pytester.makepyfile(SLOW_TEST.format(budget="1s"))
    cut = ["--perf-time-cap=0.05", "--perf-alpha=0.1%"]
    run(pytester, "--perf-save", *cut).assert_outcomes(passed=1)  # a one-run baseline of 5 rounds
    result = run(pytester, *cut)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([f"*latency vs baseline not judged: too few rounds to judge*({CUT}: raise it to "
                                 "judge this test)*"])
    run(pytester, *cut, "--perf-baseline-errors=warn").assert_outcomes(passed=1)  # the explicit opt-out, as before
    run(pytester, "--perf-alpha=0.1%", "--perf-time-cap=5").assert_outcomes(passed=1)  # 20 rounds: judged


PROGRESS_TESTS = """
import time

def test_a(perf):
    perf(time.sleep, 0.001)

def test_b(perf):
    perf(time.sleep, 0.001)
"""


def test_progress_messages_leave_the_progress_line_whole(pytester, monkeypatch):
    monkeypatch.setattr(measure, "PROGRESS_AFTER", 0.0)  # every measurement reports its plan
    pytester.makepyfile(test_progress=PROGRESS_TESTS)
    quiet = pytester.runpytest("--perf", "--perf-max-time=0", "--perf-min-rounds=3", "--perf-profile=never")
    quiet.assert_outcomes(passed=2)
    quiet.stdout.re_match_lines([r"^test_progress\.py \.\. +\[100%\]$"])
    assert "calibrating" not in quiet.stdout.str()
    verbose = pytester.runpytest("--perf", "--perf-max-time=0", "--perf-min-rounds=3", "--perf-profile=never", "-v")
    verbose.assert_outcomes(passed=2)
    verbose.stdout.re_match_lines([
        r"^perfguard: test_progress\.py::test_a: calibrating, \d+ call\(s\)/round, ~3 rounds of .*$",
        r"^test_progress\.py::test_a PASSED +\[ 50%\]$",
        r"^perfguard: test_progress\.py::test_b: calibrating, .*$",
        r"^test_progress\.py::test_b PASSED +\[100%\]$",
    ])


def test_a_budget_missed_tenfold_stops_the_rounds_after_two_and_says_why():
    """The drill's case: a 13.6 s call against a 50 ms budget. Noise only adds time, so once the fastest
    round is ten times over, more rounds cannot pass the test: two rounds, not five (the cap's floor)."""
    clock = FakeClock(cost=13.6)
    budget = parse_budget({"latency": "50ms"})
    m, _ = measure_calls(clock.work, Settings(), timer=clock, memory=False,
                         decided=lambda r: decided(budget, r))
    assert (m.rounds, m.rounds_wanted, clock.calls) == (measure.DECIDED_ROUNDS, 20, 1 + 2)
    assert m.rounds_note() == "2 of 20 rounds: stopped early, the fastest 272x beyond the latency p50 budget"
    (check,) = evaluate(budget, m, {})
    assert check.verdict == Verdict.FAIL and check.message.endswith(f"(272.00x; {m.rounds_note()})")
    twice = FakeClock(cost=0.1)  # missed 2x: every round the cap allows
    m, _ = measure_calls(twice.work, Settings(), timer=twice, memory=False, decided=lambda r: decided(budget, r))
    assert (m.rounds, m.early) == (20, "")


def test_only_absolute_wall_clock_latency_and_throughput_limits_decide_early():
    per_item = [1 / 50e3, 1 / 60e3]  # 50k-60k items/s: the fastest 60k/s against a 600k/s budget, 10x
    assert "10x beyond the throughput budget" in decided(parse_budget({"throughput": "600k/s"}), per_item)
    assert decided(parse_budget({"throughput": "600k/s"}), [1 / 79e3]) is None  # 7.6x: not decided
    assert decided(parse_budget({"latency": "+10%"}), [1.0]) is None  # relative: the baseline's business
    assert decided(parse_budget({"latency": "1ms", "clock": "cpu"}), [1.0]) is None  # CPU time: not these rounds
    assert decided(parse_budget({"memory": "1B"}), [1.0]) is None
    assert decided(None, [1.0]) is None


def test_a_decided_test_stops_early_end_to_end_but_a_save_keeps_every_round(pytester):
    pytester.makepyfile(SLOW_TEST.format(budget="1ms"))  # 20 ms calls: 20x over
    result = run(pytester, "--perf-time-cap=5")
    result.assert_outcomes(failed=1)
    assert rounds(pytester) == (2, 20)
    result.stdout.fnmatch_lines(["*latency p50 *ms/call > budget 1.00 ms/call (*x; 2 of 20 rounds: stopped early, the "
                                 "fastest *x beyond the latency p50 budget)*"])
    run(pytester, "--perf-time-cap=5", "--perf-save").assert_outcomes(failed=1)
    assert rounds(pytester) == (20, 20)  # a baseline keeps every round
