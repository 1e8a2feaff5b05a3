"""Stored mode across runs: a baseline entry keeps one value per saved run, and a head is judged
against the spread *between* runs, with this process's own speed taken out.

Why: a shared VM's whole-process speed moves 5-15 % from one pytest run to the next, and every
interval computed from the rounds of one run (``decide.compare_samples``) is blind to it: base
and head are different processes, on different days. Judged that way an unchanged test fails
8-14 % of the time at 5 % run noise, and an unchanged 20-test suite fails most runs.

Each ``--perf-save`` adds a run to the entry (the last ``MAX_RUNS`` are kept; a save whose gate
saw a change starts the history again, so that a deliberate change is not averaged with the code
it replaced). Per run the entry keeps the latency level (the 10th percentile of the rounds: a low
quantile stays put when a burst slows a few rounds and, unlike the fastest round, does not drift
lower as a run takes more rounds), the memory growth, and which process measured it.

The model, on log latency levels: ``level(test, run) = test + process(run) + noise``. A process's
speed is shared by every test it measures, so it is estimated from them:

* at load, each saved process's offset is the median, over the tests it measured (at least
  ``MIN_TESTS``), of their deviations from their means; the saved levels are corrected by it, and
  each test's spread is that of its corrected levels (``Spread``), moderated toward the suite's
  pooled spread (Smyth 2004, limma's moderated t: ``(d s^2 + d0 s_suite^2) / (d + d0)``, ``df =
  d + d0``, ``d0 = min(PRIOR_DF, the other tests' df)``);
* while a run is judged, this process's offset is the median of the deviations of the tests it
  has already judged (``ProcessOffset``); before ``MIN_TESTS`` of them, it is unknown and the
  spread of the saved processes' offsets is added to the variance instead.

The head's deviation from the corrected mean, less this process's offset, is tested one-sided
with Student t against ``s^2 (1 + 1/R) + var(offset)``. A row is "regressed" when the p-value is
below its share of the run's error budget (``alpha``, see ``gate.baseline_rows``) **and** the
point estimate is beyond the tolerance; "improved" is the mirror image. Each row states its
minimum detectable change (MDE): the change that it would flag half the time. What this cannot
see: a change that slows every test alike looks exactly like a slower process, and is judged only
by absolute budgets and the first ``MIN_TESTS`` tests of each process. Memory growth is judged per
test (no process offset). With no between-run spread at all (one saved run per test in the whole
suite) there is nothing to model: ``compare_*`` return None and the gate says so.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from .units import format_value

if TYPE_CHECKING:
    from .model import BaselineEntry

__all__ = ["LEVEL_QUANTILE", "MAX_RUNS", "MEMORY_FLOOR", "MIN_TESTS", "PRIOR_DF", "ProcessOffset", "RunTest", "Spread", "SuiteModel",
           "compare_latency", "compare_memory", "compare_speed", "latency_level", "verdict_why"]

LEVEL_QUANTILE = 0.1
MAX_RUNS = 10
MIN_TESTS = 3  # a process's offset is estimated from at least this many tests
CLIP = 4.0  # saved levels further than this many robust SDs from their test's median are pulled in
PRIOR_DF = 8  # at most this many degrees of freedom are borrowed from the rest of the suite
# Peak RSS moves by MiBs between runs of the same code (allocator arenas and trim thresholds,
# lazily touched pages): measured on this project's suites, 0.09 -> 1.96 MiB (LPRNet at batch 1) and
# 6.4 -> 11.0 MiB (serving in process, 8 threads). A smaller change is below what it can resolve.
MEMORY_FLOOR = 8 * 2**20
_MEDIAN_VAR = math.pi / 2  # the variance of a median of n normal values is about pi/2 sigma^2 / n

def latency_level(samples: Iterable[float]) -> float | None:
    """One run's latency level: the 10th percentile of its rounds (None without finite positive rounds)."""
    x = np.asarray(list(samples), dtype=float)
    x = x[np.isfinite(x) & (x > 0)]
    return float(np.quantile(x, LEVEL_QUANTILE)) if len(x) else None


@dataclass(frozen=True)
class Spread:
    """A variance as a sum of squared deviations and its degrees of freedom."""

    ss: float = 0.0
    df: int = 0

    @property
    def var(self) -> float:
        return self.ss / self.df if self.df else math.nan

    def __add__(self, other: Spread) -> Spread:
        return Spread(self.ss + other.ss, self.df + other.df)

    def __sub__(self, other: Spread) -> Spread:
        return Spread(max(0.0, self.ss - other.ss), self.df - other.df)

    @classmethod
    def of(cls, values: list[float]) -> Spread:
        if len(values) < 2:
            return cls()
        x = np.asarray(values, dtype=float)
        return cls(float(np.sum((x - x.mean()) ** 2)), len(x) - 1)

    def moderated(self, suite: Spread) -> tuple[float, int] | None:
        """(variance, df) of this test, moderated toward the rest of the suite; None without any spread."""
        others = suite - self
        d0 = min(PRIOR_DF, others.df)
        df = self.df + d0
        if df == 0:
            return None
        return (self.ss + d0 * (others.var if others.df else 0.0)) / df, df


@dataclass(frozen=True)
class TestRuns:
    """One test's saved runs: log latency levels corrected for their processes' offsets, memory growth."""

    logs: list[float]
    memory: list[float]

    @property
    def mean(self) -> float:
        return float(np.mean(self.logs))


@dataclass(frozen=True)
class SuiteModel:
    """Every valid entry's corrected runs, the pooled spreads, and the spread of the saved processes' offsets."""

    tests: dict[str, TestRuns] = field(default_factory=dict)
    latency: Spread = Spread()
    offsets: Spread = Spread()

    @classmethod
    def of(cls, entries: Mapping[str, BaselineEntry]) -> SuiteModel:
        runs = {n: e.runs for n, e in entries.items()}
        logs = {n: [(r.process, math.log(r.latency)) for r in rs if r.latency is not None and r.latency > 0]
                for n, rs in runs.items()}
        means = {n: float(np.mean([v for _, v in xs])) for n, xs in logs.items() if xs}
        by_process: dict[str, list[float]] = {}
        for n, xs in logs.items():
            for process, v in xs:
                if process is not None:
                    by_process.setdefault(process, []).append(v - means[n])
        offset = {p: float(np.median(d)) for p, d in by_process.items() if len(d) >= MIN_TESTS}
        corrected = _clipped({n: [v - offset.get(p or "", 0.0) for p, v in xs] for n, xs in logs.items()})
        tests = {n: TestRuns(corrected[n], [r.memory_growth for r in runs[n] if r.memory_growth is not None])
                 for n in runs}
        latency = sum((Spread.of(t.logs) for t in tests.values()), Spread())
        return cls(tests, latency, Spread.of(list(offset.values())))


def _clipped(logs: dict[str, list[float]]) -> dict[str, list[float]]:
    """Each test's levels pulled in to ``CLIP`` robust SDs of its median: a saved run during which a
    neighbour was busy for the whole test would otherwise widen the suite's spread and shift the test's
    mean. The SD is the suite's (1.4826 MAD of every level's distance from its test's median)."""
    distances = [v - float(np.median(xs)) for xs in logs.values() if len(xs) >= 3 for v in xs]
    if len(distances) < 10:
        return logs
    sd = 1.4826 * float(np.median(np.abs(distances)))
    if sd == 0:
        return logs
    out = {}
    for n, xs in logs.items():
        mid = float(np.median(xs)) if xs else 0.0
        out[n] = [min(max(v, mid - CLIP * sd), mid + CLIP * sd) for v in xs]
    return out


class ProcessOffset:
    """This process's speed, from the tests it has judged: the median of their deviations (log)."""

    def __init__(self) -> None:
        self.seen: dict[str, tuple[float, float]] = {}  # node id -> (deviation, its variance)

    def estimate(self, nodeid: str) -> tuple[float, float] | None:
        """(offset, its variance) from the other tests judged so far; None before ``MIN_TESTS`` of them."""
        others = [v for n, v in self.seen.items() if n != nodeid]
        if len(others) < MIN_TESTS:
            return None
        d = np.array([x for x, _ in others])
        return float(np.median(d)), _MEDIAN_VAR * float(np.mean([v for _, v in others])) / len(others)

    def add(self, nodeid: str, deviation: float, var: float) -> None:
        self.seen[nodeid] = (deviation, var)

    def speed(self) -> tuple[float, float, int] | None:
        """(offset, its variance, tests) from every test judged so far; None before ``MIN_TESTS``."""
        got = self.estimate("")
        return None if got is None else (*got, len(self.seen))


@dataclass(frozen=True)
class RunTest:
    """One head run against the base runs. Latency values are seconds (ratios of geometric means),
    memory values bytes; ``mde`` is relative for latency (0.25: +25 %) and in bytes for memory."""

    base: float  # the base runs' mean level (geometric for latency, in this process's speed)
    head: float
    ratio: float  # head / base
    p_worse: float  # one-sided p-values
    p_better: float
    alpha: float  # this comparison's share of the run's error budget
    runs: int  # base runs
    df: int
    mde: float
    verdict: str  # regressed | improved | unchanged
    reason: str


def one_sided_t(diff: float, var: float, df: int, alpha: float) -> tuple[float, float, float]:
    """(p worse, p better, critical difference) of a one-sided t test of ``diff`` with variance ``var``."""
    from scipy import stats

    se = math.sqrt(var)
    if se == 0:
        return float(diff <= 0), float(diff >= 0), 0.0
    return float(stats.t.sf(diff / se, df)), float(stats.t.cdf(diff / se, df)), float(stats.t.isf(alpha, df)) * se


def verdict_of(p_worse: float, p_better: float, alpha: float, worse: bool, better: bool) -> str:
    if p_worse < alpha and worse:
        return "regressed"
    if p_better < alpha and better:
        return "improved"
    return "unchanged"


def verdict_why(verdict: str, p_worse: float, p_better: float, alpha: float, worse: bool, better: bool,
                limit: str, noise: str = "the spread of the saved runs") -> str:
    """Why ``verdict_of`` said what it said, in words: the change against ``limit`` (``the 5 % tolerance``)
    and its significance against ``alpha``. An "unchanged" beside a large ratio says it was not significant."""
    if verdict == "regressed":
        return f"worse beyond {limit}, significant at alpha {alpha:.2g}"
    if verdict == "improved":
        return f"better beyond {limit}, significant at alpha {alpha:.2g}"
    if worse or better:
        p = p_worse if worse else p_better
        return (f"{'worse' if worse else 'better'} beyond {limit} but not significant (p={p:.2g} >= alpha {alpha:.2g}): "
                f"within {noise}")
    if p_worse < alpha or p_better < alpha:
        return f"significantly {'worse' if p_worse < alpha else 'better'}, but within {limit}"
    return f"within {limit}"


def compare_latency(nodeid: str, head_samples: list[float], model: SuiteModel, process: ProcessOffset, *,
                    alpha: float, tolerance: float) -> RunTest | None:
    """The head run's latency level against the test's saved runs, this process's offset taken out
    (None when no between-run spread is known). Records the test's deviation in ``process``."""
    runs = model.tests.get(nodeid)
    head = latency_level(head_samples)
    if runs is None or not runs.logs or head is None:
        return None
    own = Spread.of(runs.logs)
    moderated = own.moderated(model.latency)
    if moderated is None:
        return None
    var, df = moderated
    deviation = math.log(head) - runs.mean
    predict = var * (1 + 1 / len(runs.logs))
    process.add(nodeid, deviation, predict)
    offset = process.estimate(nodeid)
    if offset is None:  # too few tests judged in this process yet: its speed is as uncertain as a saved one's
        offset = (0.0, model.offsets.var if model.offsets.df else 0.0)
        how = "this process's speed not yet known"
    else:
        how = f"this process's speed {math.exp(offset[0]):.3f}x, from {len(process.seen) - 1} tests"
    diff = deviation - offset[0]
    p_worse, p_better, crit = one_sided_t(diff, predict + offset[1], df, alpha)
    ratio = math.exp(diff)
    mde = max(tolerance, math.exp(crit) - 1)
    worse, better = ratio > 1 + tolerance, ratio < 1 - tolerance
    verdict = verdict_of(p_worse, p_better, alpha, worse, better)
    why = verdict_why(verdict, p_worse, p_better, alpha, worse, better, f"the {tolerance:.0%} tolerance")
    reason = (f"p10 level {ratio:.3f}x the mean of {len(runs.logs)} saved run(s), {how} (one-sided "
              f"p={min(p_worse, p_better):.2g}, alpha {alpha:.2g}, t with {df} df; could flag changes from +{mde:.0%}): "
              f"{why}")
    base = math.exp(runs.mean + offset[0])
    return RunTest(base, head, ratio, p_worse, p_better, alpha, len(runs.logs), df, mde, verdict, reason)


def compare_speed(deviation: float, var: float, model: SuiteModel, *, alpha: float, tolerance: float) -> RunTest | None:
    """A process's speed (``deviation``: the median log deviation of its tests, ``var`` its variance)
    against the spread of the saved processes' speeds: the one place where a change that slows every
    test alike can show in stored mode, where it looks exactly like a slower machine. None when the
    saved runs do not say which process measured them."""
    if model.offsets.df == 0:
        return None
    runs = model.offsets.df + 1
    p_worse, p_better, crit = one_sided_t(deviation, model.offsets.var * (1 + 1 / runs) + var, model.offsets.df, alpha)
    ratio = math.exp(deviation)
    mde = max(tolerance, math.exp(crit) - 1)
    worse, better = ratio > 1 + tolerance, ratio < 1 - tolerance
    verdict = verdict_of(p_worse, p_better, alpha, worse, better)
    why = verdict_why(verdict, p_worse, p_better, alpha, worse, better, f"the {tolerance:.0%} tolerance")
    reason = (f"its tests ran {ratio:.3f}x as long as in the {runs} saved runs, taken together (one-sided "
              f"p={min(p_worse, p_better):.2g}, alpha {alpha:.2g}, t with {model.offsets.df} df; could flag changes "
              f"from +{mde:.0%}): {why}; a slower machine, or a change that slows every test alike; stored "
              "baselines cannot tell which, `perfguard ab` can")
    return RunTest(1.0, ratio, ratio, p_worse, p_better, alpha, runs, model.offsets.df, mde, verdict, reason)


def compare_memory(nodeid: str, head: float, model: SuiteModel, *, alpha: float, tolerance: float) -> RunTest | None:
    """The head run's memory growth (bytes) against the test's own saved runs (None with fewer than 2).

    Not moderated toward the suite, unlike latency: tests' memory noise differs by orders of magnitude
    in bytes (0 B for a pure function, MiBs for a threaded server), and quiet tests pooled in would
    shrink a noisy test's spread. A change must also exceed ``MEMORY_FLOOR``, peak RSS's resolution.
    """
    runs = model.tests.get(nodeid)
    own = Spread.of(runs.memory if runs is not None else [])
    if runs is None or own.df == 0:
        return None
    var, df = own.var, own.df
    base = float(np.mean(runs.memory))
    diff = head - base
    p_worse, p_better, crit = one_sided_t(diff, var * (1 + 1 / len(runs.memory)), df, alpha)
    limit = max(abs(base) * tolerance, MEMORY_FLOOR)
    ratio = head / base if base else (1.0 if head == base else math.inf)
    mde = max(limit, crit)
    verdict = verdict_of(p_worse, p_better, alpha, diff > limit, -diff > limit)
    why = verdict_why(verdict, p_worse, p_better, alpha, diff > limit, -diff > limit,
                      f"{format_value(limit, 'B')} (the {tolerance:.0%} tolerance, at least {format_value(MEMORY_FLOOR, 'B')})")
    reason = (f"{format_value(diff, 'B')} from the mean of {len(runs.memory)} saved run(s) (one-sided "
              f"p={min(p_worse, p_better):.2g}, alpha {alpha:.2g}, t with {df} df; could flag changes from "
              f"{format_value(mde, 'B')}): {why}")
    return RunTest(base, head, ratio, p_worse, p_better, alpha, len(runs.memory), df, mde, verdict, reason)
