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
from .gate import entry_from_result

__all__ = ["RunBaseline"]


@dataclass
class RunBaseline:
    """Loaded once per process; every problem becomes a message, never an exception."""

    directory: Path
    machine_name: str | None = None
    threads: int | None = None
    fingerprint: dict[str, Any] = field(default_factory=dict)
    slug: str = ""
    path: Path | None = None
    baseline: Baseline | None = None
    error: str | None = None
    hardware_diff: list[str] = field(default_factory=list)
    software_diff: list[str] = field(default_factory=list)

    def load(self) -> RunBaseline:
        self.fingerprint = machine_fingerprint(self.threads)
        self.slug = self.machine_name or machine_slug(self.fingerprint)
        try:
            self.path = baseline_path(self.directory, self.slug)
            self.baseline = load_baseline(self.path)
        except (BaselineError, ValueError) as exc:
            self.error = str(exc)
            self.baseline = None
        if self.baseline is not None:
            self.hardware_diff, self.software_diff = compare_fingerprints(self.baseline.machine, self.fingerprint)
        return self

    def entry(self, nodeid: str) -> dict[str, Any] | None:
        return self.baseline.entries.get(nodeid) if self.baseline else None

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
        entries = {r["nodeid"]: entry_from_result(r, commit) for r in results
                   if r.get("body_passed", True) and (r.get("measurement") or r.get("metrics"))}
        if not entries:
            return "nothing measured, baseline not written"
        # Fingerprint again: by now the tests have imported torch, so its thread count is known.
        self.fingerprint = machine_fingerprint(self.threads)
        merged = save_entries(self.path, entries, self.fingerprint, speed_score())
        return f"saved {len(entries)} test(s) to {self.path} ({len(merged.entries)} in the file)"
