"""What both commands' tables share: the 95 % Wilson interval, a rate's cell, the machine line, and
writing a table between two markers of a markdown file."""

from __future__ import annotations

import math
import os
import platform
from pathlib import Path

from scipy import stats


def wilson(k: int, n: int) -> tuple[float, float]:
    """The 95 % Wilson interval of ``k`` successes in ``n`` trials (NaN when ``n`` is 0)."""
    if n == 0:
        return (math.nan, math.nan)
    ci = stats.binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    return ci.low, ci.high


def share(k: int, n: int) -> str:
    """``3.0 % (3; 1.0-8.5)``: the share, the count and its Wilson interval (``stored`` tables)."""
    lo, hi = wilson(k, n)
    return f"{100 * k / n:.1f} % ({k}; {100 * lo:.1f}-{100 * hi:.1f})"


def share_of(k: int, n: int) -> str:
    """``16.0 % (8/50; 8.3-28.5)``: the same with the number of trials (``ab`` tables); n/a for none."""
    if n == 0:
        return "n/a"
    lo, hi = wilson(k, n)
    return f"{100 * k / n:.1f} % ({k}/{n}; {100 * lo:.1f}-{100 * hi:.1f})"


def machine() -> str:
    """``x86_64, 2 logical cores (shared), Python 3.11.7``."""
    return f"{platform.machine()}, {os.cpu_count()} logical cores (shared), Python {platform.python_version()}"


def write_table(path: Path, md: str, begin: str, end: str) -> None:
    """Put ``md`` between the markers: in an existing file only that part changes (the block is
    appended when the file has no markers yet)."""
    old = path.read_text() if path.exists() else ""
    block = f"{begin}\n{md}{end}"
    if begin in old and end in old:
        new = old[: old.index(begin)] + block + old[old.index(end) + len(end):]
    else:
        new = (old.rstrip("\n") + "\n\n" if old else "") + block + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(new)
