"""Text augmentation: misspell short strings, then char-tokenise them to a fixed length.

As reported: 1.2 M short strings (``ccinterview``) augmented with misspellings (character
removal, substitution, noise characters, word shuffle; one method per string, chosen at random
with set probabilities), then tokenised per character with ``<BEG>``, ``<END>``, ``<PAD>`` and a
vocabulary, took 50 s; multiprocessing and partial NumPy gave no speed-up. ``naive`` is that
per-string Python loop; ``optimized`` vectorises the whole batch in NumPy. Both follow
``spec`` (the same edit distribution) and are deterministic under a seed; their outputs differ
for the same seed because they draw from different generators.
"""

from __future__ import annotations

from collections.abc import Callable

from perfcases.augment.naive import naive
from perfcases.augment.spec import METHODS, PROBABILITIES, SEQ_LEN, Augmented
from perfcases.augment.tokens import decode, encode, layout_errors
from perfcases.augment.vectorized import optimized
from perfcases.augment.words import make_strings

__all__ = [
    "METHODS",
    "PROBABILITIES",
    "SEQ_LEN",
    "VARIANTS",
    "Augmented",
    "decode",
    "encode",
    "layout_errors",
    "make_strings",
    "naive",
    "optimized",
]

VARIANTS: dict[str, Callable[..., Augmented]] = {"naive": naive, "optimized": optimized}
