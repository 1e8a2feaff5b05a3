"""The timed reference workload: pure Python plus small numpy work, ~1.5 ms per call on the 2-core
box, and its variants that really do 5 %, 10 % and 20 % more work (more iterations of the same
inner unit).

``VARIANTS``: ``A`` (the base), ``A2`` (the base again, measured separately: an A/A candidate in
the same session) and ``s05``, ``s10``, ``s20`` (the slower ones).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

VARIANTS = ("A", "A2", "s05", "s10", "s20")
INDEX = {v: k for k, v in enumerate(VARIANTS)}
EXTRA = {"A": 0.0, "A2": 0.0, "s05": 0.05, "s10": 0.10, "s20": 0.20}
BASE_UNITS = 250  # inner units per call for the base workload (~6 us each)

VEC = np.linspace(0.0, 1.0, 16)
MAT = np.arange(16.0).reshape(4, 4) / 16.0


def unit(k: int) -> float:
    """One unit of mixed work: a small pure-Python loop, a dict and a few tiny numpy ops."""
    acc = 0
    d: dict[int, int] = {}
    for i in range(24):
        acc += (i * k) % 7
        d[i & 7] = acc
    v = VEC * (k % 5) + 1.0
    m = MAT @ MAT[k % 4]
    return acc + float(v.sum()) + float(m[0]) + len(d)


def make_workload(units: int) -> Callable[[], float]:
    def workload() -> float:
        total = 0.0
        for k in range(units):
            total += unit(k)
        return total

    return workload


WORKLOADS = {name: make_workload(int(round(BASE_UNITS * (1 + extra)))) for name, extra in EXTRA.items()}
