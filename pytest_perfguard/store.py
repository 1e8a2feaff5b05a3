"""This run's baseline: which file, what it holds, saving (no pytest)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .baseline import Baseline, BaselineError, baseline_path, git_commit, load_baseline, save_entries
from .budget import Budget
from .gate import Saved, baseline_rows, unjudged
from .machine import compare_fingerprints, machine_fingerprint, machine_slug, speed_score
from .model import BaselineEntry, Check, TestResult, Verdict
from .runnoise import ProcessOffset, SuiteModel

__all__ = ["RunBaseline"]


@dataclass
class RunBaseline:
    """Loaded once per process; every problem becomes a message, never an exception (and never a pass:
    see ``session_errors`` and ``rows``)."""

    directory: Path
    machine_name: str | None = None
    threads: int | None = None
    suffix: str = ""  # after the slug: "-callgrind" for instruction counts
    fingerprint: dict[str, Any] = field(default_factory=dict)
    slug: str = ""
    path: Path | None = None
    baseline: Baseline | None = None
    error: str | None = None
    hardware_diff: list[str] = field(default_factory=list)
    software_diff: list[str] = field(default_factory=list)
    model: SuiteModel = SuiteModel()  # every valid entry's saved runs
    process: ProcessOffset = field(default_factory=ProcessOffset)  # this process's speed, from the tests judged

    def load(self) -> RunBaseline:
        self.fingerprint = machine_fingerprint(self.threads)
        self.slug = (self.machine_name or machine_slug(self.fingerprint)) + self.suffix
        try:
            self.path = baseline_path(self.directory, self.slug)
            self.baseline = load_baseline(self.path)
        except (BaselineError, ValueError) as exc:
            self.error = str(exc)
            self.baseline = None
        if self.baseline is not None:
            self.hardware_diff, self.software_diff = compare_fingerprints(self.baseline.machine, self.fingerprint)
            self.model = SuiteModel.of(self.baseline.valid_entries)
        return self

    def entry(self, nodeid: str) -> BaselineEntry | None:
        """The entry the gate may judge this test by (None when missing or malformed)."""
        return self.baseline.entry(nodeid) if self.baseline else None

    def session_errors(self, *, require: bool, saving: bool) -> list[str]:
        """What keeps the gate from judging this run at all: an unusable file, or a required one missing."""
        if self.error:
            return [f"{self.error} The regression gate cannot judge this run."]
        if self.baseline is None and require and not saving:
            return [f"no baseline for this machine ({self.path}), and a baseline is required "
                    "(--perf-require-baseline): record one with `pytest --perf --perf-save` on this machine kind "
                    "and commit it"]
        return []

    def missing(self, nodeids: list[str]) -> list[str]:
        """Measured tests that an existing baseline file has no entry for."""
        if self.baseline is None:
            return []
        return [n for n in nodeids if n not in self.baseline.entries]

    def rows(self, result: TestResult, budget: Budget | None, tolerance: float, *,
             alpha: float, require: bool, saving: bool, warn: bool) -> list[Check]:
        """One test's checks against its entry, ``alpha`` its share of the run's error budget. What the
        gate cannot judge (a malformed entry, samples that cannot be compared) is an ``unjudged`` row
        that fails the test, or a ``warned`` row when
        ``warn`` (the user's opt-out); a missing entry is one only under ``require``, which ``warn``
        does not weaken. A run that saves records the entries instead of judging by bad ones."""
        nodeid = result.nodeid
        rows = list(result.checks)
        if self.baseline is None:
            return rows
        problem = self.baseline.problems.get(nodeid)
        missing = nodeid not in self.baseline.entries
        if problem is None and not missing:
            rows = baseline_rows(result, budget, self.baseline.entry(nodeid), tolerance, alpha=alpha,
                                 saved=Saved(nodeid, self.model, self.process))
        elif saving:
            return rows
        elif problem is not None:
            rows.append(unjudged("baseline entry", "baseline entry", "", "", f"its entry in {self.path} is malformed: {problem}"))
        again = "--perf --perf-instructions --perf-save" if self.suffix else "--perf --perf-save"
        fix = (f". Fix: re-record it with `pytest '{nodeid}' {again}` (or correct {self.path}); "
               "--perf-baseline-errors=warn only warns.")
        rows = [_with_fix(row, fix, warn=warn or saving) if row.verdict == Verdict.UNJUDGED else row for row in rows]
        if missing and require and not saving:
            rows.append(unjudged("baseline entry", "baseline entry", "", "", f"{self.path} has no entry for this test, and a baseline "
                                 f"is required (--perf-require-baseline). Fix: record it with `pytest '{nodeid}' "
                                 "--perf --perf-save` and commit the file."))
        return rows

    def save(self, results: list[TestResult], rootdir: Path) -> str:
        """Merge measured tests into the file; returns a summary line. Raises BaselineError."""
        if self.path is None:
            raise BaselineError(self.error or "no baseline path could be resolved")
        commit = git_commit(rootdir)
        entries = {r.nodeid: BaselineEntry.from_result(r, commit, self.entry(r.nodeid)).to_json() for r in results
                   if r.body_passed is not False and (r.measurement is not None or r.metrics)}
        if not entries:
            return "nothing measured, baseline not written"
        # Fingerprint again: by now the tests have imported torch, so its thread count is known.
        self.fingerprint = machine_fingerprint(self.threads)
        merged = save_entries(self.path, entries, self.fingerprint, speed_score())
        line = f"saved {len(entries)} test(s) to {self.path} ({len(merged.entries)} in the file)"
        unusable = [f"{n} ({merged.problems[n]})" for n in entries if n in merged.problems]
        if unusable:
            line += f"; WARNING: the gate cannot judge by {len(unusable)} of them: {'; '.join(unusable)}"
        return line


def _with_fix(row: Check, fix: str, *, warn: bool) -> Check:
    """An unjudged check with the way to fix its entry; a warning only when ``warn`` (the user's opt-out, or
    a saving run, which replaces the entry it could not judge by)."""
    if warn:
        return replace(row, verdict=Verdict.WARNED, message=f"WARNING: {row.message}{fix}")
    return replace(row, message=row.message + fix)
