"""The A/B decision across runs: each pytest run (process) of a side is one observation.

``perfguard ab`` runs each side several times: in every round one base run and one head run, in
an order drawn at random. Within one run ``decide.compare_samples`` sees every round of that
process; it cannot see that a whole measurement can be several percent faster or slower than the
next one. Measured with ``python scripts/gate_quality ab`` on a shared 2-core VM, the best round of
an unchanged test moved by 5-15 % from one run to the next, and in a noisy hour a third to a half
of all runs were 30-60 % slow from start to end (a neighbour busy for longer than the test's
measuring window). Pooled rounds then give intervals far too narrow, and the fastest round of all
runs is one lucky process: both failed A/A pairs or missed 10 % slowdowns.

So the comparison treats runs as the unit:

* per run, the best round (``run_bests``: within one run the floor is the quiet-machine value);
* per side, the mean log of the fastest third of those run bests: a disturbance only ever makes a
  run slower, so the slowest runs carry the noise and are left out, while a third of the runs
  still averages the process-to-process jitter (docs/gate_quality.md);
* the ratio head / base of those two, tested by **randomization**: the runs of one round are a
  pair, and the reference distribution is that of the statistic under every way of swapping the
  two runs of each pair (2^pairs; a seeded random 20000 above that). Because ``perfguard ab``
  drew each round's order at random, this is exact under no change whatever the machine did
  meanwhile: drift, a neighbour with a period, a noisy minute. With a fixed order (base first in
  every round) such noise was confounded with the side, and recorded A/A runs failed more often
  than the confidence allows (docs/gate_quality.md). Swapping a round whose two runs both lie
  outside the fastest thirds changes nothing, so patterns tie with the observed one; ties are
  ordered by the mean of all runs (a slowdown moves the slow runs too): still an exact test;
* the interval inverts the same test: the shifts of the head that a one-sided test at
  ``(1 - confidence) / 2`` does not reject.

"regressed" when the interval lies wholly above 1 (significant) **and** the ratio is beyond
``1 + tolerance``; "improved" is the mirror image; "insufficient" when there are too few pairs for
any swap pattern to be significant (``min_pairs``: 8 at 99 %). Significance against no change plus
a point estimate beyond the tolerance is asv's rule (``asv continuous``); an interval wholly beyond
the tolerance would need about twice as many runs for the same power at a 10 % slowdown.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from functools import lru_cache
from itertools import product

import numpy as np

from .decide import _json_float, geometric_mean

KEEP = 1 / 3  # the fastest third of each side's runs
MAX_SPLITS = 20_000  # every swap pattern up to this many, a seeded random sample above


def min_pairs(confidence: float = 0.99) -> int:
    """The fewest pairs whose most extreme swap pattern (p = 1 / 2^pairs) is significant."""
    alpha = (1 - confidence) / 2
    return max(1, math.floor(math.log2(1 / alpha)) + 1)


@dataclass(frozen=True)
class RunComparison:
    base_value: float  # seconds: geometric mean of the fastest third of the base's per-run bests
    head_value: float
    ratio: float  # head_value / base_value
    ci_low: float
    ci_high: float
    p_slower: float | None  # one-sided randomization p-values (None: too few rounds)
    p_faster: float | None
    n_base: int  # runs with a usable value, base side
    n_head: int  # and head side
    n_pairs: int  # rounds with a value on both sides: the swappable pairs
    tolerance: float
    confidence: float
    verdict: str  # regressed | improved | unchanged | insufficient
    reason: str

    def to_dict(self) -> dict:
        """JSON-safe dict (non-finite floats become None)."""
        return {k: _json_float(v) if isinstance(v, float) else v for k, v in asdict(self).items()}


@lru_cache(maxsize=16)
def _swaps(n_pairs: int) -> np.ndarray:
    """Boolean rows: True where a pair's two runs trade sides; row 0 swaps none (read-only)."""
    if 2**n_pairs <= MAX_SPLITS:
        rows = np.array(list(product((False, True), repeat=n_pairs)), dtype=bool).reshape(-1, n_pairs)
    else:
        rows = np.random.default_rng(0).random((MAX_SPLITS, n_pairs)) < 0.5
        rows[0] = False
    rows.flags.writeable = False
    return rows


def _fastest_mean(values: np.ndarray, keep: int) -> np.ndarray:
    """Per row: the mean of the ``keep`` smallest values."""
    return np.partition(values, keep - 1, axis=1)[:, :keep].mean(axis=1)


class _Randomization:
    """The randomization distribution of (head - base) for log run bests, head shifted by ``delta``.

    ``base`` and ``head`` are aligned by round, NaN where a run is missing: rounds with both are
    the pairs that may swap; a run without a partner stays on its side.
    """

    def __init__(self, log_base: np.ndarray, log_head: np.ndarray) -> None:
        both = ~np.isnan(log_base) & ~np.isnan(log_head)
        self.pb, self.ph = log_base[both], log_head[both]
        self.lone_b = log_base[~np.isnan(log_base) & ~both]
        self.lone_h = log_head[~np.isnan(log_head) & ~both]
        self.rows = _swaps(int(both.sum()))
        self.kb = _keep(len(self.pb) + len(self.lone_b))
        self.kh = _keep(len(self.ph) + len(self.lone_h))

    def stats(self, delta: float) -> tuple[np.ndarray, np.ndarray]:
        """Per swap pattern (row 0: observed): the statistic, and the tie-breaker (all runs' mean)."""
        ph = self.ph - delta
        n = len(self.rows)
        base = np.hstack([np.where(self.rows, ph, self.pb), np.broadcast_to(self.lone_b, (n, len(self.lone_b)))])
        head = np.hstack([np.where(self.rows, self.pb, ph), np.broadcast_to(self.lone_h - delta, (n, len(self.lone_h)))])
        return (_fastest_mean(head, self.kh) - _fastest_mean(base, self.kb),
                head.mean(axis=1) - base.mean(axis=1))

    def test(self, delta: float) -> tuple[float, float, float]:
        """The observed statistic and the one-sided p-values (head slower, head faster).

        Swapping a round whose two runs are both outside the fastest thirds leaves the statistic as
        it is, so many patterns tie with the observed one (about 2^(rounds/3) of them): ties are
        ordered by the mean of all runs, which a real slowdown also moves. Still an exact test.
        """
        t, tie = self.stats(delta)
        eps = 1e-12 * max(1.0, abs(t[0]))
        same = np.abs(t - t[0]) <= eps
        slower = (t > t[0] + eps) | (same & (tie >= tie[0] - eps))
        faster = (t < t[0] - eps) | (same & (tie <= tie[0] + eps))
        return float(t[0]), float(np.mean(slower)), float(np.mean(faster))

    def bound(self, alpha: float, lower: bool, observed: float) -> float:
        """The shift at which the one-sided test (slower for the lower bound) stops rejecting."""
        values = np.concatenate([self.pb, self.ph, self.lone_b, self.lone_h])
        span = 2 * float(np.ptp(values)) + 1e-9  # shifted this far: no overlap

        def rejects(delta: float) -> bool:
            _, slower, faster = self.test(delta)
            return (slower if lower else faster) < alpha

        inside = observed
        outside = observed - span if lower else observed + span
        if not rejects(outside):
            return -math.inf if lower else math.inf  # too few pairs for this confidence
        for _ in range(16):  # to 1/65536 of the span: three decimals of the ratio
            mid = (inside + outside) / 2
            inside, outside = (inside, mid) if rejects(mid) else (mid, outside)
        return inside


def _keep(n: int) -> int:
    return max(1, math.ceil(KEEP * n))


def _level(x: np.ndarray) -> float:
    x = x[~np.isnan(x)]
    return geometric_mean(np.sort(x)[:_keep(len(x))]) if len(x) else math.nan


def _aligned(values, n: int) -> np.ndarray:
    """Floats by round, padded to ``n``; NaN for a missing, non-finite or non-positive value."""
    out = np.full(n, math.nan)
    for i, v in enumerate(values):
        try:
            f = float(v)
        except (TypeError, ValueError):
            continue
        if math.isfinite(f) and f > 0:
            out[i] = f
    return out


def compare_runs(base_bests, head_bests, *, tolerance: float = 0.05, confidence: float = 0.99,
                 interval: bool = True) -> RunComparison:
    """Compare per-run best rounds (seconds, lower is better) of the base and the head.

    The two lists are aligned by round: ``base_bests[i]`` and ``head_bests[i]`` ran in the same
    round, in an order drawn at random (``None`` where a run is missing). ``interval=False`` skips
    the interval (NaN; some 40 passes of the test), for simulations that only need the verdict:
    the verdict does not depend on it.
    """
    n = max(len(base_bests), len(head_bests))
    b, h = _aligned(base_bests, n), _aligned(head_bests, n)
    bv, hv = _level(b), _level(h)
    n_b, n_h = int((~np.isnan(b)).sum()), int((~np.isnan(h)).sum())
    pairs = int((~np.isnan(b) & ~np.isnan(h)).sum())
    need = min_pairs(confidence)
    if pairs < need:
        return RunComparison(bv, hv, hv / bv if n_b and n_h else math.nan, math.nan, math.nan, None, None,
                             n_b, n_h, pairs, tolerance, confidence, "insufficient",
                             f"too few rounds to judge across runs ({pairs} with both sides; need {need})")
    observed, p_slower, p_faster, lo, hi = _randomization_test(_key(b), _key(h), float(confidence), interval)
    alpha = (1 - confidence) / 2
    ratio = math.exp(observed)
    verdict = "unchanged"
    if p_slower < alpha and ratio > 1 + tolerance:
        verdict = "regressed"
    elif p_faster < alpha and ratio < 1 - tolerance:
        verdict = "improved"
    ci = f"{100 * confidence:g} % CI {math.exp(lo):.3f}-{math.exp(hi):.3f}, " if interval else ""
    shown = (f"fastest third of the per-run best rounds {ratio:.3f}x ({ci}"
             f"randomization p={min(p_slower, p_faster):.2g}; {pairs} rounds)")
    tol = f"the {100 * tolerance:g} % tolerance"
    reason = {"regressed": f"{shown}: slower beyond {tol}", "improved": f"{shown}: faster beyond {tol}",
              "unchanged": f"{shown}: no change beyond {tol} shown"}[verdict]
    return RunComparison(bv, hv, ratio, math.exp(lo), math.exp(hi), p_slower, p_faster, n_b, n_h, pairs,
                         tolerance, confidence, verdict, reason)


MIN_TESTS = 3  # a run's speed is estimated from at least this many tests


def without_run_speeds(bests: dict[str, tuple[list, list]]) -> tuple[dict[str, tuple[list, list]], tuple[list, list]]:
    """Each run's own speed taken out of its tests' best rounds, and those speeds.

    ``bests``: per test, the base's and the head's per-run best rounds, aligned by round (None where
    a run did not measure the test). A process's speed is shared by every test it measures: it is
    the median, over the tests of that run (at least ``MIN_TESTS``), of their log deviation from
    their mean over all runs of both sides. Each value is divided by its run's speed (kept as it is
    where the speed is not known). Returned: the corrected bests, and the runs' speeds (base, head),
    None where not known. The corrected values of a round still swap as a whole under no change (the
    speed is a symmetric function of the run's values), so ``compare_runs`` stays exact for them; a
    change that slows every test alike moves the speeds instead, which ``compare_runs`` on the speeds
    judges.
    """
    n = max((len(x) for b, h in bests.values() for x in (b, h)), default=0)
    logs = {t: (np.log(_aligned(b, n)), np.log(_aligned(h, n))) for t, (b, h) in bests.items()}
    centre = {t: float(np.nanmean(np.concatenate(bh))) if np.isfinite(np.concatenate(bh)).any() else math.nan
              for t, bh in logs.items()}
    speeds: list[list[float | None]] = [[], []]
    for side in (0, 1):
        for r in range(n):
            devs = [logs[t][side][r] - centre[t] for t in logs if math.isfinite(logs[t][side][r])]
            speeds[side].append(float(np.median(devs)) if len(devs) >= MIN_TESTS else None)
    out = {}
    for t, (b, h) in bests.items():
        out[t] = tuple([None if math.isnan(v) else float(v) * math.exp(-(speeds[side][r] or 0.0))
                        for r, v in enumerate(_aligned(x, n))] for side, x in enumerate((b, h)))
    return out, ([None if s is None else math.exp(s) for s in speeds[0]],
                 [None if s is None else math.exp(s) for s in speeds[1]])


FUTILITY_BETA = 0.2  # a test stops early when "slower beyond the tolerance" is rejected at this level
KEEP_MEASURED = 6  # stopped tests that later runs still measure, so that each run's speed is known
SPEED_WEIGHT = 0.25  # the runs' speed row's share of the error budget; the tests split the rest


def shares(alpha: float, tests: int, speed: bool) -> tuple[float, float]:
    """Each test's share and the runs' speed row's share of the run's error budget ``alpha``: a
    weighted Bonferroni split (the weights sum to 1). The speed row gets ``SPEED_WEIGHT`` so that
    it can be significant after ``min_pairs`` of its share (9 rounds at 1 %) instead of the 12
    an even split over 20 tests would need: the runs' speed moves 5-15 % from one process to the
    next, so it is the slowest comparison to settle."""
    if not speed:
        return alpha / max(1, tests), 0.0
    return alpha * (1 - SPEED_WEIGHT) / max(1, tests), alpha * SPEED_WEIGHT


def deselected(stopped: list[str], live: int, keep: int = KEEP_MEASURED) -> list[str]:
    """The stopped tests (sorted) that later runs skip: all but enough, with the ``live`` ones still
    measured, to estimate each run's speed from ``keep`` tests."""
    return stopped[max(0, keep - live):]


def futile(base_bests, head_bests, *, tolerance: float, beta: float = FUTILITY_BETA) -> RunComparison | None:
    """A verdict for a test that can stop now: its rounds so far already rule out a slowdown beyond
    the tolerance (the randomization test of "head >= (1 + tolerance) x base" rejects at ``beta``),
    else None.

    Stopping a test this way can only turn a later rejection into none, so it spends none of the
    error budget; it costs power only for a change near the tolerance (at most ``beta``). The
    verdict is "unchanged": no slowdown beyond the tolerance. A head already shown faster beyond
    the tolerance at ``beta`` is not stopped: it runs on so that the last round can claim the
    improvement at the test's share of the budget (a claim at every look would spend the budget
    once per look).
    """
    n = max(len(base_bests), len(head_bests))
    b, h = _aligned(base_bests, n), _aligned(head_bests, n)
    pairs = int((~np.isnan(b) & ~np.isnan(h)).sum())
    if pairs < min_pairs(1 - 2 * beta) or not 0 < tolerance < 1:
        return None
    test = _Randomization(np.log(b), np.log(h))
    _, _, below_upper = test.test(math.log(1 + tolerance))
    _, _, beyond_lower = test.test(math.log(1 - tolerance))
    if below_upper >= beta or beyond_lower < beta:
        return None  # a slowdown not ruled out, or an improvement that the last round may confirm
    observed, p_slower, p_faster = test.test(0.0)
    ratio = math.exp(observed)
    reason = (f"stopped after {pairs} rounds: fastest third of the per-run best rounds {ratio:.3f}x, below "
              f"{1 + tolerance:.2f}x (randomization p={below_upper:.2g} < {beta:g}): no slowdown beyond the "
              f"{100 * tolerance:g} % tolerance")
    return RunComparison(_level(b), _level(h), ratio, math.nan, math.nan, p_slower, p_faster, int((~np.isnan(b)).sum()),
                         int((~np.isnan(h)).sum()), pairs, tolerance, 1 - 2 * beta, "unchanged", reason)


EFFICACY_SHARE = 1 / 3  # the part of a test's share of the error budget that its efficacy looks spend
EFFICACY_LOOKS = 2  # at most this many, each spending EFFICACY_SHARE / EFFICACY_LOOKS of the share
# (``scripts/gate_quality_ab_sim.py --efficacy``: as much power as half over 3 looks, for the same rounds saved)


def _least_p(pairs: int) -> float:
    """The smallest p-value ``pairs`` pairs can give: one swap pattern of all, or of the random sample."""
    return max(2.0**-pairs, 1 / MAX_SPLITS)


def efficacy_looks(share: float, rounds: int, part: float = EFFICACY_SHARE,
                   looks: int = EFFICACY_LOOKS) -> dict[int, float]:
    """The rounds before the last at which a test still measured stops "regressed" when it is
    significant at the level given (by round), and the last round's level is ``final_share``.

    Bonferroni over the looks: the looks' levels and the last round's add up to the test's
    ``share``, so the chance that an unchanged test is rejected at any of them stays within it
    however the looks' p-values depend on one another. The looks share ``part`` of it, at most
    ``looks`` of them, evenly spaced from the first round whose most extreme swap pattern can be
    significant at a look's level (none when no round before the last can be).
    """
    if part <= 0 or looks < 1:
        return {}
    level = part * share / looks
    first = next((k for k in range(1, rounds) if _least_p(k) < level), None)
    if first is None:
        return {}
    step = max(1, (rounds - first) // looks)
    return {k: level for k in range(first, rounds, step)[:looks]}


def final_share(share: float, rounds: int, part: float = EFFICACY_SHARE, looks: int = EFFICACY_LOOKS) -> float:
    """A test's level at the last round: its ``share`` less what its efficacy looks spend."""
    return share - sum(efficacy_looks(share, rounds, part, looks).values())


def efficacious(base_bests, head_bests, *, tolerance: float, level: float) -> RunComparison | None:
    """A "regressed" verdict for a test that can stop now, at an efficacy look of ``level``, else None."""
    if compare_runs(base_bests, head_bests, tolerance=tolerance, confidence=1 - 2 * level,
                    interval=False).verdict != "regressed":
        return None
    c = compare_runs(base_bests, head_bests, tolerance=tolerance, confidence=1 - 2 * level)
    return replace(c, reason=f"stopped after {c.n_pairs} rounds, at an efficacy look (level {level:.2g}): {c.reason}")


def look(corrected: dict, speeds: tuple[list, list], stopped, *, tolerance: float,
         speed_share: float, efficacy: float = 0.0) -> tuple[dict, bool]:
    """One look of the sequential A/B runs, after a round: the tests not yet ``stopped`` that can stop
    now (their verdicts, by test), and whether the runs go on: some test is left, or the runs' speed
    (judged at ``speed_share``, never stopped early) has fewer rounds than that share needs.

    A test stops "unchanged" when its rounds rule out a slowdown beyond the tolerance (``futile``),
    and, at a round that is one of its ``efficacy_looks`` (``efficacy``: that look's level, 0 when
    the round is none), "regressed" when it is significantly slower beyond the tolerance
    (``efficacious``).

    ``corrected`` and ``speeds``: the tests' per-run bests with the runs' speeds taken out, and
    those speeds (``without_run_speeds``)."""
    new = {}
    for test, (b, h) in corrected.items():
        if test not in stopped:
            verdict = futile(b, h, tolerance=tolerance)
            if verdict is None and efficacy:
                verdict = efficacious(b, h, tolerance=tolerance, level=efficacy)
            if verdict is not None:
                new[test] = verdict
    left = sum(1 for t in corrected if t not in stopped and t not in new)
    speed_rounds = sum(1 for x, y in zip(*speeds) if x is not None and y is not None)
    return new, left > 0 or (speed_share > 0 and speed_rounds < min_pairs(1 - 2 * speed_share))


def _key(x: np.ndarray) -> tuple[float | None, ...]:
    """Hashable and equal for equal runs: None for a missing run (NaN never equals itself)."""
    return tuple(None if math.isnan(v) else float(v) for v in x)


@lru_cache(maxsize=256)  # the gate rows and the A/B table ask for the same runs, maybe at other tolerances
def _randomization_test(base: tuple[float | None, ...], head: tuple[float | None, ...], confidence: float,
                        interval: bool) -> tuple[float, float, float, float, float]:
    """log ratio, p slower, p faster and the interval's log bounds (NaN without ``interval``)."""
    test = _Randomization(np.log(np.array(base, dtype=float)), np.log(np.array(head, dtype=float)))
    observed, p_slower, p_faster = test.test(0.0)
    alpha = (1 - confidence) / 2
    lo = test.bound(alpha, True, observed) if interval else math.nan
    hi = test.bound(alpha, False, observed) if interval else math.nan
    return observed, p_slower, p_faster, lo, hi
