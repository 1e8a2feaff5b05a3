"""Adopting an existing pytest-benchmark suite, end to end as a user would: ``--perf`` alone gates
every ``benchmark`` test against its baseline (no marker), and one ``pytestmark`` line budgets a module."""

from __future__ import annotations

import json
import re

import pytest

pytest.importorskip("pytest_benchmark")

# A suite written the way pytest-benchmark suites are: plain, pedantic, parametrized and marked.
# The work spins to a deadline, so each call lasts its time whatever the machine's load (a preempted
# round only lasts longer, and the gate judges by the fastest rounds); SLOW names the one case that
# is made 20x slower.
SUITE = """
import os
import time

import pytest

MS = 0.002


def work(name):
    deadline = time.perf_counter() + MS * (20 if os.environ.get("SLOW") == name else 1)
    while time.perf_counter() < deadline:
        pass
    return name


def test_plain(benchmark):
    assert benchmark(work, "plain") == "plain"


def test_pedantic(benchmark):
    benchmark.pedantic(work, args=("pedantic",), rounds=15, iterations=2)


@pytest.mark.parametrize("size", ["small", "large"])
def test_parametrized(benchmark, size):
    benchmark(work, size)


@pytest.mark.benchmark(group="marked")
def test_marked(benchmark):
    benchmark(work, "marked")
"""
NODES = ["test_suite.py::test_plain", "test_suite.py::test_pedantic", "test_suite.py::test_parametrized[small]",
         "test_suite.py::test_parametrized[large]", "test_suite.py::test_marked"]


@pytest.fixture(autouse=True)
def _benchmark_on(monkeypatch: pytest.MonkeyPatch) -> None:
    # under an outer `pytest -n`, pytest-benchmark would see the worker's variable and disable itself
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
    monkeypatch.delenv("SLOW", raising=False)


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest("--perf", "--perf-machine=box", "--perf-profile=never", "--benchmark-max-time=0.05",
                              "--benchmark-min-rounds=10", "-p", "no:cacheprovider", *args)


def test_perf_alone_gates_every_benchmark_test_of_an_existing_suite(pytester: pytest.Pytester,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    pytester.makepyfile(test_suite=SUITE)
    first = run(pytester)  # no baseline yet: every test measured, nothing compared, and the run says so
    first.assert_outcomes(passed=5)
    first.stdout.fnmatch_lines(["perfguard: no baseline for this machine (*box.json): absolute budgets only; "
                                "record one with `pytest --perf --perf-save`"])
    rows = [line.split() for line in first.stdout.lines]
    for node in NODES:  # (fnmatch would read a test id's brackets as a pattern)
        assert [node, "latency", "p50"] in [row[:3] for row in rows if row[-1:] == ["measured"]], node

    run(pytester, "--perf-save").assert_outcomes(passed=5)
    saved = json.loads((pytester.path / "baselines" / "box.json").read_text())["entries"]
    assert sorted(saved) == sorted(NODES)
    for node in NODES:  # pytest-benchmark's rounds, and the memory meter around each test
        assert 2e-3 <= saved[node]["summary"]["min"] < 2e-2, node  # per call (pedantic: per iteration)
        assert saved[node]["memory_growth"] is not None and saved[node]["memory_mechanism"], node

    # A 20x slowdown fails exactly its test, after one fresh process confirmed it, at the default tolerance.
    monkeypatch.setenv("SLOW", "large")  # inherited by that fresh process
    slow = run(pytester, "-v", "--perf-confirm=1", "--perf-confirm-pause=0.1", "--perf-json=out.json")  # -v: progress lines
    slow.assert_outcomes(passed=4, failed=1)
    out = slow.stdout.str()
    assert ("perfguard: test_suite.py::test_parametrized[large]: latency looks regressed: measuring again in 0.1 s "
            "in a fresh process to confirm (1/1)") in out
    assert out.count("latency looks regressed") == 1
    slow.stdout.re_match_lines([r"^latency vs baseline regressed: \d+\.\d+ ms/call vs baseline \d+\.\d+ ms/call \(",
                                re.escape("FAILED test_suite.py::test_parametrized[large] - latency vs baseline")])
    tests = {t["nodeid"]: t for t in json.loads((pytester.path / "out.json").read_text())["tests"]}
    assert sorted(tests) == sorted(NODES)
    large = tests["test_suite.py::test_parametrized[large]"]
    assert large["measurement"]["source"] == "benchmark" and large["measurement"]["remeasured"] == 1
    regressed = [c for c in large["rows"] if c["verdict"] == "regressed"]
    assert [c["metric"] for c in regressed] == ["latency vs baseline"] and regressed[0]["ratio"] > 2
    for node in NODES:
        if node != "test_suite.py::test_parametrized[large]":
            assert tests[node]["outcome"] == "passed", node
            assert any(c["metric"] == "latency vs baseline" for c in tests[node]["rows"]), node


def test_one_pytestmark_line_budgets_every_test_of_a_module(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_budgeted="""
        import time

        import pytest

        pytestmark = pytest.mark.perf_budget(latency="30ms")


        def spin(seconds):
            deadline = time.perf_counter() + seconds
            while time.perf_counter() < deadline:
                pass


        def test_fast(benchmark):
            benchmark(spin, 0.001)


        def test_slow(benchmark):
            benchmark(spin, 0.060)


        @pytest.mark.perf_budget(latency="1s")  # the nearest marker wins, per keyword
        def test_slow_with_its_own_budget(benchmark):
            benchmark(spin, 0.060)
    """)
    result = run(pytester, "--perf-json=out.json")
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(["latency p50 *ms/call > budget 30.00 ms/call (*x)",
                                 "FAILED test_budgeted.py::test_slow - latency p50 *"])
    budgets = {t["nodeid"].split("::")[1]: t["budget"] for t in json.loads((pytester.path / "out.json").read_text())["tests"]}
    assert budgets == {"test_fast": {"latency": "30ms"}, "test_slow": {"latency": "30ms"},
                       "test_slow_with_its_own_budget": {"latency": "1s"}}


def test_an_unmarked_benchmark_that_timed_nothing_is_an_error_under_perf(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_off="""
        def test_b(benchmark):
            benchmark(sum, range(10))
    """)
    result = run(pytester, "--benchmark-disable")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*latency not measured: pytest-benchmark is disabled (--benchmark-disable)*"])
    run(pytester).assert_outcomes(passed=1)  # enabled, the same unmarked test is measured and passes
    pytester.runpytest("-p", "no:cacheprovider", "--benchmark-disable").assert_outcomes(passed=1)  # no --perf: no gate


def test_a_confirmation_writes_none_of_pytest_benchmark_s_files(pytester: pytest.Pytester,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """The fresh process that confirms a regression re-runs the user's options, minus those that write
    files: ``--benchmark-autosave`` would add a numbered save per confirmation."""
    pytester.makepyfile(test_suite=SUITE)
    run(pytester, "--perf-save", "-k", "plain").assert_outcomes(passed=1)
    monkeypatch.setenv("SLOW", "plain")
    slow = run(pytester, "-v", "-k", "plain", "--perf-confirm=1", "--perf-confirm-pause=0", "--benchmark-autosave")
    slow.assert_outcomes(failed=1)
    slow.stdout.fnmatch_lines(["*latency looks regressed: measuring again in 0 s in a fresh process to confirm (1/1)"])
    assert len(list((pytester.path / ".benchmarks").glob("*/*.json"))) == 1


def test_a_benchmark_regression_is_confirmed_from_an_xdist_worker(pytester: pytest.Pytester,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The fresh process is no xdist worker: pytest-benchmark, which turns itself off where
    ``PYTEST_XDIST_WORKER`` is set, measures there."""
    pytest.importorskip("xdist")
    pytester.makepyfile(test_suite=SUITE)
    run(pytester, "--perf-save", "-k", "plain").assert_outcomes(passed=1)
    monkeypatch.setenv("SLOW", "plain")
    slow = run(pytester, "-k", "plain", "-n", "1", "--perf-confirm=1", "--perf-confirm-pause=0", "--perf-json=out.json")
    slow.assert_outcomes(failed=1)
    (test,) = json.loads((pytester.path / "out.json").read_text())["tests"]
    assert test["measurement"]["remeasured"] == 1
