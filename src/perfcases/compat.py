"""Import torchvision on CPU-only torch builds whose torchvision C++ extension cannot load.

PyPI's torchvision wheel is linked against CUDA libraries. On a CPU-only torch build its
extension fails to load and ``import torchvision`` raises ``operator torchvision::nms does not
exist`` while registering fake kernels. Models and ``transforms.v2`` are pure Python and work
once the two operator schemas exist, so we define them, and only them, when the extension is
missing. ``torchvision.ops.nms`` and ``torchvision.io`` stay unavailable on such a build; the
suites need neither.
"""

from __future__ import annotations

import importlib
from types import ModuleType

_LIBRARY = None  # kept alive: dropping the Library object would unregister the schemas


def import_torchvision() -> ModuleType:
    """``import torchvision``, defining the missing operator schemas first if needed."""
    global _LIBRARY
    from torch import library

    if _LIBRARY is None and not _has_op("nms"):
        try:
            import torchvision  # a build with a working extension needs nothing more

            return torchvision
        except RuntimeError as exc:
            if "torchvision::nms" not in str(exc):
                raise
        _LIBRARY = library.Library("torchvision", "DEF")
        _LIBRARY.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        _LIBRARY.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        _drop_partial_imports()
    return importlib.import_module("torchvision")


def _has_op(name: str) -> bool:
    import torch

    try:
        getattr(torch.ops.torchvision, name)
    except (AttributeError, RuntimeError):
        return False
    return True


def _drop_partial_imports() -> None:
    import sys

    for module in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[module]
