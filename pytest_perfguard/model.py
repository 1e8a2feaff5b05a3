"""One typed result, from ``perf(fn)`` to the baseline file (no pytest import).

A test is judged into a :class:`TestResult`: its :class:`~.measure.Measurement`, metrics and one
:class:`Check` per claim (a budget, or a comparison with the baseline). A saved test is a
:class:`BaselineEntry`. Dicts exist only at the three edges, each with one ``to_json``/``from_json``
pair: the result on the pytest report (it crosses xdist), the ``--perf-json`` document, and the
baseline file. Samples are thinned (``thin``) only there, when written; every judgement sees them all.
"""

from __future__ import annotations

import datetime as _dt
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from enum import StrEnum
from typing import Any

from .decide import summarize
from .measure import Measurement
from .runnoise import MAX_RUNS, latency_level
from .sampled import Sampled

__all__ = ["Verdict", "Check", "ProcessSpeed", "TestResult", "SavedRun", "BaselineEntry",
           "LATENCY_KINDS", "json_safe", "thin", "MAX_SAMPLES"]

MAX_SAMPLES = 1000  # samples per list in a report or a baseline file
LATENCY_KINDS = ("latency", "throughput")


class Verdict(StrEnum):
    """What one check concluded; ``failed`` is the one place that says which verdicts fail a test."""

    PASS = "pass"
    FAIL = "fail"
    INSUFFICIENT = "insufficient"  # too few samples to back the claim
    NO_BASELINE = "no-baseline"  # a relative budget without a baseline: not a pass
    MEASURED = "measured"  # shown, not budgeted
    REGRESSED = "regressed"
    IMPROVED = "improved"
    UNCHANGED = "unchanged"
    UNJUDGED = "unjudged"  # the gate could not compare
    WARNED = "warned"  # unjudged, downgraded by --perf-baseline-errors=warn
    ERROR = "error"  # the claim could not be checked (nothing measured, a bad clock)

    @property
    def failed(self) -> bool:
        return self in _FAILING


_FAILING = frozenset({Verdict.FAIL, Verdict.REGRESSED, Verdict.INSUFFICIENT, Verdict.ERROR, Verdict.UNJUDGED})


@dataclass(frozen=True)
class Check:
    """One claim judged: ``label`` as shown (``latency p50``, ``memory vs baseline``), ``kind`` the
    quantity (latency, throughput, memory, gpu_memory, instructions, a metric's name; ``baseline entry``
    and ``speed`` for the gate's own checks), ``against`` a budget or the baseline."""

    label: str
    budget: str  # as written, or the tolerance shown (``±5%``)
    now: float | None
    unit: str  # "s/item", "s/call", "B", "items/s", "instr", ""
    verdict: Verdict
    message: str  # the one line a failure shows: what broke and by how much
    kind: str = field(kw_only=True)  # required: what the check is about, never read back from the label
    stat: str = ""  # the statistic judged: p50, p99, mean, max ("" where the quantity is one number)
    against: str = "budget"  # "budget" or "baseline"
    baseline: float | None = None
    ratio: float | None = None
    interval: tuple[float, float] | None = None  # of the ratio, where the decision gives one
    p_value: float | None = None  # one-sided, of a comparison that shares the run's error budget
    alpha: float | None = None  # that comparison's share of the budget (None: not such a comparison)
    mde: float | None = None  # the smallest change it could flag, relative to the baseline (0.25: 25 %)
    reason: str = ""  # why the verdict, without the figures (``fastest rounds 1.07x (...): no change beyond ...``)

    def __post_init__(self) -> None:
        object.__setattr__(self, "verdict", Verdict(self.verdict))

    @property
    def failed(self) -> bool:
        return self.verdict.failed

    def to_json(self) -> dict[str, Any]:
        return {"metric": self.label, "kind": self.kind, "stat": self.stat, "against": self.against, "budget": self.budget,
                "now": self.now, "unit": self.unit, "verdict": str(self.verdict), "message": self.message,
                "baseline": self.baseline, "ratio": self.ratio,
                "interval": list(self.interval) if self.interval else None,
                "p_value": self.p_value, "alpha": self.alpha, "mde": self.mde, "reason": self.reason}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Check:
        """``ValueError`` for a verdict this version does not know; a value that is not a finite number is None."""
        interval = d.get("interval")
        low, high = (_finite(interval[0]), _finite(interval[1])) if isinstance(interval, list) and len(interval) == 2 \
            else (None, None)
        return cls(str(d.get("metric", "")), str(d.get("budget", "")), _finite(d.get("now")), str(d.get("unit", "")),
                   Verdict(d.get("verdict", "error")), str(d.get("message", "")), kind=str(d.get("kind") or ""),
                   stat=str(d.get("stat") or ""), against=str(d.get("against") or "budget"),
                   baseline=_finite(d.get("baseline")), ratio=_finite(d.get("ratio")),
                   interval=(low, high) if low is not None and high is not None else None,
                   p_value=_finite(d.get("p_value")), alpha=_finite(d.get("alpha")), mde=_finite(d.get("mde")),
                   reason=str(d.get("reason") or ""))


@dataclass(frozen=True)
class ProcessSpeed:
    """This process's speed so far (``runnoise.ProcessOffset``), judged once per process by the controller."""

    deviation: float
    var: float
    tests: int
    alpha: float


@dataclass(frozen=True)
class TestResult:
    """One test, judged."""

    __test__ = False  # not a pytest test class

    nodeid: str
    checks: tuple[Check, ...] = ()
    measurement: Measurement | None = None
    metrics: Mapping[str, float] = field(default_factory=dict)
    metric_items: Mapping[str, Sampled] = field(default_factory=dict)  # metrics recorded from their items
    budget: Mapping[str, Any] = field(default_factory=dict)  # as written, JSON-safe
    process: str | None = None  # the measuring process (its tests share its speed)
    process_speed: ProcessSpeed | None = None
    body_passed: bool | None = None  # the test's own assertions (None: not known yet)
    outcome: str | None = None  # pytest's, once reported
    profile: Mapping[str, Any] | None = None  # the Scalene profile of a failure: paths, or "error"

    @property
    def failed(self) -> bool:
        return any(c.failed for c in self.checks)

    @property
    def failures(self) -> list[str]:
        """The failing checks' messages: the longrepr of a test that passed its own assertions."""
        return [c.message for c in self.checks if c.failed]

    def with_checks(self, checks: Iterable[Check]) -> TestResult:
        return replace(self, checks=tuple(checks))

    def to_json(self, max_samples: int = MAX_SAMPLES) -> dict[str, Any]:
        m = self.measurement
        speed = self.process_speed
        out: dict[str, Any] = {
            "nodeid": self.nodeid,
            "rows": [c.to_json() for c in self.checks],
            "measurement": measurement_to_json(m, max_samples) if m is not None else None,
            "metrics": dict(self.metrics),
            "metric_items": {name: s.to_dict() for name, s in self.metric_items.items()},
            "budget": json_safe(dict(self.budget)),
            "process": self.process,
        }
        if speed is not None:
            out["process_speed"] = {"deviation": speed.deviation, "var": speed.var, "tests": speed.tests,
                                    "alpha": speed.alpha}
        for key in ("body_passed", "outcome", "profile"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        return out

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> TestResult:
        m, speed = d.get("measurement"), d.get("process_speed")
        metrics = {str(k): float(v) for k, v in (d.get("metrics") or {}).items()}
        items = {name: s for name, spread in (d.get("metric_items") or {}).items()
                 for s in [Sampled.read(metrics.get(name), spread)] if s is not None}
        return cls(str(d["nodeid"]), tuple(Check.from_json(r) for r in d.get("rows") or ()),
                   measurement_from_json(m) if isinstance(m, Mapping) else None, metrics, items,
                   dict(d.get("budget") or {}), d.get("process"),
                   ProcessSpeed(**speed) if isinstance(speed, Mapping) else None,
                   d.get("body_passed"), d.get("outcome"), d.get("profile"))


_MEASUREMENT_FIELDS = {f.name for f in fields(Measurement)}


def measurement_to_json(m: Measurement, max_samples: int = MAX_SAMPLES) -> dict[str, Any]:
    """The edge form of a measurement: every field, the samples thinned, plus their summary (of all)."""
    out = {name: getattr(m, name) for name in _MEASUREMENT_FIELDS}
    out["samples"], out["cpu_samples"] = thin(m.samples, max_samples), thin(m.cpu_samples, max_samples)
    out["instruction_counts"], out["run_bests"] = list(m.instruction_counts), list(m.run_bests)
    out["summary"] = summary_of(m)
    return out


def summary_of(m: Measurement) -> dict[str, Any]:
    """The summary of every sample: carried across an edge that thinned them, else computed."""
    return dict(m.summary) if m.summary is not None else summarize(m.samples)


def measurement_from_json(d: Mapping[str, Any]) -> Measurement:
    known = {k: v for k, v in d.items() if k in _MEASUREMENT_FIELDS}
    for key in ("samples", "cpu_samples", "instruction_counts", "run_bests"):
        known[key] = list(known.get(key) or [])
    return Measurement(**known)


def json_safe(value: Any) -> Any:
    """Budgets as written may hold anything; keep what JSON can say, repr the rest."""
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return repr(value)


def thin(values: Iterable[Any], max_samples: int = MAX_SAMPLES) -> list[Any]:
    """At most ``max_samples`` values, evenly spaced, in order, first and last included."""
    values = list(values)
    n = len(values)
    if n <= max_samples:
        return values
    if max_samples == 1:
        return [values[(n - 1) // 2]]
    # (n - 1) / (max_samples - 1) > 1, so the floored indices are strictly increasing.
    return [values[i * (n - 1) // (max_samples - 1)] for i in range(max_samples)]


def _finite(x: Any) -> float | None:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) else None


@dataclass(frozen=True)
class SavedRun:
    """One saved run of a test: its latency level (on the judged clock), memory growth, and process."""

    latency: float | None
    memory_growth: float | None
    process: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"latency": self.latency, "memory_growth": self.memory_growth, "process": self.process}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> SavedRun:
        process = d.get("process")
        return cls(_finite(d.get("latency")), _finite(d.get("memory_growth")),
                   process if isinstance(process, str) else None)


@dataclass(frozen=True)
class BaselineEntry:
    """What ``--perf-save`` keeps of one test. Read from a file only after ``baseline.entry_problem``
    found nothing wrong with it."""

    samples: tuple[float, ...] = ()  # wall seconds per call (or item)
    cpu_samples: tuple[float, ...] = ()
    clock: str = "wall"  # the clock the gate judged; the runs' levels are of that clock
    unit: str = "call"
    items: int | None = None
    memory_growth: float | None = None
    memory_mechanism: str | None = None
    gpu_memory_growth: float | None = None
    instructions: float | None = None
    instruction_counts: tuple[int, ...] = ()
    metrics: Mapping[str, float] = field(default_factory=dict)
    metric_items: Mapping[str, Sampled] = field(default_factory=dict)
    runs: tuple[SavedRun, ...] = ()
    budget: Mapping[str, Any] = field(default_factory=dict)
    summary: Mapping[str, Any] = field(default_factory=dict)
    commit: str | None = None
    time: str | None = None

    def samples_on(self, clock: str) -> list[float]:
        return list(self.cpu_samples if clock == "cpu" else self.samples)

    @classmethod
    def from_result(cls, result: TestResult, commit: str | None, old: BaselineEntry | None = None) -> BaselineEntry:
        """This run, after the runs of ``old`` (the entry it replaces) unless the gate saw a latency change
        in this run (judged across saved runs and confirmed by re-measuring: a one-run baseline cannot tell
        noise from it, and memory is not re-measured), or the unit or the judged clock changed: then the
        run history starts again."""
        m = result.measurement or Measurement()
        changed = any(c.verdict in (Verdict.REGRESSED, Verdict.IMPROVED) and c.p_value is not None
                      and c.kind in LATENCY_KINDS for c in result.checks)
        restart = changed or old is None or old.unit != m.unit or old.clock != m.clock
        run = SavedRun(latency_level(m.samples_on(m.clock)), m.memory_growth, result.process)
        kept = () if restart or old is None else old.runs
        return cls(tuple(m.samples), tuple(m.cpu_samples), m.clock, m.unit, m.items, m.memory_growth,
                   m.memory_mechanism, m.gpu_memory_growth, m.instructions, tuple(m.instruction_counts),
                   dict(result.metrics), dict(result.metric_items), (*kept, run)[-MAX_RUNS:], dict(result.budget),
                   summary_of(m), commit, _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))

    def to_json(self) -> dict[str, Any]:
        """Every sample: ``baseline.save_entries``, which writes the file, thins them."""
        return {
            "runs": [r.to_json() for r in self.runs],
            "samples": {"latency": list(self.samples), "cpu": list(self.cpu_samples)},
            "clock": self.clock, "summary": dict(self.summary), "unit": self.unit, "items": self.items,
            "memory_growth": self.memory_growth, "memory_mechanism": self.memory_mechanism,
            "gpu_memory_growth": self.gpu_memory_growth, "instructions": self.instructions,
            "instruction_counts": list(self.instruction_counts), "metrics": dict(self.metrics),
            "metric_items": {name: s.to_dict() for name, s in self.metric_items.items()},
            "budget": json_safe(dict(self.budget)), "commit": self.commit, "time": self.time,
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> BaselineEntry:
        """From a stored entry that ``baseline.entry_problem`` accepted. An entry saved before runs were
        kept counts as the one run its samples and memory growth describe."""
        samples = d.get("samples") or {}
        metrics = {str(k): float(v) for k, v in (d.get("metrics") or {}).items()}
        items = {name: s for name, spread in (d.get("metric_items") or {}).items()
                 for s in [Sampled.read(metrics.get(name), spread)] if s is not None}
        runs = d.get("runs")
        saved = (tuple(SavedRun.from_json(r) for r in runs if isinstance(r, Mapping)) if isinstance(runs, list)
                 else (SavedRun(latency_level(samples.get("latency") or []), _finite(d.get("memory_growth"))),))
        return cls(tuple(float(x) for x in samples.get("latency") or ()), tuple(float(x) for x in samples.get("cpu") or ()),
                   d.get("clock") or "wall", d.get("unit") or "call", d.get("items"), _finite(d.get("memory_growth")),
                   d.get("memory_mechanism"), _finite(d.get("gpu_memory_growth")), _finite(d.get("instructions")),
                   tuple(int(c) for c in d.get("instruction_counts") or ()), metrics, items, saved,
                   dict(d.get("budget") or {}), dict(d.get("summary") or {}), d.get("commit"), d.get("time"))
