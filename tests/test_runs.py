"""Unit tests of the across-runs decision (pytest_perfguard.runs): seeded, deterministic, fast."""
from __future__ import annotations

import math

import numpy as np
import pytest

from pytest_perfguard import runs
from pytest_perfguard.decide import compare_samples
from pytest_perfguard.runs import compare_runs, min_pairs
from test_decide import timing_rounds


def run_bests(rng: np.random.Generator, k: int, slowdown: float = 1.0, jitter: float = 0.03,
              disturbed: float = 0.0) -> np.ndarray:
    """``k`` per-run best rounds as measured on a shared VM (docs/gate_quality.md): a log-normal
    jitter from process to process, and a share ``disturbed`` of runs slow from start to end
    (1.3-1.6x: a neighbour busy for longer than the test's measuring window)."""
    x = 1e-3 * slowdown * np.exp(rng.normal(0.0, jitter, k))
    hit = rng.random(k) < disturbed
    return np.where(hit, x * rng.uniform(1.3, 1.6, k), x)


def rate(rng: np.random.Generator, slowdown: float, disturbed: float, n: int = 200, k: int = 12) -> float:
    fails = sum(compare_runs(run_bests(rng, k, disturbed=disturbed), run_bests(rng, k, slowdown, disturbed=disturbed),
                             interval=False).verdict == "regressed"
                for _ in range(n))
    return fails / n


@pytest.mark.parametrize("disturbed", [0.0, 0.05])  # a quiet hour: 3-5 % of runs wholly slow
def test_false_failures_and_detection_over_twelve_rounds(disturbed: float) -> None:
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
        b, h = run_bests(rng, 12, disturbed=0.3), run_bests(rng, 12, 1.10, disturbed=0.3)
        third += compare_runs(b, h, interval=False).verdict == "regressed"
        ranks += stats.mannwhitneyu(h, b, alternative="greater").pvalue < 0.005 and np.median(h) / np.median(b) > 1.05
    assert third >= ranks + 20


def test_process_level_shifts_fool_pooled_rounds_but_not_the_runs() -> None:
    rng = np.random.default_rng(11)
    pooled = by_runs = 0
    for _ in range(100):
        b = [timing_rounds(rng, 40, t0=1e-3 * math.exp(rng.normal(0, 0.05))) for _ in range(12)]
        h = [timing_rounds(rng, 40, t0=1e-3 * math.exp(rng.normal(0, 0.05))) for _ in range(12)]
        if compare_samples(np.concatenate(b), np.concatenate(h)).verdict == "regressed":
            pooled += 1
            by_runs += compare_runs([x.min() for x in b], [x.min() for x in h], interval=False).verdict == "regressed"
    # within-run rules are blind to process-level noise: 3 or more of 100 against a nominal 0.5 %
    # happens by chance 1.4 % of the time
    assert pooled >= 3
    assert by_runs <= 1


def test_recorded_case_two_wholly_disturbed_base_runs_are_left_out_of_the_ratio() -> None:
    # per-run best rounds in µs, one A/B run of `python scripts/gate_quality ab` (+10 % work on the head)
    base = [334, 340, 336, 1179, 434, 331, 327, 339]
    head = [371, 376, 374, 372, 372, 373, 377, 399]
    c = compare_runs([x * 1e-6 for x in base], [x * 1e-6 for x in head])
    assert c.ratio == pytest.approx(372 / 331, rel=0.01)  # fastest thirds: 371-372 vs 327-334
    assert c.base_value == pytest.approx(1e-6 * math.exp(np.mean(np.log([327, 331, 334]))))
    # Rounds 4 and 5 (both runs outside either fastest third) change nothing when swapped: four
    # swap patterns tie with the observed one, p = 4/256, and 8 rounds cannot call it at 99 %.
    assert c.p_slower == pytest.approx(4 / 256) and c.verdict == "unchanged"
    more = compare_runs([x * 1e-6 for x in base + base[:4]], [x * 1e-6 for x in head + head[:4]])
    assert more.verdict == "regressed", more.reason  # 12 rounds, the default: p = 8/4096


def test_direction_tolerance_and_too_few_rounds() -> None:
    base = [1.0, 1.01, 0.99, 1.02, 0.98, 1.0, 1.01, 0.99]
    head = [1.21, 1.19, 1.22, 1.2, 1.18, 1.2, 1.21, 1.19]
    slow = compare_runs(base, head)
    assert slow.verdict == "regressed" and slow.p_slower == pytest.approx(1 / 256)  # 8 pairs: the one extreme swap
    assert slow.ci_low > 1.05 and slow.ci_low < slow.ratio < slow.ci_high
    assert "slower beyond the 5 % tolerance" in slow.reason
    fast = compare_runs(head, base)
    assert fast.verdict == "improved" and fast.p_faster == pytest.approx(1 / 256)
    tight = [1.0, 1.001, 0.999, 1.002, 0.998, 1.0005, 0.9995, 1.0015]
    small = compare_runs(tight, [x * 1.03 for x in tight])  # significant, but within the tolerance
    assert small.verdict == "unchanged" and small.ci_low > 1.0 and "no change beyond" in small.reason
    assert compare_runs(tight, [x * 1.03 for x in tight], tolerance=0.02).verdict == "regressed"
    seven = compare_runs(base[:7], head[:7])  # 7 pairs: p >= 1/128, never significant at 99 %
    assert seven.verdict == "insufficient" and seven.p_slower is None and seven.n_pairs == 7
    assert min_pairs(0.99) == 8 and min_pairs(0.95) == 6
    assert compare_runs(base[:6], head[:6], confidence=0.95).verdict == "regressed"


def test_ties_are_ordered_by_the_mean_of_all_runs() -> None:
    """Rounds 7-12 are wholly disturbed on both sides, outside either fastest third: swapping them
    leaves the statistic as it is, so 2^6 patterns tie with the observed one (p would be 64/4096).
    The head is slower in those rounds too, and the tie-break by the mean of all runs says so."""
    base = [1.00, 1.01, 0.99, 1.02, 0.98, 1.00, 1.40, 1.41, 1.39, 1.42, 1.38, 1.40]
    head = [1.10, 1.11, 1.09, 1.12, 1.08, 1.10, 1.54, 1.55, 1.53, 1.56, 1.52, 1.54]
    c = compare_runs(base, head)
    assert c.p_slower == pytest.approx(1 / 4096) and c.verdict == "regressed"
    assert compare_runs(head, base).p_faster == pytest.approx(1 / 4096)
    flat = head[:6] + base[6:]  # no slowdown in the disturbed rounds: the ties stay ties
    assert compare_runs(base, flat).p_slower == pytest.approx(64 / 4096)


def test_a_missing_run_leaves_its_partner_on_its_side() -> None:
    base = [1.0, 1.01, 0.99, 1.02, 0.98, 1.0, 1.01, 0.99, 0.5]  # round 9: the head's run is missing
    head = [1.2, 1.21, 1.19, 1.22, 1.18, 1.2, 1.21, 1.19, None]
    c = compare_runs(base, head)
    assert (c.n_base, c.n_head, c.n_pairs) == (9, 8, 8) and c.verdict == "regressed"
    assert c.base_value == pytest.approx(math.exp(np.mean(np.log([0.5, 0.98, 0.99]))))  # fastest 3 of 9, 0.5 kept
    assert c.p_slower == pytest.approx(1 / 256)  # 0.5 never moves to the head


def test_unusable_values_are_dropped_and_the_result_is_json_safe() -> None:
    base = [1.0, None, float("nan"), 0.0, -1.0, 1.01, 0.99, 1.02, 0.98, 1.0, 1.01, 0.99]
    head = [1.2] * 12
    c = compare_runs(base, head)
    assert (c.n_base, c.n_head, c.n_pairs) == (8, 12, 8) and c.verdict == "regressed"
    empty = compare_runs([], [1.0])
    assert empty.verdict == "insufficient" and empty.to_dict()["ratio"] is None


def test_a_periodic_neighbour_fools_a_fixed_order_but_not_a_random_one() -> None:
    """Why ``perfguard ab`` draws the order: a neighbour busy during every second run (a job whose
    period matches one round) makes those runs 8 % slower. With the base first in every round it
    always hits the head, and an unchanged head fails; with the order drawn at random, as the
    randomization test assumes, false failures stay within the 0.5 % the one-sided test allows."""
    rng = np.random.default_rng(12)
    fixed = drawn = 0
    for _ in range(200):
        times = 1e-3 * np.exp(rng.normal(0.0, 0.02, 24)) * np.tile([1.0, 1.08], 12)  # 12 rounds, 2 runs each
        first = rng.random(12) < 0.5  # True: the base ran first in that round
        fixed += compare_runs(times[0::2], times[1::2], interval=False).verdict == "regressed"
        b = np.where(first, times[0::2], times[1::2])
        h = np.where(first, times[1::2], times[0::2])
        drawn += compare_runs(b, h, interval=False).verdict == "regressed"
    assert fixed >= 150
    assert drawn <= 2


def test_interval_agrees_with_the_test() -> None:
    rng = np.random.default_rng(3)
    for _ in range(40):
        c = compare_runs(run_bests(rng, 10, disturbed=0.2), run_bests(rng, 10, rng.uniform(0.95, 1.1), disturbed=0.2))
        alpha = (1 - c.confidence) / 2
        assert (c.ci_low > 1.0) == (c.p_slower < alpha), c
        assert (c.ci_high < 1.0) == (c.p_faster < alpha), c


def test_many_rounds_use_a_seeded_sample_of_swaps(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(5)
    b, h = run_bests(rng, 16), run_bests(rng, 16, 1.08)
    assert 2**16 > runs.MAX_SPLITS
    one = compare_runs(b, h)
    fresh = runs._randomization_test.__wrapped__(tuple(b), tuple(h), 0.99, True)
    assert fresh[1:3] == (one.p_slower, one.p_faster) and one.verdict == "regressed"  # deterministic, not cached luck
    monkeypatch.setattr(runs, "MAX_SPLITS", 10**5)  # every swap pattern agrees to sampling error
    runs._swaps.cache_clear()
    try:
        exact = runs._randomization_test.__wrapped__(tuple(b), tuple(h), 0.99, False)
    finally:
        runs._swaps.cache_clear()  # no full 16-pair table left behind for other tests
    assert exact[1] == pytest.approx(one.p_slower, abs=5e-4)


def test_futility_stops_a_test_once_a_slowdown_beyond_the_tolerance_is_ruled_out() -> None:
    """One-sided: an unchanged test stops; a slowed one and a clearly faster one run on (the faster
    one so that the last round can claim the improvement); too few rounds never stop anything."""
    rng = np.random.default_rng(11)
    base = run_bests(rng, 6, jitter=0.01)
    same = runs.futile(base, run_bests(rng, 6, jitter=0.01), tolerance=0.05)
    assert same is not None and same.verdict == "unchanged" and "no slowdown beyond the 5 % tolerance" in same.reason
    assert runs.futile(base, run_bests(rng, 6, 1.10, jitter=0.01), tolerance=0.05) is None
    assert runs.futile(base, run_bests(rng, 6, 0.80, jitter=0.01), tolerance=0.05) is None
    assert runs.futile(base[:2], base[:2] * 1.0, tolerance=0.05) is None  # 2 rounds: no p-value below 20 %
    assert min_pairs(1 - 2 * runs.FUTILITY_BETA) == 3


def test_the_error_budget_is_shared_by_weight_and_the_runs_speed_keeps_its_tests() -> None:
    test_share, speed_share = runs.shares(0.01, 20, True)
    assert speed_share == pytest.approx(0.01 * runs.SPEED_WEIGHT)
    assert 20 * test_share + speed_share == pytest.approx(0.01)  # the weights sum to the budget
    assert runs.shares(0.01, 2, False) == (0.005, 0.0)  # too few tests for a runs' speed: the tests share all
    stopped = [f"t{i}" for i in range(10)]
    assert runs.deselected(stopped, live=0) == stopped[runs.KEEP_MEASURED:]
    assert runs.deselected(stopped, live=4) == stopped[runs.KEEP_MEASURED - 4:]
    assert runs.deselected(stopped, live=7) == stopped


def test_a_look_stops_the_settled_tests_and_ends_the_runs_only_when_the_speed_has_its_rounds() -> None:
    rng = np.random.default_rng(12)
    base = run_bests(rng, 6, jitter=0.01)
    corrected = {"same": (base, run_bests(rng, 6, jitter=0.01)), "slow": (base, run_bests(rng, 6, 1.10, jitter=0.01))}
    speeds = ([1.0] * 6, [1.0] * 6)
    new, go_on = runs.look(corrected, speeds, set(), tolerance=0.05, speed_share=0.0)
    assert set(new) == {"same"} and new["same"].verdict == "unchanged" and go_on  # "slow" is left
    new, go_on = runs.look(corrected, speeds, {"slow"}, tolerance=0.05, speed_share=0.0)
    assert set(new) == {"same"} and not go_on  # no test left, no speed row
    _, go_on = runs.look(corrected, speeds, {"same", "slow"}, tolerance=0.05, speed_share=0.0025)
    assert go_on and min_pairs(1 - 2 * 0.0025) > 6  # the speed row needs more rounds at its share
    _, go_on = runs.look(corrected, ([1.0] * 9, [1.0] * 9), {"same", "slow"}, tolerance=0.05, speed_share=0.0025)
    assert not go_on and min_pairs(1 - 2 * 0.0025) == 9


def test_efficacy_looks_spend_part_of_a_tests_share_only_where_a_look_can_reject() -> None:
    """Bonferroni over the looks: the looks' levels and the last round's add up to the share; the
    first look is the first round whose most extreme swap pattern is below a look's level."""
    share, _ = runs.shares(0.01, 20, True)  # 20 tests at a 1 % budget
    looks = runs.efficacy_looks(share, 20)
    level = runs.EFFICACY_SHARE * share / runs.EFFICACY_LOOKS
    assert looks == {14: pytest.approx(level), 17: pytest.approx(level)}
    assert 2.0**-14 < level <= 2.0**-13  # round 13's most extreme pattern could not reach it
    assert sum(looks.values()) + runs.final_share(share, 20) == pytest.approx(share)
    assert runs.final_share(share, 20) == pytest.approx((1 - runs.EFFICACY_SHARE) * share)
    assert runs.efficacy_looks(share, 14) == {} and runs.final_share(share, 14) == share  # no round before the last
    big, _ = runs.shares(0.01, 26, True)  # below 1 / MAX_SPLITS: no sampled p-value reaches a look's level
    assert runs.efficacy_looks(big, 24) == {} and runs.final_share(big, 24) == big


def test_an_efficacy_look_stops_a_test_significantly_slower_beyond_the_tolerance() -> None:
    rng = np.random.default_rng(13)
    base = run_bests(rng, 14, jitter=0.01)
    corrected = {"slow": (base, run_bests(rng, 14, 1.3, jitter=0.01)),
                 "within": (base, run_bests(rng, 14, 1.03, jitter=0.003))}
    speeds = ([1.0] * 14, [1.0] * 14)
    new, _ = runs.look(corrected, speeds, set(), tolerance=0.05, speed_share=0.0, efficacy=1e-4)
    slow = new["slow"]
    assert slow.verdict == "regressed" and slow.ci_low > 1.05 and slow.confidence == pytest.approx(1 - 2e-4)
    assert slow.reason.startswith("stopped after 14 rounds, at an efficacy look (level 0.0001)")
    assert new.get("within") is None or new["within"].verdict == "unchanged"  # slower, but within the tolerance
    assert "slow" not in runs.look(corrected, speeds, set(), tolerance=0.05, speed_share=0.0)[0]  # not a look
    assert "slow" not in runs.look(corrected, speeds, set(), tolerance=0.05, speed_share=0.0, efficacy=2.0**-15)[0]
