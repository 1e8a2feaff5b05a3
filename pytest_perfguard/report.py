"""Reports: the table of checks (terminal, markdown, HTML) and the ``--perf-json`` document.

A test's result is a ``model.TestResult``; it meets JSON only in ``TestResult.to_json`` (on the
pytest report, through xdist, and in this document).
"""

from __future__ import annotations

import datetime as _dt
import json
import platform
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol

from .atomic import write_text
from .model import Check, TestResult, Verdict
from .table import Table
from .units import format_value

__all__ = ["JSON_FORMAT", "cell", "check_mark", "checks_table", "summary_table", "json_document", "write_json"]

# History of the --perf-json format:
# 1: first version (tests with rows, measurement summary + bounded samples, metrics, budgets).
#    Added since, readable by older versions: each row's "kind", "stat", "against", "interval" and "reason"
#    (why the verdict; "now", "baseline" and "ratio" are of the statistic "stat" it judged).
JSON_FORMAT = 1

_NOTABLE = (Verdict.UNJUDGED, Verdict.REGRESSED, Verdict.IMPROVED)


def cell(check: Check, key: str) -> str:
    """One cell of a check as shown in every table: values in the check's unit, ratio as ``1.23x``.

    A comparison's metric names the statistic it judged (``latency vs baseline (fastest rounds)``): its
    now, baseline and ratio are all of that statistic. A budget's ratio is now over the budget, and says so.
    """
    if key == "metric":
        named = bool(check.stat) and check.against == "baseline" and check.stat not in check.label
        return f"{check.label} ({check.stat})" if named else check.label
    if key == "verdict":
        return str(check.verdict)
    value = getattr(check, key)
    if key in ("now", "baseline"):
        return format_value(value, check.unit)
    if key == "ratio":
        if value is None:
            return ""
        exact = check.unit == "instr" and 0.9 < value < 1.1  # exact counts: a 0.3 % change is one
        shown = f"{value:.4f}x" if exact else f"{value:.2f}x"
        return shown if check.against == "baseline" else f"{shown} of budget"
    if key == "mde":
        return f"±{value:.0%}" if value is not None else ""
    return "" if value is None else str(value)


def check_mark(check: Check) -> str:
    """How a table marks the check's row (``table.Table.marks``)."""
    return "fail" if check.failed else "notable" if check.verdict in _NOTABLE else ""


_HEADINGS = {"mde": "could flag"}


def checks_table(tests: Iterable[tuple[str, Sequence[Check]]], keys: list[str]) -> Table:
    """One row per check of each (test name, its checks); the name on the test's first row only; each
    row's note is its check's reason (why "unchanged" beside a large ratio, why "improved")."""
    rows, marks, notes = [], [], []
    for name, checks in tests:
        for i, check in enumerate(checks):
            rows.append([name if i == 0 else ""] + [cell(check, k) for k in keys])
            marks.append(check_mark(check))
            notes.append(check.reason)
    return Table(["test", *(_HEADINGS.get(k, k) for k in keys)], rows, marks, notes)


def summary_table(results: Iterable[TestResult], with_baseline: bool = False) -> list[str]:
    """Aligned text lines: test, metric, budget, [baseline], now, ratio, verdict, [could flag: the
    smallest change a comparison across saved runs could have caught]."""
    results = list(results)
    mde = any(c.mde is not None for r in results for c in r.checks)
    keys = ["metric", "budget"] + (["baseline"] if with_baseline else []) + ["now", "ratio", "verdict"] + (
        ["mde"] if mde else [])
    table = checks_table(((r.nodeid, r.checks) for r in results), keys)
    return table.text(first_width=60) if table else []


class Written(Protocol):
    """A test as the JSON document holds it: a ``TestResult``, or ``perfguard ab``'s ``ABTest``."""

    @property
    def nodeid(self) -> str: ...

    def to_json(self) -> dict[str, Any]: ...


def json_document(results: Iterable[Written], extra: dict[str, Any] | None = None) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "format": JSON_FORMAT,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "tests": [r.to_json() for r in sorted(results, key=lambda r: r.nodeid)],
    }
    doc.update(extra or {})
    return doc


def write_json(path: Path, doc: dict[str, Any]) -> None:
    """Write atomically (see ``atomic.write_text``), creating the directory."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, json.dumps(doc, indent=1, sort_keys=True) + "\n")
