"""pytest hooks and options only; the work is done in budget/measure/check/report."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from .ab import SIDE_ENV, ab_pythonpath
from .baseline import BaselineError, thin_samples
from .budget import Budget, BudgetError, parse_budget, parse_ratio
from .check import Row, evaluate, required_samples
from .decide import summarize
from .gate import baseline_rows
from .marker import marker_line
from .markdown import markdown_summary, write_markdown
from .measure import MemoryMeter, Measurement, Settings
from .perf import Perf
from .rerun import default_profile_paths, profile_failure, rerun_args
from .report import MAX_REPORT_SAMPLES, json_document, json_safe, summary_table, write_json
from .serial import held, lock_path
from .store import RunBaseline

budget_key = pytest.StashKey[Budget]()
perf_key = pytest.StashKey[Perf]()
memory_key = pytest.StashKey[MemoryMeter]()
result_key = pytest.StashKey[dict[str, Any]]()  # the verdict the confirmation loop last computed

PLUGIN_NAME = "perfguard-session"
MARKER = "perf_budget"

# (option, ini name, type, default, help)
_OPTIONS: list[tuple[str, str, str, Any, str]] = [
    ("--perf-min-rounds", "perfguard_min_rounds", "int", 20, "least number of timed rounds per test"),
    ("--perf-max-time", "perfguard_max_time", "float", 1.0, "seconds of timed rounds per test (after calibration)"),
    ("--perf-min-round-time", "perfguard_min_round_time", "float", 0.01,
     "calls are batched until one round lasts at least this many seconds"),
    ("--perf-json", "perfguard_json", "string", "", "write every measured test, its samples, metrics and verdicts to PATH"),
    ("--perf-markdown", "perfguard_markdown", "string", "",
     "write a markdown summary (verdict, regressions, budget breaches) to PATH, e.g. $GITHUB_STEP_SUMMARY"),
    ("--perf-baselines", "perfguard_baselines", "string", "baselines", "directory of the per-machine baseline files"),
    ("--perf-machine", "perfguard_machine", "string", "", "baseline file name to use instead of this machine's slug"),
    ("--perf-tolerance", "perfguard_tolerance", "string", "5%", "regression tolerance (a change must be significant and beyond it)"),
    ("--perf-profile", "perfguard_profile", "string", "on-failure",
     "re-run failing perf tests under Scalene: on-failure, always or never"),
    ("--perf-profile-dir", "perfguard_profile_dir", "string", ".perfguard/profiles", "where profiles are written"),
    ("--perf-profile-timeout", "perfguard_profile_timeout", "float", 300.0, "seconds before a profile re-run is killed"),
]
PROFILE_MODES = ("on-failure", "always", "never")
_TYPES: dict[str, type] = {"int": int, "float": float, "string": str}


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("perfguard", "performance budgets (pytest-perfguard)")
    group.addoption("--perf", action="store_true", default=None,
                    help="measure tests that use the perf fixture or perf_budget and enforce their budgets "
                         "(without it they run once, unmeasured)")
    parser.addini("perfguard_perf", "measure and enforce budgets as if --perf were given", type="bool", default=False)
    group.addoption("--perf-save", action="store_true", default=None,
                    help="merge this run's measurements into baselines/<machine>.json (atomic; other entries kept)")
    parser.addini("perfguard_save", "save baselines as if --perf-save were given", type="bool", default=False)
    group.addoption("--perf-confirm", type=int, default=None, metavar="N",
                    help="re-measure a test whose latency looks regressed up to N times, deciding on the pooled "
                         "rounds (default 2; 0 turns it off)")
    group.addoption("--perf-threads", type=int, default=None, metavar="N",
                    help="pin torch's CPU thread count (torch.set_num_threads) and OMP/MKL threads for the "
                         "run; recorded in the baseline's fingerprint (default: leave torch's own)")
    parser.addini("perfguard_threads", "pin torch's CPU thread count as --perf-threads does", default="")
    parser.addini("perfguard_confirm", "how many times a suspected latency regression is re-measured", default="2")
    parser.addini("perfguard_ab_pythonpath", "folders (relative to the rootdir) put first on sys.path in each "
                  "side of `perfguard ab`, so that each side imports its own code (default: src, if it exists)",
                  type="linelist", default=[])
    parser.addini("perfguard_profile_paths", "code to profile (default: src/ and the test's directory)",
                  type="linelist", default=[])
    for opt, ini, typ, default, help_ in _OPTIONS:
        group.addoption(opt, default=None, type=_TYPES[typ],
                        help=f"{help_} (default {default!r}; ini {ini})")
        parser.addini(ini, help_, type="string", default=str(default))


@dataclass(frozen=True)
class Options:
    """Resolved once: CLI > ini > default."""

    enabled: bool
    timing: Settings
    json_path: Path | None
    markdown_path: Path | None
    save: bool
    baselines: Path
    machine: str | None
    tolerance: float
    confirm: int
    profile: str
    profile_dir: Path
    profile_timeout: float
    threads: int | None = None

    @classmethod
    def from_config(cls, config: pytest.Config) -> Options:
        def get(opt: str, ini: str, conv: type) -> Any:
            value = config.getoption(opt.lstrip("-").replace("-", "_"))
            if value is None:
                raw = config.getini(ini)
                try:
                    value = conv(raw)
                except ValueError:
                    raise pytest.UsageError(f"ini {ini} = {raw!r} is not a valid {conv.__name__}") from None
            return value

        def flag(dest: str, ini: str) -> bool:
            value = config.getoption(dest)
            return bool(config.getini(ini)) if value is None else bool(value)

        enabled = flag("perf", "perfguard_perf")
        timing = Settings(
            min_rounds=get("--perf-min-rounds", "perfguard_min_rounds", int),
            max_time=get("--perf-max-time", "perfguard_max_time", float),
            min_round_time=get("--perf-min-round-time", "perfguard_min_round_time", float),
        )
        if timing.min_rounds < 1 or timing.max_time < 0 or timing.min_round_time < 0:
            raise pytest.UsageError("--perf-min-rounds must be >= 1 and the --perf-*-time options >= 0")
        json_path = get("--perf-json", "perfguard_json", str)
        markdown_path = get("--perf-markdown", "perfguard_markdown", str)
        save = flag("perf_save", "perfguard_save")
        tol_text = get("--perf-tolerance", "perfguard_tolerance", str)
        try:
            tolerance = parse_ratio(tol_text, "tolerance")
        except BudgetError as exc:
            raise pytest.UsageError(f"--perf-tolerance / perfguard_tolerance: {exc}") from None
        threads = config.getoption("perf_threads")
        if threads is None and config.getini("perfguard_threads"):
            try:
                threads = int(config.getini("perfguard_threads"))
            except ValueError:
                raise pytest.UsageError(f"ini perfguard_threads = {config.getini('perfguard_threads')!r} "
                                        "is not a valid int") from None
        if threads is not None and threads < 1:
            raise pytest.UsageError(f"--perf-threads must be >= 1, not {threads}")
        profile = get("--perf-profile", "perfguard_profile", str)
        if profile not in PROFILE_MODES:
            raise pytest.UsageError(f"--perf-profile / perfguard_profile must be one of {', '.join(PROFILE_MODES)}, "
                                    f"not {profile!r}")
        return cls(enabled=enabled or save, timing=timing,
                   json_path=Path(config.rootpath, json_path) if json_path else None,
                   markdown_path=Path(config.rootpath, markdown_path) if markdown_path else None, save=save,
                   baselines=Path(config.rootpath, get("--perf-baselines", "perfguard_baselines", str)),
                   machine=get("--perf-machine", "perfguard_machine", str) or None, tolerance=tolerance,
                   confirm=max(0, get("--perf-confirm", "perfguard_confirm", int)),
                   profile=profile, profile_dir=Path(config.rootpath, get("--perf-profile-dir", "perfguard_profile_dir", str)),
                   profile_timeout=get("--perf-profile-timeout", "perfguard_profile_timeout", float),
                   threads=threads)


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
        workerinput = getattr(config, "workerinput", None)
        self.lock = lock_path(str(workerinput.get("testrunuid", ""))) if workerinput and options.enabled else None

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
        self.notes.extend(_baseline_notes(self.baseline, self.options.save))
        drift = self.baseline.drift() if self.baseline.baseline else None
        if drift:
            self.notes.append(f"drift: {drift}")

    @pytest.hookimpl(wrapper=True)
    def pytest_make_collect_report(self, collector: pytest.Collector) -> Generator[None, pytest.CollectReport, pytest.CollectReport]:
        rep = yield
        if rep.passed:
            errors = [e for item in rep.result if isinstance(item, pytest.Item) for e in [_parse_marker(item)] if e]
            if errors:
                rep.outcome = "failed"
                rep.longrepr = "\n".join(errors)
        return rep

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
            if self.options.enabled and budget_key in item.stash and "benchmark" in getattr(item, "fixturenames", ()):
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
            rows = baseline_rows(result, item.stash.get(budget_key, None), self.baseline.entry(item.nodeid),
                                 self.options.tolerance)
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

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if self.is_worker or not self.options.enabled:
            return
        if self.options.json_path is not None:
            extra = {"settings": json_safe(vars(self.options.timing))}
            if self.baseline is not None:
                extra.update(machine=self.baseline.fingerprint, machine_slug=self.baseline.slug,
                             baseline=_relative(self.baseline.path, self.config.rootpath) if self.baseline.path else None)
            write_json(self.options.json_path, json_document(self.results, extra))
            self.notes.append(f"wrote {self.options.json_path}")
        if self.options.markdown_path is not None:
            context = [f"baseline: {self.baseline.path}" if self.baseline is not None and self.baseline.baseline
                       else "no baseline for this machine: absolute budgets only"]
            write_markdown(self.options.markdown_path, markdown_summary(self.results, context=context))
            self.notes.append(f"wrote {self.options.markdown_path}")
        if self.options.save and self.baseline is not None:
            try:
                self.notes.append(self.baseline.save(self.results, self.config.rootpath))
            except BaselineError as exc:
                self.notes.append(f"ERROR: baseline not saved: {exc}")
                if session.exitstatus == 0:
                    session.exitstatus = pytest.ExitCode.TESTS_FAILED

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


def _add_property(item: pytest.Item, rep: pytest.TestReport, name: str, value: object) -> None:
    """On the item (JUnit XML reads the teardown report's copy) and on this report (xdist, hooks)."""
    item.user_properties.append((name, value))
    rep.user_properties.append((name, value))


def _is_perf_test(item: pytest.Item) -> bool:
    return budget_key in item.stash or "perf" in getattr(item, "fixturenames", ())


def _baseline_notes(run: RunBaseline, saving: bool) -> list[str]:
    if run.error:
        return [f"ERROR: {run.error}; regression checks are off for this run"]
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
    """Parse the closest perf_budget marker into the stash; return an error message or None."""
    marker = item.get_closest_marker(MARKER)
    if marker is None:
        return None
    if marker.args:
        return f"{item.nodeid}: perf_budget takes keyword arguments only, got positional {marker.args!r}"
    try:
        item.stash[budget_key] = parse_budget(dict(marker.kwargs))
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
