"""Stored mode across saved runs: the model, the gate's use of it, and the error budget (deterministic)."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from pytest_perfguard import runnoise
from pytest_perfguard.baseline import entry_problem
from pytest_perfguard.gate import Saved
from pytest_perfguard.gate import baseline_rows as _baseline_rows
from pytest_perfguard.model import BaselineEntry, SavedRun, TestResult
from pytest_perfguard.runnoise import (
    MAX_RUNS,
    ProcessOffset,
    Spread,
    SuiteModel,
    compare_latency,
    latency_level,
)

JITTER = [1.0, 1.02, 0.99, 1.01, 0.98, 1.0, 1.03, 0.97]  # a test's run-to-run jitter, saved run by run


def rounds(level: float, n: int = 40) -> list[float]:
    """Rounds whose 10th percentile is ``level``: a floor plus slower ones (a burst never moves it)."""
    return [level] * 8 + [level * (1.0 + 0.01 * i) for i in range(n - 8)]


def result(nodeid: str, level: float, process: str, memory: float | None = 50e6, rows=()) -> dict:
    return {"nodeid": nodeid, "rows": list(rows), "process": process, "metrics": {},
            "measurement": {"samples": rounds(level), "unit": "call", "memory_growth": memory}}


def entry_from_result(res: dict, commit: str | None, old: BaselineEntry | None = None) -> BaselineEntry:
    return BaselineEntry.from_result(TestResult.from_json(res), commit, old)


def baseline_rows(res: dict, *args, **kwargs):
    return _baseline_rows(TestResult.from_json(res), *args, **kwargs)


def suite(n_tests: int = 6, n_runs: int = 5, speeds=(1.0, 1.15, 0.9, 1.1, 0.95)) -> dict[str, BaselineEntry]:
    """Entries saved by ``n_runs`` processes, each with its own speed, as ``--perf-save`` makes them."""
    entries: dict[str, BaselineEntry] = {}
    for r in range(n_runs):
        for t in range(n_tests):
            level = 0.001 * (t + 1) * speeds[r] * JITTER[(r + 2 * t) % len(JITTER)]
            res = result(f"t{t}", level, f"p{r}", 50e6 + 1e5 * JITTER[(r + t) % 8])
            entries[res["nodeid"]] = entry_from_result(res, None, entries.get(res["nodeid"]))
    return entries


def test_the_level_is_the_10th_percentile_of_the_rounds() -> None:
    assert latency_level(rounds(0.002)) == pytest.approx(0.002)
    assert latency_level([0.0, -1.0, math.nan]) is None


def test_an_entry_saved_before_runs_counts_as_one_run() -> None:
    old = {"samples": {"latency": rounds(0.003)}, "memory_growth": 7.0}
    assert BaselineEntry.from_json(old).runs == (SavedRun(pytest.approx(0.003), 7.0, None),)


def test_saves_add_runs_keep_the_last_ten_and_restart_on_a_change() -> None:
    entry = None
    for i in range(MAX_RUNS + 3):
        entry = entry_from_result(result("t", 0.001 * (1 + i / 100), f"p{i}"), None, entry)
    assert [r.process for r in entry.runs] == [f"p{i}" for i in range(3, MAX_RUNS + 3)]
    changed = result("t", 0.002, "q", rows=[{"metric": "latency vs baseline", "kind": "latency", "verdict": "regressed", "p_value": 1e-6}])
    one_run_noise = result("t", 0.002, "q", rows=[{"metric": "latency vs baseline", "kind": "latency", "verdict": "regressed",
                                                   "p_value": None}])
    assert len(entry_from_result(one_run_noise, None, entry).runs) == MAX_RUNS
    # memory is not re-measured, so its change is not confirmed: it does not restart the history
    memory = result("t", 0.001, "q", rows=[{"metric": "memory vs baseline", "kind": "memory", "verdict": "regressed", "p_value": 1e-6}])
    assert len(entry_from_result(memory, None, entry).runs) == MAX_RUNS
    assert [r.process for r in entry_from_result(changed, None, entry).runs] == ["q"]
    per_item = result("t", 0.001, "u")
    per_item["measurement"]["unit"] = "item"
    assert len(entry_from_result(per_item, None, entry).runs) == 1
    assert len(entry_from_result(result("t", 0.001, "u"), None).runs) == 1


def test_malformed_runs_make_the_entry_unjudgeable() -> None:
    entry = entry_from_result(result("t", 0.001, "p"), None).to_json()
    assert entry_problem(entry) is None
    assert "latency" in entry_problem({**entry, "runs": [{"latency": -1}]})
    assert "list of objects" in entry_problem({**entry, "runs": {"latency": 1}})
    assert "process" in entry_problem({**entry, "runs": [{"process": 3}]})


def test_the_saved_processes_speeds_are_taken_out_of_each_tests_spread() -> None:
    model = SuiteModel.of(suite())
    raw = Spread.of([math.log(r.latency) for r in suite()["t0"].runs])
    assert model.tests["t0"].logs and Spread.of(model.tests["t0"].logs).var < raw.var / 10
    assert model.offsets.df == 4 and model.offsets.var > 0.003  # 0.9x-1.15x process speeds


def test_spread_is_moderated_toward_the_rest_of_the_suite() -> None:
    own, suite_spread = Spread(0.0, 1), Spread(0.4, 21)
    var, df = own.moderated(suite_spread)
    assert df == 1 + runnoise.PRIOR_DF and var == pytest.approx(runnoise.PRIOR_DF * 0.02 / df)
    assert Spread().moderated(Spread()) is None


def test_a_saved_run_disturbed_throughout_is_pulled_in() -> None:
    entries = suite(n_tests=8)
    runs = list(entries["t3"].runs)
    runs[2] = replace(runs[2], latency=runs[2].latency * 1.6)  # a neighbour busy for the whole test
    entries["t3"] = replace(entries["t3"], runs=tuple(runs))
    logs = SuiteModel.of(entries).tests["t3"].logs
    assert max(logs) - min(logs) < math.log(1.2)


def judge(model: SuiteModel, process: ProcessOffset, nodeid: str, factor: float, speed: float):
    t = int(nodeid[1:])
    return compare_latency(nodeid, rounds(0.001 * (t + 1) * factor * speed), model, process, alpha=0.01 / 6 / 2,
                           tolerance=0.05)


def test_a_slower_process_is_not_a_regression_but_a_slower_test_is() -> None:
    model, process = SuiteModel.of(suite()), ProcessOffset()
    first = [judge(model, process, f"t{t}", 1.0, 1.3) for t in range(runnoise.MIN_TESTS)]
    assert all("not yet known" in r.reason for r in first)
    rest = [judge(model, process, f"t{t}", 1.0, 1.3) for t in range(runnoise.MIN_TESTS, 5)]
    assert all(r.verdict == "unchanged" and "speed 1.2" in r.reason for r in rest), [r.reason for r in rest]  # 1.3 / 1.02
    slow = judge(model, process, "t5", 1.5, 1.3)
    assert slow.verdict == "regressed" and slow.ratio == pytest.approx(1.5, rel=0.05) and slow.p_worse < slow.alpha
    assert 0.05 <= slow.mde < 0.5


def test_without_any_spread_there_is_nothing_to_model() -> None:
    one = {f"t{t}": entry_from_result(result(f"t{t}", 0.001, "p"), None) for t in range(3)}
    assert compare_latency("t0", rounds(0.002), SuiteModel.of(one), ProcessOffset(), alpha=0.01, tolerance=0.05) is None


def test_rows_share_the_tests_alpha_and_say_what_they_could_catch() -> None:
    entries = suite()
    model, process = SuiteModel.of(entries), ProcessOffset()
    rows = baseline_rows(result("t0", 0.001, "h"), None, entries["t0"], 0.05, alpha=0.01,
                         saved=Saved("t0", model, process))
    by = {r.label: r for r in rows}
    assert by["latency vs baseline"].alpha == by["memory vs baseline"].alpha == 0.005
    assert by["latency vs baseline"].p_value is not None and by["latency vs baseline"].mde > 0.05
    assert by["memory vs baseline"].verdict == "unchanged" and by["memory vs baseline"].mde is not None
    bigger = baseline_rows(result("t0", 0.001, "h", memory=80e6), None, entries["t0"], 0.05, alpha=0.01,
                           saved=Saved("t0", model, process))
    assert [r.verdict for r in bigger if r.label == "memory vs baseline"] == ["regressed"]


def test_memory_is_judged_on_the_tests_own_spread_beyond_peak_rss_resolution() -> None:
    """Saved on this project's suites: an in-process server's peak RSS growth read 6.0-6.9 MiB in four
    runs of the same code and 11.0 MiB in the fifth, while its neighbours read the same bytes every run.
    Pooled with them, its spread shrank and the fifth run failed as a regression."""
    mib = 2**20
    entries: dict[str, BaselineEntry] = {}
    for r, server in enumerate((6.0, 6.2, 6.4, 6.9)):
        for t in range(6):
            memory = server * mib if t == 0 else 512 * 1024
            res = result(f"t{t}", 0.001 * (t + 1) * JITTER[(r + t) % 8], f"p{r}", memory)
            entries[res["nodeid"]] = entry_from_result(res, None, entries.get(res["nodeid"]))
    model = SuiteModel.of(entries)

    def memory_row(nodeid: str, now: float):
        rows = baseline_rows(result(nodeid, 0.001, "h", now), None, entries[nodeid], 0.05, alpha=0.01,
                             saved=Saved(nodeid, model, ProcessOffset()))
        return next(r for r in rows if r.label == "memory vs baseline")

    same_code = memory_row("t0", 11.0 * mib)
    assert same_code.verdict == "unchanged" and same_code.mde * 6.4 * mib >= runnoise.MEMORY_FLOOR
    assert memory_row("t0", 40 * mib).verdict == "regressed"
    # a test whose saved runs never moved is not failed for a change below the floor either ...
    assert memory_row("t1", 4 * mib).verdict == "unchanged"
    # ... but is for one beyond it
    assert memory_row("t1", 20 * mib).verdict == "regressed"


def test_a_one_run_baseline_says_the_noise_is_not_modelled() -> None:
    entry = entry_from_result(result("t0", 0.001, "p"), None)
    model = SuiteModel.of({"t0": entry})
    rows = baseline_rows(result("t0", 0.001, "h"), None, entry, 0.05, alpha=0.01, saved=Saved("t0", model, ProcessOffset()))
    latency = next(r for r in rows if r.label == "latency vs baseline")
    assert "one run per test" in latency.message and latency.p_value is None and latency.alpha == 0.005
