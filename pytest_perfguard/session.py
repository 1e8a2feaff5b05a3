"""What only the controller does (the single process without xdist): gather every test's result
from its report, fail a run the gate could not judge, write the JSON, markdown and baseline files,
print the summary, remove the xdist lock. Registered by ``plugin.pytest_configure`` only where
there is no ``workerinput``, as pytest's junitxml is."""

from __future__ import annotations

import statistics
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from .baseline import BaselineError
from .gate import ONE_RUN
from .markdown import markdown_summary, write_markdown
from .model import LATENCY_KINDS, Check, ProcessSpeed, TestResult, Verdict, json_safe
from .options import Options
from .report import json_document, summary_table, write_json
from .runnoise import RunTest, SuiteModel, compare_speed
from .runner import baseline_key
from .serial import lock_path, remove_lock
from .store import RunBaseline

__all__ = ["Session"]


class Session:
    def __init__(self, config: pytest.Config, options: Options) -> None:
        self.config = config
        self.options = options
        self.results: list[TestResult] = []
        self.notes: list[str] = []  # lines for the summary
        self.gate_errors: list[str] = []  # why the gate could not judge this run at all: fails the run
        self.gate_warnings: list[str] = []  # the same, downgraded by --perf-baseline-errors=warn
        self.xdist_lock: Path | None = None  # the workers' lock file, removed once they are done
        self.torch_threads = 0  # the most torch threads a process timed a test with, unpinned (0: none)

    @property
    def baseline(self) -> RunBaseline | None:
        """Loaded by the runner at session start (``runner.baseline_key``), under ``--perf`` only."""
        return self.config.stash.get(baseline_key, None)

    def pytest_sessionstart(self, session: pytest.Session) -> None:
        baseline = self.baseline
        if baseline is None:
            return
        self.gate_errors = baseline.session_errors(require=self.options.require_baseline, saving=self.options.save)
        if self.options.warn_only and baseline.error:  # the opt-out covers a bad file, not a required one
            self.gate_warnings, self.gate_errors = self.gate_errors, []
        self.notes.extend(_baseline_notes(baseline, self.options.save, self.options.instructions))
        if self.options.instructions:
            self.notes.append("regions counted in instructions under valgrind's callgrind: nothing was timed "
                              "(latency, throughput and memory budgets are left to a timed run)")

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        result = getattr(report, "perfguard", None)
        if result is not None:
            self.results.append(replace(TestResult.from_json(result), outcome=report.outcome))
        self.torch_threads = max(self.torch_threads, getattr(report, "perfguard_torch_threads", 0) or 0)

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node: Any) -> None:
        if self.options.enabled:
            self.xdist_lock = lock_path(str(node.workerinput["testrunuid"]))

    def pytest_unconfigure(self, config: pytest.Config) -> None:
        if self.xdist_lock is not None:  # after xdist's own session end has stopped the workers
            remove_lock(self.xdist_lock)

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if not self.options.enabled:
            return
        if self.gate_errors and session.exitstatus == 0:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
        speeds = speed_checks(self.results, self.baseline.model, self.options.tolerance) if self.baseline else []
        verdicts = error_budget_notes(self.results, self.options.alpha, len(speeds)) + \
            resolution_notes(self.results, self.options.tolerance) + [
            f"{'ERROR: ' if c.verdict == 'regressed' else ''}the run's speed {c.verdict}: {c.reason}" for c in speeds]
        self.notes.extend(verdicts)
        speed_results = [_speed_result(c, self.options.tolerance) for c in speeds]  # for the files
        if any(c.verdict == "regressed" for c in speeds) and session.exitstatus == 0:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
        if self.options.json_path is not None:
            extra = {"settings": json_safe(vars(self.options.timing)), "gate_errors": self.gate_errors,
                     "gate_warnings": self._session_warnings(), "speed": [r.to_json() for r in speed_results]}
            if self.baseline is not None:
                extra.update(machine=self.baseline.fingerprint, machine_slug=self.baseline.slug,
                             baseline=_relative(self.baseline.path, self.config.rootpath) if self.baseline.path else None)
            write_json(self.options.json_path, json_document(self.results, extra))
            self.notes.append(f"wrote {self.options.json_path}")
        if self.options.markdown_path is not None:
            context = [f"baseline: {self.baseline.path}" if self.baseline is not None and self.baseline.baseline
                       else "no baseline for this machine: absolute budgets only"]
            context += verdicts
            context += [f"WARNING: {w}" for w in self._session_warnings()]
            write_markdown(self.options.markdown_path,
                           markdown_summary(self.results + speed_results, context=context, errors=self.gate_errors))
            self.notes.append(f"wrote {self.options.markdown_path}")
        if self.options.save and self.baseline is not None:
            try:
                self.notes.append(self.baseline.save(self.results, self.config.rootpath))
            except BaselineError as exc:
                self.notes.append(f"ERROR: baseline not saved: {exc}")
                if session.exitstatus == 0:
                    session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def _session_warnings(self) -> list[str]:
        """The downgraded gate errors, and the measured tests an existing baseline has no entry for."""
        missing = self.baseline.missing([r.nodeid for r in self.results if r.measurement is not None]) \
            if self.baseline is not None and not (self.options.save or self.options.require_baseline) else []
        if not missing:
            return self.gate_warnings
        shown = ", ".join(missing[:10]) + (f" and {len(missing) - 10} more" if len(missing) > 10 else "")
        return [*self.gate_warnings, f"{len(missing)} measured test(s) have no entry in the baseline and were not "
                f"compared with it: {shown}; record them with --perf-save (--perf-require-baseline makes this an "
                "error)"]

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if not self.options.enabled:
            return
        terminalreporter.write_sep("-", "perfguard")
        lines = summary_table(self.results, with_baseline=self.baseline is not None and self.baseline.baseline is not None)
        for line in lines:
            terminalreporter.write_line(line)
        if any(c.verdict == Verdict.NO_BASELINE for r in self.results for c in r.checks):
            self.notes.append("relative budgets were not checked: they need a baseline for this machine")
        for r in self.results:
            error, skipped = (r.profile or {}).get("error"), (r.profile or {}).get("skipped")
            if error:
                self.notes.append(f"WARNING: {r.nodeid}: {error}")
            elif skipped:
                self.notes.append(f"{r.nodeid}: {skipped}")
        for note in self.notes:
            terminalreporter.write_line(f"perfguard: {note}", red=note.startswith("ERROR"))
        if self.torch_threads:
            terminalreporter.write_line(f"perfguard: hint: {threads_hint(self.torch_threads)}", yellow=True)
        for warning in self._session_warnings():
            terminalreporter.write_line(f"perfguard: WARNING: {warning}", yellow=True)
        for error in self.gate_errors:
            terminalreporter.write_line(f"perfguard: ERROR: {error}", red=True, bold=True)


def threads_hint(threads: int) -> str:
    """Why torch's default threads mislead a timing gate, and the option that pins them (printed once a run)."""
    return (f"torch ran {threads} intra-op threads in the timed tests and --perf-threads was not given: on a "
            "busy machine an op can wait a whole scheduler time slice for a descheduled thread, so timings jump "
            "in steps of milliseconds and a test can false-fail by 100x or more; run with --perf-threads 1 "
            "(ini perfguard_threads = 1) and save the baseline with it")


def speed_checks(results: list[TestResult], model: SuiteModel, tolerance: float) -> list[RunTest]:
    """Each process's speed against the saved processes' (``runnoise.compare_speed``), from its last
    estimate (the most tests); the processes share one comparison's part of the error budget."""
    last: dict[str, ProcessSpeed] = {}
    for r in results:
        speed, process = r.process_speed, r.process
        if speed and process and (process not in last or speed.tests >= last[process].tests):
            last[process] = speed
    checks = [compare_speed(s.deviation, s.var, model, alpha=s.alpha / len(last), tolerance=tolerance)
              for s in last.values()]
    return [c for c in checks if c is not None]


def _speed_result(check: RunTest, tolerance: float) -> TestResult:
    """A process's speed check as a result of its own, so that the reports count its regression."""
    row = Check("the run's speed", f"±{tolerance:.0%}", check.head, "", Verdict(check.verdict),
                f"the run's speed {check.verdict}: {check.reason}", kind="speed", against="baseline", baseline=1.0,
                ratio=check.ratio, p_value=check.p_worse, alpha=check.alpha, mde=check.mde, reason=check.reason)
    return TestResult("(every test: the speed of this process)", (row,), outcome="failed" if row.failed else "passed")


def error_budget_notes(results: list[TestResult], alpha: float, processes: int = 0) -> list[str]:
    """How many comparisons shared the run's error budget, and how many could not model run-to-run noise."""
    shared = [(r.nodeid, c) for r in results for c in r.checks if c.alpha is not None]
    if not shared:
        return []
    tests = len({nodeid for nodeid, _ in shared})
    speed = f" and the speed of {processes} process(es)" if processes else ""
    notes = [f"{len(shared)} comparison(s) with the baseline in {tests} test(s){speed} shared a {alpha:.2%} error "
             "budget (--perf-alpha): each fails only when significant at its share and beyond its tolerance"]
    one_run = len({nodeid for nodeid, c in shared if ONE_RUN in c.message})
    if one_run:
        improved = len({nodeid for nodeid, c in shared if c.verdict == Verdict.IMPROVED and ONE_RUN in c.message})
        # a save suggestion only follows a confirmed improvement: one run's "improved" may be a lucky run
        advice = (f"{improved} of them improved, which one run cannot confirm: `perfguard ab REV` judges a change "
                  "against the code before it, in the same job" if improved else
                  "record 5 or more runs (`pytest --perf --perf-save`, once per run)")
        notes.append(f"{one_run} test(s) were compared with a baseline of one run per test: run-to-run noise is not "
                     f"modelled, so they can false-fail; {advice}")
    return notes


def resolution_notes(results: list[TestResult], tolerance: float) -> list[str]:
    """How small a change the latency comparisons with the baseline could flag (their MDEs), and, when
    the median is beyond twice the tolerance, that "unchanged" then hides changes that size and what
    resolves them: on a shared host the saved runs disagree, and every row widens with them."""
    mdes = sorted(c.mde for r in results for c in r.checks
                  if c.mde is not None and c.alpha is not None and c.kind in LATENCY_KINDS)
    if not mdes:
        return []
    median = statistics.median(mdes)
    note = (f"the {len(mdes)} latency comparison(s) with the baseline could flag changes from +{median:.0%} (median; "
            f"+{mdes[0]:.0%} to +{mdes[-1]:.0%})")
    if median > 2 * tolerance:
        note += (f": a change between the {tolerance:.0%} tolerance and that size passes as unchanged, because the saved "
                 "runs disagree that much (a shared machine's speed moves between runs); record more runs spread over "
                 "time, or judge a change with `perfguard ab REV` (both sides in the same job) or `--perf-instructions` "
                 "(counts, not clocks)")
    return [note]


def _baseline_notes(run: RunBaseline, saving: bool, counted: bool = False) -> list[str]:
    if run.error:
        return []  # a gate error (Session.gate_errors), printed last
    if run.baseline is None:
        if saving:
            return [f"no baseline for this machine yet: {run.path} will be created"]
        return [f"no baseline for this machine ({run.path}): absolute budgets only; "
                f"record one with `pytest {'--perf-instructions' if counted else '--perf'} --perf-save`"]
    notes = [f"baseline {run.path} ({len(run.baseline.entries)} tests, updated {run.baseline.updated})"]
    if run.hardware_diff:
        notes.append("WARNING: the baseline was recorded on different hardware: " + "; ".join(run.hardware_diff))
    if run.software_diff:
        notes.append("software differs from the baseline's: " + "; ".join(run.software_diff))
    return notes


def _relative(path: Path, root: Path) -> str:
    """``path`` relative to the rootdir when inside it (a report must not carry the checkout's location)."""
    try:
        return str(Path(path).resolve().relative_to(Path(root).resolve()))
    except ValueError:
        return str(path)
