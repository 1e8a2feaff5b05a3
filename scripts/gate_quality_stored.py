"""Stored mode's gate at suite scale, by simulation through the real decision functions.

A suite of ``--tests`` tests is saved ``--runs`` times (``model.BaselineEntry.from_result``, as
``--perf-save`` does) and then judged once more (``gate.baseline_rows`` with the suite's spread and
each test's share of ``--alpha``, then ``runnoise.compare_speed`` on the process's speed, as a gated
``pytest --perf`` run does). The synthetic rounds carry
the noise of a shared 2-core VM:

* a per-process offset shared by every test of a run: log-normal with SD ``sigma`` (5-15 %);
* a per-test, per-run jitter (code layout, cache state): SD drawn per test from 0.5-5 %;
* within a run, 2 % round-to-round noise, and bursts: with probability 0.3 per test and run a block
  of 5-30 consecutive rounds runs 1.4-2x slower; with probability 0.05 the whole measurement of a
  test is disturbed (1.2-1.6x: a neighbour busy for longer than the test);
* memory growth: 40 MiB per test plus 1 MiB of noise per run;
* with ``--host P``, host states as measured on this project's VM (``scripts/host_states.py``, and
  25-38 % of the test measurements of ``cpu_clock_real_runs.py`` above 1.2x their test's fastest):
  with probability ``P`` a test's whole measurement runs 1.2-2.75x slower (log-uniform), in wall
  and CPU time alike; a confirmation's re-measurement keeps that state with probability
  ``--host-persist`` (a short pause) and draws a new one otherwise (a pause longer than the state).

Reported per setting: how often an unchanged suite fails anywhere (with its 95 % Clopper-Pearson
interval), how often a +10 % / +25 % slowdown of one test is caught with no other test failing, how
often a run fails when every test is 50 % slower, and the median minimum detectable change that the
rows print.

    python scripts/gate_quality_stored.py --suites 1000 --runs 1,3,5,10
"""

from __future__ import annotations

import argparse
import math
import sys

import numpy as np
from scipy import stats

from pytest_perfguard import runnoise
from pytest_perfguard.gate import Saved, baseline_rows
from pytest_perfguard.model import BaselineEntry, TestResult
from pytest_perfguard.runnoise import ProcessOffset, SuiteModel, compare_speed


def rounds(rng: np.random.Generator, cost: float, n: int = 60) -> list[float]:
    x = cost * np.exp(rng.normal(0, 0.02, n))
    if rng.random() < 0.3:
        start, length = rng.integers(0, n), rng.integers(5, 31)
        x[start:start + length] *= rng.uniform(1.4, 2.0)
    if rng.random() < 0.05:
        x *= rng.uniform(1.2, 1.6)
    return x.tolist()


def host_state(rng: np.random.Generator, p: float) -> float:
    """How much slower the host runs one measurement: 1.0, or with probability ``p`` 1.2-2.75x."""
    return math.exp(rng.uniform(math.log(1.2), math.log(2.75))) if p and rng.random() < p else 1.0


def one_run(rng, costs, jitter, sigma, slow=None, host=0.0):
    """Each test's result dict for one simulated process, each test's cost in it (to re-measure) and
    its host state; ``slow``: (test index, factor)."""
    offset = math.exp(rng.normal(0, sigma))
    process = f"{rng.integers(2**62):x}"
    out, used, states = [], [], []
    for t, (cost, sd) in enumerate(zip(costs, jitter)):
        c = cost * offset * math.exp(rng.normal(0, sd)) * (slow[1] if slow and slow[0] in (t, "all") else 1.0)
        state = host_state(rng, host)
        mem = 40 * 2**20 + rng.normal(0, 2**20)
        out.append({"nodeid": f"t{t}", "rows": [], "process": process,
                    "measurement": {"samples": rounds(rng, c * state), "unit": "call", "memory_growth": mem},
                    "metrics": {}})
        used.append(c)
        states.append(state)
    return out, used, states


def suite_outcome(rng, n_tests, runs, sigma, alpha, tolerance, slow=None, confirm=2, host=0.0, persist=0.0):
    """(any test failed, the slowed test failed, only the slowed test failed, MDEs of the latency rows)."""
    costs = np.exp(rng.uniform(math.log(1e-4), math.log(1e-2), n_tests))
    jitter = rng.uniform(0.005, 0.05, n_tests)
    entries: dict[str, BaselineEntry] = {}
    for _ in range(runs):
        for res in one_run(rng, costs, jitter, sigma, host=host)[0]:
            entries[res["nodeid"]] = BaselineEntry.from_result(TestResult.from_json(res), None, entries.get(res["nodeid"]))
    head, used, states = one_run(rng, costs, jitter, sigma, slow, host)

    def remeasure(i: int, res: dict) -> None:  # as the runner's confirmation: a new block, judged alone
        if host and rng.random() >= persist:  # without host states, the random stream of earlier recordings
            states[i] = host_state(rng, host)
        res["measurement"]["samples"] = rounds(rng, used[i] * states[i])

    failed, mdes = judge_run(entries, [head[i] for i in rng.permutation(n_tests)], alpha, tolerance,
                             remeasure if confirm else None, confirm)
    target = f"t{slow[0]}" if slow else None
    return bool(failed), target in failed, failed == {target}, mdes, "the run's speed" in failed


def judge_run(entries: dict[str, BaselineEntry], results: list[dict], alpha: float, tolerance: float,
              remeasure=None, confirm: int = 0, mde_of: str | None = None) -> tuple[set[str], list[float]]:  # noqa: ANN001
    """One gated ``pytest --perf`` process, as the runner judges it: ``results`` in the order the tests
    ran, each against its entry (``gate.baseline_rows``, the suite's model, this process's offset, each
    test's share of ``alpha``), then the process's speed (``runnoise.compare_speed``, as
    ``session.speed_checks``). ``remeasure(i, result)``: a new block of rounds for a suspected regression.
    Returns the failed node ids ("the run's speed" for the speed check) and the latency rows' MDEs (only
    the test ``mde_of``'s, if given)."""
    model, process = SuiteModel.of(entries), ProcessOffset()
    failed, mdes = set(), []
    share = alpha / (len(results) + (model.offsets.df > 0))  # the tests, and this process's speed
    for i, res in enumerate(results):
        for block in range(1 + (confirm if remeasure else 0)):
            if block:
                remeasure(i, res)
            rows = baseline_rows(TestResult.from_json(res), None, entries[res["nodeid"]], tolerance, alpha=share,
                                 saved=Saved(res["nodeid"], model, process))
            if not any(r.verdict == "regressed" and r.kind == "latency" for r in rows):
                break
        if any(r.failed for r in rows):
            failed.add(res["nodeid"])
        if mde_of in (None, res["nodeid"]):
            mdes += [r.mde for r in rows if r.kind == "latency" and r.mde is not None]
    speed = process.speed()
    check = compare_speed(speed[0], speed[1], model, alpha=share, tolerance=tolerance) if speed else None
    if check is not None and check.verdict == "regressed":  # the run fails
        failed.add("the run's speed")
    return failed, mdes


def interval(k: int, n: int) -> str:
    """``k`` of ``n`` as a percentage, with its 95 % Clopper-Pearson interval ("-" for no runs)."""
    if n == 0:
        return "- (0 runs)"
    lo = stats.beta.ppf(0.025, k, n - k + 1) if k else 0.0
    hi = stats.beta.ppf(0.975, k + 1, n - k) if k < n else 1.0
    return f"{100 * k / n:.1f} % ({k}/{n}; {100 * lo:.1f}-{100 * hi:.1f})"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--suites", type=int, default=1000, help="simulated suites per setting")
    ap.add_argument("--tests", type=int, default=20)
    ap.add_argument("--alpha", type=float, default=0.01)
    ap.add_argument("--tolerance", type=float, default=0.05)
    ap.add_argument("--sigmas", default="0.05,0.10,0.15", help="SDs of the per-process offset")
    ap.add_argument("--runs", default="1,3,5,10", help="saved runs per baseline")
    ap.add_argument("--prior-df", default=str(runnoise.PRIOR_DF), help="runnoise.PRIOR_DF values to try")
    ap.add_argument("--host", type=float, default=0.0, help="chance that a test's measurement is in a slow host state")
    ap.add_argument("--host-persist", type=float, default=0.0,
                    help="chance that a confirmation's re-measurement is still in the same host state")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    print(f"{a.tests} tests, alpha {a.alpha:g}, tolerance {a.tolerance:g}, {a.suites} suites per cell, slow host "
          f"states {a.host:g} (kept by a confirmation {a.host_persist:g})\n")
    print("| run SD | saved runs | prior df | unchanged suite fails | +10 % caught alone | +25 % caught alone "
          "| every test +50 %: run fails | median MDE |")
    print("|---|---|---|---|---|---|---|---|")
    for prior in (int(p) for p in a.prior_df.split(",")):
        runnoise.PRIOR_DF = prior
        for sigma in (float(s) for s in a.sigmas.split(",")):
            for runs in (int(r) for r in a.runs.split(",")):
                rng = np.random.default_rng(a.seed)
                host = {"host": a.host, "persist": a.host_persist}
                null = [suite_outcome(rng, a.tests, runs, sigma, a.alpha, a.tolerance, **host) for _ in range(a.suites)]
                p10 = [suite_outcome(rng, a.tests, runs, sigma, a.alpha, a.tolerance, (0, 1.10), **host)
                       for _ in range(a.suites)]
                p25 = [suite_outcome(rng, a.tests, runs, sigma, a.alpha, a.tolerance, (0, 1.25), **host)
                       for _ in range(a.suites)]
                every = [suite_outcome(rng, a.tests, runs, sigma, a.alpha, a.tolerance, ("all", 1.5), **host)
                         for _ in range(a.suites)]
                mdes = [m for o in null for m in o[3]]
                mde = f"+{100 * float(np.median(mdes)):.0f} %" if mdes else "none (one run: not modelled)"
                print(f"| {sigma:.0%} | {runs} | {prior} | {interval(sum(o[0] for o in null), a.suites)} | "
                      f"{interval(sum(o[2] for o in p10), a.suites)} | {interval(sum(o[2] for o in p25), a.suites)} "
                      f"| {interval(sum(o[0] for o in every), a.suites)} | {mde} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
