"""Command-line options, their ini twins, and the frozen ``Options`` they resolve to (CLI > ini > default)."""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from .budget import BudgetError, parse_ratio
from .measure import CLOCKS, Settings

__all__ = ["Options", "add_options", "BASELINE_ERRORS", "PROFILE_MODES"]

PROFILE_MODES = ("on-failure", "always", "never")
BASELINE_ERRORS = ("fail", "warn")

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
    ("--perf-confirm-pause", "perfguard_confirm_pause", "float", 1.0,
     "seconds to wait before a suspected latency regression is measured again in a fresh process"),
    ("--perf-clock", "perfguard_clock", "string", "wall",
     "the clock the regression gate judges latency on: wall, or cpu (CPU time: what other processes on a shared "
     "machine add to wall time is left out; absolute latency budgets stay wall time unless a budget says clock=)"),
    ("--perf-alpha", "perfguard_alpha", "string", "1%",
     "the chance that an unchanged run fails the regression gate anywhere: one error budget, shared by every "
     "comparison with the baseline in the run"),
    ("--perf-baseline-errors", "perfguard_baseline_errors", "string", "fail",
     "what a baseline the gate cannot judge by does (unreadable or malformed file, an entry whose samples cannot "
     "be compared): fail the run, or warn (an explicit opt-out of the gate)"),
    ("--perf-profile", "perfguard_profile", "string", "on-failure",
     "re-run failing perf tests under Scalene: on-failure, always or never"),
    ("--perf-profile-dir", "perfguard_profile_dir", "string", ".perfguard/profiles", "where profiles are written"),
    ("--perf-profile-timeout", "perfguard_profile_timeout", "float", 300.0, "seconds before a profile re-run is killed"),
    ("--perf-profile-limit", "perfguard_profile_limit", "int", 3,
     "most failing tests profiled in one run (each profile is a Scalene re-run); the failure of each further "
     "test prints the command that profiles it"),
]
_TYPES: dict[str, type] = {"int": int, "float": float, "string": str}


def _help(text: str) -> str:
    """argparse formats help with ``%``: a literal percent sign must be doubled."""
    return text.replace("%", "%%")


def add_options(parser: pytest.Parser) -> None:
    group = parser.getgroup("perfguard", "performance budgets (pytest-perfguard)")
    group.addoption("--perf", action="store_true", default=None,
                    help="measure tests that use the perf fixture or perf_budget and enforce their budgets "
                         "(without it they run once, unmeasured)")
    parser.addini("perfguard_perf", "measure and enforce budgets as if --perf were given", type="bool", default=False)
    group.addoption("--perf-save", action="store_true", default=None,
                    help="merge this run's measurements into baselines/<machine>.json (atomic; other entries kept)")
    parser.addini("perfguard_save", "save baselines as if --perf-save were given", type="bool", default=False)
    group.addoption("--perf-require-baseline", action="store_true", default=None,
                    help="fail the run when this machine has no baseline file, or a measured test has no entry in "
                         "it (for CI: deleting the file or an entry must not turn the gate off)")
    parser.addini("perfguard_require_baseline", "as --perf-require-baseline", type="bool", default=False)
    group.addoption("--perf-instructions", action="store_true", default=None,
                    help="count each measured region's instructions under valgrind's callgrind instead of timing "
                         "it (implies --perf; needs valgrind; baselines/<machine>-callgrind.json)")
    parser.addini("perfguard_instructions", "as --perf-instructions", type="bool", default=False)
    group.addoption("--perf-confirm", type=int, default=None, metavar="N",
                    help="re-measure a test whose latency looks regressed up to N times; it fails only when every "
                         "block of rounds, judged alone, regressed (default 2; 0 turns it off)")
    group.addoption("--perf-threads", type=int, default=None, metavar="N",
                    help="pin torch's CPU thread count (torch.set_num_threads) and OMP/MKL threads for the "
                         "run; recorded in the baseline's fingerprint (default: leave torch's own)")
    parser.addini("perfguard_threads", "pin torch's CPU thread count as --perf-threads does", default="")
    group.addoption("--perf-time-cap", type=float, default=None, metavar="S",
                    help=_help("seconds of timed rounds after which a test with slow calls stops, once it has 5 "
                               "rounds (the fewest a baseline comparison judges): a 10 s call takes 5 rounds, not "
                               "--perf-min-rounds; it also bounds the extra rounds a percentile budget asks for "
                               "(default: 10x --perf-max-time, at least 5 s; ini perfguard_time_cap)"))
    parser.addini("perfguard_time_cap", "as --perf-time-cap", default="")
    parser.addini("perfguard_confirm", "how many times a suspected latency regression is re-measured", default="2")
    parser.addini("perfguard_ab_pythonpath", "folders (relative to the rootdir) put first on sys.path in each "
                  "side of `perfguard ab`, so that each side imports its own code (default: src, if it exists)",
                  type="linelist", default=[])
    parser.addini("perfguard_profile_paths", "code to profile (default: src/ and the test's directory)",
                  type="linelist", default=[])
    for opt, ini, typ, default, help_ in _OPTIONS:
        group.addoption(opt, default=None, type=_TYPES[typ], help=_help(f"{help_} (default {default!r}; ini {ini})"))
        parser.addini(ini, _help(help_), type="string", default=str(default))
    # The plugin's own re-runs (rerun.py) pass these; they are not for users, so they have no ini twin.
    group.addoption("--perf-profile-region", default=None, metavar="JSON", help=argparse.SUPPRESS)
    group.addoption("--perf-only", action="append", default=[], metavar="NODEID", help=argparse.SUPPRESS)


def _positive_finite(name: str, value: float, *, zero: bool = True) -> float:
    if not math.isfinite(value) or value < 0 or (value == 0 and not zero):
        need = ">= 0" if zero else "> 0"
        raise pytest.UsageError(f"{name} must be a finite number {need}, not {value!r}")
    return value


def _time_cap(config: pytest.Config) -> float | None:
    """``--perf-time-cap`` / ``perfguard_time_cap`` in seconds, or None (derived from ``--perf-max-time``)."""
    value = config.getoption("perf_time_cap")
    if value is None:
        raw = str(config.getini("perfguard_time_cap")).strip()
        if not raw:
            return None
        try:
            value = float(raw)
        except ValueError:
            raise pytest.UsageError(f"ini perfguard_time_cap = {raw!r} is not a valid float") from None
    return _positive_finite("--perf-time-cap / perfguard_time_cap", value, zero=False)


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
    baseline_errors: str = "fail"  # "fail" or "warn"
    require_baseline: bool = False
    alpha: float = 0.01
    clock: str = "wall"  # what the regression gate judges latency on (a budget's clock= wins)
    confirm_pause: float = 1.0  # seconds before a suspected regression is measured again (in a fresh process)
    instructions: bool = False  # regions are counted under callgrind, not timed
    profile_limit: int = 3  # most profile re-runs in one run
    profile_region: Path | None = None  # a profile re-run under `scalene run --off`: Scalene's JSON output
    only: tuple[str, ...] = ()  # a re-run: the node ids to run, whatever else the arguments collect

    @property
    def warn_only(self) -> bool:
        return self.baseline_errors == "warn"

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

        def choice(opt: str, ini: str, allowed: tuple[str, ...]) -> str:
            value = get(opt, ini, str)
            if value not in allowed:
                raise pytest.UsageError(f"{opt} / {ini} must be one of {', '.join(allowed)}, not {value!r}")
            return str(value)

        timing = Settings(
            min_rounds=get("--perf-min-rounds", "perfguard_min_rounds", int),
            max_time=_positive_finite("--perf-max-time", get("--perf-max-time", "perfguard_max_time", float)),
            min_round_time=_positive_finite("--perf-min-round-time",
                                            get("--perf-min-round-time", "perfguard_min_round_time", float)),
            time_cap=_time_cap(config),
        )
        if timing.min_rounds < 1:
            raise pytest.UsageError(f"--perf-min-rounds must be >= 1, not {timing.min_rounds}")
        json_path = get("--perf-json", "perfguard_json", str)
        markdown_path = get("--perf-markdown", "perfguard_markdown", str)
        save = flag("perf_save", "perfguard_save")
        tol_text = get("--perf-tolerance", "perfguard_tolerance", str)
        try:
            tolerance = parse_ratio(tol_text, "tolerance")
        except BudgetError as exc:
            raise pytest.UsageError(f"--perf-tolerance / perfguard_tolerance: {exc}") from None
        alpha_text = get("--perf-alpha", "perfguard_alpha", str)
        try:
            alpha = parse_ratio(alpha_text)
        except BudgetError:
            alpha = math.nan
        if not 0 < alpha < 0.5:
            raise pytest.UsageError(f"--perf-alpha / perfguard_alpha must be a percentage above 0 and below 50% "
                                    f"(e.g. 1%) or such a fraction (0.01), not {alpha_text!r}")
        threads = config.getoption("perf_threads")
        if threads is None and config.getini("perfguard_threads"):
            try:
                threads = int(config.getini("perfguard_threads"))
            except ValueError:
                raise pytest.UsageError(f"ini perfguard_threads = {config.getini('perfguard_threads')!r} "
                                        "is not a valid int") from None
        if threads is not None and threads < 1:
            raise pytest.UsageError(f"--perf-threads must be >= 1, not {threads}")
        timeout = get("--perf-profile-timeout", "perfguard_profile_timeout", float)
        limit = get("--perf-profile-limit", "perfguard_profile_limit", int)
        if limit < 1:
            raise pytest.UsageError(f"--perf-profile-limit must be >= 1 (--perf-profile=never turns profiles off), "
                                    f"not {limit}")
        region = config.getoption("perf_profile_region")
        instructions = flag("perf_instructions", "perfguard_instructions")
        return cls(enabled=flag("perf", "perfguard_perf") or save or instructions, timing=timing,
                   json_path=Path(config.rootpath, json_path) if json_path else None,
                   markdown_path=Path(config.rootpath, markdown_path) if markdown_path else None, save=save,
                   baselines=Path(config.rootpath, get("--perf-baselines", "perfguard_baselines", str)),
                   machine=get("--perf-machine", "perfguard_machine", str) or None, tolerance=tolerance,
                   confirm=max(0, get("--perf-confirm", "perfguard_confirm", int)),
                   profile="never" if instructions else choice("--perf-profile", "perfguard_profile", PROFILE_MODES),
                   profile_dir=Path(config.rootpath, get("--perf-profile-dir", "perfguard_profile_dir", str)),
                   profile_timeout=_positive_finite("--perf-profile-timeout", timeout, zero=False),
                   threads=threads,
                   baseline_errors=choice("--perf-baseline-errors", "perfguard_baseline_errors", BASELINE_ERRORS),
                   require_baseline=flag("perf_require_baseline", "perfguard_require_baseline"), alpha=alpha,
                   clock=choice("--perf-clock", "perfguard_clock", CLOCKS), instructions=instructions,
                   confirm_pause=_positive_finite("--perf-confirm-pause",
                                                  get("--perf-confirm-pause", "perfguard_confirm_pause", float)),
                   profile_limit=limit, profile_region=Path(region) if region else None,
                   only=tuple(config.getoption("perf_only")))
