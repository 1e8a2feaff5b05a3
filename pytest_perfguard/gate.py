"""The regression gate: one test's result against its baseline entry (no pytest import).

* Latency (samples): in stored mode, when the baseline holds several runs, the head run's level
  against the spread between the saved runs (``runnoise.compare_latency``); else (one saved run
  per test in the whole baseline) ``decide.compare_samples`` on the rounds, which cannot see
  run-to-run noise and says so. A relative latency budget ``"+10%"`` is the same check with its
  own tolerance; ``throughput="-10%"`` likewise (throughput is the inverse of latency). When both
  sides come from several runs (``perfguard ab``: per-run best rounds, ``run_bests``), the runs
  decide instead (``runs.compare_runs``).
* Memory: one number per run, against the test's own saved runs' spread and beyond ``MEMORY_FLOOR``
  (``runnoise.compare_memory``); with one saved run, as a ratio beyond the tolerance and
  ``MEMORY_FLOOR`` (allocator arenas and
  lazily touched pages move peak RSS by a few MiB between runs whatever the code does).
  Recorded metrics are compared as a ratio.
* One error budget per run: ``alpha`` is this test's share of it (the run's ``--perf-alpha`` over
  the tests gated); it is split evenly between the test's latency and memory comparisons
  (Bonferroni), and each of those fails only when significant at its share **and** beyond the
  tolerance.
* Improvements are rows with verdict ``improved``, never failures, and suggest no save: one run's
  improvement is a winner's curse (re-saving after a noisy "improved" raised later false failures
  from 14 % to 41 %); a save adds a run to the saved ones instead of replacing them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from .budget import Budget, Limit
from .callgrind import TOLERANCE as INSTRUCTIONS_TOLERANCE
from .callgrind import disagree
from .check import metric_value, required_samples
from .decide import MIN_SAMPLES, Comparison, compare_quantile, compare_samples
from .measure import Measurement
from .model import LATENCY_KINDS, BaselineEntry, Check, TestResult, Verdict
from .runnoise import MEMORY_FLOOR, ProcessOffset, RunTest, SuiteModel, compare_latency, compare_memory
from .runs import RunComparison, compare_runs
from .sampled import Sampled, compare_sampled
from .units import format_value

__all__ = ["ABRuns", "baseline_rows", "latency_decision", "LatencyDecision", "MEMORY_FLOOR", "ONE_RUN", "Saved",
           "unjudged"]


@dataclass(frozen=True)
class ABRuns:
    """``perfguard ab``: both sides' per-run best rounds, aligned by round (None where a run is missing),
    and the verdict that stopped the test early (``runs.look``: unchanged, or regressed at an efficacy look)."""

    base: list[float | None]
    head: list[float | None]
    stopped: RunComparison | None = None


@dataclass(frozen=True)
class LatencyDecision:
    """The pooled rounds' comparison, and the runs' when both sides come from several runs
    (``perfguard ab``; else None). ``basis`` to ``reason`` are those of whichever decided, and the
    figures are of the statistic it judged: a row never shows medians beside the fastest rounds' ratio."""

    pooled: Comparison
    runs: RunComparison | None
    basis: str  # the statistic judged: "fastest rounds" or "median" (pooled rounds), or "run bests" (runs)
    base: float
    head: float
    ratio: float
    ci_low: float
    ci_high: float
    verdict: str  # regressed | improved | unchanged | insufficient
    reason: str


def latency_decision(base: list[float], head: list[float], tolerance: float, runs: ABRuns | None = None,
                     confidence: float = 0.99) -> LatencyDecision:
    """Pooled rounds, or, when both sides come from several runs, the runs alone: with too few rounds
    that is "insufficient", never a fallback to the pooled rounds (they cannot see run-to-run noise)."""
    cmp = compare_samples(base, head, tolerance=tolerance, metric="latency", confidence=confidence)
    if runs is not None:
        r = runs.stopped or compare_runs(runs.base, runs.head, tolerance=tolerance, confidence=confidence)
        return LatencyDecision(cmp, r, RUN_BESTS, r.base_value, r.head_value, r.ratio, r.ci_low, r.ci_high,
                               r.verdict, r.reason)
    if cmp.statistic == "robust" and cmp.verdict != "insufficient":  # judged on the fastest rounds
        return LatencyDecision(cmp, None, FASTEST_ROUNDS, cmp.base_best, cmp.head_best, cmp.best_ratio,
                               cmp.best_ci_low, cmp.best_ci_high, cmp.verdict, cmp.reason)
    return LatencyDecision(cmp, None, "median", cmp.base_median, cmp.head_median, cmp.ratio, cmp.ci_low,
                           cmp.ci_high, cmp.verdict, cmp.reason)


FASTEST_ROUNDS = "fastest rounds"  # decide.compare_samples: each side's fastest 5 % of rounds (the best under 40)
RUN_BESTS = "run bests"  # runs.compare_runs: the fastest third of each side's per-run best rounds
RUN_LEVEL = "p10"  # runnoise.compare_latency: each run's 10th percentile of its rounds


def unjudged(kind: str, label: str, budget_text: str, unit: str, why: str, now: float | None = None) -> Check:
    """A check the gate could not make: it fails the test (never a silent pass)."""
    return Check(label, budget_text, now, unit, Verdict.UNJUDGED, f"{label} not judged: {why}", kind=kind,
                 against="baseline", reason=why)


# No save command here: a row never suggests a save (after an "improved" one it would save a lucky run);
# the summary says how to record more runs (``session.error_budget_notes``).
ONE_RUN = ("the baseline holds one run per test, so the run-to-run noise of this machine is not modelled and "
           "this check can false-fail")


def _confidence(alpha: float | None) -> float:
    """The two-sided interval whose one-sided error is ``alpha`` (99 % when no budget is shared: ``perfguard ab``)."""
    return 0.99 if alpha is None else 1 - 2 * alpha


def _run_row(kind: str, label: str, budget_text: str, t: RunTest, unit: str, rounds: str = "") -> Check:
    """A comparison across saved runs: the row shows the statistic it judged (run levels), and its MDE;
    ``rounds``: the measurement's note when the time cap cut its rounds."""
    note = f"; {rounds}" if rounds else ""
    shown = f"{format_value(t.head, unit)} vs baseline {format_value(t.base, unit)} ({t.ratio:.2f}x; {t.reason}{note})"
    word = {"regressed": " regressed:", "improved": " improved:"}.get(t.verdict, "")
    mde = t.mde if unit != "B" else (t.mde / t.base if t.base > 0 else None)
    return Check(label, budget_text, t.head, unit, Verdict(t.verdict), f"{label}{word} {shown}", kind=kind, against="baseline",
                 stat=RUN_LEVEL if unit != "B" else "", baseline=t.base, ratio=t.ratio,
                 p_value=t.p_better if t.verdict == "improved" else t.p_worse, alpha=t.alpha, mde=mde, reason=t.reason)


def _cut(rounds: str) -> str:
    """What an unjudged row adds when the time cap cut the rounds: how many, and the way out."""
    if not rounds:
        return ""
    return f" ({rounds}: raise it to judge this test)" if "--perf-time-cap" in rounds else f" ({rounds})"


def _latency_row(kind: str, label: str, budget_text: str, base: list[float], head: list[float], tolerance: float,
                 unit: str, runs: ABRuns | None = None, alpha: float | None = None,
                 saved: Saved | None = None, rounds: str = "") -> Check:
    """``saved`` (stored mode): judged across the saved runs when it can be. Fewer than ``MIN_SAMPLES``
    head rounds are not compared in either mode: the row is unjudged, and says how many there were."""
    if saved is not None and alpha is not None:
        if len(head) < MIN_SAMPLES:
            return unjudged(kind, label, budget_text, unit, f"{len(head)} round(s) are too few to compare with the "
                            f"baseline (need at least {MIN_SAMPLES}){_cut(rounds)}")
        t = compare_latency(saved.nodeid, head, saved.model, saved.process, alpha=alpha, tolerance=tolerance)
        if t is not None:
            return _run_row(kind, label, budget_text, t, unit, rounds)
    d = latency_decision(base, head, tolerance, runs, _confidence(alpha))
    if runs is not None and runs.stopped is not None and runs.stopped.verdict == "regressed":
        alpha = (1 - runs.stopped.confidence) / 2  # the level of the efficacy look that stopped it
    if d.verdict == "insufficient":
        return unjudged(kind, label, budget_text, unit, d.reason + _cut(rounds), d.pooled.head_median)
    now_s, base_s = format_value(d.head, unit), format_value(d.base, unit)
    caveat = (f"; {rounds}" if rounds else "") + (f"; {ONE_RUN}" if saved is not None else "")
    shown = f"{now_s} vs baseline {base_s} ({d.reason}{caveat})"  # the reason gives the ratio and its interval
    if d.verdict == "regressed":
        msg = f"{label} regressed: {shown}"
    elif d.verdict == "improved":
        msg = f"{label} improved: {shown}"  # no save suggestion: one run's improvement is not confirmed
    else:
        msg = f"{label} {shown}"
    return Check(label, budget_text, d.head, unit, Verdict(d.verdict), msg, kind=kind, against="baseline", stat=d.basis,
                 baseline=d.base, ratio=d.ratio, interval=(d.ci_low, d.ci_high), alpha=alpha, reason=d.reason + caveat)


def _tail_row(lim: Limit, base: list[float], head: list[float], unit: str, alpha: float | None,
              rounds: str = "") -> Check:
    """``{"p99": "+10%"}``: the head's p99 against the base's (not the median, not the best round)."""
    if lim.stat == "mean":
        return unjudged(lim.metric, lim.label, lim.text, unit, "a budget relative to the baseline's mean is not judged "
                        "(one slow round moves a mean arbitrarily): budget p50 or a percentile")
    q = 1.0 if lim.stat == "max" else float(lim.stat[1:]) / 100
    c = compare_quantile(base, head, q, tolerance=lim.threshold, confidence=_confidence(alpha),
                         need=max(MIN_SAMPLES, required_samples(100 * q) if q < 1 else MIN_SAMPLES))
    if c.verdict == "insufficient":
        return unjudged(lim.metric, lim.label, lim.text, unit, c.reason + _cut(rounds))
    note = f"; {rounds}" if rounds else ""
    shown = f"{format_value(c.head, unit)} vs baseline {format_value(c.base, unit)} ({c.reason}{note})"
    word = {"regressed": " regressed:", "improved": " improved:"}.get(c.verdict, "")
    return Check(lim.label, lim.text, c.head, unit, Verdict(c.verdict), f"{lim.label}{word} {shown}",
                 kind=lim.metric, stat=lim.stat, against="baseline", baseline=c.base, ratio=c.ratio,
                 interval=(c.ci_low, c.ci_high), alpha=alpha, reason=c.reason)


def _scalar_row(kind: str, label: str, budget_text: str, base: float, now: float, unit: str, *, higher_is_better: bool,
                tolerance: float, floor: float = 0.0) -> Check:
    ratio = now / base if base else (1.0 if now == base else float("inf"))
    change = (base - now) if higher_is_better else (now - base)  # > 0 is worse
    limit = abs(base) * tolerance
    change_text = f"{ratio - 1:+.2%}" if unit == "instr" else f"{ratio:.2f}x"  # exact counts: small changes matter
    shown = f"{format_value(now, unit)} vs baseline {format_value(base, unit)} ({change_text})"
    tol = f"the {tolerance:.1%} tolerance"
    floored = f" and the {format_value(floor, unit)} floor" if floor else ""
    if change > limit and change > floor:
        return Check(label, budget_text, now, unit, Verdict.REGRESSED, f"{label} regressed: {shown}, beyond {tolerance:.1%}",
                     kind=kind, against="baseline", baseline=base, ratio=ratio,
                     reason=f"{change_text}: worse beyond {tol}{floored}")
    if -change > limit and -change > floor:
        return Check(label, budget_text, now, unit, Verdict.IMPROVED, f"{label} improved: {shown}",
                     kind=kind, against="baseline", baseline=base, ratio=ratio,
                     reason=f"{change_text}: better beyond {tol}{floored}")
    why = (f"{change_text}: within {tol}" if abs(change) <= limit else
           f"{change_text}: beyond {tol} but within the {format_value(floor, unit)} floor (a smaller change is below "
           "what one number per run resolves)")
    return Check(label, budget_text, now, unit, Verdict.UNCHANGED, f"{label} {shown}", kind=kind, against="baseline",
                 baseline=base, ratio=ratio, reason=why)


_CLOCK_WORDS = {"wall": "wall time", "cpu": "CPU time"}


def _unit_change(entry: BaselineEntry, m: Measurement) -> str | None:
    """Why the entry's latencies cannot be compared with this run's: their units or clocks differ."""
    if entry.unit != m.unit:
        return f"the baseline entry holds seconds per {entry.unit}, this run per {m.unit} (items= changed)"
    if entry.clock != m.clock:
        return (f"the baseline entry was judged on {_CLOCK_WORDS[entry.clock]}, this run judges "
                f"{_CLOCK_WORDS[m.clock]} (clock= or --perf-clock changed)")
    return None


@dataclass(frozen=True)
class Saved:
    """Stored mode: the test, the baseline's model of its saved runs, and this process's offset so far."""

    nodeid: str
    model: SuiteModel
    process: ProcessOffset


def _memory_row(kind: str, label: str, budget_text: str, base: float, now: float, tolerance: float, alpha: float | None,
                saved: Saved | None) -> Check:
    if saved is not None and alpha is not None:
        t = compare_memory(saved.nodeid, now, saved.model, alpha=alpha, tolerance=tolerance)
        if t is not None:
            return _run_row(kind, label, budget_text, t, "B")
    return _scalar_row(kind, label, budget_text, base, now, "B", higher_is_better=False, tolerance=tolerance,
                       floor=MEMORY_FLOOR)


def _relative_row(lim: Limit, entry: BaselineEntry, result: TestResult, m: Measurement, unit: str,
                  runs: ABRuns | None, alpha: float | None, saved: Saved | None) -> Check | None:
    head = m.samples_on(m.clock)
    if lim.metric in LATENCY_KINDS:
        base_samples = entry.samples_on(m.clock)
        if not base_samples or not head:
            return None
        changed = _unit_change(entry, m)
        if changed:
            return unjudged(lim.metric, lim.label, lim.text, unit, changed)
        if lim.metric == "latency" and lim.stat not in ("", "p50"):
            return _tail_row(lim, base_samples, head, unit, alpha, m.rounds_note())
        # throughput "-10%" means latency may rise by 1/(1-0.10) - 1
        tol = lim.threshold if lim.metric == "latency" else 1 / (1 + lim.threshold) - 1
        return _latency_row(lim.metric, lim.label, lim.text, base_samples, head, tol, unit, runs, alpha, saved,
                            m.rounds_note())
    if lim.metric == "instructions":
        if entry.instructions is None or m.instructions is None:
            return None
        return _instructions_row(lim.label, lim.text, entry, m, abs(lim.threshold))
    if lim.metric in ("memory", "gpu_memory"):
        base, now = getattr(entry, f"{lim.metric}_growth"), getattr(m, f"{lim.metric}_growth")
        if base is None or now is None:
            return None
        return _memory_row(lim.metric, lim.label, lim.text, base, now, abs(lim.threshold), alpha,
                           saved if lim.metric == "memory" else None)
    base, now = entry.metrics.get(lim.metric), result.metrics.get(lim.metric)
    if base is None or now is None:
        return None
    items = _sampled(lim.metric, entry, result)
    if items is not None:
        return _sampled_row(lim, *items, alpha)
    return _scalar_row(lim.metric, lim.label, lim.text, base, now, "", higher_is_better=lim.op == ">=",
                       tolerance=abs(lim.threshold))


def _instructions_row(label: str, budget_text: str, entry: BaselineEntry, m: Measurement, tolerance: float) -> Check:
    """Exact counts against each other: beyond the tolerance is a change. No error budget is spent:
    the same code counts the same in every process (``callgrind``)."""
    changed = _unit_change(entry, m)
    if entry.instructions is None or m.instructions is None or changed:
        return unjudged("instructions", label, budget_text, "instr", changed or "the baseline entry has no instruction count, this "
                        "run counted them")
    return _scalar_row("instructions", label, budget_text, entry.instructions, m.instructions, "instr", higher_is_better=False,
                       tolerance=tolerance)


def _sampled(metric: str, entry: BaselineEntry, result: TestResult) -> tuple[Sampled, Sampled, str] | None:
    """Both sides of a metric recorded from its items; a side recorded as a single number borrows the
    other's spread (a baseline saved before the test recorded items). None when neither has items, or
    a side has no value."""
    base_mean, now_mean = entry.metrics.get(metric), result.metrics.get(metric)
    base, now = entry.metric_items.get(metric), result.metric_items.get(metric)
    if base_mean is None or now_mean is None or (base is None and now is None):
        return None
    if base is None:
        assert now is not None
        return (Sampled(base_mean, now.sd, now.n), now,
                "; the baseline's spread taken as this run's (it holds one number)")
    if now is None:
        return base, Sampled(now_mean, base.sd, base.n), "; this run's spread taken as the baseline's"
    return base, now, ""


def _sampled_row(lim: Limit, base: Sampled, now: Sampled, note: str, alpha: float | None) -> Check:
    t = compare_sampled(base, now, tolerance=abs(lim.threshold), higher_is_better=lim.op == ">=",
                        alpha=alpha if alpha is not None else (1 - _confidence(None)) / 2)
    word = {"regressed": " regressed:", "improved": " improved:"}.get(t.verdict, "")
    shown = f"{format_value(t.now, '')} vs baseline {format_value(t.base, '')} ({t.ratio:.3f}x; {t.reason}{note})"
    return Check(lim.label, lim.text, t.now, "", Verdict(t.verdict), f"{lim.label}{word} {shown}", kind=lim.metric,
                 stat="mean", against="baseline", baseline=t.base, ratio=t.ratio,
                 p_value=t.p_better if t.verdict == "improved" else t.p_worse, alpha=t.alpha, mde=t.mde,
                 reason=t.reason + note)


def _with_baseline(check: Check, entry: BaselineEntry, clock: str) -> Check:
    """Fill the baseline column of an absolute-budget check from the entry (latency on ``clock``), for the table."""
    if check.kind == "latency" and check.unit != f"s/{entry.unit}":
        return check  # per call then, per item now: not comparable
    value, _ = metric_value(check.kind, check.stat, entry, entry.metrics, clock)
    if value is not None and math.isfinite(value):
        return replace(check, baseline=float(value))
    return check


def _comparisons(relative: list[Limit], latency: bool, memory: bool, stored: bool, sampled: set[str]) -> int:
    """How many of a test's checks share its error budget: each latency comparison, each metric recorded
    from its items, and in stored mode (judged across saved runs) each memory one; ``latency``/``memory``:
    the default checks run."""
    kinds = {"latency", "throughput", *sampled} | ({"memory", "gpu_memory"} if stored else set())
    return sum(lim.metric in kinds for lim in relative) + latency + (memory and stored)


def baseline_rows(result: TestResult, budget: Budget | None, entry: BaselineEntry | None,
                  tolerance: float, base_runs: list[float | None] | None = None, *, alpha: float | None = None,
                  saved: Saved | None = None, stopped: RunComparison | None = None) -> list[Check]:
    """Checks replacing ``no-baseline`` ones (relative budgets) plus the default regression checks.

    ``base_runs``: the base's per-run best rounds; with the head's (``measurement.run_bests``)
    the latency checks are decided across runs (``perfguard ab``; ``stopped``: its futility stop).
    ``alpha``: this test's share of the run's error budget (None: each comparison at 99 % confidence);
    ``saved`` (stored mode) turns on the comparison across saved runs.
    """
    if entry is None:
        return list(result.checks)
    m = result.measurement or Measurement()
    absolute_clock = "cpu" if budget is not None and budget.clock == "cpu" and m.clock == "cpu" else "wall"
    rows = [_with_baseline(c, entry, absolute_clock) for c in result.checks if c.verdict != Verdict.NO_BASELINE]
    if budget is not None and budget.tolerance is not None:
        tolerance = budget.tolerance
    head = m.samples_on(m.clock)
    unit = f"s/{m.unit}"
    runs = ABRuns(list(base_runs), list(m.run_bests), stopped) if base_runs and m.run_bests else None
    saved = saved if runs is None else None
    relative = [lim for lim in (budget.limits if budget else ()) if lim.relative]
    # a relative tail budget ({"p99": "+10%"}) is judged on the tail: the default median check still runs
    checked = {lim.metric for lim in relative if lim.metric != "latency" or lim.stat in ("", "p50")}
    default_latency = bool(head) and not checked & set(LATENCY_KINDS)
    default_memory = "memory" not in checked and m.memory_growth is not None
    if alpha is not None:
        sampled = {lim.metric for lim in relative if _sampled(lim.metric, entry, result) is not None}
        alpha /= max(1, _comparisons(relative, default_latency, default_memory, saved is not None, sampled))
    for lim in relative:
        row = _relative_row(lim, entry, result, m, unit, runs, alpha, saved)
        rows.append(row or Check(lim.label, lim.text, None, unit, Verdict.ERROR,
                                 f"{lim.label} budget {lim.text!r} not checked: the baseline entry has no {lim.metric}",
                                 kind=lim.metric, stat=lim.stat, against="baseline"))
    base_samples = entry.samples_on(m.clock)
    shown_tol = f"±{tolerance:.0%}"
    if default_latency:
        label = "latency vs baseline" if m.clock == "wall" else "latency (cpu) vs baseline"
        changed = _unit_change(entry, m)
        if not base_samples or changed:
            rows.append(unjudged("latency", label, shown_tol, unit, changed or
                                 f"the baseline entry has no {_CLOCK_WORDS[m.clock]} samples, this run measured it"))
        else:
            rows.append(_latency_row("latency", label, shown_tol, base_samples, head, tolerance, unit, runs, alpha, saved,
                                     m.rounds_note()))
    if m.instructions is not None and "instructions" not in checked \
            and not disagree(m.instruction_counts):  # disagreeing counts: not judged (check.py)
        tol = budget.tolerance if budget is not None and budget.tolerance is not None else INSTRUCTIONS_TOLERANCE
        rows.append(_instructions_row("instructions vs baseline", f"±{tol:.1%}", entry, m, tol))
    if default_memory:
        assert m.memory_growth is not None
        if entry.memory_growth is None:
            rows.append(unjudged("memory", "memory vs baseline", shown_tol, "B",
                                 "the baseline entry has no memory_growth, this run measured memory"))
        else:
            rows.append(_memory_row("memory", "memory vs baseline", shown_tol, entry.memory_growth, m.memory_growth, tolerance,
                                    alpha, saved))
    return rows
