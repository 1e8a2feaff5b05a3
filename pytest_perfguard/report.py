"""Reports: the terminal summary table and the ``--perf-json`` document.

A test's result is a JSON-safe dict (it travels on the pytest report, also through xdist):
``{"nodeid", "failed", "rows": [Row.to_dict()], "measurement": {...}, "metrics": {...}, "budget": {...}}``.
"""

from __future__ import annotations

import datetime as _dt
import json
import platform
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .atomic import write_text
from .units import format_value

__all__ = ["JSON_FORMAT", "MAX_REPORT_SAMPLES", "align", "row_cell", "summary_table", "json_document", "write_json", "json_safe"]

# History of the --perf-json format:
# 1: first version (tests with rows, measurement summary + bounded samples, metrics, budgets).
JSON_FORMAT = 1
MAX_REPORT_SAMPLES = 1000


def json_safe(value: Any) -> Any:
    """Budgets as written may hold anything; keep what JSON can say, repr the rest."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return repr(value)


def row_cell(row: dict[str, Any], key: str) -> str:
    """One cell of a result row as shown in every table: values in the row's unit, ratio as ``1.23x``."""
    value = row.get(key)
    if key in ("now", "baseline"):
        return format_value(value, row.get("unit", ""))
    if key == "ratio":
        if not isinstance(value, (int, float)):
            return ""
        exact = row.get("unit") == "instr" and 0.9 < value < 1.1  # exact counts: a 0.3 % change is one
        return f"{value:.4f}x" if exact else f"{value:.2f}x"
    if key == "mde":
        return f"±{value:.0%}" if isinstance(value, (int, float)) else ""
    return "" if value is None else str(value)


def summary_table(results: Iterable[dict[str, Any]], with_baseline: bool = False) -> list[str]:
    """Aligned text lines: test, metric, budget, [baseline], now, ratio, verdict, [could flag: the
    smallest change a comparison across saved runs could have caught]."""
    results = list(results)
    mde = any(row.get("mde") is not None for res in results for row in res.get("rows", []))
    keys = ["metric", "budget"] + (["baseline"] if with_baseline else []) + ["now", "ratio", "verdict"] + (
        ["mde"] if mde else [])
    header = ["test", *keys[:-1], "could flag"] if mde else ["test", *keys]
    table = [header]
    for res in results:
        name = res["nodeid"]
        for i, row in enumerate(res.get("rows", [])):
            table.append([name if i == 0 else ""] + [row_cell(row, k) for k in keys])
    if len(table) == 1:
        return []
    return align(table[0], table[1:], first_width=60)


def align(header: list[str], rows: list[list[str]], first_width: int | None = None) -> list[str]:
    """Header, a rule, then the rows, in columns; a first column over ``first_width`` keeps its end."""
    table = [header, *rows]
    widths = [max(len(r[c]) for r in table) for c in range(len(header))]
    if first_width is not None:
        widths[0] = min(widths[0], first_width)
    lines = []
    for r in table:
        first = r[0] if len(r[0]) <= widths[0] else "..." + r[0][-(widths[0] - 3):]
        cells = [first.ljust(widths[0])] + [c.ljust(w) for c, w in zip(r[1:], widths[1:])]
        lines.append("  ".join(cells).rstrip())
    lines.insert(1, "-" * len(lines[0]))
    return lines


def json_document(results: list[dict[str, Any]], extra: dict[str, Any] | None = None) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "format": JSON_FORMAT,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "tests": sorted(results, key=lambda r: r["nodeid"]),
    }
    doc.update(extra or {})
    return doc


def write_json(path: Path, doc: dict[str, Any]) -> None:
    """Write atomically (see ``atomic.write_text``), creating the directory."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, json.dumps(doc, indent=1, sort_keys=True) + "\n")
