"""The typed result (``model``), the pure judging function (``judge``) and the one table model
(``table``): deterministic, no pytester."""

from __future__ import annotations

import json

import pytest

from pytest_perfguard.budget import parse_budget
from pytest_perfguard.judge import JudgeSettings, judge
from pytest_perfguard.measure import Measurement
from pytest_perfguard.model import MAX_SAMPLES, BaselineEntry, Check, TestResult, Verdict
from pytest_perfguard.sampled import Sampled
from pytest_perfguard.table import Table

FAILING = {"fail", "regressed", "insufficient", "error", "unjudged"}


def test_verdict_failed_is_the_one_list_of_failing_verdicts() -> None:
    assert {str(v) for v in Verdict if v.failed} == FAILING
    assert Check("latency p50", "1ms", 0.002, "s/call", "fail", "x", kind="latency").failed  # a string is read as its verdict
    with pytest.raises(ValueError):
        Check("latency p50", "1ms", 0.002, "s/call", "fast", "x", kind="latency")


def test_a_result_crosses_the_report_edge_unchanged_but_for_thinned_samples() -> None:
    samples = [0.001 + i * 1e-7 for i in range(5000)]
    m = Measurement(samples=samples, cpu_samples=samples, loops=3, rounds=5000, clock="cpu", memory_growth=2e6)
    check = Check("latency vs baseline", "±5%", 0.001, "s/call", Verdict.REGRESSED, "slower", kind="latency",
                  against="baseline",
                  baseline=0.0009, ratio=1.11, interval=(1.05, 1.2), p_value=1e-4, alpha=0.001, mde=0.08)
    result = TestResult("t.py::a", (check,), m, {"accuracy": 0.9}, {"accuracy": Sampled(0.9, 0.3, 1000)},
                        {"latency": "1ms"}, process="p1", body_passed=True)
    doc = json.loads(json.dumps(result.to_json()))  # what xdist and --perf-json carry
    assert len(doc["measurement"]["samples"]) == MAX_SAMPLES and doc["measurement"]["summary"]["n"] == 5000
    back = TestResult.from_json(doc)
    assert back.checks == (check,) and back.checks[0].kind == "latency" and back.metric_items == result.metric_items
    assert back.measurement is not None and back.measurement.clock == "cpu" and len(back.measurement.samples) == 1000
    assert (back.nodeid, back.metrics, back.process, back.body_passed) == ("t.py::a", {"accuracy": 0.9}, "p1", True)
    # the controller writes --perf-json and the baseline from the thinned result: the summary is still of all 5000
    assert back.to_json()["measurement"]["summary"] == doc["measurement"]["summary"]
    assert BaselineEntry.from_result(back, None).summary["n"] == 5000


def test_an_entry_keeps_the_last_runs_and_restarts_on_a_confirmed_latency_change() -> None:
    m = Measurement(samples=[0.001] * 40, unit="call")
    entry = None
    for i in range(12):
        entry = BaselineEntry.from_result(TestResult("t", measurement=m, process=f"p{i}"), "abc", entry)
    assert entry is not None and [r.process for r in entry.runs] == [f"p{i}" for i in range(2, 12)]
    regressed = Check("latency vs baseline", "±5%", 0.002, "s/call", "regressed", "", kind="latency",
                      against="baseline", p_value=1e-6)
    again = BaselineEntry.from_result(TestResult("t", (regressed,), m, process="q"), "abc", entry)
    assert [r.process for r in again.runs] == ["q"]
    stored = json.loads(json.dumps(again.to_json()))
    assert BaselineEntry.from_json(stored).runs == again.runs and stored["commit"] == "abc"


def test_judging_is_a_pure_function_of_what_was_measured() -> None:
    budget = parse_budget({"latency": "1ms", "clock": "cpu"})
    m = Measurement(samples=[0.004] * 30, cpu_samples=[0.0005] * 30, cpu_clock="thread")
    result = judge("t", budget, m, {}, {}, JudgeSettings(measured=True))
    assert result is not None and result.measurement is not None and result.measurement.clock == "cpu"
    (check,) = result.checks
    assert check.verdict == Verdict.PASS and check.now == 0.0005  # clock="cpu": the budget judges CPU time
    assert m.clock == "wall"  # the measurement it was given is not changed
    walled = judge("t", parse_budget({"latency": "1ms"}), m, {}, {}, JudgeSettings(measured=True))
    assert walled is not None and walled.failed and walled.failures[0].startswith("latency p50 4.00 ms/call > budget")
    assert judge("t", budget, m, {}, {}, JudgeSettings(measured=False)) is None  # unmeasured: metrics budgets only


def test_one_table_three_renderings() -> None:
    table = Table(["test", "metric", "verdict"], [["t::a|b", "latency p50", "fail"], ["", "memory", "pass"]],
                  ["fail", ""])
    assert table.text() == ["test    metric       verdict", "-" * 28,
                            "t::a|b  latency p50  fail", "        memory       pass"]
    assert table.markdown()[2] == "| `t::a\\|b` | latency p50 | **fail** |"
    assert table.markdown()[3] == "|  | memory | pass |"
    html = table.html()
    assert '<tr class="fail"><td class="wrap">t::a|b</td>' in html and html.count("<tr") == 3
