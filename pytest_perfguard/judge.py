"""Judging one test against its budget: a pure function from what the test measured to a
``model.TestResult`` (no pytest import). The baseline's checks are added by ``gate.baseline_rows``
(through ``store.RunBaseline.rows``, which knows the file)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from .budget import Budget
from .check import evaluate
from .measure import Measurement
from .model import Check, TestResult, Verdict
from .sampled import Sampled

__all__ = ["JudgeSettings", "judge", "judged_clock"]


@dataclass(frozen=True)
class JudgeSettings:
    measured: bool  # --perf: latency, memory and relative budgets are judged; without it only recorded metrics
    clock: str = "wall"  # --perf-clock: what the regression gate judges unless the budget says
    instructions: bool = False  # --perf-instructions: regions were counted, not timed
    benchmark_disabled: bool = False  # this test's pytest-benchmark fixture was turned off


def judge(nodeid: str, budget: Budget | None, measurement: Measurement | None, metrics: Mapping[str, float],
          metric_items: Mapping[str, Sampled], settings: JudgeSettings) -> TestResult | None:
    """This test's result with its budget checks, or None when it is not a perf test.

    Unmeasured runs (no ``--perf``) still check absolute budgets on recorded metrics (accuracy,
    counts): those are functional claims that one run can decide.
    """
    if budget is not None and settings.measured:
        budget = budget.for_run(settings.instructions)
    if not settings.measured:
        budget = budget.metrics_only() if budget else None
        if budget is None or not budget.limits:
            return None
    if budget is None and measurement is None and not (settings.measured and settings.benchmark_disabled):
        return None  # not a perf test (a disabled benchmark under --perf is one that timed nothing: an error)
    clock, clock_error = judged_clock(budget, settings.clock, measurement)
    if measurement is not None:
        measurement = replace(measurement, clock=clock)
    # absolute latency budgets are wall time unless the budget itself says clock="cpu"
    on_cpu = budget is not None and budget.clock == "cpu" and clock == "cpu"
    checks = evaluate(budget, measurement, metrics, "cpu" if on_cpu else "wall") + ([clock_error] if clock_error else [])
    if settings.measured and measurement is None and settings.benchmark_disabled:
        checks.append(Check("latency", "", None, "s/call", Verdict.ERROR, "latency not measured: pytest-benchmark is "
                            "disabled (--benchmark-disable), so the benchmark fixture timed nothing; drop that option "
                            "under --perf", kind="latency"))
    return TestResult(nodeid, tuple(checks), measurement, dict(metrics), dict(metric_items),
                      budget.raw if budget else {})


def judged_clock(budget: Budget | None, run_clock: str, m: Measurement | None) -> tuple[str, Check | None]:
    """The clock this test is judged on: the budget's ``clock=``, else the run's (``--perf-clock``), on
    CPU time only where the rounds were timed on it (not for CUDA regions, nor latencies measured
    elsewhere); an error check when the budget asked for CPU time that was not measured."""
    wanted = (budget.clock if budget is not None else None) or run_clock
    if m is not None and m.source == "callgrind":
        return "wall", None  # counted, not timed: no clock
    if wanted == "wall" or m is None or (m.cpu_samples and not m.synced):
        return wanted, None
    if budget is None or budget.clock != "cpu":
        return "wall", None
    why = ("the rounds waited for a CUDA device, whose work CPU time does not see" if m.synced else
           f"this test's latencies were measured by {'pytest-benchmark' if m.source == 'benchmark' else 'the test'}"
           " in wall time only")
    return "wall", Check("latency", "clock='cpu'", None, f"s/{m.unit}", Verdict.ERROR,
                         f"latency on CPU time (clock='cpu') not judged: {why}; drop clock='cpu' for this test",
                         kind="latency")
