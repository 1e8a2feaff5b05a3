"""Markdown summary for a pull-request comment or ``$GITHUB_STEP_SUMMARY`` (no pytest import).

Verdict first, then what changed (regressions, budget breaches, improvements) as a table with
units and ratios, then every check folded in ``<details>``. Input: ``model.TestResult`` objects,
optionally with ``messages`` (failures that have no check, e.g. the test body failed).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from .atomic import write_text
from .model import Check, TestResult, Verdict
from .report import checks_table
from .table import markdown_cell

__all__ = ["markdown_summary", "row_kind", "write_markdown"]

_KINDS = (("unjudged", "Not judged: the gate could not compare"), ("regressed", "Regressions"),
          ("breach", "Budget breaches"), ("improved", "Improvements"))
_COLUMNS = ["metric", "budget", "baseline", "now", "ratio", "verdict"]


def row_kind(check: Check) -> str:
    """``unjudged``, ``regressed``, ``breach`` (a failed budget), ``improved`` or ``other``."""
    if check.verdict in (Verdict.UNJUDGED, Verdict.REGRESSED, Verdict.IMPROVED):
        return str(check.verdict)
    return "breach" if check.failed else "other"


def _table(lines: list[tuple[str, Check]]) -> list[str]:
    return checks_table(((nodeid, [check]) for nodeid, check in lines), _COLUMNS).markdown()


def markdown_summary(results: Iterable[TestResult], *, title: str = "perfguard", context: Sequence[str] = (),
                     errors: Sequence[str] = (), messages: Mapping[str, Sequence[str]] | None = None) -> str:
    """The whole markdown document (ends with a newline). ``errors``: why the gate could not judge
    the run at all (an unusable baseline file): they fail it and come first. ``messages``: per test,
    failures that have no check (``perfguard ab``: the test body failed on the head)."""
    messages = messages or {}
    results = sorted(results, key=lambda r: r.nodeid)
    by_kind: dict[str, list[tuple[str, Check]]] = {k: [] for k, _ in _KINDS}
    everything: list[tuple[str, Check]] = []
    failures_without_rows: list[tuple[str, str]] = []
    for res in results:
        for check in res.checks:
            everything.append((res.nodeid, check))
            kind = row_kind(check)
            if kind in by_kind:
                by_kind[kind].append((res.nodeid, check))
        failing = any(row_kind(c) in ("unjudged", "regressed", "breach") for c in res.checks)
        own = messages.get(res.nodeid) or []
        if not failing:
            failures_without_rows += [(res.nodeid, message) for message in own]
            if res.outcome == "failed" and not own:
                failures_without_rows.append((res.nodeid, "the test failed (see the pytest report)"))
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
    out += [f"- **ERROR**: {markdown_cell(error)}" for error in errors] + ([""] if errors else [])
    out += [f"- {line}" for line in context]
    if context:
        out.append("")
    for kind, heading in _KINDS:
        if by_kind[kind]:
            out += [f"### {heading}", "", *_table(by_kind[kind]), ""]
    if failures_without_rows:
        out += ["### Failures", ""]
        out += [f"- `{nodeid}`: {markdown_cell(message)}" for nodeid, message in failures_without_rows]
        out.append("")
    if everything:
        out += [f"<details><summary>All {len(everything)} rows</summary>", "", *_table(everything), "",
                "</details>", ""]
    return "\n".join(out)


def write_markdown(path: Path, text: str) -> None:
    """Write atomically, creating the directory (each CI step has its own step-summary file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, text)
