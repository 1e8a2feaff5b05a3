"""Synthetic licence plates: deterministic strings and images, no downloads.

A plate string follows one of a few real-world layouts (letters ``L``, digits ``D``, a gap
``' '``) over 34 characters: the digits and the letters without I and O, which plates avoid
because they read as 1 and 0. It is rendered with Pillow in a DejaVu font that matplotlib
ships (so a fresh machine has it), then jittered: affine warp (rotation, shear, scale,
shift), blur, lighting and sensor noise. Plate ``i`` of a set depends only on ``(seed, i)``,
so any slice of a set can be rebuilt alone and the order of generation does not matter.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont, ImageOps

__all__ = [
    "CHARS", "BLANK", "NUM_CLASSES", "LAYOUTS", "TRAIN_SEED", "VALIDATION_SEED", "TEST_SEED",
    "CALIBRATION_SEED", "PlateSet", "plate_text", "render_plate",
    "make_plates", "encode", "to_input",
]

DIGITS = "0123456789"
LETTERS = "ABCDEFGHJKLMNPQRSTUVWXYZ"  # no I, no O
CHARS = DIGITS + LETTERS
BLANK = len(CHARS)  # the CTC blank is the last class
NUM_CLASSES = len(CHARS) + 1
LAYOUTS = ("LLDD LLL", "LLL DDDD", "DLLL DDD", "LL DDDDD", "DDD LLLL", "LLL DDD", "LL DDDD LL", "DDDD LLLL")  # 6-8

# Each set has its own seed, so training, validation, test and calibration plates are independent draws.
TRAIN_SEED, VALIDATION_SEED, TEST_SEED, CALIBRATION_SEED = 1, 2, 3, 4

WIDTH, HEIGHT = 94, 24  # the network's input size
_SCALE = 4  # render at 4x and downsample, as a camera would
_FONTS = ("DejaVuSans-Bold.ttf", "DejaVuSansMono-Bold.ttf")


@dataclass(frozen=True)
class PlateSet:
    """``images``: uint8 (N, 24, 94, 3) RGB; ``texts``: the N plate strings (no gaps)."""

    images: np.ndarray
    texts: list[str]

    def __len__(self) -> int:
        return len(self.texts)


def plate_text(rng: np.random.Generator) -> str:
    """A random plate in one of ``LAYOUTS``; the gap is kept for rendering, dropped in labels."""
    layout = LAYOUTS[rng.integers(len(LAYOUTS))]
    pools = {"L": LETTERS, "D": DIGITS}
    return "".join(c if c == " " else pools[c][rng.integers(len(pools[c]))] for c in layout)


@lru_cache(maxsize=None)
def _font(name: str) -> ImageFont.FreeTypeFont:
    import matplotlib

    path = os.path.join(matplotlib.get_data_path(), "fonts", "ttf", name)
    return ImageFont.truetype(path, size=20 * _SCALE)


def _glyphs(text: str, font_name: str) -> Image.Image:
    """The text in black on white, cropped to its ink."""
    font = _font(font_name)
    left, top, right, bottom = (int(v) for v in font.getbbox(text))  # whole pixels in practice
    canvas = Image.new("L", (right - left + 8, bottom - top + 8), 255)
    ImageDraw.Draw(canvas).text((4 - left, 4 - top), text, font=font, fill=0)
    return canvas.crop((4, 4, right - left + 4, bottom - top + 4))


def render_plate(text: str, rng: np.random.Generator) -> np.ndarray:
    """One plate image, uint8 (24, 94, 3), with random style and jitter drawn from ``rng``."""
    w, h = WIDTH * _SCALE, HEIGHT * _SCALE
    paper = np.array([255, 255, 255]) if rng.random() < 0.6 else np.array([250, 210, 40])  # white or yellow
    paper = np.clip(paper - rng.integers(0, 50), 0, 255)
    ink = rng.integers(0, 60)
    plate = Image.new("RGB", (w, h), tuple(int(v) for v in paper))
    draw = ImageDraw.Draw(plate)
    border = int(rng.integers(2, 7))
    draw.rectangle((border, border, w - 1 - border, h - 1 - border), outline=(int(ink),) * 3,
                   width=int(rng.integers(2, 6)))

    glyphs = _glyphs(text, _FONTS[rng.integers(len(_FONTS))])
    box_w = int(w * rng.uniform(0.78, 0.9))
    box_h = int(h * rng.uniform(0.58, 0.72))
    glyphs = glyphs.resize((box_w, box_h), Image.Resampling.BILINEAR)
    mask = ImageOps.invert(glyphs)
    x0 = (w - box_w) // 2 + int(rng.integers(-6, 7))
    y0 = (h - box_h) // 2 + int(rng.integers(-4, 5))
    plate.paste((int(ink),) * 3, (x0, y0), mask)

    plate = _affine(plate, rng)
    plate = plate.resize((WIDTH, HEIGHT), Image.Resampling.BILINEAR)
    radius = rng.uniform(0.0, 0.9)
    if radius > 0.2:
        plate = plate.filter(ImageFilter.GaussianBlur(radius))

    pixels = np.asarray(plate, dtype=np.float32)
    pixels = pixels * rng.uniform(0.6, 1.15) + rng.uniform(-30, 30)  # exposure
    pixels += rng.normal(0.0, rng.uniform(0.0, 10.0), pixels.shape)  # sensor noise
    return np.clip(pixels, 0, 255).astype(np.uint8)


def _affine(plate: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Small rotation, shear, scale and shift about the centre; the border shows background."""
    w, h = plate.size
    angle = math.radians(rng.uniform(-4.0, 4.0))
    shear = rng.uniform(-0.15, 0.15)
    scale = rng.uniform(0.92, 1.06)
    dx, dy = rng.uniform(-0.04, 0.04) * w, rng.uniform(-0.08, 0.08) * h
    cos, sin = math.cos(angle), math.sin(angle)
    # Inverse map (output -> input) of: scale, shear along x, rotate, about the centre, then shift.
    a, b = cos / scale, (sin + shear * cos) / scale
    d, e = -sin / scale, (cos - shear * sin) / scale
    cx, cy = w / 2, h / 2
    c = cx - a * (cx + dx) - b * (cy + dy)
    f = cy - d * (cx + dx) - e * (cy + dy)
    fill = tuple(int(v) for v in np.asarray(plate)[1, 1])
    return plate.transform((w, h), Image.Transform.AFFINE, (a, b, c, d, e, f),
                           resample=Image.Resampling.BILINEAR, fillcolor=fill)


def make_plates(count: int, seed: int, start: int = 0,
                on_progress: Callable[[int], None] | None = None) -> PlateSet:
    """Plates ``start .. start + count - 1`` of the set named by ``seed``."""
    images = np.empty((count, HEIGHT, WIDTH, 3), dtype=np.uint8)
    texts: list[str] = []
    for k in range(count):
        rng = np.random.default_rng([seed, start + k])
        text = plate_text(rng)
        images[k] = render_plate(text, rng)
        texts.append(text.replace(" ", ""))
        if on_progress is not None and (k + 1) % 100 == 0:
            on_progress(100)
    if on_progress is not None and count % 100:
        on_progress(count % 100)
    return PlateSet(images, texts)


def encode(text: str) -> list[int]:
    """Class indices of a plate string (the CTC target)."""
    return [CHARS.index(c) for c in text]


def to_input(images: np.ndarray) -> np.ndarray:
    """uint8 (N, 24, 94, 3) -> float32 (N, 3, 24, 94) scaled to [-1, 1], as the reference does."""
    x = images.astype(np.float32).transpose(0, 3, 1, 2)
    return np.ascontiguousarray((x - 127.5) * 0.0078125)
