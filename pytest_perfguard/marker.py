"""The ``perf_budget`` marker: a typed function, so the signature is the documentation."""

from __future__ import annotations

import inspect
from typing import Any

import pytest

__all__ = ["perf_budget", "marker_line", "merged_kwargs", "MARKER"]

MARKER = "perf_budget"


def perf_budget(
    *,
    latency: Any = None,
    memory: Any = None,
    gpu_memory: Any = None,
    accuracy: Any = None,
    throughput: Any = None,
    metrics: dict[str, Any] | None = None,
    tolerance: Any = None,
    clock: Any = None,
    instructions: Any = None,
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


def merged_kwargs(item: pytest.Item) -> dict[str, Any]:
    """Every ``perf_budget`` marker of the item as one set of kwargs: the nearest wins, per kwarg.

    Nearest first, as ``item.iter_markers`` yields them: the decorator closest to ``def``, then
    outer stacked decorators, then markers a hook added with ``item.add_marker`` (``append=False``
    puts one first), then the class's, then the module's ``pytestmark``. ``metrics`` merge per
    metric name by the same rule; a kwarg given as ``None`` counts as not given. Positional
    arguments raise ``TypeError``.
    """
    merged: dict[str, Any] = {}
    metrics: dict[str, Any] = {}
    for mark in item.iter_markers(MARKER):
        if mark.args:
            raise TypeError(f"perf_budget takes keyword arguments only, got positional {mark.args!r}")
        for key, value in mark.kwargs.items():
            if value is None:
                continue
            if key == "metrics" and isinstance(value, dict):
                for name, condition in value.items():
                    metrics.setdefault(name, condition)
            else:
                merged.setdefault(key, value)
    if metrics:
        merged.setdefault("metrics", metrics)
    return merged
