"""Parsing ``perf_budget`` arguments and units.

Every accepted form is listed in ``FORMS``; a value that matches none raises
``BudgetError`` naming the kwarg, the bad value and the accepted forms.  Units follow
SI and IEC exactly: ``MB`` is 10**6 bytes, ``MiB`` is 2**20 bytes.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

from .measure import CLOCKS

__all__ = [
    "parse_clock",
    "BudgetError",
    "Budget",
    "Limit",
    "FORMS",
    "parse_budget",
    "parse_duration",
    "parse_size",
    "parse_ratio",
]


class BudgetError(ValueError):
    """A malformed budget: the message names the kwarg, the value and the accepted forms."""


FORMS = {
    "latency": '"15ms", "800us", 1.5 (seconds), {"p50": "10ms", "p99": "40ms"}, "+10%" (vs baseline)',
    "memory": '"512MiB", "1.5GB", 1048576 (bytes), "+20%" (vs baseline)',
    "gpu_memory": '"512MiB", "1.5GB", 1048576 (bytes), "+20%" (vs baseline)',
    "accuracy": '0.98 (floor, 0..1), "98%" (floor), "-0.5%" (largest relative drop vs baseline)',
    "throughput": '"2000/s", "1.5k/s", 2000 (items per second, floor), "-10%" (vs baseline)',
    "metrics": '{"name": ">=0.9" | "<=5" | "==100000" | ">1" | "<1" | 0.9 (floor) | "-1%" | "+1%"}',
    "tolerance": '"5%", 0.05',
    "instructions": '"25M", 2.5e7 (instructions per call or item, under --perf-instructions), "+1%" (vs baseline)',
    "clock": '"wall" (default), "cpu" (CPU time: latency budgets and the regression gate)',
}

_TIME_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "min": 60.0}
_SIZE_UNITS = {
    "B": 1,
    "kB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
    "KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "TiB": 2**40,
}
_AMBIGUOUS_SIZE = {"KB": "kB (1000 B) or KiB (1024 B)", "K": "kB or KiB", "M": "MB or MiB", "G": "GB or GiB",
                   "Mb": "MB (bytes; Mb would be bits)", "mb": "MB or MiB", "gb": "GB or GiB", "kb": "kB or KiB"}
_SI_PREFIX = {"": 1.0, "k": 1e3, "M": 1e6, "G": 1e9}
# Unambiguous (one way to match any digit string), so a malformed long string fails in linear time.
_NUMBER = r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?"
MAX_TEXT = 100  # characters in one budget string; longer is refused before any parsing
_QUANT_RE = re.compile(rf"^\s*({_NUMBER})\s*([A-Za-zµμ]*)\s*$")
_REL_RE = re.compile(rf"^\s*([-+])\s*({_NUMBER})\s*%\s*$")
_PCT_RE = re.compile(rf"^\s*({_NUMBER})\s*%\s*$")
_RATE_RE = re.compile(rf"^\s*({_NUMBER})\s*([kMG]?)\s*/\s*s\s*$")
_CMP_RE = re.compile(rf"^\s*(>=|<=|==|>|<)\s*(-?{_NUMBER})\s*$")
_STAT_RE = re.compile(r"^(?:p(\d{1,2}(?:\.\d+)?)|median|mean|max)$")


_MEASURED = ("latency", "throughput", "memory", "gpu_memory", "instructions")
_TIMED = ("latency", "throughput", "memory", "gpu_memory")  # what a session under callgrind does not measure


@dataclass(frozen=True)
class Limit:
    """One check: ``value <op> threshold`` for an absolute limit, or a relative change vs baseline.

    ``relative`` limits hold ``threshold`` as a signed fraction (``+0.10`` = at most 10 % above
    the baseline, ``-0.005`` = at most 0.5 % below it) and are resolved once a baseline exists.
    """

    metric: str  # "latency", "memory", "gpu_memory", "accuracy", "throughput" or a recorded metric
    op: str  # "<=", ">=", "==", "<", ">"
    threshold: float
    stat: str = ""  # latency statistic: "p50", "p99", "mean", "max"; empty for other metrics
    relative: bool = False
    text: str = ""  # as the user wrote it, for messages

    @property
    def label(self) -> str:
        return f"{self.metric} {self.stat}" if self.stat else self.metric


@dataclass(frozen=True)
class Budget:
    limits: tuple[Limit, ...] = ()
    tolerance: float | None = None
    raw: dict[str, Any] = field(default_factory=dict)
    clock: str | None = None  # "cpu": latency limits and the gate on CPU time; None: the run's clock

    def metrics_only(self) -> Budget:
        """The absolute limits on recorded metrics (what one unmeasured run can check)."""
        kept = tuple(lim for lim in self.limits if lim.metric not in _MEASURED and not lim.relative)
        return Budget(kept, self.tolerance, self.raw, self.clock)

    def for_run(self, instructions: bool) -> Budget:
        """The limits one kind of run checks: a run under callgrind counts instructions and times nothing;
        a timed run counts no instructions."""
        drop = _TIMED if instructions else ("instructions",)
        return Budget(tuple(lim for lim in self.limits if lim.metric not in drop), self.tolerance, self.raw, self.clock)

    def for_metric(self, metric: str) -> list[Limit]:
        return [lim for lim in self.limits if lim.metric == metric]

    @property
    def needs_timing(self) -> bool:
        return any(lim.metric in ("latency", "throughput") for lim in self.limits)

    @property
    def percentiles(self) -> list[float]:
        """The latency percentiles (0..100) this budget judges, for sample-size planning."""
        out = []
        for lim in self.limits:
            if lim.metric == "latency" and lim.stat.startswith("p"):
                out.append(float(lim.stat[1:]))
        return out


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:40]}...({len(text)} characters)"


def _bad(kwarg: str, value: Any, why: str = "") -> BudgetError:
    extra = f" ({why})" if why else ""
    return BudgetError(f"{kwarg}={_shown(value)} is not a valid budget{extra}; accepted forms: {FORMS[kwarg]}")


def _number(value: Any, kwarg: str) -> float | None:
    """A finite float from an int or float (never a bool); None for anything else."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        num = float(value)
    except OverflowError:
        raise _bad(kwarg, value, "too large a number") from None
    if not math.isfinite(num):
        raise _bad(kwarg, value, "not a finite number")
    return num


def _text(value: Any, kwarg: str) -> str | None:
    """The string, refused when too long to be a budget (no regex ever sees a huge string)."""
    if not isinstance(value, str):
        return None
    if len(value) > MAX_TEXT:
        raise _bad(kwarg, value, f"longer than {MAX_TEXT} characters")
    return value


def _float(text: str, kwarg: str, value: Any) -> float:
    num = float(text)
    if not math.isfinite(num):
        raise _bad(kwarg, value, "not a finite number")
    return num


def _quantity(value: Any, kwarg: str) -> tuple[float, str | None]:
    """A bare number (unit None), or the number and unit of text such as ``"15ms"``."""
    num = _number(value, kwarg)
    if num is not None:
        return num, None
    text = _text(value, kwarg)
    m = _QUANT_RE.match(text) if text is not None else None
    if m is None:
        raise _bad(kwarg, value)
    return _float(m.group(1), kwarg, value), m.group(2)


def parse_duration(value: Any, kwarg: str = "latency") -> float:
    """``"15ms"`` -> 0.015; a bare number is seconds."""
    num, unit = _quantity(value, kwarg)
    if unit is not None:
        if unit not in _TIME_UNITS:
            raise _bad(kwarg, value, f"unknown time unit {unit!r}" if unit else "")
        num *= _TIME_UNITS[unit]
    if not math.isfinite(num) or num <= 0:
        raise _bad(kwarg, value, "must be a positive duration")
    return num


def parse_size(value: Any, kwarg: str = "memory") -> float:
    """``"512MiB"`` -> 536870912; ``"1.5GB"`` -> 1.5e9; a bare number is bytes."""
    num, unit = _quantity(value, kwarg)
    if unit is not None:
        if unit in _AMBIGUOUS_SIZE:
            raise _bad(kwarg, value, f"ambiguous unit {unit!r}: write {_AMBIGUOUS_SIZE[unit]}")
        if unit not in _SIZE_UNITS:
            raise _bad(kwarg, value, f"unknown size unit {unit!r}" if unit else "a unit is required")
        num *= _SIZE_UNITS[unit]
    if not math.isfinite(num) or num < 0:
        raise _bad(kwarg, value, "must be a non-negative size")
    return num


def _percent(value: Any, kwarg: str) -> float | None:
    """``"98%"`` -> 0.98, a bare number as it is; None when neither."""
    num = _number(value, kwarg)
    text = _text(value, kwarg)
    if num is None and text is not None:
        m = _PCT_RE.match(text)
        num = _float(m.group(1), kwarg, value) / 100 if m else None
    return num


def parse_ratio(value: Any, kwarg: str = "tolerance") -> float:
    """``"5%"`` -> 0.05; a bare number is a fraction."""
    num = _percent(value, kwarg)
    if num is None:
        raise _bad(kwarg, value)
    if num < 0 or num >= 10:
        raise _bad(kwarg, value, "must be a non-negative fraction")
    return num


def _relative(value: Any, kwarg: str) -> tuple[str, float] | None:
    text = _text(value, kwarg)
    if text is not None:
        m = _REL_RE.match(text)
        if m:
            return m.group(1), _float(m.group(2), kwarg, value) / 100
    return None


def _latency(value: Any) -> list[Limit]:
    if isinstance(value, dict):
        if not value:
            raise _bad("latency", value, "empty dict")
        limits = []
        for stat, v in value.items():
            m = _STAT_RE.match(stat) if isinstance(stat, str) else None
            if not m:
                raise _bad("latency", value, f"unknown statistic {_shown(stat)}: use p50, p90, p99, p99.9, median, "
                                             "mean or max")
            if m.group(1) is not None and not 0 < float(m.group(1)) < 100:
                raise _bad("latency", value, f"percentile {stat!r} must be between p0 and p100")
            name = "p50" if stat == "median" else stat
            limits.extend(_latency_one(v, name))
        return limits
    return _latency_one(value, "p50")


def _latency_one(value: Any, stat: str) -> list[Limit]:
    rel = _relative(value, "latency")
    if rel:
        sign, frac = rel
        if sign == "-":
            raise _bad("latency", value, "a latency budget relative to the baseline is a ceiling: use '+N%'")
        return [Limit("latency", "<=", frac, stat, relative=True, text=str(value))]
    return [Limit("latency", "<=", parse_duration(value), stat, text=str(value))]


def _size(kwarg: str, value: Any) -> list[Limit]:
    rel = _relative(value, kwarg)
    if rel:
        sign, frac = rel
        if sign == "-":
            raise _bad(kwarg, value, "a memory budget relative to the baseline is a ceiling: use '+N%'")
        return [Limit(kwarg, "<=", frac, relative=True, text=str(value))]
    return [Limit(kwarg, "<=", parse_size(value, kwarg), text=str(value))]


def _accuracy(value: Any) -> list[Limit]:
    rel = _relative(value, "accuracy")
    if rel:
        sign, frac = rel
        if sign == "+":
            raise _bad("accuracy", value, "a relative accuracy budget is the largest drop: use '-N%'")
        return [Limit("accuracy", ">=", -frac, relative=True, text=str(value))]
    num = _percent(value, "accuracy")
    if num is None or not 0 <= num <= 1:
        raise _bad("accuracy", value, "a floor must lie in 0..1" if num is not None else "")
    return [Limit("accuracy", ">=", num, text=str(value))]


def _throughput(value: Any) -> list[Limit]:
    rel = _relative(value, "throughput")
    if rel:
        sign, frac = rel
        if sign == "+":
            raise _bad("throughput", value, "a relative throughput budget is the largest drop: use '-N%'")
        return [Limit("throughput", ">=", -frac, relative=True, text=str(value))]
    return [Limit("throughput", ">=", _si_number(value, "throughput", _RATE_RE, "rate"), text=str(value))]


def _si_number(value: Any, kwarg: str, pattern: re.Pattern[str], what: str) -> float:
    """A positive number, or text ``pattern`` matches as a number and an SI prefix (``"1.5k/s"``, ``"25M"``)."""
    num = _number(value, kwarg)
    text = _text(value, kwarg)
    if num is None and text is not None:
        m = pattern.match(text)
        num = _float(m.group(1), kwarg, value) * _SI_PREFIX[m.group(2)] if m and m.group(2) in _SI_PREFIX else None
    if num is None or not math.isfinite(num) or num <= 0:
        raise _bad(kwarg, value, f"must be a positive {what}" if num is not None else "")
    return num


def _instructions(value: Any) -> list[Limit]:
    rel = _relative(value, "instructions")
    if rel:
        sign, frac = rel
        return [Limit("instructions", "<=", frac if sign == "+" else -frac, relative=True, text=str(value))]
    return [Limit("instructions", "<=", _si_number(value, "instructions", _QUANT_RE, "count"), text=str(value))]


def _metrics(value: Any) -> list[Limit]:
    if not isinstance(value, dict) or not value:
        raise _bad("metrics", value, "a non-empty dict of metric name to condition")
    limits = []
    for name, cond in value.items():
        if not isinstance(name, str) or not name.isidentifier() or len(name) > MAX_TEXT:
            raise _bad("metrics", value, f"metric name {_shown(name)} must be an identifier")
        if name in ("latency", "memory", "gpu_memory", "accuracy", "throughput", "instructions"):
            raise _bad("metrics", value, f"{name!r} has its own kwarg")
        rel = _relative(cond, "metrics")
        if rel:
            sign, frac = rel
            op = "<=" if sign == "+" else ">="
            limits.append(Limit(name, op, frac if sign == "+" else -frac, relative=True, text=str(cond)))
            continue
        num = _number(cond, "metrics")
        if num is not None:
            limits.append(Limit(name, ">=", num, text=str(cond)))
            continue
        text = _text(cond, "metrics")
        m = _CMP_RE.match(text) if text is not None else None
        if text is None or m is None:
            raise _bad("metrics", value, f"condition {_shown(cond)} for {name!r}")
        limits.append(Limit(name, m.group(1), _float(m.group(2), "metrics", value), text=text.strip()))
    return limits


_PARSERS = {
    "latency": _latency,
    "memory": lambda v: _size("memory", v),
    "gpu_memory": lambda v: _size("gpu_memory", v),
    "accuracy": _accuracy,
    "throughput": _throughput,
    "metrics": _metrics,
    "instructions": _instructions,
}


def parse_budget(kwargs: dict[str, Any]) -> Budget:
    """Parse the kwargs of one ``perf_budget`` marker; raises ``BudgetError``."""
    limits: list[Limit] = []
    tolerance = clock = None
    for key, value in kwargs.items():
        if key == "tolerance":
            tolerance = parse_ratio(value, "tolerance")
        elif key == "clock":
            clock = parse_clock(value)
        elif key in _PARSERS:
            if value is None:
                continue
            limits.extend(_PARSERS[key](value))
        else:
            raise BudgetError(f"unknown keyword {_shown(key)}; perf_budget accepts: {', '.join(FORMS)}")
    return Budget(tuple(limits), tolerance, dict(kwargs), clock)


def parse_clock(value: Any) -> str:
    """``"wall"`` or ``"cpu"`` (``measure.CLOCKS``); raises ``BudgetError``."""
    if isinstance(value, str) and value.strip().lower() in CLOCKS:
        return value.strip().lower()
    raise _bad("clock", value)
