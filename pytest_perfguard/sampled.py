"""Metrics recorded from their items (``perf.record(accuracy=per_item_correct)``): the mean with its
sampling error, judged against the baseline's with that error instead of as two single numbers.

An accuracy over 1,000 items drawn at random moves by ~1 % (relative) from one draw to the next:
judged as single numbers, a "-1%" budget fails about a quarter of unchanged runs. Given the items,
the spread is known: for 0/1 outcomes the binomial one (with the Agresti-Coull shrinkage
(k+2)/(n+4), so that 1,000 of 1,000 correct does not claim an exact mean), for any other per-item
values (losses, scores) their SD. The two means are judged with Welch's t, one-sided each way; a row
fails when the change is significant at its share of the run's error budget *and* beyond the
tolerance, like every other comparison with the baseline. When the items are the same every run
(a fixed evaluation set, a deterministic model), the means are exact across runs and this test asks
more than needed: a model judged on a fixed set can record the single number instead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from .runnoise import one_sided_t, verdict_of, verdict_why

MIN_ITEMS = 2


@dataclass(frozen=True)
class Sampled:
    """A metric's mean over its items, the items' SD and their count."""

    mean: float
    sd: float
    n: int

    @classmethod
    def of(cls, values: Any) -> Sampled:
        """From per-item values; ``ValueError`` with the reason when they cannot make a mean with an error."""
        x = np.asarray(values, dtype=float).ravel()
        if len(x) < MIN_ITEMS:
            raise ValueError(f"needs at least {MIN_ITEMS} items, got {len(x)}")
        if not np.isfinite(x).all():
            raise ValueError("an item's value is not finite")
        if np.isin(x, (0.0, 1.0)).all():
            p = (float(x.sum()) + 2) / (len(x) + 4)
            sd = math.sqrt(p * (1 - p))
        else:
            sd = float(x.std(ddof=1))
        return cls(float(x.mean()), sd, len(x))

    @property
    def var_of_mean(self) -> float:
        return self.sd**2 / self.n

    @classmethod
    def pooled(cls, parts: list[Sampled]) -> Sampled:
        """All parts' items as one sample (``perfguard ab``: every run of one side)."""
        n = sum(p.n for p in parts)
        mean = sum(p.n * p.mean for p in parts) / n
        within = sum((p.n - 1) * p.sd**2 for p in parts)
        between = sum(p.n * (p.mean - mean) ** 2 for p in parts)
        return cls(mean, math.sqrt((within + between) / max(1, n - 1)), n)

    def to_dict(self) -> dict[str, float | int]:
        """The file edge: the mean itself is stored with the other metrics."""
        return {"n": self.n, "sd": self.sd}

    @classmethod
    def read(cls, mean: float | None, spread: Any) -> Sampled | None:
        """From a result's or entry's ``metric_items`` record (already validated), or None."""
        if mean is None or not isinstance(spread, dict):
            return None
        return cls(float(mean), float(spread["sd"]), int(spread["n"]))


@dataclass(frozen=True)
class MetricTest:
    base: float
    now: float
    ratio: float
    p_worse: float
    p_better: float
    alpha: float
    mde: float | None  # relative to the base (0.02: 2 %), None when the base is 0
    verdict: str  # regressed | improved | unchanged
    reason: str


def compare_sampled(base: Sampled, now: Sampled, *, tolerance: float, higher_is_better: bool,
                    alpha: float) -> MetricTest:
    """Welch's t of the two means, one-sided each way at ``alpha``; "regressed" also needs the change
    beyond ``tolerance`` (relative to the base's mean)."""
    sign = 1.0 if higher_is_better else -1.0
    worse = sign * (base.mean - now.mean)  # > 0: worse
    vb, vn = base.var_of_mean, now.var_of_mean
    var = vb + vn
    den = (vb**2 / (base.n - 1) if base.n > 1 else 0.0) + (vn**2 / (now.n - 1) if now.n > 1 else 0.0)
    df = max(1, int(var**2 / den)) if den > 0 else max(1, base.n + now.n - 2)
    p_worse, p_better, crit = one_sided_t(worse, var, df, alpha)
    limit = abs(base.mean) * tolerance
    ratio = now.mean / base.mean if base.mean else (1.0 if now.mean == base.mean else math.inf)
    mde = max(limit, crit) / abs(base.mean) if base.mean else None
    verdict = verdict_of(p_worse, p_better, alpha, worse > limit, -worse > limit)
    could = f"; could flag changes from {mde:.1%}" if mde is not None else ""
    why = verdict_why(verdict, p_worse, p_better, alpha, worse > limit, -worse > limit, f"the {tolerance:.1%} tolerance",
                      "the items' sampling error")
    reason = (f"means of {base.n:,} and {now.n:,} items (one-sided p={min(p_worse, p_better):.2g}, alpha "
              f"{alpha:.2g}, Welch t with {df} df{could}): {why}")
    return MetricTest(base.mean, now.mean, ratio, p_worse, p_better, alpha, mde, verdict, reason)
