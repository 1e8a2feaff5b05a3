"""Reports: the terminal summary table and the ``--perf-json`` document.

A test's result is a JSON-safe dict (it travels on the pytest report, also through xdist):
``{"nodeid", "failed", "rows": [Row.to_dict()], "measurement": {...}, "metrics": {...}, "budget": {...}}``.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from .check import format_value

__all__ = ["JSON_FORMAT", "summary_table", "json_document", "write_json", "summarize_samples", "json_safe"]

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


def summarize_samples(samples: list[float]) -> dict[str, float]:
    arr = np.asarray(samples, dtype=float)
    if arr.size == 0:
        return {"n": 0}
    q = np.percentile(arr, [25, 50, 75, 90, 95, 99])
    return {
        "n": int(arr.size),
        "min": float(arr.min()),
        "max": float(arr.max()),
        "mean": float(arr.mean()),
        "stdev": float(arr.std(ddof=1)) if arr.size > 1 else 0.0,
        "median": float(q[1]),
        "iqr": float(q[2] - q[0]),
        "p90": float(q[3]),
        "p95": float(q[4]),
        "p99": float(q[5]),
    }


def thin(samples: list[float], limit: int = MAX_REPORT_SAMPLES) -> list[float]:
    """Keep at most ``limit`` samples, evenly spaced in time order."""
    if len(samples) <= limit:
        return list(samples)
    idx = np.linspace(0, len(samples) - 1, limit).round().astype(int)
    return [samples[i] for i in idx]


def _cell(row: dict[str, Any], key: str) -> str:
    value = row.get(key)
    if key in ("now", "baseline"):
        return format_value(value, row.get("unit", ""))
    if key == "ratio":
        return f"{value:.2f}x" if isinstance(value, (int, float)) else ""
    return "" if value is None else str(value)


def summary_table(results: Iterable[dict[str, Any]], with_baseline: bool = False) -> list[str]:
    """Aligned text lines: test, metric, budget, [baseline], now, ratio, verdict."""
    header = ["test", "metric", "budget"] + (["baseline"] if with_baseline else []) + ["now", "ratio", "verdict"]
    keys = ["metric", "budget"] + (["baseline"] if with_baseline else []) + ["now", "ratio", "verdict"]
    table = [header]
    for res in results:
        name = res["nodeid"]
        for i, row in enumerate(res.get("rows", [])):
            table.append([name if i == 0 else ""] + [_cell(row, k) for k in keys])
    if len(table) == 1:
        return []
    widths = [max(len(r[c]) for r in table) for c in range(len(header))]
    widths[0] = min(widths[0], 60)
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
    """Write atomically: a temp file in the same directory, then rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(doc, fh, indent=1, sort_keys=True)
            fh.write("\n")
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
