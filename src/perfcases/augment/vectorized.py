"""The fix: augment a whole batch at once with NumPy.

The batch becomes one flat array of token ids, string after string, plus the strings'
lengths (``tokens.to_flat``: one ``join``, one encode, one table lookup). A vectorised draw
picks each string's method and edit count, and each method is one array operation over all
the strings it was drawn for: substitution is an indexed assignment, removal a boolean
compress, noise one ``np.insert``, and the word shuffle one gather whose index comes from
sorting the words by (string, random key). Editing ids instead of characters gives the same
tokens: every edit maps characters to characters. ``tokens.frame`` then lays the rows out.

Rows go through in chunks of ``CHUNK`` so the intermediate arrays stay in cache and memory
stays flat whatever the batch size; each chunk has its own generator spawned from the seed, so
the output depends only on the seed (and on ``CHUNK``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from perfcases.augment.spec import (
    LETTERS,
    MAX_EDITS,
    METHODS,
    NOISE,
    NOISE_CHARS,
    NONE,
    PROBABILITIES,
    REMOVE,
    SEQ_LEN,
    SHUFFLE,
    SUBSTITUTE,
    VOCAB,
    Augmented,
)
from perfcases.augment.tokens import frame, starts, to_flat

CHUNK = 32_768  # strings per chunk
_EDGES = np.cumsum(PROBABILITIES)[:-1]  # a uniform draw below edge i (and above i - 1) picks method i
# Most edits per method, relative to the string's length: none and shuffle make no positioned
# edits, removal keeps a character, substitution changes at most every character, noise is not capped.
_CAP = np.zeros(len(METHODS), dtype=np.int64)
_CAP[[NONE, SHUFFLE]], _CAP[REMOVE], _CAP[NOISE] = -(1 << 20), -1, MAX_EDITS
_LETTER_IDS = np.array([VOCAB[c] for c in LETTERS], dtype=np.uint8)
_NOISE_IDS = np.array([VOCAB[c] for c in NOISE_CHARS], dtype=np.uint8)
_SPACE = VOCAB[" "]
_UNUSED = 1 << 40  # a position draw a string does not make (beyond any position)


def optimized(strings: Sequence[str], seed: int = 0, seq_len: int = SEQ_LEN) -> Augmented:
    """Augment and tokenise ``strings`` as a batch; the same seed gives the same output."""
    n = len(strings)
    tokens = np.empty((n, seq_len), dtype=np.uint8)
    edits = np.empty(n, dtype=np.uint8)
    chunk_seeds = np.random.SeedSequence(seed).spawn(-(-n // CHUNK))
    for start, chunk_seed in zip(range(0, n, CHUNK), chunk_seeds):
        rows = slice(start, start + CHUNK)
        chars, lengths = to_flat(strings[rows])
        chars, edits[rows] = _augment(chars, lengths, np.random.default_rng(chunk_seed))
        tokens[rows] = frame(chars, lengths, seq_len)
    return Augmented(tokens=tokens, edits=edits)


def _augment(chars: np.ndarray, lengths: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The edited flat array (``lengths`` updated in place) and each string's method."""
    methods = np.searchsorted(_EDGES, rng.random(len(lengths)), side="right").astype(np.uint8)
    counts = rng.integers(1, MAX_EDITS + 1, size=len(lengths))
    counts = np.maximum(np.minimum(counts, lengths + _CAP[methods]), 0)  # capped as the spec says
    span = lengths + counts * (methods == NOISE)  # noise slots are drawn in the lengthened string
    positions = _distinct_positions(rng, span, counts)
    _substitute(chars, lengths, np.flatnonzero(methods == SUBSTITUTE), positions, rng)
    _shuffle_words(chars, lengths, np.flatnonzero(methods == SHUFFLE), rng)
    chars = _remove(chars, lengths, np.flatnonzero(methods == REMOVE), positions, counts)
    chars = _insert_noise(chars, lengths, np.flatnonzero(methods == NOISE), positions, counts, rng)
    return chars, methods


def _distinct_positions(rng: np.random.Generator, lengths: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """(rows, MAX_EDITS) positions, ascending: ``counts[i]`` distinct uniform positions below
    ``lengths[i]`` (``counts <= lengths``), then ``_UNUSED`` for the draws a row does not make.

    Draw ``j`` is uniform over the ``length - j`` positions not taken yet (``floor(u * n)``, ``u``
    uniform in [0, 1): exact up to float rounding), stepped past each taken position in
    increasing order; one compare-exchange pass then keeps the taken positions sorted.
    """
    taken: list[np.ndarray] = []  # one column per draw, ascending across columns
    for j in range(MAX_EDITS):
        span = np.maximum(lengths - j, 1)
        position = (rng.random(len(span)) * span).astype(np.int64)
        for column in taken:
            position += position >= column
        position[counts <= j] = _UNUSED
        for i, column in enumerate(taken):
            taken[i], position = np.minimum(column, position), np.maximum(column, position)
        taken.append(position)
    return np.column_stack(taken)


def _flat_positions(lengths: np.ndarray, rows: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """The drawn positions of ``rows`` as indices into the flat array, ascending."""
    return (starts(lengths)[rows, None] + positions[rows])[positions[rows] != _UNUSED]


def _substitute(chars: np.ndarray, lengths: np.ndarray, rows: np.ndarray, positions: np.ndarray,
                rng: np.random.Generator) -> None:
    """Overwrite the drawn positions of ``rows`` with uniform letters, in place."""
    at = _flat_positions(lengths, rows, positions)
    chars[at] = _LETTER_IDS[rng.integers(len(_LETTER_IDS), size=len(at))]


def _remove(chars: np.ndarray, lengths: np.ndarray, rows: np.ndarray, positions: np.ndarray,
            counts: np.ndarray) -> np.ndarray:
    """Delete the drawn positions of ``rows``."""
    keep = np.ones(len(chars), dtype=bool)
    keep[_flat_positions(lengths, rows, positions)] = False
    lengths[rows] -= counts[rows]
    return chars[keep]


def _insert_noise(chars: np.ndarray, lengths: np.ndarray, rows: np.ndarray, positions: np.ndarray,
                  counts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Put noise characters on the drawn slots of each row's ``len + k`` output: the same
    distribution as ``k`` one-by-one insertions at uniform positions of the growing string.
    The ``i``-th slot (ascending) has ``slot - i`` original characters before it."""
    slots = positions[rows]
    at = (starts(lengths)[rows, None] + slots - np.arange(MAX_EDITS))[slots != _UNUSED]
    lengths[rows] += counts[rows]
    return np.insert(chars, at, _NOISE_IDS[rng.integers(len(_NOISE_IDS), size=len(at))])


def _shuffle_words(chars: np.ndarray, lengths: np.ndarray, rows: np.ndarray, rng: np.random.Generator) -> None:
    """Permute the space-separated words of ``rows`` uniformly, in place.

    Each word takes its following space along; a space appended to each row makes that hold
    for the last word too, and whichever word ends up last drops it again.
    """
    if not len(rows):
        return
    row_lengths = lengths[rows]
    index = np.repeat(starts(lengths)[rows] - starts(row_lengths), row_lengths) + np.arange(row_lengths.sum())
    text = np.insert(chars[index], np.cumsum(row_lengths), _SPACE)
    row_ends = np.cumsum(row_lengths + 1)
    word_ends = np.flatnonzero(text == _SPACE) + 1
    word_starts = np.concatenate([[0], word_ends[:-1]])
    # Sort the words by row, then by a uniform key within the row: row index + key in [0, 1).
    order = np.argsort(np.searchsorted(row_ends, word_starts, side="right") + rng.random(len(word_starts)))
    sizes = (word_ends - word_starts)[order]
    source = np.repeat(word_starts[order] - (np.cumsum(sizes) - sizes), sizes) + np.arange(len(text))
    chars[index] = np.delete(text[source], row_ends - 1)
