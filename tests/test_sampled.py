"""Metrics recorded from their items: the mean's sampling error, and the gate that uses it."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from pytest_perfguard.budget import parse_budget
from pytest_perfguard.gate import baseline_rows
from pytest_perfguard.model import BaselineEntry, TestResult
from pytest_perfguard.sampled import Sampled, compare_sampled


def test_binary_items_get_the_shrunk_binomial_spread_and_others_their_sd() -> None:
    s = Sampled.of([1] * 1000)
    assert s.mean == 1.0 and s.n == 1000
    assert s.sd == pytest.approx(math.sqrt(1002 / 1004 * 2 / 1004))  # (k+2)/(n+4): not an exact mean
    losses = Sampled.of([0.5, 1.5, 1.0])
    assert losses.mean == 1.0 and losses.sd == pytest.approx(0.5)
    for bad, why in (([1.0], "at least 2"), ([1.0, math.inf], "not finite")):
        with pytest.raises(ValueError, match=why):
            Sampled.of(bad)


def test_pooling_runs_is_pooling_their_items() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.normal(1, 0.2, 300), rng.normal(1.1, 0.3, 500)
    whole = Sampled.pooled([Sampled.of(a), Sampled.of(b)])
    both = Sampled.of(np.concatenate([a, b]))
    assert whole.n == 800 and whole.mean == pytest.approx(both.mean) and whole.sd == pytest.approx(both.sd)


def test_random_items_do_not_fail_a_one_percent_budget_as_single_numbers_do() -> None:
    """1,000 items drawn at random, accuracy 0.9, a "-1%" budget at a 0.5 % share of the error budget."""
    rng = np.random.default_rng(1)
    draws = 2000
    by_items = by_numbers = 0
    for _ in range(draws):
        base, now = rng.random(1000) < 0.9, rng.random(1000) < 0.9
        t = compare_sampled(Sampled.of(base), Sampled.of(now), tolerance=0.01, higher_is_better=True, alpha=0.005)
        by_items += t.verdict == "regressed"
        by_numbers += now.mean() < 0.99 * base.mean()
    assert by_items <= 20  # 1 % of 2000 (the share is 0.5 %)
    assert by_numbers > 0.2 * draws  # the single-number rule: ~25 %


def test_a_real_drop_is_caught_and_says_what_it_could_resolve() -> None:
    rng = np.random.default_rng(2)
    caught = 0
    for _ in range(200):
        base, now = rng.random(2000) < 0.9, rng.random(2000) < 0.84  # -6.7 %
        t = compare_sampled(Sampled.of(base), Sampled.of(now), tolerance=0.01, higher_is_better=True, alpha=0.005)
        caught += t.verdict == "regressed"
    assert caught >= 195
    assert t.mde is not None and 0.02 < t.mde < 0.05 and "Welch t" in t.reason
    lower = compare_sampled(Sampled.of([1.0, 1.2] * 100), Sampled.of([1.5, 1.7] * 100), tolerance=0.05,
                            higher_is_better=False, alpha=0.005)
    assert lower.verdict == "regressed" and lower.p_worse < 1e-10  # a loss: higher is worse


def _result(mean: float, items: dict | None) -> TestResult:
    return TestResult.from_json({"nodeid": "t", "rows": [], "measurement": None, "metrics": {"accuracy": mean},
                                 "metric_items": {"accuracy": items} if items else {}})


def test_the_gate_judges_items_inside_the_error_budget_and_borrows_a_missing_spread() -> None:
    budget = parse_budget({"accuracy": "-1%"})
    entry = BaselineEntry.from_json({"metrics": {"accuracy": 0.90}, "metric_items": {"accuracy": {"n": 1000, "sd": 0.3}},
                                     "samples": {}})
    (row,) = baseline_rows(_result(0.889, {"n": 1000, "sd": 0.31}), budget, entry, 0.05, alpha=0.01)
    assert row.verdict == "unchanged" and row.alpha == 0.01 and row.p_value is not None and row.mde > 0.03
    assert "means of 1,000 and 1,000 items" in row.message
    (row,) = baseline_rows(_result(0.80, None), budget, entry, 0.05, alpha=0.01)  # recorded as one number now
    assert row.verdict == "regressed" and "this run's spread taken as the baseline's" in row.message
    (row,) = baseline_rows(_result(0.889, None), budget, BaselineEntry.from_json({"metrics": {"accuracy": 0.90},
                                                                                  "samples": {}}), 0.05, alpha=0.01)
    assert row.verdict == "regressed" and row.alpha is None  # single numbers: -1.2 % is beyond -1 %


SUITE = """
import os
import numpy as np
from pytest_perfguard import perf_budget

@perf_budget(accuracy="-1%")
def test_eval(perf):
    draw, rate = int(os.environ["PG_DRAW"]), float(os.environ["PG_RATE"])
    perf.record_latencies([0.001] * 20)
    perf.record(accuracy=np.random.default_rng(draw).random(1000) < rate)  # 1,000 items drawn at random
"""


def test_end_to_end_a_fresh_draw_passes_where_single_numbers_failed_and_a_drop_fails(
        pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    pytester.makepyfile(test_eval=SUITE)

    def run(draw: int, rate: float = 0.9, *args: str) -> pytest.RunResult:
        monkeypatch.setenv("PG_DRAW", str(draw))
        monkeypatch.setenv("PG_RATE", str(rate))
        return pytester.runpytest("--perf", "--perf-machine=box", "--perf-profile=never", "--perf-json=out.json", *args)

    run(0, 0.9, "--perf-save").assert_outcomes(passed=1)  # accuracy 0.904
    entry = json.loads((pytester.path / "baselines" / "box.json").read_text())["entries"]["test_eval.py::test_eval"]
    assert entry["metrics"]["accuracy"] == 0.904 and entry["metric_items"]["accuracy"]["n"] == 1000

    fresh = run(4)  # 0.889: -1.7 %, beyond the budget as a single number, within the draw's noise
    fresh.assert_outcomes(passed=1)
    fresh.stdout.fnmatch_lines(["*accuracy*unchanged*"])
    (test,) = json.loads((pytester.path / "out.json").read_text())["tests"]
    assert test["metric_items"]["accuracy"]["n"] == 1000
    (row,) = [r for r in test["rows"] if r["metric"] == "accuracy"]
    assert row["alpha"] is not None and row["p_value"] > row["alpha"]

    drop = run(4, 0.8)  # a model 11 % worse
    drop.assert_outcomes(failed=1)
    drop.stdout.fnmatch_lines(["*accuracy regressed: 0.7* vs baseline 0.904 (0.8*x; means of 1,000 and 1,000 items*"])


def test_ab_pools_every_run_s_items_not_the_last_run_s() -> None:
    from pathlib import Path

    from pytest_perfguard.ab import pool_runs
    from pytest_perfguard.ab_process import SideRun

    def side_run(k: int, mean: float) -> SideRun:
        res = {"nodeid": "t", "measurement": None, "metrics": {"accuracy": mean, "count": float(k)},
               "metric_items": {"accuracy": {"n": 1000, "sd": 0.3}}}
        return SideRun("head", k, 0, 1.0, Path("log"), {"t": TestResult.from_json(res)})

    pooled = pool_runs([side_run(1, 0.90), side_run(2, 0.88)])["t"]
    assert pooled.metrics == {"accuracy": pytest.approx(0.89), "count": 2.0}  # a plain metric: the latest run's
    assert pooled.metric_items["accuracy"].n == 2000
