"""What both variants compute: the edit methods, their probabilities, and the vocabulary.

One string gets one method, drawn with ``PROBABILITIES``; ``remove``, ``substitute`` and
``noise`` apply ``k`` edits, ``k`` uniform in ``1..MAX_EDITS``:

- ``remove``: delete ``k`` characters at distinct uniform positions (at most ``len - 1``, so a
  string never becomes empty);
- ``substitute``: overwrite ``k`` characters at distinct uniform positions with uniform random
  letters (possibly the same letter; at most ``len`` of them);
- ``noise``: insert ``k`` uniform noise characters at uniform positions (the same distribution
  as inserting them one by one at a uniform position of the growing string);
- ``shuffle``: split on single spaces, permute the words uniformly, join with single spaces.

Tokens: ``<BEG>``, the characters, ``<END>``, then ``<PAD>`` up to ``seq_len``. A string longer
than ``seq_len - 2`` characters keeps its first ``seq_len - 2`` and still ends with ``<END>``.
A character outside ``CHARSET`` becomes ``<UNK>``.
"""

from __future__ import annotations

import string
from dataclasses import dataclass

import numpy as np

METHODS = ("none", "remove", "substitute", "noise", "shuffle")
NONE, REMOVE, SUBSTITUTE, NOISE, SHUFFLE = range(len(METHODS))
PROBABILITIES = (0.20, 0.25, 0.25, 0.15, 0.15)
MAX_EDITS = 3

LETTERS = string.ascii_lowercase
NOISE_CHARS = "0123456789.,;:!?'-#@&*"
CHARSET = " " + LETTERS + NOISE_CHARS

SPECIALS = ("<PAD>", "<BEG>", "<END>", "<UNK>")
PAD, BEG, END, UNK = range(len(SPECIALS))
VOCAB: dict[str, int] = {c: i for i, c in enumerate(CHARSET, start=len(SPECIALS))}
SEQ_LEN = 32  # tokens per string, <BEG> and <END> included

assert len(SPECIALS) + len(CHARSET) <= 256, "token ids are stored as uint8"


@dataclass(frozen=True)
class Augmented:
    """The output of either variant for ``n`` input strings."""

    tokens: np.ndarray  # (n, seq_len) uint8 token ids
    edits: np.ndarray  # (n,) uint8: the index in METHODS of the method applied to each string
