"""Options shared by the reference suites: which variant of each case, at which scale."""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Any

import pytest

from perfcases import variant

SCALES = ("ci", "full")


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("perfcases", "reference suites (pytest-perfguard)")
    group.addoption("--perfcases-variant", default="optimized",
                    help="which variant of each case to run: optimized (default), naive, or a case's own names")
    group.addoption("--perfcases-scale", default="ci", choices=SCALES,
                    help="ci: minutes on 2 cores (default); full: the sizes of the original reports")


@pytest.fixture(scope="session")
def variant_name(request: pytest.FixtureRequest) -> str:
    return str(request.config.getoption("perfcases_variant"))


@pytest.fixture(scope="session")
def scale(request: pytest.FixtureRequest) -> str:
    return str(request.config.getoption("perfcases_scale"))


@pytest.fixture
def pick_variant(variant_name: str) -> Callable[[ModuleType], Any]:
    """``pick_variant(case_module)``: the selected variant of that case, or skip when it has none."""

    def pick(module: ModuleType) -> Any:
        try:
            return variant(module, variant_name)
        except LookupError as exc:
            pytest.skip(str(exc))

    return pick
