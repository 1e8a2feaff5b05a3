"""The plugin end to end, as a user runs it (pytester)."""

from __future__ import annotations

import json

import pytest

FAST = ["--perf-max-time=0", "--perf-min-rounds=3", "--perf-min-round-time=0", "--perf-profile=never"]


def run_perf(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest("--perf", *FAST, *args)


def test_passes_under_budget_and_prints_the_summary(pytester):
    pytester.makepyfile(
        """
        from pytest_perfguard import perf_budget

        @perf_budget(latency="1s")
        def test_fast(perf):
            assert perf(sum, range(100)) == 4950
        """
    )
    result = run_perf(pytester)
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*- perfguard -*", "test*metric*budget*now*ratio*verdict*",
                                 "*test_fast*latency p50*1s*/call*pass*"])


def test_fails_over_budget_with_a_short_first_line(pytester):
    pytester.makepyfile(
        """
        import time
        import pytest

        @pytest.mark.perf_budget(latency="10ms")  # missed 5x: every round is taken (10x stops early)
        def test_slow(perf):
            perf(time.sleep, 0.05)
        """
    )
    result = run_perf(pytester)
    result.assert_outcomes(failed=1)
    result.stdout.re_match_lines([r"^latency p50 \d+\.\d\d ms/call > budget 10\.00 ms/call \(\d+\.\d\dx\)$"])
    result.stdout.no_fnmatch_line("*Traceback*")


def test_without_perf_the_body_runs_once_unmeasured(pytester):
    pytester.makepyfile(
        """
        import time
        from pytest_perfguard import perf_budget
        CALLS = []

        @perf_budget(latency="1us", memory="1B")
        def test_once(perf):
            assert perf(lambda x: CALLS.append(x) or x * 2, 21) == 42
            time.sleep(0.01)

        def test_count():
            assert CALLS == [21]
        """
    )
    result = pytester.runpytest("-p", "no:randomly")
    result.assert_outcomes(passed=2)
    result.stdout.no_fnmatch_line("*- perfguard -*")


def test_with_perf_the_function_is_called_many_times(pytester):
    pytester.makepyfile(
        """
        CALLS = []

        def test_many(perf):
            perf(CALLS.append, 1)
            assert len(CALLS) >= 4  # warm-up + 3 rounds at least
        """
    )
    run_perf(pytester).assert_outcomes(passed=1)


@pytest.mark.parametrize(
    ("decorator", "expected"),
    [
        ('latency="15 parsecs"', ["*test_bad*invalid perf_budget*latency='15 parsecs'*unknown time unit*accepted forms*"]),
        ('latency={"p101": "1ms"}', ["*test_bad*latency=*unknown statistic 'p101'*"]),
        ('memory="10KB"', ["*test_bad*memory='10KB'*ambiguous unit*kB (1000 B) or KiB (1024 B)*"]),
        ('memory="-5%"', ["*test_bad*memory='-5%'*ceiling*"]),
        ('accuracy=1.5', ["*test_bad*accuracy=1.5*0..1*accepted forms*"]),
        ('accuracy="+1%"', ["*test_bad*accuracy='+1%'*largest drop*"]),
        ('throughput="lots"', ["*test_bad*throughput='lots'*accepted forms*"]),
        ('tolerance="five"', ["*test_bad*tolerance='five'*accepted forms*"]),
        ('metrics={"n": "=1"}', ["*test_bad*metrics=*condition '=1'*"]),
        ('speed="fast"', ["*test_bad*unknown keyword 'speed'*"]),
    ],
)
def test_malformed_budgets_fail_at_collection(pytester, decorator, expected):
    pytester.makepyfile(
        f"""
        import pytest

        @pytest.mark.perf_budget({decorator})
        def test_bad(perf):
            pass

        def test_other():
            pass
        """
    )
    result = pytester.runpytest()  # no --perf: budgets are validated anyway
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(expected)
    result.stdout.fnmatch_lines(["*1 error*"])


def test_sugar_rejects_positional_and_unknown_arguments(pytester):
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.perf_budget("2ms")
        def test_positional(perf):
            pass
        """
    )
    result = pytester.runpytest()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*test_positional*keyword arguments only*"])


def test_marker_is_registered_and_strict_markers_accept_it(pytester):
    pytester.makepyfile(
        """
        import pytest
        from pytest_perfguard import perf_budget

        @perf_budget(latency="1s")
        class TestGroup:
            def test_a(self, perf):
                perf(int)

        @pytest.mark.perf_budget(latency="1s")
        def test_b(perf):
            perf(int)
        """
    )
    result = pytester.runpytest("--strict-markers", "--perf", *FAST)
    result.assert_outcomes(passed=2)
    markers = pytester.runpytest("--markers")
    markers.stdout.fnmatch_lines(["@pytest.mark.perf_budget(*, latency=None, memory=None, gpu_memory=None, accuracy=None*"])


def test_items_normalise_latency_per_item(pytester):
    pytester.makepyfile(
        """
        import time
        from pytest_perfguard import perf_budget

        @perf_budget(latency="5ms")  # 50 ms per call, 1000 items: ~50 us per item
        def test_batch(perf):
            perf(time.sleep, 0.05, items=1000)
        """
    )
    result = run_perf(pytester)
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*latency p50*5ms*us/item*pass*"])


def test_record_and_accuracy_floor(pytester):
    pytester.makepyfile(
        """
        from pytest_perfguard import perf_budget

        @perf_budget(accuracy=0.98)
        def test_good(perf):
            perf.record(accuracy=0.9887)

        @perf_budget(accuracy="98%")
        def test_bad(perf):
            perf.record(accuracy=0.9)

        @perf_budget(accuracy=0.98)
        def test_forgot(perf):
            pass
        """
    )
    result = run_perf(pytester)
    result.assert_outcomes(passed=1, failed=2)
    result.stdout.fnmatch_lines([
        "accuracy 0.9 < budget 0.98 (0.92x)",
        "accuracy budget '0.98' not checked: perf.record(accuracy=...) was never called",
    ])


def test_metric_budgets_are_checked_even_without_perf(pytester):
    pytester.makepyfile(
        """
        from pytest_perfguard import perf_budget

        @perf_budget(metrics={"final_count": "==100000"}, latency="1ns")
        def test_count(perf):
            perf(int)
            perf.record(final_count=100015)
        """
    )
    result = pytester.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["final_count 100015 != budget 100000 (overshot by 15)"])
    result.stdout.no_fnmatch_line("*latency*>*budget*")  # timing is not judged without --perf


def test_memory_budget_sees_a_large_numpy_allocation(pytester):
    pytester.makepyfile(
        """
        import numpy as np
        from pytest_perfguard import perf_budget

        def alloc():
            a = np.ones(200 * 10**6, dtype=np.uint8)
            return int(a[::4096].sum())

        @perf_budget(memory="50MiB")
        def test_fat(perf):
            perf(alloc)

        @perf_budget(memory="1GiB")
        def test_fits(perf):
            perf(alloc)
        """
    )
    result = pytester.runpytest_subprocess("--perf", *FAST, "--perf-json=out.json")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.re_match_lines([r"^memory 1\d\d\.\d\d MiB > budget 50\.00 MiB \(\d\.\d\dx\)$"])
    doc = json.loads((pytester.path / "out.json").read_text())
    for test in doc["tests"]:
        m = test["measurement"]
        assert m["memory_growth"] == pytest.approx(200e6, rel=0.10)
        assert m["memory_mechanism"] in ("vmhwm", "sampling")


def test_pytest_benchmark_statistics_are_gated(pytester, monkeypatch):
    pytest.importorskip("pytest_benchmark")
    # under an outer `pytest -n`, pytest-benchmark would see the worker's variable and disable itself
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
    pytester.makepyfile(
        """
        import time
        from pytest_perfguard import perf_budget

        @perf_budget(latency="1ms")
        def test_bench_slow(benchmark):
            benchmark.pedantic(time.sleep, args=(0.02,), rounds=3, iterations=1)

        @perf_budget(latency="1s", memory="1GiB")
        def test_bench_fast(benchmark):
            benchmark(sum, range(100))
        """
    )
    result = pytester.runpytest("--perf", "--perf-profile=never", "--perf-json=out.json", "--benchmark-max-time=0.05")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.re_match_lines([r"^latency p50 \d\d\.\d\d ms/call > budget 1\.00 ms/call \(\d+\.\d\dx\)$"])
    doc = json.loads((pytester.path / "out.json").read_text())
    sources = {t["nodeid"].split("::")[1]: t["measurement"]["source"] for t in doc["tests"]}
    assert sources == {"test_bench_slow": "benchmark", "test_bench_fast": "benchmark"}
    slow = next(t for t in doc["tests"] if "slow" in t["nodeid"])
    assert slow["measurement"]["summary"]["n"] == 3


def test_perf_json_content(pytester):
    pytester.makepyfile(
        """
        import time
        from pytest_perfguard import perf_budget

        @perf_budget(latency="1s", accuracy=0.5, metrics={"size": "<=100"})
        def test_one(perf):
            perf(time.sleep, 0.001, items=2)
            perf.record(accuracy=0.75, size=42)

        def test_plain():
            pass
        """
    )
    result = run_perf(pytester, "--perf-json=reports/run.json")
    result.assert_outcomes(passed=2)
    doc = json.loads((pytester.path / "reports" / "run.json").read_text())
    assert doc["format"] == 1
    (test,) = doc["tests"]  # the plain test is not a perf test
    assert test["nodeid"] == "test_perf_json_content.py::test_one"
    assert test["outcome"] == "passed"
    assert test["metrics"] == {"accuracy": 0.75, "size": 42.0}
    assert test["budget"] == {"latency": "1s", "accuracy": 0.5, "metrics": {"size": "<=100"}}
    m = test["measurement"]
    assert m["unit"] == "item" and m["items"] == 2 and m["rounds"] >= 3
    assert len(m["samples"]) == m["rounds"] == m["summary"]["n"]
    assert 0.0004 < m["summary"]["median"] < 0.5
    verdicts = {r["metric"]: r["verdict"] for r in test["rows"]}
    assert verdicts == {"latency p50": "pass", "accuracy": "pass", "size": "pass"}


def test_ini_settings_are_honoured(pytester):
    pytester.makeini(
        """
        [pytest]
        perfguard_perf = true
        perfguard_min_rounds = 7
        perfguard_max_time = 0
        perfguard_min_round_time = 0
        perfguard_json = from_ini.json
        """
    )
    pytester.makepyfile("def test_x(perf):\n    perf(int)\n")
    pytester.runpytest().assert_outcomes(passed=1)
    doc = json.loads((pytester.path / "from_ini.json").read_text())
    assert doc["tests"][0]["measurement"]["rounds"] == 7
    # the CLI wins over the ini
    pytester.runpytest("--perf-min-rounds=4").assert_outcomes(passed=1)
    doc = json.loads((pytester.path / "from_ini.json").read_text())
    assert doc["tests"][0]["measurement"]["rounds"] == 4


def test_bad_ini_value_is_a_usage_error(pytester):
    pytester.makeini("[pytest]\nperfguard_min_rounds = many\n")
    pytester.makepyfile("def test_x():\n    pass\n")
    result = pytester.runpytest()
    result.stderr.fnmatch_lines(["*perfguard_min_rounds = 'many' is not a valid int*"])


def test_budget_without_a_measurement_fails_clearly(pytester):
    pytester.makepyfile(
        """
        from pytest_perfguard import perf_budget

        @perf_budget(latency="1s")
        def test_nothing_timed():
            pass
        """
    )
    result = run_perf(pytester)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["latency p50 budget '1s' not checked: nothing was timed*"])


def test_percentile_budget_with_too_few_samples_says_so(pytester):
    pytester.makepyfile(
        """
        from pytest_perfguard import perf_budget

        @perf_budget(latency={"p99": "1s"})
        def test_tail(perf):
            perf.record_latencies([0.001] * 20)

        @perf_budget(latency={"p99": "1s", "p50": "1s"})
        def test_tail_enough(perf):
            perf.record_latencies([0.001] * 300)
        """
    )
    result = run_perf(pytester)
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["latency p99: 20 samples cannot back a p99 claim (need >= 299)*"])


def test_perf_raises_rounds_for_percentile_budgets(pytester):
    pytester.makepyfile(
        """
        from pytest_perfguard import perf_budget

        @perf_budget(latency={"p95": "1s"})
        def test_p95(perf):
            perf(int)
        """
    )
    result = pytester.runpytest("--perf", "--perf-max-time=0", "--perf-min-rounds=3", "--perf-json=o.json")
    result.assert_outcomes(passed=1)
    doc = json.loads((pytester.path / "o.json").read_text())
    assert doc["tests"][0]["measurement"]["rounds"] >= 59


def test_one_measured_region_per_test(pytester):
    pytester.makepyfile(
        """
        def test_twice(perf):
            perf(int)
            perf(int)
        """
    )
    result = run_perf(pytester)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*PerfUsageError: perf() was already called in this test*"])
