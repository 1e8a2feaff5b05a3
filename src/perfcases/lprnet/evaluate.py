"""Running a plate reader over a plate set: predicted strings and plate-level accuracy."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .model import greedy_decode
from .plates import BLANK, CHARS, PlateSet, to_input

__all__ = ["Predictor", "read_plates", "plate_accuracy"]

Predictor = Callable[[np.ndarray], np.ndarray]
"""float32 (N, 3, 24, 94) plate images in [-1, 1] -> (N, classes, 18) scores."""


def read_plates(predict: Predictor, images: np.ndarray, batch_size: int = 100) -> list[str]:
    """The plate strings ``predict`` reads from uint8 images, ``batch_size`` plates per call."""
    texts: list[str] = []
    for start in range(0, len(images), batch_size):
        logits = predict(to_input(images[start:start + batch_size]))
        texts.extend(greedy_decode(logits, CHARS, BLANK))
    return texts


def plate_accuracy(predict: Predictor, plates: PlateSet, batch_size: int = 100) -> float:
    """Fraction of plates read exactly (every character, nothing more)."""
    read = read_plates(predict, plates.images, batch_size)
    return sum(r == t for r, t in zip(read, plates.texts, strict=True)) / len(plates)
