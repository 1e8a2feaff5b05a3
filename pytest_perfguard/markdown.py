"""Markdown summary for a pull-request comment or ``$GITHUB_STEP_SUMMARY`` (no pytest import).

Verdict first, then what changed (regressions, budget breaches, improvements) as a table with
units and ratios, then every row folded in ``<details>``. Input: test results as in
``--perf-json`` (``{"nodeid", "rows": [Row dicts], ...}``), optionally with ``messages`` (failures
that have no row, e.g. the test body failed) and ``verdict``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from .atomic import write_text
from .check import FAILING
from .report import row_cell

__all__ = ["markdown_summary", "row_kind", "write_markdown"]

_KINDS = (("unjudged", "Not judged: the gate could not compare"), ("regressed", "Regressions"),
          ("breach", "Budget breaches"), ("improved", "Improvements"))


def row_kind(row: dict[str, Any]) -> str:
    """``unjudged``, ``regressed``, ``breach`` (a failed budget), ``improved`` or ``other``."""
    verdict = row.get("verdict")
    if verdict in ("unjudged", "regressed", "improved"):
        return str(verdict)
    if verdict in FAILING:
        return "breach"
    return "other"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _table(lines: list[tuple[str, dict[str, Any]]]) -> list[str]:
    out = ["| test | metric | budget | baseline | now | ratio | verdict |", "|---|---|---|---|---|---|---|"]
    for nodeid, row in lines:
        cells = [f"`{nodeid}`", row.get("metric", ""), row.get("budget", ""), row_cell(row, "baseline"),
                 row_cell(row, "now"), row_cell(row, "ratio"), f"**{row.get('verdict')}**"
                 if row_kind(row) != "other" else str(row.get("verdict", ""))]
        out.append("| " + " | ".join(_cell(str(c)) for c in cells) + " |")
    return out


def markdown_summary(results: Iterable[dict[str, Any]], *, title: str = "perfguard",
                     context: Sequence[str] = (), errors: Sequence[str] = ()) -> str:
    """The whole markdown document (ends with a newline). ``errors``: why the gate could not judge
    the run at all (an unusable baseline file): they fail it and come first."""
    results = sorted(results, key=lambda r: r["nodeid"])
    by_kind: dict[str, list[tuple[str, dict[str, Any]]]] = {k: [] for k, _ in _KINDS}
    everything: list[tuple[str, dict[str, Any]]] = []
    failures_without_rows: list[tuple[str, str]] = []
    for res in results:
        for row in res.get("rows") or []:
            everything.append((res["nodeid"], row))
            kind = row_kind(row)
            if kind in by_kind:
                by_kind[kind].append((res["nodeid"], row))
        for message in res.get("messages") or []:
            if not any(row_kind(r) in ("unjudged", "regressed", "breach") for r in res.get("rows") or []):
                failures_without_rows.append((res["nodeid"], message))
        if res.get("outcome") == "failed" and not res.get("messages") and not any(
                row_kind(r) in ("unjudged", "regressed", "breach") for r in res.get("rows") or []):
            failures_without_rows.append((res["nodeid"], "the test failed (see the pytest report)"))
    tallies = ((len(errors), "gate error", "gate errors"),
               (len(by_kind["unjudged"]), "unjudged check", "unjudged checks"),
               (len(by_kind["regressed"]), "regression", "regressions"),
               (len(by_kind["breach"]), "budget breach", "budget breaches"),
               (len(failures_without_rows), "failed test", "failed tests"))
    counts = [f"{n} {one if n == 1 else many}" for n, one, many in tallies if n]
    if counts:
        verdict = f"**FAILED**: {', '.join(counts)} in {len(results)} perf tests"
    else:
        verdict = f"**PASSED**: {len(results)} perf tests, no regression, no budget breach"
    if by_kind["improved"]:
        n = len(by_kind["improved"])
        verdict += f"; {n} improvement{'' if n == 1 else 's'}"
    out = [f"## {title}: {'failed' if counts else 'passed'}", "", verdict, ""]
    out += [f"- **ERROR**: {_cell(error)}" for error in errors] + ([""] if errors else [])
    out += [f"- {line}" for line in context]
    if context:
        out.append("")
    for kind, heading in _KINDS:
        if by_kind[kind]:
            out += [f"### {heading}", "", *_table(by_kind[kind]), ""]
    if failures_without_rows:
        out += ["### Failures", ""]
        out += [f"- `{nodeid}`: {_cell(message)}" for nodeid, message in failures_without_rows]
        out.append("")
    if everything:
        out += [f"<details><summary>All {len(everything)} rows</summary>", "", *_table(everything), "",
                "</details>", ""]
    return "\n".join(out)


def write_markdown(path: Path, text: str) -> None:
    """Write atomically, creating the directory (each CI step has its own step-summary file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, text)
