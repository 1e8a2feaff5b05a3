"""The code the reference suites guard: each case module exposes its variants by name.

``VARIANTS`` in each module maps a variant name (``naive``, ``optimized``, ...) to a callable;
``variant(module, name)`` looks one up with a clear error.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any


def variant(module: ModuleType, name: str) -> Any:
    variants: dict[str, Any] = getattr(module, "VARIANTS")
    try:
        return variants[name]
    except KeyError:
        raise LookupError(
            f"{module.__name__} has no variant {name!r}; it has: {', '.join(sorted(variants))}"
        ) from None
