"""End to end: a baseline of several saved runs, one error budget per run, a slower process is not a
regression (deterministic samples: each run's 'process speed' and jitter come from the environment)."""

from __future__ import annotations

import json
import os

import pytest

from pytest_perfguard.model import Check, TestResult, Verdict
from pytest_perfguard.session import resolution_notes

SUITE = """
import os
import pytest

SPEED = float(os.environ.get("PG_SPEED", "1.0"))
RUN = int(os.environ.get("PG_RUN", "0"))
SLOW = os.environ.get("PG_SLOW", "")
JITTER = [1.0, 1.02, 0.99, 1.01, 0.98, 1.0, 1.03, 0.97]

@pytest.mark.parametrize("t", range(6))
def test_t(perf, t):
    level = 0.001 * (t + 1) * SPEED * JITTER[(RUN + 2 * t) % 8] * (1.5 if SLOW == str(t) else 1.0)
    perf.record_latencies([level] * 8 + [level * (1 + 0.01 * i) for i in range(32)])
"""


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("PG_SPEED", "PG_RUN", "PG_SLOW"):
        monkeypatch.setenv(name, "")


def run(pytester: pytest.Pytester, *args: str, speed: float = 1.0, index: int = 0, slow: str = "") -> pytest.RunResult:
    os.environ.update(PG_SPEED=str(speed), PG_RUN=str(index), PG_SLOW=slow)
    return pytester.runpytest("--perf", "--perf-machine=box", "--perf-profile=never", "-p", "no:randomly",
                              "--perf-json=out.json", *args)


def rows(pytester: pytest.Pytester) -> dict[str, dict]:
    doc = json.loads((pytester.path / "out.json").read_text())
    return {t["nodeid"]: next(r for r in t["rows"] if r["metric"] == "latency vs baseline") for t in doc["tests"]}


def test_saved_runs_share_one_error_budget_and_a_slower_process_passes(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_suite=SUITE)
    for i, speed in enumerate((1.0, 1.15, 0.9, 1.1)):  # four saves, each process at its own speed
        run(pytester, "--perf-save", speed=speed, index=i)  # a one-run baseline may false-fail: it says so
    entry = json.loads((pytester.path / "baselines" / "box.json").read_text())["entries"]["test_suite.py::test_t[0]"]
    assert len(entry["runs"]) == 4 and len({r["process"] for r in entry["runs"]}) == 4

    slower = run(pytester, speed=1.3, index=5)  # the whole process 30 % slower: not the code
    slower.assert_outcomes(passed=6)
    slower.stdout.fnmatch_lines(["*ratio*verdict*could flag*", "*latency vs baseline*unchanged*±*%*",
                                 "*6 comparison(s) with the baseline in 6 test(s) and the speed of 1 process(es) shared "
                                 "a 1.00% error budget*",
                                 "*the run's speed unchanged: its tests ran 1.2* as long as in the 4 saved runs*"])
    judged = rows(pytester)  # 7 shares: 6 tests and the process's speed
    assert all(r["alpha"] == pytest.approx(0.01 / 7) and r["p_value"] is not None for r in judged.values())
    assert all(r["mde"] >= 0.05 for r in judged.values())

    # 6x slower, every test alike: the first 3 tests, judged before this process's speed is known,
    # fail (beyond the saved processes' spread); the later ones are as slow as the process; the run fails
    everything = run(pytester, "--perf-markdown=sum.md", speed=6.0, index=5)
    everything.assert_outcomes(passed=3, failed=3)
    everything.stdout.fnmatch_lines(["*ERROR: the run's speed regressed: its tests ran 5.* as long as in the 4 saved "
                                     "runs*`perfguard ab` can*"])
    md = (pytester.path / "sum.md").read_text()
    assert "the run's speed regressed" in md and "**FAILED**" in md
    speed = json.loads((pytester.path / "out.json").read_text())["speed"]
    assert [r["rows"][0]["verdict"] for r in speed] == ["regressed"]

    one = run(pytester, speed=1.3, index=5, slow="4", *["--perf-alpha=2%"])  # one test 1.5x slower, in that process
    one.assert_outcomes(passed=5, failed=1)
    one.stdout.fnmatch_lines(["*2.00% error budget*", "FAILED test_suite.py::test_t[[]4[]] - latency vs baseline regressed*"])


def test_a_one_run_baseline_is_flagged_in_the_summary(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_suite=SUITE)
    run(pytester, "--perf-save").assert_outcomes(passed=6)
    result = run(pytester)
    result.assert_outcomes(passed=6)
    result.stdout.fnmatch_lines(["*6 test(s) were compared with a baseline of one run per test*"])


@pytest.mark.parametrize("value", ["0", "50%", "abc"])
def test_a_bad_alpha_is_a_usage_error(pytester: pytest.Pytester, value: str) -> None:
    pytester.makepyfile(test_suite=SUITE)
    result = pytester.runpytest("--perf", f"--perf-alpha={value}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--perf-alpha*"])


def _judged(mde: float, kind: str = "latency") -> TestResult:
    row = Check(f"{kind} vs baseline", "±5%", 0.001, "s/call", Verdict.UNCHANGED, "", kind=kind, against="baseline",
                alpha=0.001, p_value=0.5, mde=mde)
    return TestResult(f"t{mde}", (row,))


def test_the_summary_says_how_small_a_change_the_rows_could_flag() -> None:
    tight = resolution_notes([_judged(0.05), _judged(0.06), _judged(0.09)], tolerance=0.05)
    assert tight == ["the 3 latency comparison(s) with the baseline could flag changes from +6% (median; +5% to +9%)"]
    wide = resolution_notes([_judged(0.05), _judged(1.04), _judged(2.1), _judged(0.5, kind="memory")], tolerance=0.05)
    assert wide[0].startswith("the 3 latency comparison(s) with the baseline could flag changes from +104% (median; "
                              "+5% to +210%): a change between the 5% tolerance and that size passes as unchanged")
    assert "`perfguard ab REV`" in wide[0] and "--perf-instructions" in wide[0]
    assert resolution_notes([_judged(0.5, kind="memory")], tolerance=0.05) == []


def test_saved_runs_that_disagree_are_named_as_the_limit_of_the_gate(pytester: pytest.Pytester) -> None:
    # each test's level moves 1.0-1.6x from save to save, unlike its neighbours (a shared host's states)
    pytester.makepyfile(test_suite=SUITE.replace("JITTER = [1.0, 1.02, 0.99, 1.01, 0.98, 1.0, 1.03, 0.97]",
                                                 "JITTER = [1.0, 1.6, 1.1, 1.45, 1.0, 1.3, 1.55, 1.05]"))
    for i in range(4):
        run(pytester, "--perf-save", index=i)
    result = run(pytester, index=4)
    result.assert_outcomes(passed=6)
    result.stdout.fnmatch_lines(["*the 6 latency comparison(s) with the baseline could flag changes from +*% (median; "
                                 "*a change between the 5% tolerance and that size passes as unchanged, because the saved "
                                 "runs disagree*`perfguard ab REV`*"])
    assert all(r["mde"] > 0.10 for r in rows(pytester).values())
