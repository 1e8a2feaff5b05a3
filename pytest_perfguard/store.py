"""This run's baseline: which file, what it holds, drift since it was saved, saving (no pytest)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .baseline import (
    Baseline,
    BaselineError,
    baseline_path,
    compare_fingerprints,
    git_commit,
    load_baseline,
    machine_fingerprint,
    machine_slug,
    save_entries,
    speed_score,
)
from .budget import Budget
from .check import Row
from .gate import baseline_rows, entry_from_result, unjudged
from .gate import Saved
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
            self.model = SuiteModel.of({n: e for n, e in self.baseline.entries.items() if n not in self.baseline.problems})
        return self

    def entry(self, nodeid: str) -> dict[str, Any] | None:
        """The entry the gate may judge this test by (None when missing or malformed)."""
        return self.baseline.valid_entry(nodeid) if self.baseline else None

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

    def rows(self, nodeid: str, result: dict[str, Any], budget: Budget | None, tolerance: float, *,
             alpha: float, require: bool, saving: bool, warn: bool) -> list[Row]:
        """One test's rows against its entry, ``alpha`` its share of the run's error budget. What the
        gate cannot judge (a malformed entry, samples that cannot be compared) is an ``unjudged`` row
        that fails the test, or a ``warned`` row when
        ``warn`` (the user's opt-out); a missing entry is one only under ``require``, which ``warn``
        does not weaken. A run that saves records the entries instead of judging by bad ones."""
        rows = [Row(**d) for d in result["rows"]]
        if self.baseline is None:
            return rows
        problem = self.baseline.problems.get(nodeid)
        missing = nodeid not in self.baseline.entries
        if problem is None and not missing:
            rows = baseline_rows(result, budget, self.baseline.entries[nodeid], tolerance, alpha=alpha,
                                 saved=Saved(nodeid, self.model, self.process))
        elif saving:
            return rows
        elif problem is not None:
            rows.append(unjudged("baseline entry", "", "", f"its entry in {self.path} is malformed: {problem}"))
        again = "--perf --perf-instructions --perf-save" if self.suffix else "--perf --perf-save"
        fix = (f". Fix: re-record it with `pytest '{nodeid}' {again}` (or correct {self.path}); "
               "--perf-baseline-errors=warn only warns.")
        for row in rows:
            if row.verdict == "unjudged":
                row.message += fix
                if warn or saving:  # a saving run replaces the entry it could not judge by
                    row.verdict, row.message = "warned", "WARNING: " + row.message
        if missing and require and not saving:
            rows.append(unjudged("baseline entry", "", "", f"{self.path} has no entry for this test, and a baseline "
                                 f"is required (--perf-require-baseline). Fix: record it with `pytest '{nodeid}' "
                                 "--perf --perf-save` and commit the file."))
        return rows

    def drift(self) -> str | None:
        """Time the reference workload now and compare with the score saved with the baseline."""
        saved = (self.baseline.speed or {}) if self.baseline else {}
        if not saved.get("score"):
            return None
        now = speed_score()
        if now.get("workload") != saved.get("workload"):
            return None
        ratio = now["score"] / saved["score"]
        if ratio < 0.9:
            return (f"this machine runs the reference workload {1 / ratio:.2f}x slower than when the baseline was "
                    "saved (busy neighbours or a lower clock): expect every test to look slower")
        if ratio > 1.1:
            return f"this machine runs the reference workload {ratio:.2f}x faster than when the baseline was saved"
        return f"reference workload speed {ratio:.2f}x of the baseline's: the machine looks as it was"

    def save(self, results: list[dict[str, Any]], rootdir: Path) -> str:
        """Merge measured tests into the file; returns a summary line. Raises BaselineError."""
        if self.path is None:
            raise BaselineError(self.error or "no baseline path could be resolved")
        commit = git_commit(rootdir)
        entries = {r["nodeid"]: entry_from_result(r, commit, self.entry(r["nodeid"])) for r in results
                   if r.get("body_passed", True) and (r.get("measurement") or r.get("metrics"))}
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
