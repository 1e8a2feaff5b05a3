"""pytest hooks and options only; the work is done in budget/measure/check/report."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest

from .ab import SIDE_ENV, ab_pythonpath
from .baseline import BaselineError, thin_samples
from .budget import Budget, BudgetError, parse_budget
from .check import Row, evaluate, required_samples
from .decide import summarize
from .marker import MARKER, marker_line, merged_kwargs
from .markdown import markdown_summary, write_markdown
from .measure import MemoryMeter, Measurement
from .options import Options, add_options
from .perf import Perf
from .rerun import default_profile_paths, profile_failure, rerun_args
from .report import MAX_REPORT_SAMPLES, json_document, json_safe, summary_table, write_json
from .serial import held, lock_path, remove_lock
from .store import RunBaseline

budget_key = pytest.StashKey[Budget]()
perf_key = pytest.StashKey[Perf]()
memory_key = pytest.StashKey[MemoryMeter]()
result_key = pytest.StashKey[dict[str, Any]]()  # the verdict the confirmation loop last computed

PLUGIN_NAME = "perfguard-session"

def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser)


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config) -> None:
    """Under ``perfguard ab``, make this side's own code importable before conftests import it."""
    if os.environ.get(SIDE_ENV):
        for path in reversed(ab_pythonpath(early_config.rootpath, early_config.getini("perfguard_ab_pythonpath"))):
            sys.path.insert(0, str(path))


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", marker_line())
    options = Options.from_config(config)
    if options.threads is not None:
        pin_threads(options.threads)
    config.pluginmanager.register(PerfGuard(config, options), PLUGIN_NAME)


def pin_threads(n: int) -> None:
    """``torch.set_num_threads(n)``, plus the OpenMP/MKL/BLAS variables for child processes."""
    try:
        import torch
    except ImportError:
        raise pytest.UsageError("--perf-threads pins torch's thread count, but torch is not installed") from None
    torch.set_num_threads(n)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(n)


@pytest.fixture
def perf(request: pytest.FixtureRequest) -> Perf:
    """Measure one region: ``perf(fn, *args, items=None, **kwargs)``; ``perf.record(accuracy=...)``."""
    guard = request.config.pluginmanager.get_plugin(PLUGIN_NAME)
    assert isinstance(guard, PerfGuard)
    item = request.node
    budget = item.stash.get(budget_key, None)
    need = max((required_samples(p) for p in budget.percentiles), default=0) if budget else 0
    obj = Perf(enabled=guard.options.enabled, settings=guard.options.timing, min_samples=need,
               progress=lambda msg: guard.progress(item.nodeid, msg))
    item.stash[perf_key] = obj
    return obj


class PerfGuard:
    """Session state: budgets are parsed at collection, judged per test, summarised at the end."""

    def __init__(self, config: pytest.Config, options: Options) -> None:
        self.config = config
        self.options = options
        self.results: list[dict[str, Any]] = []
        self.baseline: RunBaseline | None = None
        self.notes: list[str] = []  # lines for the summary
        self.gate_errors: list[str] = []  # why the gate could not judge this run at all: fails the run
        self.gate_warnings: list[str] = []  # the same, downgraded by --perf-baseline-errors=warn
        workerinput = getattr(config, "workerinput", None)
        self.lock = lock_path(str(workerinput.get("testrunuid", ""))) if workerinput and options.enabled else None
        self.xdist_lock: Path | None = None  # the controller's view of that lock, to remove at the end

    @property
    def is_worker(self) -> bool:
        return hasattr(self.config, "workerinput")

    def progress(self, nodeid: str, message: str, prefix: str = "calibrating, ") -> None:
        tr = self.config.pluginmanager.get_plugin("terminalreporter")
        capman = self.config.pluginmanager.get_plugin("capturemanager")
        if tr is None or capman is None or self.is_worker:
            return
        with capman.global_and_fixture_disabled():
            tr.write_line(f"perfguard: {nodeid}: {prefix}{message}")

    def pytest_sessionstart(self, session: pytest.Session) -> None:
        if not self.options.enabled:
            return
        self.baseline = RunBaseline(self.options.baselines, self.options.machine, self.options.threads).load()
        if self.is_worker:
            return
        self.gate_errors = self.baseline.session_errors(require=self.options.require_baseline,
                                                        saving=self.options.save)
        if self.options.warn_only and self.baseline.error:  # the opt-out covers a bad file, not a required one
            self.gate_warnings, self.gate_errors = self.gate_errors, []
        self.notes.extend(_baseline_notes(self.baseline, self.options.save))
        drift = self.baseline.drift() if self.baseline.baseline else None
        if drift:
            self.notes.append(f"drift: {drift}")

    @pytest.hookimpl(wrapper=True)
    def pytest_collection_modifyitems(self, session: pytest.Session, items: list[pytest.Item]) -> Generator[None, None, None]:
        """Budgets are parsed after every other implementation, so markers that conftest hooks add count.

        A malformed budget is a collection error of its test (pytest then stops before running
        anything, as for any collection error); the test is taken out of the run.
        """
        result = yield
        for item in list(items):
            error = _parse_marker(item)
            if error:
                items.remove(item)
                session.ihook.pytest_collectreport(report=pytest.CollectReport(item.nodeid, "failed", error, []))
        return result

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_protocol(self, item: pytest.Item) -> Generator[None, object, object]:
        if self.lock is None or _is_perf_test(item):
            return (yield)
        with held(self.lock, exclusive=False):
            return (yield)

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_call(self, item: pytest.Item) -> Generator[None, None, None]:
        with contextlib.ExitStack() as stack:
            if self.lock is not None and _is_perf_test(item):
                stack.enter_context(held(self.lock, exclusive=True))
            # pytest-benchmark interop: its fixture times the code; we add the memory meter around it.
            if self.options.enabled and "benchmark" in getattr(item, "fixturenames", ()):
                _enable_benchmark_on_worker(item)
                if budget_key in item.stash:
                    item.stash[memory_key] = stack.enter_context(MemoryMeter())
            outcome = yield
            self._confirm_regression(item)
            return outcome

    def _confirm_regression(self, item: pytest.Item) -> None:
        """A suspected latency regression is re-measured once (pooled) before it can fail the test."""
        perf = item.stash.get(perf_key, None)
        if perf is None or perf.measurement is None or self.baseline is None or self.baseline.entry(item.nodeid) is None:
            return
        for attempt in range(1, self.options.confirm + 1):
            result = self._judge(item)
            if result is None:
                return
            item.stash[result_key] = result
            rows = [Row(**d) for d in result["rows"]]
            if not any(r.verdict == "regressed" and r.metric.startswith(("latency", "throughput")) for r in rows):
                return
            if any(r.failed and r.verdict != "regressed" for r in rows):
                return  # it fails a budget anyway: re-measuring cannot change the outcome
            self.progress(item.nodeid, f"latency looks regressed: measuring again to confirm ({attempt}/"
                                       f"{self.options.confirm})", prefix="")
            if not perf.remeasure():
                return
            del item.stash[result_key]  # new rounds: judge again

    def _judge(self, item: pytest.Item) -> dict[str, Any] | None:
        """This test's result: its budget rows, plus the baseline rows when a baseline is loaded."""
        result = _judge(item, measured=self.options.enabled)
        if result is not None and self.baseline is not None:
            o = self.options
            rows = self.baseline.rows(item.nodeid, result, item.stash.get(budget_key, None), o.tolerance,
                                      require=o.require_baseline, saving=o.save, warn=o.warn_only)
            result["rows"] = [r.to_dict() for r in rows]
        return result

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, pytest.TestReport, pytest.TestReport]:
        rep = yield
        if rep.when != "call":
            return rep
        result = item.stash.get(result_key, None) or self._judge(item)
        if result is None:
            return rep
        result["body_passed"] = rep.passed
        rep.perfguard = result  # type: ignore[attr-defined]  # JSON-safe: survives xdist
        for row in result["rows"]:
            if row["now"] is not None:
                _add_property(item, rep, f"perf {row['metric']}", row["now"])
        failing = [row["message"] for row in result["rows"] if Row(**row).failed]
        if rep.passed and failing:
            rep.outcome = "failed"
            rep.longrepr = "\n".join(failing)
        if result["rows"]:
            has_base = any(row.get("baseline") is not None for row in result["rows"])
            rep.sections.append(("perfguard", "\n".join(summary_table([result], with_baseline=has_base))))
        mode = self.options.profile if self.options.enabled else "never"
        if mode == "always" or (mode == "on-failure" and rep.failed and failing):
            self._attach_profile(item, rep, result)
        return rep

    def _attach_profile(self, item: pytest.Item, rep: pytest.TestReport, result: dict[str, Any]) -> None:
        args = rerun_args(self.config.invocation_params.args, self.config.rootpath,
                          xdist=self.config.pluginmanager.has_plugin("xdist"))
        paths = default_profile_paths(self.config.rootpath, Path(str(item.path)),
                                      self.config.getini("perfguard_profile_paths"))
        self.progress(item.nodeid, "profiling the failure under Scalene", prefix="")
        prof = profile_failure(item.nodeid, rootdir=self.config.rootpath, outdir=self.options.profile_dir,
                               args=args, paths=paths, timeout=self.options.profile_timeout)
        result["profile"] = {k: v for k, v in prof.items() if k != "section"}
        if "error" in prof:
            rep.sections.append(("perfguard profile", f"WARNING: {prof['error']}"))
            return
        rep.sections.append(("perfguard profile", prof["section"]))
        _add_property(item, rep, "perfguard_profile_json", prof["json"])
        _add_property(item, rep, "perfguard_profile_html", prof["html"])

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        result = getattr(report, "perfguard", None)
        if result is not None:
            self.results.append(dict(result, outcome=report.outcome))

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node: Any) -> None:
        """xdist, on the controller: the workers' shared lock file, removed once they are done."""
        if self.options.enabled:
            self.xdist_lock = lock_path(str(node.workerinput["testrunuid"]))

    def pytest_unconfigure(self, config: pytest.Config) -> None:
        if self.xdist_lock is not None:  # after xdist's own session end has stopped the workers
            remove_lock(self.xdist_lock)

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if self.is_worker or not self.options.enabled:
            return
        if self.gate_errors and session.exitstatus == 0:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
        if self.options.json_path is not None:
            extra = {"settings": json_safe(vars(self.options.timing)), "gate_errors": self.gate_errors,
                     "gate_warnings": self._session_warnings()}
            if self.baseline is not None:
                extra.update(machine=self.baseline.fingerprint, machine_slug=self.baseline.slug,
                             baseline=_relative(self.baseline.path, self.config.rootpath) if self.baseline.path else None)
            write_json(self.options.json_path, json_document(self.results, extra))
            self.notes.append(f"wrote {self.options.json_path}")
        if self.options.markdown_path is not None:
            context = [f"baseline: {self.baseline.path}" if self.baseline is not None and self.baseline.baseline
                       else "no baseline for this machine: absolute budgets only"]
            context += [f"WARNING: {w}" for w in self._session_warnings()]
            write_markdown(self.options.markdown_path,
                           markdown_summary(self.results, context=context, errors=self.gate_errors))
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
        missing = self.baseline.missing([r["nodeid"] for r in self.results if r.get("measurement")]) \
            if self.baseline is not None and not (self.options.save or self.options.require_baseline) else []
        if not missing:
            return self.gate_warnings
        shown = ", ".join(missing[:10]) + (f" and {len(missing) - 10} more" if len(missing) > 10 else "")
        return [*self.gate_warnings, f"{len(missing)} measured test(s) have no entry in the baseline and were not "
                f"compared with it: {shown}; record them with --perf-save (--perf-require-baseline makes this an "
                "error)"]

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if not self.options.enabled or self.is_worker:
            return
        terminalreporter.write_sep("-", "perfguard")
        lines = summary_table(self.results, with_baseline=self.baseline is not None and self.baseline.baseline is not None)
        for line in lines:
            terminalreporter.write_line(line)
        if any(row["verdict"] == "no-baseline" for r in self.results for row in r["rows"]):
            self.notes.append("relative budgets were not checked: they need a baseline for this machine")
        for r in self.results:
            error = (r.get("profile") or {}).get("error")
            if error:
                self.notes.append(f"WARNING: {r['nodeid']}: {error}")
        for note in self.notes:
            terminalreporter.write_line(f"perfguard: {note}", red=note.startswith("ERROR"))
        for warning in self._session_warnings():
            terminalreporter.write_line(f"perfguard: WARNING: {warning}", yellow=True)
        for error in self.gate_errors:
            terminalreporter.write_line(f"perfguard: ERROR: {error}", red=True, bold=True)


def _add_property(item: pytest.Item, rep: pytest.TestReport, name: str, value: object) -> None:
    """On the item (JUnit XML reads the teardown report's copy) and on this report (xdist, hooks)."""
    item.user_properties.append((name, value))
    rep.user_properties.append((name, value))


def _is_perf_test(item: pytest.Item) -> bool:
    names = getattr(item, "fixturenames", ())
    return budget_key in item.stash or "perf" in names or "benchmark" in names


def _enable_benchmark_on_worker(item: pytest.Item) -> None:
    """pytest-benchmark turns itself off on every xdist worker; under ``--perf`` a benchmarked test
    holds the perf lock alone while it runs, so its timing is as sound as without xdist: turn it on."""
    bench = getattr(item, "funcargs", {}).get("benchmark")
    if (bench is not None and getattr(bench, "disabled", False) and hasattr(item.config, "workerinput")
            and not item.config.getoption("benchmark_disable", False)):
        bench.disabled = False


def _baseline_notes(run: RunBaseline, saving: bool) -> list[str]:
    if run.error:
        return []  # a gate error (PerfGuard.gate_errors), printed last
    if run.baseline is None:
        if saving:
            return [f"no baseline for this machine yet: {run.path} will be created"]
        return [f"no baseline for this machine ({run.path}): absolute budgets only; "
                "record one with `pytest --perf --perf-save`"]
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


def _parse_marker(item: pytest.Item) -> str | None:
    """Parse the item's perf_budget markers (merged: ``marker.merged_kwargs``) into the stash; an error or None."""
    if item.get_closest_marker(MARKER) is None:
        return None
    try:
        item.stash[budget_key] = parse_budget(merged_kwargs(item))
    except TypeError as exc:
        return f"{item.nodeid}: {exc}"
    except BudgetError as exc:
        return f"{item.nodeid}: invalid perf_budget: {exc}"
    return None


def _benchmark_measurement(item: pytest.Item) -> Measurement | None:
    """pytest-benchmark's collected statistics, as our Measurement."""
    bench = getattr(item, "funcargs", {}).get("benchmark")
    stats = getattr(getattr(bench, "stats", None), "stats", None)
    data = list(getattr(stats, "data", []) or [])
    if not data:
        return None
    meter = item.stash.get(memory_key, None)
    return Measurement(samples=[float(x) for x in data], loops=1, rounds=len(data), total_time=sum(data),
                       memory_growth=meter.growth if meter else None,
                       memory_mechanism=meter.mechanism if meter else None, source="benchmark")


def _judge(item: pytest.Item, measured: bool) -> dict[str, Any] | None:
    """The JSON-safe result of one test, or None when it is not a perf test.

    Unmeasured runs (no ``--perf``) still check absolute budgets on recorded metrics
    (accuracy, counts): those are functional claims that one run can decide.
    """
    budget = item.stash.get(budget_key, None)
    if not measured:
        budget = budget.metrics_only() if budget else None
        if budget is None or not budget.limits:
            return None
    perf = item.stash.get(perf_key, None)
    measurement = perf.measurement if perf else None
    if measurement is None:
        measurement = _benchmark_measurement(item)
    if budget is None and measurement is None:
        return None
    metrics = perf.metrics if perf else {}
    rows = evaluate(budget, measurement, metrics)
    if measured and measurement is None and getattr(getattr(item, "funcargs", {}).get("benchmark"), "disabled", False):
        rows.append(Row("latency", "", None, "s/call", "error", "latency not measured: pytest-benchmark is disabled "
                        "(--benchmark-disable), so the benchmark fixture timed nothing; drop that option under --perf"))
    m = measurement.to_dict() if measurement else None
    if m is not None:
        m["summary"] = summarize(m["samples"])
        m["samples"] = thin_samples(m["samples"], MAX_REPORT_SAMPLES)
    return {
        "nodeid": item.nodeid,
        "rows": [r.to_dict() for r in rows],
        "measurement": m,
        "metrics": dict(metrics),
        "budget": json_safe(budget.raw) if budget else {},
    }
