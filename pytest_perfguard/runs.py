"""The A/B decision across runs: each pytest run (process) of a side is one observation.

``perfguard ab`` runs each side several times, alternately. Within one run ``decide.compare_samples``
sees every round of that process; it cannot see that a whole measurement can be several percent
faster or slower than the next one. Measured with ``scripts/gate_quality.py --ab`` on a shared
2-core VM, the best round of an unchanged test moved by 5-15 % from one run to the next, and in a
noisy hour a third to a half of all runs were 30-60 % slow from start to end (a neighbour busy for
longer than the test's measuring window). Pooled rounds then give intervals far too narrow, and the
fastest round of all runs is one lucky process: both failed A/A pairs or missed 10 % slowdowns.

So the comparison treats runs as the unit:

* per run, the best round (``run_bests``: within one run the floor is the quiet-machine value);
* per side, the mean log of the fastest third of those run bests: a disturbance only ever makes a
  run slower, so the slowest runs carry the noise and are left out, while a third of the runs
  still averages the process-to-process jitter (tuned on one recording of 100 A/B runs, checked on
  others: docs/gate_quality.md);
* the ratio head / base of those two, tested with an exact permutation test (every split of the
  runs into two sides of the same sizes; a seeded random 20000 of them when there are more): valid
  whatever the distribution, which here is bimodal with a heavy upper tail;
* the interval inverts the same test: the shifts of the head that a one-sided test at
  ``(1 - confidence) / 2`` does not reject.

"regressed" when the interval lies wholly above 1 (significant) **and** the ratio is beyond
``1 + tolerance``; "improved" is the mirror image; "insufficient" with fewer than ``MIN_RUNS``
runs on a side. Significance against no change plus a point estimate beyond the tolerance is
asv's rule (``asv continuous``); an interval wholly beyond the tolerance would need about twice
as many runs for the same power at a 10 % slowdown.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from functools import lru_cache
from itertools import combinations

import numpy as np

from .decide import _clean, _json_float, geometric_mean

MIN_RUNS = 5  # 5 + 5 runs: 252 splits, p >= 1/252 < 0.005; 4 + 4: p >= 1/70, never significant
KEEP = 1 / 3  # the fastest third of each side's runs
MAX_SPLITS = 20_000  # exact enumeration up to this many splits, a seeded random sample above


@dataclass(frozen=True)
class RunComparison:
    base_value: float  # seconds: geometric mean of the fastest third of the base's per-run bests
    head_value: float
    ratio: float  # head_value / base_value
    ci_low: float
    ci_high: float
    p_slower: float | None  # one-sided permutation p-values (None: too few runs)
    p_faster: float | None
    n_base: int
    n_head: int
    tolerance: float
    confidence: float
    verdict: str  # regressed | improved | unchanged | insufficient
    reason: str

    def to_dict(self) -> dict:
        """JSON-safe dict (non-finite floats become None)."""
        return {k: _json_float(v) if isinstance(v, float) else v for k, v in asdict(self).items()}


@lru_cache(maxsize=16)
def _splits(n_base: int, n_head: int) -> np.ndarray:
    """Boolean rows: True where a value goes to the head; row 0 is the observed split (read-only)."""
    n = n_base + n_head
    if math.comb(n, n_head) <= MAX_SPLITS:
        # values are base then head: the observed head (n_base..n-1) is the last combination
        idx = np.array(list(combinations(range(n), n_head))[::-1])
    else:
        idx = np.argsort(np.random.default_rng(0).random((MAX_SPLITS, n)), axis=1)[:, :n_head]
        idx[0] = np.arange(n_base, n)
    rows = np.zeros((len(idx), n), dtype=bool)
    rows[np.arange(len(idx))[:, None], idx] = True
    rows.flags.writeable = False
    return rows


def _fastest_mean(values: np.ndarray, keep: int) -> np.ndarray:
    """Per row: the mean of the ``keep`` smallest finite values (the others are +inf)."""
    return np.partition(values, keep - 1, axis=1)[:, :keep].mean(axis=1)


class _Permutation:
    """The permutation distribution of (head - base) for log run bests, head shifted by ``delta``."""

    def __init__(self, log_base: np.ndarray, log_head: np.ndarray) -> None:
        self.b, self.h = log_base, log_head
        self.rows = _splits(len(log_base), len(log_head))
        self.kb, self.kh = _keep(len(log_base)), _keep(len(log_head))

    def stats(self, delta: float) -> np.ndarray:
        values = np.concatenate([self.b, self.h - delta])
        grid = np.broadcast_to(values, self.rows.shape)
        head = _fastest_mean(np.where(self.rows, grid, np.inf), self.kh)
        base = _fastest_mean(np.where(self.rows, np.inf, grid), self.kb)
        return head - base  # row 0: observed

    def test(self, delta: float) -> tuple[float, float, float]:
        """The observed statistic and the one-sided p-values (head slower, head faster)."""
        t = self.stats(delta)
        eps = 1e-12 * max(1.0, abs(t[0]))
        return float(t[0]), float(np.mean(t >= t[0] - eps)), float(np.mean(t <= t[0] + eps))

    def bound(self, alpha: float, lower: bool, observed: float) -> float:
        """The shift at which the one-sided test (slower for the lower bound) stops rejecting."""
        span = 2 * float(np.ptp(np.concatenate([self.b, self.h]))) + 1e-9  # shifted this far: no overlap

        def rejects(delta: float) -> bool:
            _, slower, faster = self.test(delta)
            return (slower if lower else faster) < alpha

        inside = observed
        outside = observed - span if lower else observed + span
        if not rejects(outside):
            return -math.inf if lower else math.inf  # too few runs for this confidence
        for _ in range(16):  # to 1/65536 of the span: three decimals of the ratio
            mid = (inside + outside) / 2
            inside, outside = (inside, mid) if rejects(mid) else (mid, outside)
        return inside


def _keep(n: int) -> int:
    return max(1, math.ceil(KEEP * n))


def _level(x: np.ndarray) -> float:
    return geometric_mean(np.sort(x)[:_keep(len(x))]) if len(x) else math.nan


def _positive(values) -> tuple[float, ...]:
    x = _clean(values)  # None and non-finite values dropped
    return tuple(float(v) for v in x[x > 0])


def compare_runs(base_bests, head_bests, *, tolerance: float = 0.05, confidence: float = 0.99,
                 interval: bool = True) -> RunComparison:
    """Compare per-run best rounds (seconds, lower is better) of the base and the head.

    ``interval=False`` skips the interval (NaN; some 40 permutation passes), for simulations that
    only need the verdict: the verdict does not depend on it.
    """
    b, h = _positive(base_bests), _positive(head_bests)
    bv, hv = _level(np.array(b)), _level(np.array(h))
    if len(b) < MIN_RUNS or len(h) < MIN_RUNS:
        return RunComparison(bv, hv, hv / bv if len(b) and len(h) else math.nan, math.nan, math.nan, None, None,
                             len(b), len(h), tolerance, confidence, "insufficient",
                             f"too few runs to judge across runs ({len(b)} + {len(h)}; need {MIN_RUNS} a side)")
    observed, p_slower, p_faster, lo, hi = _permutation_test(b, h, float(confidence), interval)
    alpha = (1 - confidence) / 2
    ratio = math.exp(observed)
    verdict = "unchanged"
    if p_slower < alpha and ratio > 1 + tolerance:
        verdict = "regressed"
    elif p_faster < alpha and ratio < 1 - tolerance:
        verdict = "improved"
    ci = f"{100 * confidence:g} % CI {math.exp(lo):.3f}-{math.exp(hi):.3f}, " if interval else ""
    shown = (f"fastest third of the per-run best rounds {ratio:.3f}x ({ci}"
             f"permutation p={min(p_slower, p_faster):.2g}; {len(b)}+{len(h)} runs)")
    tol = f"the {100 * tolerance:g} % tolerance"
    reason = {"regressed": f"{shown}: slower beyond {tol}", "improved": f"{shown}: faster beyond {tol}",
              "unchanged": f"{shown}: no change beyond {tol} shown"}[verdict]
    return RunComparison(bv, hv, ratio, math.exp(lo), math.exp(hi), p_slower, p_faster, len(b), len(h), tolerance,
                         confidence, verdict, reason)


@lru_cache(maxsize=256)  # the gate rows and the A/B table ask for the same runs, maybe at other tolerances
def _permutation_test(base: tuple[float, ...], head: tuple[float, ...], confidence: float,
                      interval: bool) -> tuple[float, float, float, float, float]:
    """log ratio, p slower, p faster and the interval's log bounds (NaN without ``interval``)."""
    perm = _Permutation(np.log(base), np.log(head))
    observed, p_slower, p_faster = perm.test(0.0)
    alpha = (1 - confidence) / 2
    lo = perm.bound(alpha, True, observed) if interval else math.nan
    hi = perm.bound(alpha, False, observed) if interval else math.nan
    return observed, p_slower, p_faster, lo, hi
