"""CPU time beside wall time: measured per round, chosen by ``clock=`` / ``--perf-clock``, stored and
gated (fake clocks for the loop; end to end with pytester on regions whose wall time grows by
sleeping, which CPU time does not see)."""

from __future__ import annotations

import json

import pytest

from pytest_perfguard.budget import BudgetError, parse_budget
from pytest_perfguard.measure import Measurement, Settings, measure_calls
from pytest_perfguard.judge import judged_clock as _clock

SETTINGS = Settings(min_rounds=5, max_time=0.05, min_round_time=0.01)


class Clocks:
    """A wall clock and the (thread, process) CPU clocks: each call costs ``wall`` seconds of wall time,
    ``cpu`` of this thread's CPU time and ``others`` of the process's other threads'."""

    def __init__(self, wall: float, cpu: float, others: float = 0.0) -> None:
        self.wall, self.cpu, self.others = wall, cpu, others
        self.now = self.thread = self.process = 0.0

    def timer(self) -> float:
        return self.now

    def cpu_times(self) -> tuple[float, float]:
        return self.thread, self.process

    def work(self) -> None:
        self.now += self.wall
        self.thread += self.cpu
        self.process += self.cpu + self.others


def test_every_round_is_timed_on_the_threads_cpu_clock_too():
    c = Clocks(wall=0.004, cpu=0.001)  # a call that waits three quarters of its wall time
    m, _ = measure_calls(c.work, SETTINGS, timer=c.timer, cpu=c.cpu_times, memory=False, items=2)
    assert len(m.cpu_samples) == len(m.samples) == m.rounds >= 5
    assert m.samples == pytest.approx([0.002] * m.rounds)  # per item
    assert m.cpu_samples == pytest.approx([0.0005] * m.rounds)
    assert m.cpu_clock == "thread" and m.clock == "wall"  # the gate's clock is chosen when judged


def test_the_process_clock_is_taken_when_other_threads_worked_during_the_rounds():
    c = Clocks(wall=0.002, cpu=0.0005, others=0.003)  # e.g. torch's intra-op pool
    m, _ = measure_calls(c.work, SETTINGS, timer=c.timer, cpu=c.cpu_times, memory=False)
    assert m.cpu_clock == "process"
    assert m.cpu_samples == pytest.approx([0.0035] * m.rounds)


def test_a_cpu_clock_that_does_not_advance_gives_no_cpu_samples():
    c = Clocks(wall=0.002, cpu=0.0)
    m, _ = measure_calls(c.work, SETTINGS, timer=c.timer, cpu=c.cpu_times, memory=False)
    assert m.cpu_samples == [] and m.cpu_clock is None


def test_budget_clock_is_parsed_and_a_bad_one_names_the_forms():
    assert parse_budget({"latency": "2ms", "clock": "CPU"}).clock == "cpu"
    assert parse_budget({"latency": "2ms"}).clock is None
    with pytest.raises(BudgetError, match=r"clock='gpu' is not a valid budget; accepted forms: \"wall\""):
        parse_budget({"clock": "gpu"})


def test_the_judged_clock_budget_first_then_the_run_wall_where_cpu_time_was_not_measured():
    timed = Measurement(samples=[0.01] * 5, cpu_samples=[0.005] * 5, cpu_clock="thread")
    cpu_budget = parse_budget({"clock": "cpu"})
    wall_budget = parse_budget({"clock": "wall"})
    assert _clock(None, "cpu", timed) == ("cpu", None)
    assert _clock(wall_budget, "cpu", timed) == ("wall", None)
    assert _clock(cpu_budget, "wall", timed) == ("cpu", None)
    recorded = Measurement(samples=[0.01] * 5, source="benchmark")
    assert _clock(None, "cpu", recorded) == ("wall", None)  # the run's choice, where it can be had
    clock, error = _clock(cpu_budget, "wall", recorded)  # the budget's demand: an error, never a silent wall
    assert clock == "wall" and error is not None and error.failed
    assert "measured by pytest-benchmark in wall time only" in error.message
    cuda = Measurement(samples=[0.01] * 5, cpu_samples=[0.001] * 5, cpu_clock="thread", synced=True)
    clock, error = _clock(cpu_budget, "cpu", cuda)
    assert clock == "wall" and error is not None and "CUDA" in error.message
    assert _clock(None, "cpu", cuda) == ("wall", None)


SUITE = """
import os, time
from pytest_perfguard import perf_budget
from conftest import FAKE_CPU

WAIT = float(os.environ.get("PG_WAIT", "0"))
WORK = float(os.environ.get("PG_WORK", "1"))

def region():
    FAKE_CPU[0] += 0.002 * WORK  # the CPU time this call costs (a fake clock: deterministic)
    time.sleep(WAIT)  # wall time that CPU time does not see, as a busy neighbour adds it

@perf_budget(latency="1s")
def test_region(perf):
    perf(region)
"""

CONFTEST = """
import pytest_perfguard.measure

FAKE_CPU = [0.0]
pytest_perfguard.measure.cpu_times = lambda: (FAKE_CPU[0], FAKE_CPU[0])
"""


def _run(pytester, monkeypatch, *args, wait=0.0, work=1.0):
    monkeypatch.setenv("PG_WAIT", str(wait))
    monkeypatch.setenv("PG_WORK", str(work))
    return pytester.runpytest_subprocess("--perf", "--perf-machine=box", "--perf-profile=never", "--perf-max-time=0.1",
                                         "--perf-min-rounds=5", "--perf-confirm=0", "-p", "no:cacheprovider", *args)


def test_cpu_clock_gate_end_to_end(pytester, monkeypatch):
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_clock=SUITE)
    for _ in range(3):  # three saved runs: judged against their spread, not the rounds of one run
        _run(pytester, monkeypatch, "--perf-clock=cpu", "--perf-save", wait=0.001).assert_outcomes(passed=1)
    entry = json.loads((pytester.path / "baselines" / "box.json").read_text())["entries"]["test_clock.py::test_region"]
    assert entry["clock"] == "cpu" and len(entry["samples"]["cpu"]) == len(entry["samples"]["latency"]) >= 5
    assert entry["samples"]["cpu"] == pytest.approx([0.002] * len(entry["samples"]["cpu"]))
    assert len(entry["runs"]) == 3
    # the region now waits 10x longer: wall time regressed, CPU time did not
    slow_wall = _run(pytester, monkeypatch, "--perf-clock=cpu", "--perf-json=out.json", wait=0.01)
    slow_wall.assert_outcomes(passed=1)
    rows = json.loads((pytester.path / "out.json").read_text())["tests"][0]["rows"]
    gate = next(r for r in rows if r["metric"] == "latency (cpu) vs baseline")
    assert gate["verdict"] == "unchanged" and gate["p_value"] is not None, gate["message"]
    # 10 % more work is a regression on CPU time
    more = _run(pytester, monkeypatch, "--perf-clock=cpu", wait=0.001, work=1.1)
    more.assert_outcomes(failed=1)
    more.stdout.fnmatch_lines(["*latency (cpu) vs baseline regressed: 2.20 ms/call vs baseline 2.00 ms/call (1.10x*"])
    # judged on another clock than the baseline's: not judged, and it says how to re-record
    other = _run(pytester, monkeypatch, wait=0.001)
    other.assert_outcomes(failed=1)
    other.stdout.fnmatch_lines(["*latency vs baseline not judged: the baseline entry was judged on CPU time, "
                                "this run judges wall time (clock= or --perf-clock changed)*--perf-save*"])


def test_a_cpu_clock_budget_judges_its_absolute_latency_on_cpu_time(pytester, monkeypatch):
    pytester.makepyfile(test_budget_clock="""
import time
from pytest_perfguard import perf_budget

@perf_budget(latency="5ms", clock="cpu")
def test_waits_but_works_little(perf):
    perf(time.sleep, 0.02)  # 20 ms of wall time, almost no CPU time

@perf_budget(latency="5ms")
def test_wall_is_the_default(perf):
    perf(time.sleep, 0.02)

@perf_budget(latency="5ms", clock="cpu")
def test_recorded_latencies_have_no_cpu_time(perf):
    perf.record_latencies([0.001] * 20)
""")
    result = _run(pytester, monkeypatch)  # the real CPU clock
    result.assert_outcomes(passed=1, failed=2)
    result.stdout.fnmatch_lines(["*_ test_wall_is_the_default _*", "latency p50 2*ms/call > budget 5.00 ms/call*"])
    result.stdout.fnmatch_lines(["*_ test_recorded_latencies_have_no_cpu_time _*",
                                 "latency on CPU time (clock='cpu') not judged: this test's latencies were measured "
                                 "by the test in wall time only*"])


def test_perf_clock_option_and_ini_are_validated(pytester):
    pytester.makepyfile(test_x="def test_x(): pass")
    bad = pytester.runpytest("--perf", "--perf-clock=gpu")
    bad.stderr.fnmatch_lines(["*--perf-clock / perfguard_clock must be one of wall, cpu, not 'gpu'*"])
    pytester.makeini("[pytest]\nperfguard_clock = sometimes\n")
    pytester.runpytest("--perf").stderr.fnmatch_lines(["*must be one of wall, cpu, not 'sometimes'*"])


def test_a_baseline_entry_with_a_bad_clock_or_cpu_samples_is_not_judged_by():
    from pytest_perfguard.baseline import entry_problem

    good = {"samples": {"latency": [0.01] * 5, "cpu": [0.009] * 5}, "unit": "call", "clock": "cpu"}
    assert entry_problem(good) is None
    assert "\"clock\" must be one of wall, cpu" in entry_problem({**good, "clock": "gpu"})
    bad = {**good, "samples": {"latency": [0.01] * 5, "cpu": [0.009] * 4 + [-1.0]}}
    assert "1 of its 5 CPU time samples are not finite positive seconds" in entry_problem(bad)
    assert "\"cpu\" must be a list" in entry_problem({**good, "samples": {"latency": [0.01] * 5, "cpu": 3}})
