"""Where the torch-based cases run: ``"cuda"`` when asked for (or available under ``auto``), else ``"cpu"``.

The suites' ``--perfcases-device`` is resolved once, in ``pytest_configure``, before test modules
are imported, so that a module can choose device-dependent budgets at import time
(``gpu_budget``): a ``gpu_memory`` budget only means something where a CUDA device is in use.
"""

from __future__ import annotations

CHOICES = ("auto", "cpu", "cuda")
selected = "cpu"  # what resolve() chose for this session


def cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def resolve(choice: str) -> str:
    """``auto`` -> ``cuda`` when available; ``cuda`` stays ``cuda`` (the suites skip without one)."""
    global selected
    if choice not in CHOICES:
        raise ValueError(f"device must be one of {', '.join(CHOICES)}, not {choice!r}")
    selected = "cuda" if choice == "cuda" or (choice == "auto" and cuda_available()) else "cpu"
    return selected


def gpu_budget(limit: str) -> dict[str, str]:
    """``{"gpu_memory": limit}`` when this session runs the cases on CUDA, else ``{}``."""
    return {"gpu_memory": limit} if selected == "cuda" else {}
