"""Unit tests of the across-runs decision (pytest_perfguard.runs): seeded, deterministic, fast."""
from __future__ import annotations

import math

import numpy as np
import pytest

from pytest_perfguard import runs
from pytest_perfguard.decide import compare_samples
from pytest_perfguard.runs import MIN_RUNS, compare_runs
from test_decide import timing_rounds


def run_bests(rng: np.random.Generator, k: int, slowdown: float = 1.0, jitter: float = 0.03,
              disturbed: float = 0.0) -> np.ndarray:
    """``k`` per-run best rounds as measured on a shared VM (docs/gate_quality.md): a log-normal
    jitter from process to process, and a share ``disturbed`` of runs slow from start to end
    (1.3-1.6x: a neighbour busy for longer than the test's measuring window)."""
    x = 1e-3 * slowdown * np.exp(rng.normal(0.0, jitter, k))
    hit = rng.random(k) < disturbed
    return np.where(hit, x * rng.uniform(1.3, 1.6, k), x)


def rate(rng: np.random.Generator, slowdown: float, disturbed: float, n: int = 200, k: int = 8) -> float:
    fails = sum(compare_runs(run_bests(rng, k, disturbed=disturbed), run_bests(rng, k, slowdown, disturbed=disturbed),
                             interval=False).verdict == "regressed"
                for _ in range(n))
    return fails / n


@pytest.mark.parametrize("disturbed", [0.0, 0.05])  # a quiet hour: 3-5 % of runs wholly slow
def test_false_failures_and_detection_over_eight_runs(disturbed: float) -> None:
    rng = np.random.default_rng(7)
    assert rate(rng, 1.0, disturbed) <= 0.01  # A/A
    assert rate(rng, 1.10, disturbed) >= 0.93
    assert rate(rng, 1.20, disturbed) >= 0.99


def test_the_fastest_third_beats_all_runs_when_runs_are_disturbed() -> None:
    """The same recordings judged on all runs (a rank test of the run bests, as asv does with
    its samples) lose slowdowns that disturbed base runs hide; the fastest third does not."""
    from scipy import stats

    rng = np.random.default_rng(8)
    third = ranks = 0
    for _ in range(200):
        b, h = run_bests(rng, 8, disturbed=0.3), run_bests(rng, 8, 1.10, disturbed=0.3)
        third += compare_runs(b, h, interval=False).verdict == "regressed"
        ranks += stats.mannwhitneyu(h, b, alternative="greater").pvalue < 0.005 and np.median(h) / np.median(b) > 1.05
    assert third >= ranks + 20


def test_process_level_shifts_fool_pooled_rounds_but_not_the_runs() -> None:
    rng = np.random.default_rng(11)
    pooled = by_runs = 0
    for _ in range(100):
        b = [timing_rounds(rng, 40, t0=1e-3 * math.exp(rng.normal(0, 0.05))) for _ in range(8)]
        h = [timing_rounds(rng, 40, t0=1e-3 * math.exp(rng.normal(0, 0.05))) for _ in range(8)]
        if compare_samples(np.concatenate(b), np.concatenate(h)).verdict == "regressed":
            pooled += 1
            by_runs += compare_runs([x.min() for x in b], [x.min() for x in h], interval=False).verdict == "regressed"
    assert pooled >= 5  # within-run intervals are far too narrow for process-level noise
    assert by_runs <= 1


def test_recorded_case_two_wholly_disturbed_base_runs_do_not_hide_a_ten_percent_slowdown() -> None:
    # per-run best rounds in µs, one A/B run of scripts/gate_quality.py --ab (+10 % work on the head)
    base = [334, 340, 336, 1179, 434, 331, 327, 339]
    head = [371, 376, 374, 372, 372, 373, 377, 399]
    c = compare_runs([x * 1e-6 for x in base], [x * 1e-6 for x in head])
    assert c.verdict == "regressed", c.reason
    assert c.ratio == pytest.approx(372 / 331, rel=0.01)  # fastest thirds: 371-372 vs 327-334
    assert c.base_value == pytest.approx(1e-6 * math.exp(np.mean(np.log([327, 331, 334]))))


def test_direction_tolerance_and_too_few_runs() -> None:
    base, head = [1.0, 1.01, 0.99, 1.02, 0.98], [1.2, 1.21, 1.19, 1.22, 1.18]
    slow = compare_runs(base, head)
    assert slow.verdict == "regressed" and slow.p_slower == pytest.approx(1 / 252)  # the one extreme split
    assert slow.ci_low > 1.05 and slow.ci_low < slow.ratio < slow.ci_high
    assert "slower beyond the 5 % tolerance" in slow.reason
    fast = compare_runs(head, base)
    assert fast.verdict == "improved" and fast.p_faster == pytest.approx(1 / 252)
    tight = [1.0, 1.001, 0.999, 1.002, 0.998, 1.0005, 0.9995, 1.0015]
    small = compare_runs(tight, [x * 1.03 for x in tight])  # significant, but within the tolerance
    assert small.verdict == "unchanged" and small.ci_low > 1.0 and "no change beyond" in small.reason
    assert compare_runs(tight, [x * 1.03 for x in tight], tolerance=0.02).verdict == "regressed"
    four = compare_runs(base[:4], head[:4])  # 4 + 4 runs: p >= 1/70, never significant
    assert four.verdict == "insufficient" and four.p_slower is None and (four.n_base, four.n_head) == (4, 4)
    assert MIN_RUNS == 5


def test_unusable_values_are_dropped_and_the_result_is_json_safe() -> None:
    c = compare_runs([1.0, None, float("nan"), 0.0, -1.0, 1.01, 0.99, 1.02, 0.98], [1.2, 1.21, 1.19, 1.22, 1.18])
    assert (c.n_base, c.n_head) == (5, 5) and c.verdict == "regressed"
    empty = compare_runs([], [1.0])
    assert empty.verdict == "insufficient" and empty.to_dict()["ratio"] is None


def test_interval_agrees_with_the_test() -> None:
    rng = np.random.default_rng(3)
    for _ in range(40):
        c = compare_runs(run_bests(rng, 6, disturbed=0.2), run_bests(rng, 6, rng.uniform(0.95, 1.1), disturbed=0.2))
        alpha = (1 - c.confidence) / 2
        assert (c.ci_low > 1.0) == (c.p_slower < alpha), c
        assert (c.ci_high < 1.0) == (c.p_faster < alpha), c


def test_many_runs_use_a_seeded_sample_of_splits(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(5)
    b, h = run_bests(rng, 9), run_bests(rng, 9, 1.08)
    assert math.comb(18, 9) > runs.MAX_SPLITS
    one = compare_runs(b, h)
    fresh = runs._permutation_test.__wrapped__(tuple(b), tuple(h), 0.99, True)
    assert fresh[1:3] == (one.p_slower, one.p_faster) and one.verdict == "regressed"  # deterministic, not cached luck
    monkeypatch.setattr(runs, "MAX_SPLITS", 10**5)  # exact enumeration agrees to sampling error
    runs._splits.cache_clear()
    try:
        exact = runs._permutation_test.__wrapped__(tuple(b), tuple(h), 0.99, False)
    finally:
        runs._splits.cache_clear()  # no exact 9 + 9 table left behind for other tests
    assert exact[1] == pytest.approx(one.p_slower, abs=5e-4)
