"""The ``perf_budget`` marker: a typed function, so the signature is the documentation."""

from __future__ import annotations

import inspect
from typing import Any

import pytest

__all__ = ["perf_budget", "marker_line"]


def perf_budget(
    *,
    latency: Any = None,
    memory: Any = None,
    gpu_memory: Any = None,
    accuracy: Any = None,
    throughput: Any = None,
    metrics: dict[str, Any] | None = None,
    tolerance: Any = None,
) -> pytest.MarkDecorator:
    """Budget a test: ``@perf_budget(latency="2ms", memory="300MiB", accuracy=0.98)``.

    Sugar for ``@pytest.mark.perf_budget(...)``; both are validated at collection.
    """
    given = {k: v for k, v in locals().items() if v is not None}
    return pytest.mark.perf_budget(**given)


def marker_line() -> str:
    """The ini ``markers`` line, built from the signature."""
    params = ", ".join(f"{name}=None" for name in inspect.signature(perf_budget).parameters)
    return (
        f"perf_budget(*, {params}): performance budget checked with --perf "
        "(latency/throughput/memory ceilings, accuracy floor, recorded metrics)"
    )
