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

import datetime as _dt
import math
from dataclasses import dataclass
from typing import Any

from .budget import Budget, Limit
from .callgrind import TOLERANCE as INSTRUCTIONS_TOLERANCE
from .callgrind import disagree
from .check import Row, metric_value, required_samples
from .measure import Measurement
from .decide import MIN_SAMPLES, Comparison, compare_quantile, compare_samples
from .runnoise import MEMORY_FLOOR, ProcessOffset, RunTest, SuiteModel, compare_latency, compare_memory, latency_level, next_runs
from .runs import RunComparison, compare_runs
from .sampled import Sampled, compare_sampled
from .units import format_value

__all__ = ["ABRuns", "baseline_rows", "base_latency", "judged_samples", "entry_from_result", "latency_decision", "LatencyDecision", "MEMORY_FLOOR",
           "unjudged"]



def base_latency(entry: dict[str, Any], clock: str = "wall") -> list[float]:
    """The latency samples a baseline entry stores on ``clock`` (empty when it has none)."""
    return list((entry.get("samples") or {}).get("cpu" if clock == "cpu" else "latency") or [])


def judged_samples(m: dict[str, Any]) -> list[float]:
    """A measurement's samples (a ``Measurement.to_dict()``) on the clock the gate judges (its ``clock``)."""
    return list(m.get("cpu_samples" if m.get("clock") == "cpu" else "samples") or [])


def entry_from_result(result: dict[str, Any], commit: str | None, old: dict[str, Any] | None = None) -> dict[str, Any]:
    """What ``--perf-save`` stores for one test: this run, and the runs of ``old`` (the entry it replaces)
    unless the gate saw a change in this run or the unit or the judged clock changed (then the run history
    starts again)."""
    m = result.get("measurement") or {}
    # only a latency change judged across saved runs, and confirmed by re-measuring (runner), restarts the
    # history: a one-run baseline cannot tell noise from it, and memory is not re-measured
    changed = any(r.get("verdict") in ("regressed", "improved") and r.get("p_value") is not None
                  and str(r.get("metric", "")).startswith(("latency", "throughput")) for r in result.get("rows") or [])
    restart = changed or (old is not None and (old.get("unit") or "call") != (m.get("unit") or "call"))
    restart = restart or (old is not None and (old.get("clock") or "wall") != (m.get("clock") or "wall"))
    run = {"latency": latency_level(judged_samples(m)), "memory_growth": m.get("memory_growth"),
           "process": result.get("process")}
    return {
        "runs": next_runs(old, run, restart=restart),
        "samples": {"latency": list(m.get("samples") or []), "cpu": list(m.get("cpu_samples") or [])},
        "clock": m.get("clock") or "wall",
        "summary": m.get("summary") or {},
        "unit": m.get("unit"),
        "items": m.get("items"),
        "memory_growth": m.get("memory_growth"),
        "instructions": m.get("instructions"),
        "instruction_counts": list(m.get("instruction_counts") or []),
        "memory_mechanism": m.get("memory_mechanism"),
        "gpu_memory_growth": m.get("gpu_memory_growth"),
        "metrics": dict(result.get("metrics") or {}),
        "metric_items": dict(result.get("metric_items") or {}),
        "budget": result.get("budget") or {},
        "commit": commit,
        "time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


@dataclass(frozen=True)
class ABRuns:
    """``perfguard ab``: both sides' per-run best rounds, aligned by round (None where a run is missing),
    and the futility stop (``runs.futile``) when the test was stopped early."""

    base: list[float | None]
    head: list[float | None]
    stopped: RunComparison | None = None


@dataclass(frozen=True)
class LatencyDecision:
    """The pooled rounds' comparison, and the runs' when both sides come from several runs
    (``perfguard ab``; else None). ``basis`` to ``reason`` are those of whichever decided."""

    pooled: Comparison
    runs: RunComparison | None
    basis: str  # "median" (pooled rounds) or "runs"
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
        return LatencyDecision(cmp, r, "runs", r.base_value, r.head_value, r.ratio, r.ci_low, r.ci_high,
                               r.verdict, r.reason)
    return LatencyDecision(cmp, None, "median", cmp.base_median, cmp.head_median, cmp.ratio, cmp.ci_low,
                           cmp.ci_high, cmp.verdict, cmp.reason)


def unjudged(label: str, budget_text: str, unit: str, why: str, now: float | None = None) -> Row:
    """A check the gate could not make: it fails the test (never a silent pass)."""
    return Row(label, budget_text, now, unit, "unjudged", f"{label} not judged: {why}")


ONE_RUN = ("the baseline holds one run per test, so the run-to-run noise of this machine is not modelled and "
           "this check can false-fail: record 5 or more runs (`pytest --perf --perf-save`, once per run)")


def _confidence(alpha: float | None) -> float:
    """The two-sided interval whose one-sided error is ``alpha`` (99 % when no budget is shared: ``perfguard ab``)."""
    return 0.99 if alpha is None else 1 - 2 * alpha


def _run_row(label: str, budget_text: str, t: RunTest, unit: str) -> Row:
    """A comparison across saved runs: the row shows the statistic it judged (run levels), and its MDE."""
    shown = f"{format_value(t.head, unit)} vs baseline {format_value(t.base, unit)} ({t.ratio:.2f}x; {t.reason})"
    word = {"regressed": " regressed:", "improved": " improved:"}.get(t.verdict, "")
    mde = t.mde if unit != "B" else (t.mde / t.base if t.base > 0 else None)
    return Row(label, budget_text, t.head, unit, t.verdict, f"{label}{word} {shown}", baseline=t.base, ratio=t.ratio,
               p_value=t.p_better if t.verdict == "improved" else t.p_worse, alpha=t.alpha, mde=mde)


def _latency_row(label: str, budget_text: str, base: list[float], head: list[float], tolerance: float,
                 unit: str, runs: ABRuns | None = None, alpha: float | None = None,
                 saved: Saved | None = None) -> Row:
    """``saved`` (stored mode): judged across the saved runs when it can be."""
    if saved is not None and alpha is not None:
        t = compare_latency(saved.nodeid, head, saved.model, saved.process, alpha=alpha, tolerance=tolerance)
        if t is not None:
            return _run_row(label, budget_text, t, unit)
    d = latency_decision(base, head, tolerance, runs, _confidence(alpha))
    if d.verdict == "insufficient":
        return unjudged(label, budget_text, unit, d.reason, d.pooled.head_median)
    now_s, base_s = format_value(d.pooled.head_median, unit), format_value(d.pooled.base_median, unit)
    caveat = f"; {ONE_RUN}" if saved is not None else ""
    shown = f"{now_s} vs baseline {base_s} ({d.basis} {d.ratio:.2f}x [{d.ci_low:.2f}-{d.ci_high:.2f}]; {d.reason}{caveat})"
    if d.verdict == "regressed":
        msg = f"{label} regressed: {shown}"
    elif d.verdict == "improved":
        msg = f"{label} improved: {shown}"  # no save suggestion: one run's improvement is not confirmed
    else:
        msg = f"{label} {shown}"
    return Row(label, budget_text, d.pooled.head_median, unit, d.verdict, msg, baseline=d.pooled.base_median,
               ratio=d.ratio, alpha=alpha)


def _tail_row(lim: Limit, base: list[float], head: list[float], unit: str, alpha: float | None) -> Row:
    """``{"p99": "+10%"}``: the head's p99 against the base's (not the median, not the best round)."""
    if lim.stat == "mean":
        return unjudged(lim.label, lim.text, unit, "a budget relative to the baseline's mean is not judged "
                        "(one slow round moves a mean arbitrarily): budget p50 or a percentile")
    q = 1.0 if lim.stat == "max" else float(lim.stat[1:]) / 100
    c = compare_quantile(base, head, q, tolerance=lim.threshold, confidence=_confidence(alpha),
                         need=max(MIN_SAMPLES, required_samples(100 * q) if q < 1 else MIN_SAMPLES))
    if c.verdict == "insufficient":
        return unjudged(lim.label, lim.text, unit, c.reason)
    shown = f"{format_value(c.head, unit)} vs baseline {format_value(c.base, unit)} ({c.reason})"
    word = {"regressed": " regressed:", "improved": " improved:"}.get(c.verdict, "")
    return Row(lim.label, lim.text, c.head, unit, c.verdict, f"{lim.label}{word} {shown}", baseline=c.base,
               ratio=c.ratio, alpha=alpha)


def _scalar_row(label: str, budget_text: str, base: float, now: float, unit: str, *, higher_is_better: bool,
                tolerance: float, floor: float = 0.0) -> Row:
    ratio = now / base if base else (1.0 if now == base else float("inf"))
    change = (base - now) if higher_is_better else (now - base)  # > 0 is worse
    limit = abs(base) * tolerance
    change_text = f"{ratio - 1:+.2%}" if unit == "instr" else f"{ratio:.2f}x"  # exact counts: small changes matter
    shown = f"{format_value(now, unit)} vs baseline {format_value(base, unit)} ({change_text})"
    if change > limit and change > floor:
        return Row(label, budget_text, now, unit, "regressed",
                   f"{label} regressed: {shown}, beyond {tolerance:.1%}", baseline=base, ratio=ratio)
    if -change > limit and -change > floor:
        return Row(label, budget_text, now, unit, "improved", f"{label} improved: {shown}",
                   baseline=base, ratio=ratio)
    return Row(label, budget_text, now, unit, "unchanged", f"{label} {shown}", baseline=base, ratio=ratio)


_CLOCK_WORDS = {"wall": "wall time", "cpu": "CPU time"}


def _unit_change(entry: dict[str, Any], m: dict[str, Any]) -> str | None:
    """Why the entry's latencies cannot be compared with this run's: their units or clocks differ."""
    base, now = entry.get("unit") or "call", m.get("unit") or "call"
    if base != now:
        return f"the baseline entry holds seconds per {base}, this run per {now} (items= changed)"
    base, now = entry.get("clock") or "wall", m.get("clock") or "wall"
    if base != now:
        return (f"the baseline entry was judged on {_CLOCK_WORDS[base]}, this run judges {_CLOCK_WORDS[now]} "
                "(clock= or --perf-clock changed)")
    return None


@dataclass(frozen=True)
class Saved:
    """Stored mode: the test, the baseline's model of its saved runs, and this process's offset so far."""

    nodeid: str
    model: SuiteModel
    process: ProcessOffset


def _memory_row(label: str, budget_text: str, base: float, now: float, tolerance: float, alpha: float | None,
                saved: Saved | None) -> Row:
    if saved is not None and alpha is not None:
        t = compare_memory(saved.nodeid, now, saved.model, alpha=alpha, tolerance=tolerance)
        if t is not None:
            return _run_row(label, budget_text, t, "B")
    return _scalar_row(label, budget_text, base, now, "B", higher_is_better=False, tolerance=tolerance,
                       floor=MEMORY_FLOOR)


def _relative_row(lim: Limit, entry: dict[str, Any], result: dict[str, Any], head: list[float], unit: str,
                  runs: ABRuns | None, alpha: float | None, saved: Saved | None) -> Row | None:
    base_samples = base_latency(entry, (result.get("measurement") or {}).get("clock") or "wall")
    if lim.metric in ("latency", "throughput"):
        if not base_samples or not head:
            return None
        changed = _unit_change(entry, result.get("measurement") or {})
        if changed:
            return unjudged(lim.label, lim.text, unit, changed)
        if lim.metric == "latency" and lim.stat not in ("", "p50"):
            return _tail_row(lim, base_samples, head, unit, alpha)
        # throughput "-10%" means latency may rise by 1/(1-0.10) - 1
        tol = lim.threshold if lim.metric == "latency" else 1 / (1 + lim.threshold) - 1
        return _latency_row(lim.label, lim.text, base_samples, head, tol, unit, runs, alpha, saved)
    if lim.metric == "instructions":
        m = result.get("measurement") or {}
        if entry.get("instructions") is None or m.get("instructions") is None:
            return None
        return _instructions_row(lim.label, lim.text, entry, m, abs(lim.threshold))
    if lim.metric in ("memory", "gpu_memory"):
        key = f"{lim.metric}_growth"
        base, now = entry.get(key), (result.get("measurement") or {}).get(key)
        if base is None or now is None:
            return None
        return _memory_row(lim.label, lim.text, float(base), float(now), abs(lim.threshold), alpha,
                           saved if lim.metric == "memory" else None)
    base, now = (entry.get("metrics") or {}).get(lim.metric), (result.get("metrics") or {}).get(lim.metric)
    if base is None or now is None:
        return None
    items = _sampled(lim.metric, entry, result)
    if items is not None:
        return _sampled_row(lim, *items, alpha)
    return _scalar_row(lim.label, lim.text, float(base), float(now), "", higher_is_better=lim.op == ">=",
                       tolerance=abs(lim.threshold))


def _instructions_row(label: str, budget_text: str, entry: dict[str, Any], m: dict[str, Any],
                      tolerance: float) -> Row:
    """Exact counts against each other: beyond the tolerance is a change. No error budget is spent:
    the same code counts the same in every process (``callgrind``)."""
    changed = _unit_change(entry, m)
    if entry.get("instructions") is None or changed:
        return unjudged(label, budget_text, "instr", changed or "the baseline entry has no instruction count, this "
                        "run counted them")
    return _scalar_row(label, budget_text, float(entry["instructions"]), float(m["instructions"]), "instr",
                       higher_is_better=False, tolerance=tolerance)


def _sampled(metric: str, entry: dict[str, Any], result: dict[str, Any]) -> tuple[Sampled, Sampled, str] | None:
    """Both sides of a metric recorded from its items; a side recorded as a single number borrows the
    other's spread (a baseline saved before the test recorded items). None when neither has items, or
    a side has no value."""
    base_mean, now_mean = (entry.get("metrics") or {}).get(metric), (result.get("metrics") or {}).get(metric)
    base = Sampled.read(base_mean, (entry.get("metric_items") or {}).get(metric))
    now = Sampled.read(now_mean, (result.get("metric_items") or {}).get(metric))
    if base_mean is None or now_mean is None or (base is None and now is None):
        return None
    if base is None:
        assert now is not None
        return (Sampled(float(base_mean), now.sd, now.n), now,
                "; the baseline's spread taken as this run's (it holds one number)")
    if now is None:
        return base, Sampled(float(now_mean), base.sd, base.n), "; this run's spread taken as the baseline's"
    return base, now, ""


def _sampled_row(lim: Limit, base: Sampled, now: Sampled, note: str, alpha: float | None) -> Row:
    t = compare_sampled(base, now, tolerance=abs(lim.threshold), higher_is_better=lim.op == ">=",
                        alpha=alpha if alpha is not None else (1 - _confidence(None)) / 2)
    word = {"regressed": " regressed:", "improved": " improved:"}.get(t.verdict, "")
    shown = f"{format_value(t.now, '')} vs baseline {format_value(t.base, '')} ({t.ratio:.3f}x; {t.reason}{note})"
    return Row(lim.label, lim.text, t.now, "", t.verdict, f"{lim.label}{word} {shown}", baseline=t.base,
               ratio=t.ratio, p_value=t.p_better if t.verdict == "improved" else t.p_worse, alpha=t.alpha, mde=t.mde)


def _with_baseline(row: Row, entry: dict[str, Any], clock: str) -> Row:
    """Fill the baseline column of an absolute-budget row from the entry (latency on ``clock``), for the table."""
    unit = entry.get("unit") or "call"
    saved = Measurement(samples=base_latency(entry, clock), unit=unit, memory_growth=entry.get("memory_growth"),
                        instructions=entry.get("instructions"),
                        gpu_memory_growth=entry.get("gpu_memory_growth"))
    metric, _, stat = row.metric.partition(" ")
    if metric == "latency" and row.unit != f"s/{unit}":
        return row  # per call then, per item now: not comparable
    value, _ = metric_value(metric, stat, saved, entry.get("metrics") or {})
    if value is not None and math.isfinite(value):
        row.baseline = float(value)
    return row


def _comparisons(relative: list[Limit], latency: bool, memory: bool, stored: bool, sampled: set[str]) -> int:
    """How many of a test's rows share its error budget: each latency comparison, each metric recorded
    from its items, and in stored mode (judged across saved runs) each memory one; ``latency``/``memory``:
    the default checks run."""
    kinds = {"latency", "throughput", *sampled} | ({"memory", "gpu_memory"} if stored else set())
    return sum(lim.metric in kinds for lim in relative) + latency + (memory and stored)


def baseline_rows(result: dict[str, Any], budget: Budget | None, entry: dict[str, Any] | None,
                  tolerance: float, base_runs: list[float | None] | None = None, *, alpha: float | None = None,
                  saved: Saved | None = None, stopped: RunComparison | None = None) -> list[Row]:
    """Rows replacing ``no-baseline`` rows (relative budgets) plus the default regression checks.

    ``base_runs``: the base's per-run best rounds; with the head's (``measurement.run_bests``)
    the latency rows are decided across runs (``perfguard ab``; ``stopped``: its futility stop).
    ``alpha``: this test's share of the run's error budget (None: each comparison at 99 % confidence);
    ``saved`` (stored mode) turns on the comparison across saved runs.
    """
    if entry is None:
        return [Row(**d) for d in result["rows"]]
    m = result.get("measurement") or {}
    clock = m.get("clock") or "wall"
    absolute_clock = "cpu" if budget is not None and budget.clock == "cpu" and clock == "cpu" else "wall"
    rows = [_with_baseline(r, entry, absolute_clock) for r in (Row(**d) for d in result["rows"])
            if r.verdict != "no-baseline"]
    if budget is not None and budget.tolerance is not None:
        tolerance = budget.tolerance
    head = judged_samples(m)
    unit = f"s/{m.get('unit') or 'call'}"
    runs = ABRuns(list(base_runs), list(m["run_bests"]), stopped) if base_runs and m.get("run_bests") else None
    saved = saved if runs is None else None
    relative = [lim for lim in (budget.limits if budget else ()) if lim.relative]
    # a relative tail budget ({"p99": "+10%"}) is judged on the tail: the default median check still runs
    checked = {lim.metric for lim in relative if lim.metric != "latency" or lim.stat in ("", "p50")}
    base_mem, now_mem = entry.get("memory_growth"), m.get("memory_growth")
    default_latency = bool(head) and not checked & {"latency", "throughput"}
    default_memory = "memory" not in checked and now_mem is not None
    if alpha is not None:
        sampled = {lim.metric for lim in relative if _sampled(lim.metric, entry, result) is not None}
        alpha /= max(1, _comparisons(relative, default_latency, default_memory, saved is not None, sampled))
    for lim in relative:
        row = _relative_row(lim, entry, result, head, unit, runs, alpha, saved)
        rows.append(row or Row(lim.label, lim.text, None, unit, "error",
                               f"{lim.label} budget {lim.text!r} not checked: the baseline entry has no {lim.metric}"))
    base_samples = base_latency(entry, clock)
    shown_tol = f"±{tolerance:.0%}"
    if default_latency:
        label = "latency vs baseline" if clock == "wall" else "latency (cpu) vs baseline"
        changed = _unit_change(entry, m)
        if not base_samples or changed:
            rows.append(unjudged(label, shown_tol, unit, changed or
                                 f"the baseline entry has no {_CLOCK_WORDS[clock]} samples, this run measured it"))
        else:
            rows.append(_latency_row(label, shown_tol, base_samples, head, tolerance, unit, runs, alpha, saved))
    if m.get("instructions") is not None and "instructions" not in checked \
            and not disagree(m.get("instruction_counts") or []):  # disagreeing counts: not judged (check.py)
        tol = budget.tolerance if budget is not None and budget.tolerance is not None else INSTRUCTIONS_TOLERANCE
        rows.append(_instructions_row("instructions vs baseline", f"±{tol:.1%}", entry, m, tol))
    if default_memory:
        if base_mem is None:
            rows.append(unjudged("memory vs baseline", shown_tol, "B",
                                 "the baseline entry has no memory_growth, this run measured memory"))
        else:
            rows.append(_memory_row("memory vs baseline", shown_tol, float(base_mem), float(now_mem), tolerance,
                                    alpha, saved))
    return rows
