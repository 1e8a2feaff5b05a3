"""Judging one test's measurement and metrics against its budget (absolute limits).

Each limit gives one ``model.Check``: metric, budget, now, ratio, verdict and a one-line message
whose shape is ``latency p50 3.41 ms/item > budget 2.00 ms/item (1.71x)``. Relative limits
(``"+10%"``) need a baseline; without one they give a ``no-baseline`` row, never a pass.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from .budget import Budget, Limit
from .callgrind import SPREAD, SPREAD_FLOOR, disagree
from .callgrind import spread as count_spread
from .measure import Measurement
from .model import LATENCY_KINDS, BaselineEntry, Check, Verdict
from .units import format_value

__all__ = ["DECISIVE", "decided", "evaluate", "metric_value", "required_samples", "statistic"]

DECISIVE = 10.0  # an absolute latency or throughput limit missed this many times over by the fastest round
# is decided: noise only adds time, and the heaviest load measured here slowed a call 4.6x (13.6 s quiet,
# 10-63 s at load 7), so no further round can bring the test back within its budget

_OPS = {
    "<=": lambda a, b: a <= b,
    ">=": lambda a, b: a >= b,
    "==": lambda a, b: a == b,
    "<": lambda a, b: a < b,
    ">": lambda a, b: a > b,
}
_NEGATION = {"<=": ">", ">=": "<", "==": "!=", "<": ">=", ">": "<="}


def required_samples(percentile: float, confidence: float = 0.95) -> int:
    """Samples needed before a ``p<percentile>`` claim means anything.

    With n samples all from a distribution, the largest one exceeds the q-quantile with
    probability 1 - q**n; we ask for n such that this is at least ``confidence`` (the
    order-statistic argument behind MLPerf's early-stopping rule): p90 -> 29, p95 -> 59,
    p99 -> 299. A median needs no tail: any sample count backs it.
    """
    q = percentile / 100.0
    if q <= 0.5:
        return 1
    return math.ceil(math.log(1 - confidence) / math.log(q))


def statistic(samples: list[float], stat: str) -> float:
    arr = np.asarray(samples, dtype=float)
    if stat == "mean":
        return float(arr.mean())
    if stat == "max":
        return float(arr.max())
    return float(np.percentile(arr, float(stat[1:])))


def _unit(metric: str, m: Measurement | None) -> str:
    if metric == "latency":
        return f"s/{m.unit if m else 'call'}"
    if metric in ("memory", "gpu_memory"):
        return "B"
    if metric == "throughput":
        return "items/s"
    if metric == "instructions":
        return "instr"
    return ""


def metric_value(metric: str, stat: str, m: Measurement | BaselineEntry | None, metrics: Mapping[str, float],
                 clock: str = "wall") -> tuple[float | None, str]:
    """The value of one budgeted metric in this run's measurement or a saved entry (``stat`` of the
    latencies on ``clock``), or None and why it is missing."""
    samples = m.samples_on(clock) if m is not None else []
    if metric in ("latency", "throughput") and not samples:
        return None, "nothing was timed: call perf(fn, ...) or use the benchmark fixture"
    if metric == "latency":
        return statistic(samples, stat or "p50"), ""
    if metric == "throughput":
        med = statistic(samples, "p50")
        return (1.0 / med if med > 0 else math.inf), ""
    if metric == "instructions":
        if m is None or m.instructions is None:
            return None, "no instructions were counted: call perf(fn, ...) under --perf-instructions"
        return m.instructions, ""
    if metric == "memory":
        if m is None or m.memory_growth is None:
            return None, "memory was not measured in this test"
        return m.memory_growth, ""
    if metric == "gpu_memory":
        if m is None or m.gpu_memory_growth is None:
            return None, "no CUDA device was in use, so GPU memory was not measured"
        return m.gpu_memory_growth, ""
    if metric not in metrics:
        return None, f"perf.record({metric}=...) was never called"
    return float(metrics[metric]), ""


def decided(budget: Budget | None, samples: Sequence[float]) -> str | None:
    """Why the rounds so far (seconds per call, or per item) already fail an absolute latency or throughput
    limit whatever more rounds would show, or None: the fastest of them is beyond the limit
    ``DECISIVE`` times over. Wall time only (a budget on CPU time is left to its rounds)."""
    if budget is None or budget.clock == "cpu" or not samples or min(samples) <= 0:
        return None
    fastest = min(samples)
    for lim in budget.limits:
        if lim.relative or lim.threshold <= 0:
            continue
        if lim.metric == "latency" and lim.op in ("<=", "<"):
            over = fastest / lim.threshold
        elif lim.metric == "throughput" and lim.op in (">=", ">"):
            over = lim.threshold * fastest
        else:
            continue
        if over >= DECISIVE:
            return f"stopped early, the fastest {over:.0f}x beyond the {lim.label} budget"
    return None


def _check_absolute(lim: Limit, now: float, n_samples: int, unit: str, rounds: str = "") -> Check:
    """``rounds``: the measurement's note when the time cap cut its rounds (``Measurement.rounds_note``),
    shown with the figure: a p50 of 5 slow rounds beyond its budget is a fair failure, but says so."""
    label = lim.label
    ok = _OPS[lim.op](now, lim.threshold)
    ratio = now / lim.threshold if lim.threshold else None
    if lim.metric == "latency" and lim.stat.startswith("p"):
        need = required_samples(float(lim.stat[1:]))
        if n_samples < need and ok:
            why = f"{n_samples} samples cannot back a {lim.stat} claim (need >= {need})" + (f" ({rounds})" if rounds else "")
            hint = ": raise --perf-time-cap" if rounds else "; raise --perf-max-time"
            return Check(label, lim.text, now, unit, Verdict.INSUFFICIENT,
                         f"{label}: {why}{hint} or budget a lower percentile", kind=lim.metric,
                         stat=lim.stat, ratio=ratio, reason=why)
    shown_now, shown_lim = format_value(now, unit), format_value(lim.threshold, unit)
    if ok:
        note = f" ({rounds})" if rounds else ""
        return Check(label, lim.text, now, unit, Verdict.PASS, f"{label} {shown_now} {lim.op} budget {shown_lim}{note}",
                     kind=lim.metric, stat=lim.stat, ratio=ratio)
    details = [f"{ratio:.2f}x"] if ratio is not None and lim.op in ("<=", "<", ">=", ">") else []
    if lim.op == "==":
        diff = now - lim.threshold
        word = "overshot" if diff > 0 else "fell short"
        details = [f"{word} by {format_value(abs(diff), unit)}"]
    detail = f" ({'; '.join(details + ([rounds] if rounds else []))})" if details or rounds else ""
    return Check(label, lim.text, now, unit, Verdict.FAIL,
                 f"{label} {shown_now} {_NEGATION[lim.op]} budget {shown_lim}{detail}", kind=lim.metric, stat=lim.stat,
                 ratio=ratio)


def evaluate(budget: Budget | None, m: Measurement | None, metrics: Mapping[str, float], clock: str = "wall"
             ) -> list[Check]:
    """One check per limit (plus a 'measured' one for unbudgeted timing), absolute checks only; latency
    budgets on ``clock`` (wall time unless the budget says ``clock="cpu"``)."""
    rows: list[Check] = []
    limits = budget.limits if budget else ()
    for lim in limits:
        unit = _unit(lim.metric, m)
        now, missing = metric_value(lim.metric, lim.stat, m, metrics, clock)
        if now is None:
            rows.append(Check(lim.label, lim.text, None, unit, Verdict.ERROR,
                              f"{lim.label} budget {lim.text!r} not checked: {missing}", kind=lim.metric, stat=lim.stat,
                              reason=missing))
        elif lim.relative:
            rows.append(Check(lim.label, lim.text, now, unit, Verdict.NO_BASELINE,
                              f"{lim.label} {format_value(now, unit)}: relative budget {lim.text!r} needs a baseline",
                              kind=lim.metric, stat=lim.stat))
        else:
            timed = m is not None and lim.metric in LATENCY_KINDS
            rows.append(_check_absolute(lim, now, len(m.samples) if m is not None else 0, unit,
                                        m.rounds_note() if timed and m is not None else ""))
    if m is not None and m.samples and not any(lim.metric == "latency" for lim in limits):
        now = statistic(m.samples_on(clock) or m.samples, "p50")
        unit = _unit("latency", m)
        note = f" ({m.rounds_note()})" if m.cut else ""
        rows.append(Check("latency p50", "", now, unit, Verdict.MEASURED, f"latency p50 {format_value(now, unit)}{note}",
                          kind="latency", stat="p50"))
    counts = _instruction_counts(m, counted=any(lim.metric == "instructions" for lim in limits)) \
        if m is not None and m.instruction_counts else None
    return rows + ([counts] if counts is not None else [])


def _instruction_counts(m: Measurement, counted: bool) -> Check | None:
    """Repeated counts of one region must agree (callgrind counts exactly): counts further apart than
    ``callgrind.SPREAD`` say the region is not deterministic (threads, time, randomness) and are not
    judged, never averaged. Else a 'measured' row when no budget shows the count."""
    counts = m.instruction_counts
    spread = count_spread(counts)
    if disagree(counts):
        return Check("instructions", "", m.instructions, "instr", Verdict.ERROR,
                   f"instructions not judged: {len(counts)} counts of the same call disagree by {spread:.3%} "
                   f"({', '.join(str(c) for c in counts)}), beyond the {SPREAD:.1%} (and {SPREAD_FLOOR} instructions) "
                   "that repeated counts of one call stay within: the region is not deterministic (threads, time "
                   "or randomness in the measured code)", kind="instructions")
    if counted:
        return None
    return Check("instructions", "", m.instructions, "instr", Verdict.MEASURED,
               f"instructions {format_value(m.instructions, 'instr')} (counts spread {spread:.4%})", kind="instructions")
