"""The reported code: one string at a time in Python (reported: 50 s for 1.2 M strings).

A loop over the strings, a ``random.random()`` draw per string to pick the method, edits as
list operations, and a dict lookup per character to tokenise. The time goes to the
interpreter: a few dozen Python-level operations per string, each string too little work to
be worth shipping to another process and its tokens back, which fits the report that
multiprocessing gave no speed-up (not measured here).
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Sequence

import numpy as np

from perfcases.augment.spec import (
    BEG,
    END,
    LETTERS,
    MAX_EDITS,
    NOISE,
    NOISE_CHARS,
    PAD,
    PROBABILITIES,
    REMOVE,
    SEQ_LEN,
    SHUFFLE,
    SUBSTITUTE,
    UNK,
    VOCAB,
    Augmented,
)

_CUMULATIVE = tuple(itertools.accumulate(PROBABILITIES))


def tokenize(text: str, seq_len: int = SEQ_LEN) -> list[int]:
    """``<BEG>``, one dict lookup per character, ``<END>``, ``<PAD>`` up to ``seq_len``."""
    ids = [BEG] + [VOCAB.get(char, UNK) for char in text[:seq_len - 2]] + [END]
    ids.extend([PAD] * (seq_len - len(ids)))
    return ids


def augment_one(text: str, rng: random.Random) -> tuple[str, int]:
    """One string with one randomly chosen method applied, and that method's index."""
    draw = rng.random()
    method = next((i for i, edge in enumerate(_CUMULATIVE) if draw < edge), len(_CUMULATIVE) - 1)
    chars = list(text)
    if method == REMOVE:
        for _ in range(min(rng.randint(1, MAX_EDITS), len(chars) - 1)):
            del chars[rng.randrange(len(chars))]
    elif method == SUBSTITUTE:
        for pos in rng.sample(range(len(chars)), min(rng.randint(1, MAX_EDITS), len(chars))):
            chars[pos] = rng.choice(LETTERS)
    elif method == NOISE:
        for _ in range(rng.randint(1, MAX_EDITS)):
            chars.insert(rng.randint(0, len(chars)), rng.choice(NOISE_CHARS))
    elif method == SHUFFLE:
        words = text.split(" ")
        rng.shuffle(words)
        chars = list(" ".join(words))
    return "".join(chars), method


def naive(strings: Sequence[str], seed: int = 0, seq_len: int = SEQ_LEN) -> Augmented:
    """Augment and tokenise ``strings`` one by one; the same seed gives the same output."""
    rng = random.Random(seed)
    rows: list[list[int]] = []
    edits: list[int] = []
    for text in strings:
        augmented, method = augment_one(text, rng)
        rows.append(tokenize(augmented, seq_len))
        edits.append(method)
    return Augmented(
        tokens=np.array(rows, dtype=np.uint8).reshape(len(rows), seq_len),
        edits=np.array(edits, dtype=np.uint8),
    )
