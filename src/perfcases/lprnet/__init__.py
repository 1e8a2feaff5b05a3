"""Quantized LPRNet: licence-plate reading, eager FP32 vs pruned / ONNX / int8.

``VARIANTS`` maps a variant name to a builder of a ``Deployment`` (see ``variants``).
"""

from .variants import VARIANTS

__all__ = ["VARIANTS"]
