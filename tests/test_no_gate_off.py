"""Every way the gate could be switched off fails loudly (end to end, deterministic samples)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import pytest

from pytest_perfguard.cli import main as cli_main

TEST_FILE = """
import os
from pytest_perfguard import perf_budget

SCALE = float(os.environ.get("PG_SCALE", "1.0"))
BASE = [0.010 + 0.0001 * (i % 7) for i in range(60)]  # deterministic 'timings', ~10 ms

@perf_budget(latency="1s")
def test_a(perf):
    perf.record_latencies([x * SCALE for x in BASE])
"""
NODE = "test_case.py::test_a"


@pytest.fixture
def saved(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project with one perf test and its baseline saved; the path of the baseline file."""
    monkeypatch.setenv("PG_SCALE", "1.0")
    pytester.makepyfile(test_case=TEST_FILE)
    run(pytester, "--perf-save").assert_outcomes(passed=1)
    return pytester.path / "baselines" / "testbox.json"


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest("--perf", "--perf-machine=testbox", "--perf-profile=never", *args)


def edit(path: Path, change: Callable[[dict[str, Any]], None]) -> None:
    doc = json.loads(path.read_text())
    change(doc)
    path.write_text(json.dumps(doc))


def entry(doc: dict[str, Any]) -> dict[str, Any]:
    return doc["entries"][NODE]


def set_sample(value: Any) -> Callable[[dict[str, Any]], None]:
    return lambda doc: entry(doc)["samples"]["latency"].__setitem__(3, value)


def test_pytest_help_works_with_the_plugin_installed() -> None:
    for flag in ("--help", "-h"):
        proc = subprocess.run([sys.executable, "-m", "pytest", flag], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert "--perf-tolerance" in proc.stdout and "'5%'" in proc.stdout


# --- file-level: the run fails, budgets still run, the file is left as it was ----------------------------


@pytest.mark.parametrize("damage", ["truncated", "format 2", "a directory", "a link to /dev/zero", "speed 'fast'"])
def test_an_unusable_baseline_file_fails_the_run(saved: Path, pytester: pytest.Pytester, damage: str) -> None:
    if damage == "truncated":
        saved.write_text(saved.read_text()[:200])
    elif damage == "format 2":
        edit(saved, lambda doc: doc.__setitem__("format", 2))
    elif damage == "a directory":
        saved.unlink()
        saved.mkdir()
    elif damage == "a link to /dev/zero":
        saved.unlink()
        saved.symlink_to("/dev/zero")
    else:
        edit(saved, lambda doc: doc.__setitem__("speed", {"score": "fast"}))
    result = run(pytester, "--perf-markdown=summary.md", "--perf-json=run.json")
    result.assert_outcomes(passed=1)  # the budgets were judged ...
    assert result.ret == 1  # ... but the gate could not judge by its baseline: the run fails
    result.stdout.fnmatch_lines(["*ERROR: *testbox.json*regression gate cannot judge this run*"])
    md = (pytester.path / "summary.md").read_text()
    assert "**PASSED**" not in md and "**FAILED**: 1 gate error" in md and "testbox.json" in md
    assert json.loads((pytester.path / "run.json").read_text())["gate_errors"]

    warned = run(pytester, "--perf-baseline-errors=warn")
    assert warned.ret == 0
    warned.stdout.fnmatch_lines(["*WARNING: *testbox.json*"])


# --- entry-level: that test fails, naming the file, the test and the fix -------------------------------


ENTRY_EDITS: dict[str, Callable[[dict[str, Any]], None]] = {
    "one sample -1e-9": set_sample(-1e-9),
    "one sample 0": set_sample(0.0),
    "one sample NaN": set_sample(float("nan")),
    "one sample Infinity": set_sample(float("inf")),
    "a string sample": set_sample("fast"),
    "3 samples": lambda doc: entry(doc)["samples"].__setitem__("latency", [0.01] * 3),
    "no samples": lambda doc: entry(doc)["samples"].__setitem__("latency", []),
    "samples null": lambda doc: entry(doc)["samples"].__setitem__("latency", None),
    "all zero": lambda doc: entry(doc)["samples"].__setitem__("latency", [0.0] * 60),
    "unit changed": lambda doc: entry(doc).__setitem__("unit", "item"),
    "memory_growth 'lots'": lambda doc: entry(doc).__setitem__("memory_growth", "lots"),
    "a metric 'high'": lambda doc: entry(doc).__setitem__("metrics", {"accuracy": "high"}),
}


@pytest.mark.parametrize("name", list(ENTRY_EDITS))
def test_an_entry_the_gate_cannot_judge_by_fails_its_test(saved: Path, pytester: pytest.Pytester,
                                                          monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    edit(saved, ENTRY_EDITS[name])
    monkeypatch.setenv("PG_SCALE", "5.0")  # 5x slower: it must not pass
    result = run(pytester)
    result.assert_outcomes(failed=1)
    where = "baseline entry not judged: its entry in *testbox.json is malformed" if name not in (
        "no samples", "unit changed") else "latency vs baseline not judged: the baseline entry"
    result.stdout.fnmatch_lines([f"*{where}*. Fix: re-record it with `pytest '{NODE}' --perf --perf-save`*"])

    warned = run(pytester, "--perf-baseline-errors=warn")
    warned.assert_outcomes(passed=1)
    warned.stdout.fnmatch_lines(["*warned*"])

    monkeypatch.setenv("PG_SCALE", "1.0")
    run(pytester, "--perf-save").assert_outcomes(passed=1)  # a save repairs the entry ...
    run(pytester).assert_outcomes(passed=1)  # ... and the gate judges by it again


def test_a_deleted_entry_is_listed_and_fails_under_require_baseline(saved: Path, pytester: pytest.Pytester,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    edit(saved, lambda doc: doc["entries"].clear())
    monkeypatch.setenv("PG_SCALE", "5.0")
    listed = run(pytester)
    listed.assert_outcomes(passed=1)
    listed.stdout.fnmatch_lines([f"*WARNING: 1 measured test(s) have no entry in the baseline*{NODE}*--perf-save*"])
    required = run(pytester, "--perf-require-baseline", "--perf-baseline-errors=warn")
    required.assert_outcomes(failed=1)
    required.stdout.fnmatch_lines(["*has no entry for this test, and a baseline is required*"])


def test_a_missing_file_is_a_note_but_fails_under_require_baseline(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_case=TEST_FILE)
    pytester.makeini("[pytest]\nperfguard_require_baseline = true\n")
    result = run(pytester)
    assert result.ret == 1
    result.stdout.fnmatch_lines(["*ERROR: no baseline for this machine (*testbox.json), and a baseline is required*"])
    run(pytester, "--perf-save").assert_outcomes(passed=1)  # recording one is always allowed
    run(pytester).assert_outcomes(passed=1)


def test_a_zero_latency_sample_is_refused_where_it_is_recorded(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_zero="""
        def test_zero(perf):
            perf.record_latencies([0.01] * 10 + [0.0])
    """)
    result = run(pytester)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*record_latencies() needs a non-empty list of finite, positive seconds; got 0.0*"])


def test_compare_fails_on_an_entry_it_cannot_judge(saved: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    slower = tmp_path / "slower.json"
    doc = json.loads(saved.read_text())
    doc["entries"][NODE]["samples"]["latency"] = [5 * x for x in doc["entries"][NODE]["samples"]["latency"]]
    doc["entries"][NODE]["samples"]["latency"][0] = -1e-9
    slower.write_text(json.dumps(doc))
    assert cli_main(["compare", str(saved), str(slower), "--fail-on-regression"]) == 1
    out = capsys.readouterr()
    assert "not judged: " in out.out and "not finite positive seconds" in out.out
    assert cli_main(["show", str(slower)]) == 0
    assert "malformed" in capsys.readouterr().out


# --- every budget source counts -------------------------------------------------------------------


@pytest.mark.parametrize("hook", ["pytest_collection_modifyitems(items)", "pytest_itemcollected(item)"])
def test_markers_added_by_conftest_hooks_are_judged(pytester: pytest.Pytester, hook: str) -> None:
    body = ("for item in items:\n        item.add_marker(pytest.mark.perf_budget(latency='1us'))"
            if "items" in hook else "item.add_marker(pytest.mark.perf_budget(latency='1us'))")
    pytester.makeconftest(f"import pytest\n\ndef {hook}:\n    {body}\n")
    pytester.makepyfile(test_slow="""
        def test_slow(perf):
            perf.record_latencies([0.01] * 20)
    """)
    result = run(pytester)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*latency p50 10.00 ms/call > budget 1.00 us/call*"])


def test_stacked_and_module_level_budgets_all_count_nearest_wins(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_stack="""
        import pytest
        from pytest_perfguard import perf_budget

        pytestmark = pytest.mark.perf_budget(memory="1B", metrics={"size": "<=1", "count": ">=5"})

        @perf_budget(latency="1us")               # outer: kept for latency
        @perf_budget(metrics={"size": "<=100"})   # nearest: wins for size; count still from the module
        def test_x(perf):
            perf.record_latencies([0.01] * 20)
            perf.record(size=50, count=1)
    """)
    result = run(pytester)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*latency p50 10.00 ms/call > budget 1.00 us/call*"])
    result.stdout.fnmatch_lines(["*count 1 < budget 5*"])
    assert "size 50 > budget" not in result.stdout.str()  # the module's <=1 was overridden
    result.stdout.fnmatch_lines(["*memory budget '1B' not checked*"])  # the module's memory= is kept


def test_a_huge_budget_is_a_collection_error_even_under_collect_only(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_huge="""
        from pytest_perfguard import perf_budget

        @perf_budget(latency=10**400)
        def test_h(perf):
            pass
    """)
    for args in ((), ("--collect-only",)):
        result = run(pytester, *args)
        assert result.ret == pytest.ExitCode.INTERRUPTED
        result.stdout.fnmatch_lines(["*test_huge.py::test_h: invalid perf_budget: latency=1000*too large a number*"])
        assert "INTERNALERROR" not in result.stdout.str() + result.stderr.str()


@pytest.mark.parametrize("option", ["--perf-max-time=nan", "--perf-min-round-time=inf", "--perf-profile-timeout=-1",
                                    "--perf-profile-timeout=nan", "--perf-baseline-errors=ignore"])
def test_bad_option_values_are_usage_errors(pytester: pytest.Pytester, option: str) -> None:
    pytester.makepyfile(test_ok="def test_ok(perf):\n    perf(sum, [1])\n")
    result = run(pytester, option)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*{option.split('=')[0]}*"])


# --- xdist and pytest-benchmark -------------------------------------------------------------------


def test_benchmarked_budgets_are_measured_and_gated_under_xdist(pytester: pytest.Pytester) -> None:
    pytest.importorskip("xdist")
    pytest.importorskip("pytest_benchmark")
    pytester.makepyfile(test_bench="""
        import time
        from pytest_perfguard import perf_budget

        @perf_budget(latency="1us")
        def test_slow(benchmark):
            benchmark(time.sleep, 0.002)

        @perf_budget(latency="1s")
        def test_fast(benchmark):
            benchmark(sum, range(10))
    """)
    result = run(pytester, "-n", "2", "--benchmark-max-time=0.05")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*latency p50 2.* ms/call > budget 1.00 us/call*", "*FAILED test_bench.py::test_slow*"])


def test_a_disabled_benchmark_is_an_error_not_a_pass(pytester: pytest.Pytester) -> None:
    pytest.importorskip("pytest_benchmark")
    pytester.makepyfile(test_bench="""
        from pytest_perfguard import perf_budget

        @perf_budget()
        def test_b(benchmark):
            benchmark(sum, range(10))
    """)
    result = run(pytester, "--benchmark-disable")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*latency not measured: pytest-benchmark is disabled*"])


def test_html_report_puts_gate_errors_first(tmp_path: Path) -> None:
    from pytest_perfguard.html_report import header
    from pytest_perfguard.report_data import Run

    doc = {"tests": [], "gate_errors": ["Baseline file b.json is not valid JSON"], "gate_warnings": []}
    page = header([Run(path=tmp_path / "run.json", label="run", doc=doc, tests=[])], [], "now")
    assert page.index("ERROR: Baseline file b.json") < page.index("run run: created")



def test_the_gate_judges_every_sample_not_the_thinned_report(pytester: pytest.Pytester,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    # 3000 samples: the 1000 that thinning keeps read 20 ms, the other 2000 read 10 ms, as the
    # baseline does. Judged on all of them (as the budget is) nothing changed; judged on the
    # thinned 1000, as before, the same code "regressed" 2x.
    pytester.makepyfile(test_many="""
        import os
        from pytest_perfguard.model import thin as thin_samples

        def test_many(perf):
            kept = set(thin_samples(list(range(3000)), 1000)) if os.environ.get("PG_SHIFTED") else set()
            perf.record_latencies([0.020 if i in kept else 0.010 + 1e-6 * (i % 7) for i in range(3000)])
    """)
    run(pytester, "--perf-save").assert_outcomes(passed=1)
    monkeypatch.setenv("PG_SHIFTED", "1")
    result = run(pytester, "--perf-json=run.json")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*latency vs baseline*unchanged*"])
    (test,) = json.loads((pytester.path / "run.json").read_text())["tests"]
    assert len(test["measurement"]["samples"]) == 1000  # the report still carries at most 1000
