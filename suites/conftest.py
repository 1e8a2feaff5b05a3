"""Options shared by the reference suites: which variant of each case, at which scale."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from types import ModuleType
from typing import Any

import pytest

from perfcases import device as devices
from perfcases import variant

SCALES = ("ci", "full")
DEVICES = devices.CHOICES


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("perfcases", "reference suites (pytest-perfguard)")
    group.addoption("--perfcases-variant", default="optimized",
                    help="which variant of each case to run: optimized (default), naive, or a case's own names")
    group.addoption("--perfcases-scale", default="ci", choices=SCALES,
                    help="ci: minutes on 2 cores (default); full: the sizes of the original reports")
    group.addoption("--perfcases-device", default="auto", choices=DEVICES,
                    help="where the torch-based cases run: auto (CUDA when available, default), cpu or cuda")


def pytest_configure(config: pytest.Config) -> None:
    devices.resolve(str(config.getoption("perfcases_device")))


@pytest.fixture(scope="session")
def variant_name(request: pytest.FixtureRequest) -> str:
    return str(request.config.getoption("perfcases_variant"))


@pytest.fixture(scope="session")
def scale(request: pytest.FixtureRequest) -> str:
    return str(request.config.getoption("perfcases_scale"))


@pytest.fixture(scope="session")
def device(request: pytest.FixtureRequest) -> str:
    """The torch device of the torch-based cases: ``"cuda"`` or ``"cpu"``.

    ``--perfcases-device=cuda`` on a machine without CUDA skips those tests with the reason,
    never fails them. On CUDA the perf fixture synchronises every round and reports ``gpu_memory``.
    """
    if devices.selected == "cuda" and not devices.cuda_available():
        pytest.skip("--perfcases-device=cuda: this machine has no CUDA device (torch.cuda.is_available() is False)")
    return devices.selected


@pytest.fixture
def pick_variant(variant_name: str) -> Callable[[ModuleType], Any]:
    """``pick_variant(case_module)``: the selected variant of that case, or skip when it has none."""

    def pick(module: ModuleType) -> Any:
        try:
            return variant(module, variant_name)
        except LookupError as exc:
            pytest.skip(str(exc))

    return pick


@pytest.fixture(scope="session")
def progress(request: pytest.FixtureRequest) -> Callable[[int, str], AbstractContextManager[Callable[[int], Any]]]:
    """``with progress(total, "training") as advance: ... advance(n)``: a progress bar for long
    preparation steps (data generation, training), drawn only on an interactive terminal.

    Output capture is suspended while the bar is drawn so that it reaches the terminal; in CI,
    in a pipe or under xdist it draws nothing and costs nothing.
    """
    capman = request.config.pluginmanager.getplugin("capturemanager")
    interactive = (
        sys.__stderr__ is not None and sys.__stderr__.isatty()
        and not os.environ.get("CI") and not hasattr(request.config, "workerinput")
    )

    @contextmanager
    def bar(total: int, desc: str) -> Iterator[Callable[[int], Any]]:
        if not interactive or capman is None:
            yield lambda n=1: None
            return
        from tqdm import tqdm

        with capman.global_and_fixture_disabled(), tqdm(total=total, desc=desc, leave=False,
                                                        file=sys.__stderr__) as shown:
            yield shown.update

    return bar
