"""Synthetic test images, deterministic under a seed (nothing is downloaded)."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw

__all__ = ["synthetic_png", "synthetic_pngs"]


def synthetic_png(seed: int, size: int = 224) -> bytes:
    """PNG bytes of a ``size`` x ``size`` RGB picture: a colour gradient with a few random shapes."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0.0, 1.0, size, dtype=np.float32)
    start, end = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    pixels = start + (end - start) * ramp[:, None, None] * ramp[None, :, None]
    image = Image.fromarray(pixels.astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(3, 8))):
        x0, y0 = (int(v) for v in rng.integers(0, size - 16, 2))
        x1, y1 = x0 + int(rng.integers(16, size // 2)), y0 + int(rng.integers(16, size // 2))
        fill = tuple(int(v) for v in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)((x0, y0, x1, y1), fill=fill)
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def synthetic_pngs(count: int, size: int = 224, seed: int = 0) -> list[bytes]:
    """``count`` different pictures; the same list for the same arguments."""
    return [synthetic_png(seed * 1_000_003 + i, size) for i in range(count)]
