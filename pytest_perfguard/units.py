"""Numbers as people read them: durations, sizes and rates, formatted in one place for the
terminal, markdown, HTML, plots and the CLI (no pytest import)."""

from __future__ import annotations

import math

__all__ = ["format_value", "format_duration", "time_scale"]


def format_value(value: float | None, unit: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if unit.startswith("s/"):
        per = unit[2:]
        for name, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6), ("ns", 1e-9)):
            if abs(value) >= scale or name == "ns":
                return f"{value / scale:.2f} {name}/{per}"
    if unit == "B":
        for name, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
            if abs(value) >= scale:
                return f"{value / scale:.2f} {name}"
        return f"{value:.0f} B"
    if unit == "items/s":
        for name, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
            if abs(value) >= scale:
                return f"{value / scale:.2f}{name}/s"
        return f"{value:.2f}/s"
    if unit == "instr":
        for name, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
            if abs(value) >= scale:
                return f"{value / scale:.4g}{name} instr"
        return f"{value:.0f} instr"
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.4g}"


def time_scale(seconds: float) -> tuple[str, float]:
    """The unit (name, seconds per unit) in which ``seconds`` reads as a number >= 1."""
    for name, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if abs(seconds) >= scale:
            return name, scale
    return "ns", 1e-9


def format_duration(seconds: float) -> str:
    """Human time with three significant digits: ns, µs, ms, s, then min and h for long totals."""
    if seconds >= 3600:
        return f"{seconds / 3600:.3g} h"
    if seconds >= 60:
        return f"{seconds / 60:.3g} min"
    name, scale = time_scale(seconds)
    return f"{seconds / scale:.3g} {name}"
