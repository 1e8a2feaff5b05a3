"""pytest-perfguard: performance budgets for ML code, gated in pytest.

Public API: ``perf_budget`` (marker sugar) and ``Perf`` (the ``perf`` fixture's type).
Imported lazily so the ``perfguard`` CLI and the measuring core never import pytest.
"""

from __future__ import annotations

from typing import Any

__all__ = ["perf_budget", "Perf", "__version__"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name == "perf_budget":
        from .marker import perf_budget

        return perf_budget
    if name == "Perf":
        from .perf import Perf

        return Perf
    raise AttributeError(f"module 'pytest_perfguard' has no attribute {name!r}")
