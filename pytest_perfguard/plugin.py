"""pytest's entry point: options, configuration and the ``perf`` fixture. The work is done by two
plugins registered by role (``runner.Runner`` in every process, ``session.Session`` on the
controller only) and by the modules they call."""

from __future__ import annotations

import os
import sys
from functools import partial

import pytest

from .ab_process import SIDE_ENV, ab_pythonpath
from .ab_side import turns_key
from .callgrind import counter
from .check import decided as check_decided, required_samples
from .instructions import run_under_callgrind
from .marker import marker_line
from .options import Options, add_options
from .perf import Perf
from .runner import Runner, budget_key, perf_key
from .serial import lock_path
from .session import Session

RUNNER_NAME = "perfguard-runner"
SESSION_NAME = "perfguard-session"


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
    if options.instructions and counter() is None:  # this process only starts the session under callgrind
        code = run_under_callgrind(config)
        pytest.exit(f"perfguard: the session above ran under valgrind's callgrind (exit {code})", returncode=code)
    if options.threads is not None:
        pin_threads(options.threads)
    workerinput = getattr(config, "workerinput", None)
    if workerinput is None:
        config.pluginmanager.register(Runner(config, options, None, _progress(config)), RUNNER_NAME)
        config.pluginmanager.register(Session(config, options), SESSION_NAME)
    else:  # an xdist worker: measures and judges; the controller reports
        lock = lock_path(str(workerinput.get("testrunuid", ""))) if options.enabled else None
        config.pluginmanager.register(Runner(config, options, lock, lambda *args, **kwargs: None), RUNNER_NAME)


def _progress(config: pytest.Config):  # type: ignore[no-untyped-def]
    """What a long measurement is doing (calibration, a confirmation, a profile re-run), as its own line
    under ``-v`` only: there pytest writes each test's line again after it; in the default mode a line
    of ours would split the progress line (``test_x.py .. [100%]``)."""

    def progress(nodeid: str, message: str, prefix: str = "calibrating, ") -> None:
        tr = config.pluginmanager.get_plugin("terminalreporter")
        capman = config.pluginmanager.get_plugin("capturemanager")
        if tr is None or capman is None or not tr.showlongtestinfo:
            return
        with capman.global_and_fixture_disabled():
            tr.write_line(f"perfguard: {nodeid}: {prefix}{message}")

    return progress


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
    runner = request.config.pluginmanager.get_plugin(RUNNER_NAME)
    assert isinstance(runner, Runner)
    item = request.node
    budget = item.stash.get(budget_key, None)
    need = max((required_samples(p) for p in budget.percentiles), default=0) if budget else 0
    # a budget missed tenfold stops the rounds (``check.decided``), except in a save: a baseline keeps them all
    decided = partial(check_decided, budget) if budget is not None and not runner.options.save else None
    turns = request.config.stash.get(turns_key, None)  # perfguard ab --lockstep: rounds alternate with the other side's
    obj = Perf(enabled=runner.options.enabled, settings=runner.options.timing, min_samples=need,
               progress=lambda msg: runner.progress(item.nodeid, msg), counter=runner.counter, region=runner.region,
               decided=decided, between=turns.pause if turns is not None else None)
    item.stash[perf_key] = obj
    return obj
