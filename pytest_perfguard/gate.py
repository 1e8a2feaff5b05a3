"""The regression gate: one test's result against its baseline entry (no pytest import).

* Latency (samples): ``decide.compare_samples`` - significant AND beyond the tolerance.
  A relative latency budget ``"+10%"`` is the same check with its own tolerance;
  ``throughput="-10%"`` likewise (throughput is the inverse of latency). When both sides come
  from several runs (``perfguard ab``: per-run best rounds, ``run_bests``), the runs decide
  instead (``runs.compare_runs``): pooled rounds cannot see run-to-run noise.
* Memory and recorded metrics are one number per run: compared as a ratio. Memory ignores
  changes smaller than ``MEMORY_FLOOR`` (allocator arenas and lazily touched pages move
  peak RSS by a few MiB between runs whatever the code does).
* Improvements are rows with verdict ``improved``, never failures.
"""

from __future__ import annotations

import datetime as _dt
import math
from dataclasses import dataclass
from typing import Any

from .budget import Budget, Limit
from .check import Row, metric_value, required_samples
from .measure import Measurement
from .decide import MIN_SAMPLES, Comparison, compare_quantile, compare_samples
from .runs import RunComparison, compare_runs
from .units import format_value

__all__ = ["baseline_rows", "base_latency", "entry_from_result", "latency_decision", "LatencyDecision", "MEMORY_FLOOR",
           "unjudged"]

MEMORY_FLOOR = 8 * 2**20


def base_latency(entry: dict[str, Any]) -> list[float]:
    """The latency samples a baseline entry stores (empty when it has none)."""
    return list((entry.get("samples") or {}).get("latency") or [])


def entry_from_result(result: dict[str, Any], commit: str | None) -> dict[str, Any]:
    """What ``--perf-save`` stores for one test."""
    m = result.get("measurement") or {}
    return {
        "samples": {"latency": list(m.get("samples") or [])},
        "summary": m.get("summary") or {},
        "unit": m.get("unit"),
        "items": m.get("items"),
        "memory_growth": m.get("memory_growth"),
        "memory_mechanism": m.get("memory_mechanism"),
        "gpu_memory_growth": m.get("gpu_memory_growth"),
        "metrics": dict(result.get("metrics") or {}),
        "budget": result.get("budget") or {},
        "commit": commit,
        "time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


@dataclass(frozen=True)
class LatencyDecision:
    """The pooled rounds' comparison, and the runs' when both sides come from enough runs to decide
    (``perfguard ab``; else None). ``basis`` to ``reason`` are those of whichever decided."""

    pooled: Comparison
    runs: RunComparison | None
    basis: str  # "median" (pooled rounds) or "runs"
    base: float
    head: float
    ratio: float
    ci_low: float
    ci_high: float
    verdict: str  # regressed | improved | unchanged
    reason: str


def latency_decision(base: list[float], head: list[float], tolerance: float,
                     runs: tuple[list[float], list[float]] | None = None) -> LatencyDecision:
    """Pooled rounds, or the runs (per-run best rounds, aligned by round) whenever they have a verdict."""
    cmp = compare_samples(base, head, tolerance=tolerance, metric="latency")
    r = compare_runs(*runs, tolerance=tolerance) if runs else None
    if r is not None and r.verdict != "insufficient":
        return LatencyDecision(cmp, r, "runs", r.base_value, r.head_value, r.ratio, r.ci_low, r.ci_high,
                               r.verdict, r.reason)
    return LatencyDecision(cmp, None, "median", cmp.base_median, cmp.head_median, cmp.ratio, cmp.ci_low,
                           cmp.ci_high, cmp.verdict, cmp.reason)


def unjudged(label: str, budget_text: str, unit: str, why: str, now: float | None = None) -> Row:
    """A check the gate could not make: it fails the test (never a silent pass)."""
    return Row(label, budget_text, now, unit, "unjudged", f"{label} not judged: {why}")


def _latency_row(label: str, budget_text: str, base: list[float], head: list[float], tolerance: float,
                 unit: str, runs: tuple[list[float], list[float]] | None = None) -> Row:
    d = latency_decision(base, head, tolerance, runs)
    if d.verdict == "insufficient":
        return unjudged(label, budget_text, unit, d.reason, d.pooled.head_median)
    now_s, base_s = format_value(d.pooled.head_median, unit), format_value(d.pooled.base_median, unit)
    shown = f"{now_s} vs baseline {base_s} ({d.basis} {d.ratio:.2f}x [{d.ci_low:.2f}-{d.ci_high:.2f}]; {d.reason})"
    if d.verdict == "regressed":
        msg = f"{label} regressed: {shown}"
    elif d.verdict == "improved":
        msg = f"{label} improved: {shown}; consider --perf-save"
    else:
        msg = f"{label} {shown}"
    return Row(label, budget_text, d.pooled.head_median, unit, d.verdict, msg, baseline=d.pooled.base_median,
               ratio=d.ratio)


def _tail_row(lim: Limit, base: list[float], head: list[float], unit: str) -> Row:
    """``{"p99": "+10%"}``: the head's p99 against the base's (not the median, not the best round)."""
    if lim.stat == "mean":
        return unjudged(lim.label, lim.text, unit, "a budget relative to the baseline's mean is not judged "
                        "(one slow round moves a mean arbitrarily): budget p50 or a percentile")
    q = 1.0 if lim.stat == "max" else float(lim.stat[1:]) / 100
    c = compare_quantile(base, head, q, tolerance=lim.threshold,
                         need=max(MIN_SAMPLES, required_samples(100 * q) if q < 1 else MIN_SAMPLES))
    if c.verdict == "insufficient":
        return unjudged(lim.label, lim.text, unit, c.reason)
    shown = f"{format_value(c.head, unit)} vs baseline {format_value(c.base, unit)} ({c.reason})"
    word = {"regressed": " regressed:", "improved": " improved:"}.get(c.verdict, "")
    return Row(lim.label, lim.text, c.head, unit, c.verdict, f"{lim.label}{word} {shown}", baseline=c.base,
               ratio=c.ratio)


def _scalar_row(label: str, budget_text: str, base: float, now: float, unit: str, *, higher_is_better: bool,
                tolerance: float, floor: float = 0.0) -> Row:
    ratio = now / base if base else (1.0 if now == base else float("inf"))
    change = (base - now) if higher_is_better else (now - base)  # > 0 is worse
    limit = abs(base) * tolerance
    shown = f"{format_value(now, unit)} vs baseline {format_value(base, unit)} ({ratio:.2f}x)"
    if change > limit and change > floor:
        return Row(label, budget_text, now, unit, "regressed",
                   f"{label} regressed: {shown}, beyond {tolerance:.1%}", baseline=base, ratio=ratio)
    if -change > limit and -change > floor:
        return Row(label, budget_text, now, unit, "improved", f"{label} improved: {shown}; consider --perf-save",
                   baseline=base, ratio=ratio)
    return Row(label, budget_text, now, unit, "unchanged", f"{label} {shown}", baseline=base, ratio=ratio)


def _unit_change(entry: dict[str, Any], m: dict[str, Any]) -> str | None:
    """Why the entry's latencies cannot be compared with this run's, when their units differ."""
    base, now = entry.get("unit") or "call", m.get("unit") or "call"
    if base == now:
        return None
    return f"the baseline entry holds seconds per {base}, this run per {now} (items= changed)"


def _relative_row(lim: Limit, entry: dict[str, Any], result: dict[str, Any], head: list[float], unit: str,
                  runs: tuple[list[float], list[float]] | None = None) -> Row | None:
    base_samples = base_latency(entry)
    if lim.metric in ("latency", "throughput"):
        if not base_samples or not head:
            return None
        changed = _unit_change(entry, result.get("measurement") or {})
        if changed:
            return unjudged(lim.label, lim.text, unit, changed)
        if lim.metric == "latency" and lim.stat not in ("", "p50"):
            return _tail_row(lim, base_samples, head, unit)
        # throughput "-10%" means latency may rise by 1/(1-0.10) - 1
        tol = lim.threshold if lim.metric == "latency" else 1 / (1 + lim.threshold) - 1
        return _latency_row(lim.label, lim.text, base_samples, head, tol, unit, runs)
    if lim.metric in ("memory", "gpu_memory"):
        key = f"{lim.metric}_growth"
        base, now = entry.get(key), (result.get("measurement") or {}).get(key)
        floor = float(MEMORY_FLOOR)
    else:
        base, now = (entry.get("metrics") or {}).get(lim.metric), (result.get("metrics") or {}).get(lim.metric)
        floor = 0.0
    if base is None or now is None:
        return None
    higher = lim.op == ">="
    return _scalar_row(lim.label, lim.text, float(base), float(now), "B" if "memory" in lim.metric else "",
                       higher_is_better=higher, tolerance=abs(lim.threshold), floor=floor)


def _with_baseline(row: Row, entry: dict[str, Any]) -> Row:
    """Fill the baseline column of an absolute-budget row from the entry, for the table."""
    unit = entry.get("unit") or "call"
    saved = Measurement(samples=base_latency(entry), unit=unit, memory_growth=entry.get("memory_growth"),
                        gpu_memory_growth=entry.get("gpu_memory_growth"))
    metric, _, stat = row.metric.partition(" ")
    if metric == "latency" and row.unit != f"s/{unit}":
        return row  # per call then, per item now: not comparable
    value, _ = metric_value(metric, stat, saved, entry.get("metrics") or {})
    if value is not None and math.isfinite(value):
        row.baseline = float(value)
    return row


def baseline_rows(result: dict[str, Any], budget: Budget | None, entry: dict[str, Any] | None,
                  tolerance: float, base_runs: list[float] | None = None) -> list[Row]:
    """Rows replacing ``no-baseline`` rows (relative budgets) plus the default regression checks.

    ``base_runs``: the base's per-run best rounds; with the head's (``measurement.run_bests``)
    the latency rows are decided across runs (``perfguard ab``).
    """
    if entry is None:
        return [Row(**d) for d in result["rows"]]
    rows = [_with_baseline(r, entry) for r in (Row(**d) for d in result["rows"]) if r.verdict != "no-baseline"]
    if budget is not None and budget.tolerance is not None:
        tolerance = budget.tolerance
    m = result.get("measurement") or {}
    head = list(m.get("samples") or [])
    unit = f"s/{m.get('unit') or 'call'}"
    runs = (list(base_runs), list(m["run_bests"])) if base_runs and m.get("run_bests") else None
    relative = [lim for lim in (budget.limits if budget else ()) if lim.relative]
    for lim in relative:
        row = _relative_row(lim, entry, result, head, unit, runs)
        rows.append(row or Row(lim.label, lim.text, None, unit, "error",
                               f"{lim.label} budget {lim.text!r} not checked: the baseline entry has no {lim.metric}"))
    # a relative tail budget ({"p99": "+10%"}) is judged on the tail: the default median check still runs
    checked = {lim.metric for lim in relative if lim.metric != "latency" or lim.stat in ("", "p50")}
    base_samples = base_latency(entry)
    shown_tol = f"±{tolerance:.0%}"
    if head and not checked & {"latency", "throughput"}:
        changed = _unit_change(entry, m)
        if not base_samples or changed:
            rows.append(unjudged("latency vs baseline", shown_tol, unit,
                                 changed or "the baseline entry has no latency samples, this run measured latency"))
        else:
            rows.append(_latency_row("latency vs baseline", shown_tol, base_samples, head, tolerance, unit, runs))
    base_mem, now_mem = entry.get("memory_growth"), m.get("memory_growth")
    if "memory" not in checked and now_mem is not None:
        if base_mem is None:
            rows.append(unjudged("memory vs baseline", shown_tol, "B",
                                 "the baseline entry has no memory_growth, this run measured memory"))
        else:
            rows.append(_scalar_row("memory vs baseline", shown_tol, float(base_mem), float(now_mem), "B",
                                    higher_is_better=False, tolerance=tolerance, floor=MEMORY_FLOOR))
    return rows
