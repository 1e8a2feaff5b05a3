"""What every process does, xdist workers included: parse budgets at collection, keep a measured
test alone (the xdist lock), meter pytest-benchmark tests (every one under ``--perf``, marked or
not), judge each test and apply the verdict to its report, profile a failure. Registered in every
process by ``plugin.pytest_configure``."""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Callable, Generator
from contextlib import AbstractContextManager
from dataclasses import replace
from pathlib import Path

import pytest

from .budget import Budget, BudgetError, parse_budget
from .callgrind import counter
from .instructions import SUFFIX
from .judge import JudgeSettings, judge
from .machine import torch_threads
from .marker import MARKER, merged_kwargs
from .measure import Measurement, MemoryMeter
from .model import LATENCY_KINDS, ProcessSpeed, TestResult, Verdict
from .options import Options
from .perf import Perf
from .report import summary_table
from .region import RegionError, ScaleneRegion
from .rerun import confirm_args, measure_fresh, profile_command, profile_failure, rerun_args
from .serial import held, turn
from .store import RunBaseline

__all__ = ["Runner", "budget_key", "perf_key", "baseline_key"]

budget_key = pytest.StashKey[Budget]()
perf_key = pytest.StashKey[Perf]()
memory_key = pytest.StashKey[MemoryMeter]()
benchmark_key = pytest.StashKey[Measurement]()  # pytest-benchmark's rounds as ours, read once after the call
result_key = pytest.StashKey[TestResult]()  # the verdict the confirmation loop last computed
baseline_key = pytest.StashKey[RunBaseline]()  # config.stash: this process's baseline, loaded once

Progress = Callable[..., None]  # (nodeid, message, prefix=...) -> None


class Runner:
    """Measuring and judging, per test. ``lock``: the xdist workers' shared lock file (None
    without xdist); ``progress``: prints a line while a test is measured (a no-op on workers)."""

    def __init__(self, config: pytest.Config, options: Options, lock: Path | None, progress: Progress) -> None:
        self.config = config
        self.options = options
        self.lock = lock
        self.progress = progress
        self.baseline: RunBaseline | None = None
        self.gated = 0  # collected perf tests with a baseline entry: they share the run's error budget
        self.process_id = uuid.uuid4().hex[:12]  # saved with each run: the tests of one process share its speed
        self.counter = counter() if options.instructions else None  # under callgrind: regions are counted
        self.profiles = 0  # profile re-runs started by this process (without xdist: by the run)
        self.region: ScaleneRegion | None = None  # in a profile re-run: Scalene samples only inside it
        if options.profile_region is not None:
            try:
                self.region = ScaleneRegion(options.profile_region)
            except RegionError as exc:
                raise pytest.UsageError(str(exc)) from None
            self.region.render_html_at_exit()

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionstart(self, session: pytest.Session) -> None:
        if self.options.enabled:
            o = self.options
            self.baseline = RunBaseline(o.baselines, o.machine, o.threads, SUFFIX if o.instructions else "").load()
            self.config.stash[baseline_key] = self.baseline

    @pytest.hookimpl(wrapper=True)
    def pytest_collection_modifyitems(self, session: pytest.Session, items: list[pytest.Item]) -> Generator[None, None, None]:
        """Budgets are parsed after every other implementation, so markers that conftest hooks add count.

        A malformed budget is a collection error of its test (pytest then stops before running
        anything, as for any collection error); the test is taken out of the run.
        """
        result = yield
        if self.options.only:
            _select(self.config, items, self.options.only)
        for item in list(items):
            error = _parse_marker(item)
            if error:
                items.remove(item)
                session.ihook.pytest_collectreport(report=pytest.CollectReport(item.nodeid, "failed", error, []))
        if self.baseline is not None:
            self.gated = sum(_is_perf_test(i) and self.baseline.entry(i.nodeid) is not None for i in items)
            self.gated += self.gated > 0 and self.baseline.model.offsets.df > 0  # the processes' speed
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
            if self.region is not None and "perf" not in getattr(item, "fixturenames", ()):
                stack.enter_context(self.region())  # no perf(fn) region: the test body is the region
            with self._benchmark_meter(item):  # read once the body is done, confirmation included
                outcome = yield
            self._confirm_regression(item)
            return outcome

    def _benchmark_meter(self, item: pytest.Item) -> contextlib.AbstractContextManager[object]:
        """pytest-benchmark interop: its fixture times the code, budget or not; we add the memory meter
        around the test body, as the perf fixture meters every region it times."""
        if not (self.options.enabled and "benchmark" in getattr(item, "fixturenames", ())):
            return contextlib.nullcontext()
        _enable_benchmark_on_worker(item)
        meter = item.stash[memory_key] = MemoryMeter()
        return meter

    def _confirm_regression(self, item: pytest.Item) -> None:
        """A suspected latency regression is measured again, after a pause and in a fresh process, before
        it can fail the test: it fails only when every block, judged alone, regressed. Measured here: one
        process in ten ran a numpy test 1.5x slower than the rest, in CPU time too, through every
        re-measurement in that process (its memory layout), and a busy neighbour slows the tests of a few
        seconds alike. A fresh process after ``--perf-confirm-pause`` draws both anew; a real regression
        is in every process. A save confirms an improvement the same way, since a change seen in a save
        starts the test's run history again (``model.BaselineEntry.from_result``). A pytest-benchmark
        test is confirmed the same way, by fresh processes only (its fixture cannot be called again here)."""
        perf = item.stash.get(perf_key, None)
        measurement = self._measurement(item)
        if measurement is None or self.baseline is None or self.baseline.entry(item.nodeid) is None:
            return
        suspect = (Verdict.REGRESSED, Verdict.IMPROVED) if self.options.save else (Verdict.REGRESSED,)
        for attempt in range(1, self.options.confirm + 1):
            result = self._judge(item)
            if result is None:
                return
            item.stash[result_key] = result
            seen = [c.verdict for c in result.checks if c.verdict in suspect and c.kind in LATENCY_KINDS]
            if not seen:
                return
            if any(c.failed and c.verdict != Verdict.REGRESSED for c in result.checks):
                return  # it fails a budget anyway: re-measuring cannot change the outcome
            self.progress(item.nodeid, f"latency looks {seen[0]}: measuring again in {self.options.confirm_pause:g} s "
                                       f"in a fresh process to confirm ({attempt}/{self.options.confirm})", prefix="")
            time.sleep(self.options.confirm_pause)
            fresh = measure_fresh(item.nodeid, rootdir=self.config.rootpath, timeout=self.options.profile_timeout,
                                  args=confirm_args(self.config.invocation_params.args, _paths(self.config),
                                                    xdist=self.config.pluginmanager.has_plugin("xdist")))
            if fresh is not None:
                measurement.replace_rounds(fresh)
            elif perf is None or not perf.remeasure():  # the fresh process measured nothing: measure again here
                return
            del item.stash[result_key]  # new rounds: judge again

    def _measurement(self, item: pytest.Item) -> Measurement | None:
        """What this test measured: the perf fixture's region, else pytest-benchmark's rounds (read once,
        so that a confirmation's fresh rounds replace them; under callgrind its timings mean nothing)."""
        perf = item.stash.get(perf_key, None)
        if perf is not None and perf.measurement is not None:
            return perf.measurement
        if self.options.instructions:
            return None
        if benchmark_key not in item.stash:
            measurement = _benchmark_measurement(item)
            if measurement is None:
                return None
            item.stash[benchmark_key] = measurement
        return item.stash[benchmark_key]

    def _judge(self, item: pytest.Item) -> TestResult | None:
        """This test's result: its budget checks (``judge.judge``), plus the baseline's when one is loaded.
        Every sample is judged; they are thinned only when the result is written (``TestResult.to_json``)."""
        o = self.options
        budget = item.stash.get(budget_key, None)
        perf = item.stash.get(perf_key, None)
        measurement = self._measurement(item)
        bench = getattr(item, "funcargs", {}).get("benchmark")
        settings = JudgeSettings(o.enabled, o.clock, o.instructions, bool(getattr(bench, "disabled", False)))
        result = judge(item.nodeid, budget, measurement, perf.metrics if perf else {}, perf.sampled if perf else {},
                       settings)
        if result is None:
            return None
        result = replace(result, process=self.process_id)
        if self.baseline is not None:
            share = o.alpha / max(1, self.gated)
            checks = self.baseline.rows(result, budget, o.tolerance, alpha=share, require=o.require_baseline,
                                        saving=o.save, warn=o.warn_only)
            speed = self.baseline.process.speed()  # judged once per process by the controller (session.speed_checks)
            result = replace(result, checks=tuple(checks),
                             process_speed=ProcessSpeed(*speed, alpha=share) if speed is not None else None)
        return result

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, pytest.TestReport, pytest.TestReport]:
        rep = yield
        if rep.when != "call":
            return rep
        result = item.stash.get(result_key, None) or self._judge(item)
        if result is None:
            return rep
        result = replace(result, body_passed=rep.passed)
        for check in result.checks:
            if check.now is not None:
                _add_property(item, rep, f"perf {check.label}", check.now)
        if rep.passed and result.failed:
            rep.outcome = "failed"
            rep.longrepr = "\n".join(result.failures)
        if result.checks:
            has_base = any(c.baseline is not None for c in result.checks)
            rep.sections.append(("perfguard", "\n".join(summary_table([result], with_baseline=has_base))))
        mode = self.options.profile if self.options.enabled else "never"
        if mode == "always" or (mode == "on-failure" and rep.failed and result.failed):
            result = replace(result, profile=self._attach_profile(item, rep))
        rep.perfguard = result.to_json()  # type: ignore[attr-defined]  # JSON-safe: survives xdist
        threads = self._unpinned_torch_threads(result)
        if threads is not None:
            rep.perfguard_torch_threads = threads  # type: ignore[attr-defined]  # for the controller's hint
        return rep

    def _unpinned_torch_threads(self, result: TestResult) -> int | None:
        """torch's intra-op thread count when this process timed a test with torch imported, more than one
        thread and ``--perf-threads`` not given (the controller prints a hint: ``session.threads_hint``);
        else None. torch is never imported here (``machine.torch_threads``)."""
        if result.measurement is None or result.measurement.source == "callgrind" or self.options.threads is not None:
            return None
        threads = torch_threads()
        return threads if threads is not None and threads > 1 else None

    def _attach_profile(self, item: pytest.Item, rep: pytest.TestReport) -> dict[str, str]:
        """Profile the test under Scalene, unless the run's ``--perf-profile-limit`` profiles are taken:
        then the section says how to profile it. Under xdist the re-run holds the workers' lock."""
        args = self.config.invocation_params.args
        with self._profile_turn() as granted:
            if not granted:
                limit = self.options.profile_limit
                note = (f"not profiled: the run's {limit} profile{'s' * (limit > 1)} (--perf-profile-limit) went to "
                        f"earlier failures; to profile it: {profile_command(item.nodeid, args, _paths(self.config))}")
                rep.sections.append(("perfguard profile", note))
                return {"skipped": note}
            self.progress(item.nodeid, "profiling the measured region under Scalene", prefix="")
            prof = profile_failure(item.nodeid, rootdir=self.config.rootpath, outdir=self.options.profile_dir,
                                   args=rerun_args(args, _paths(self.config),
                                                   xdist=self.config.pluginmanager.has_plugin("xdist")),
                                   test_file=Path(str(item.path)),
                                   configured=self.config.getini("perfguard_profile_paths"),
                                   timeout=self.options.profile_timeout)
        if "error" in prof:
            rep.sections.append(("perfguard profile", f"WARNING: {prof['error']}"))
        else:
            rep.sections.append(("perfguard profile", prof["section"]))
            _add_property(item, rep, "perfguard_profile_json", prof["json"])
            _add_property(item, rep, "perfguard_profile_html", prof["html"])
        return {k: v for k, v in prof.items() if k != "section"}

    def _profile_turn(self) -> AbstractContextManager[bool]:
        """Whether this failure may be profiled: one of the run's ``profile_limit`` turns (under xdist
        counted across the workers, holding their lock so that no measurement runs beside the re-run)."""
        if self.lock is not None:
            return turn(self.lock, "profiles", self.options.profile_limit)
        self.profiles += 1
        return contextlib.nullcontext(self.profiles <= self.options.profile_limit)


def _paths(config: pytest.Config) -> list[str]:
    """The test paths pytest's parser read from the command line (and ``addopts``)."""
    return [str(p) for p in config.getoption("file_or_dir") or []]


def _select(config: pytest.Config, items: list[pytest.Item], nodeids: tuple[str, ...]) -> None:
    """Keep the first item of each node id in ``nodeids`` (a re-run's test); deselect the rest."""
    keep: dict[str, pytest.Item] = {}
    for item in items:
        if item.nodeid in nodeids:
            keep.setdefault(item.nodeid, item)
    chosen = set(map(id, keep.values()))
    dropped = [i for i in items if id(i) not in chosen]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = [i for i in items if id(i) in chosen]


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
