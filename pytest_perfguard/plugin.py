"""pytest hooks and options only; the work is done in budget/measure/check/report."""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from .budget import Budget, BudgetError, parse_budget
from .check import Row, evaluate, required_samples
from .marker import marker_line
from .measure import MemoryMeter, Measurement, Settings
from .perf import Perf
from .report import json_document, json_safe, summarize_samples, summary_table, thin, write_json

budget_key = pytest.StashKey[Budget]()
perf_key = pytest.StashKey[Perf]()
memory_key = pytest.StashKey[MemoryMeter]()

PLUGIN_NAME = "perfguard-session"
MARKER = "perf_budget"

# (option, ini name, type, default, help)
_OPTIONS: list[tuple[str, str, str, Any, str]] = [
    ("--perf-min-rounds", "perfguard_min_rounds", "int", 20, "least number of timed rounds per test"),
    ("--perf-max-time", "perfguard_max_time", "float", 1.0, "seconds of timed rounds per test (after calibration)"),
    ("--perf-min-round-time", "perfguard_min_round_time", "float", 0.01,
     "calls are batched until one round lasts at least this many seconds"),
    ("--perf-json", "perfguard_json", "string", "", "write every measured test, its samples, metrics and verdicts to PATH"),
]
_TYPES: dict[str, type] = {"int": int, "float": float, "string": str}


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("perfguard", "performance budgets (pytest-perfguard)")
    group.addoption("--perf", action="store_true", default=None,
                    help="measure tests that use the perf fixture or perf_budget and enforce their budgets "
                         "(without it they run once, unmeasured)")
    parser.addini("perfguard_perf", "measure and enforce budgets as if --perf were given", type="bool", default=False)
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

        enabled = config.getoption("perf")
        if enabled is None:
            enabled = bool(config.getini("perfguard_perf"))
        timing = Settings(
            min_rounds=get("--perf-min-rounds", "perfguard_min_rounds", int),
            max_time=get("--perf-max-time", "perfguard_max_time", float),
            min_round_time=get("--perf-min-round-time", "perfguard_min_round_time", float),
        )
        if timing.min_rounds < 1 or timing.max_time < 0 or timing.min_round_time < 0:
            raise pytest.UsageError("--perf-min-rounds must be >= 1 and the --perf-*-time options >= 0")
        json_path = get("--perf-json", "perfguard_json", str)
        return cls(enabled, timing, Path(config.rootpath, json_path) if json_path else None)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", marker_line())
    config.pluginmanager.register(PerfGuard(config, Options.from_config(config)), PLUGIN_NAME)


@pytest.fixture
def perf(request: pytest.FixtureRequest) -> Perf:
    """Measure one region: ``perf(fn, *args, items=None, **kwargs)``; ``perf.record(accuracy=...)``."""
    guard: PerfGuard = request.config.pluginmanager.get_plugin(PLUGIN_NAME)
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

    def progress(self, nodeid: str, message: str) -> None:
        tr = self.config.pluginmanager.get_plugin("terminalreporter")
        capman = self.config.pluginmanager.get_plugin("capturemanager")
        if tr is None or capman is None or hasattr(self.config, "workerinput"):
            return
        with capman.global_and_fixture_disabled():
            tr.write_line(f"perfguard: {nodeid}: calibrating, {message}")

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
    def pytest_runtest_call(self, item: pytest.Item) -> Generator[None, None, None]:
        # pytest-benchmark interop: its fixture times the code; we add the memory meter around it.
        if self.options.enabled and budget_key in item.stash and "benchmark" in getattr(item, "fixturenames", ()):
            meter = MemoryMeter()
            item.stash[memory_key] = meter
            with meter:
                return (yield)
        return (yield)

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, pytest.TestReport, pytest.TestReport]:
        rep = yield
        if rep.when != "call":
            return rep
        result = _judge(item, measured=self.options.enabled)
        if result is None:
            return rep
        rep.perfguard = result  # type: ignore[attr-defined]  # JSON-safe: survives xdist
        for row in result["rows"]:
            if row["now"] is not None:
                rep.user_properties.append((f"perf {row['metric']}", row["now"]))
        failing = [row["message"] for row in result["rows"] if Row(**row).failed]
        if rep.passed and failing:
            rep.outcome = "failed"
            rep.longrepr = "\n".join(failing)
        if result["rows"]:
            rep.sections.append(("perfguard", "\n".join(summary_table([result]))))
        return rep

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        result = getattr(report, "perfguard", None)
        if result is not None:
            result = dict(result, outcome=report.outcome)
            self.results.append(result)

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if not self.options.enabled or hasattr(self.config, "workerinput"):
            return
        lines = summary_table(self.results)
        if not lines:
            return
        terminalreporter.write_sep("-", "perfguard")
        for line in lines:
            terminalreporter.write_line(line)
        if any(row["verdict"] == "no-baseline" for r in self.results for row in r["rows"]):
            terminalreporter.write_line("relative budgets need a baseline for this machine.")
        if self.options.json_path is not None:
            terminalreporter.write_line(f"perfguard: wrote {self.options.json_path}")

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if hasattr(self.config, "workerinput") or not self.options.enabled or self.options.json_path is None:
            return
        write_json(self.options.json_path, json_document(self.results, {"settings": json_safe(vars(self.options.timing))}))


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
        m["summary"] = summarize_samples(m["samples"])
        m["samples"] = thin(m["samples"])
    return {
        "nodeid": item.nodeid,
        "rows": [r.to_dict() for r in rows],
        "measurement": m,
        "metrics": dict(metrics),
        "budget": json_safe(budget.raw) if budget else {},
    }
