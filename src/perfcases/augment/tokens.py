"""Vectorised char tokenisation: a batch of strings as one flat array of token ids.

``to_flat`` turns a batch into the ids of all its characters, end to end, plus each string's
length: one ``join``, one encode and one table lookup (``bytes.translate`` for ASCII), however
many strings. (The optimized variant edits that array directly: every edit maps characters to
characters, so editing ids or characters gives the same tokens.) ``frame`` lays the rows out
at a fixed length with ``<BEG>``, ``<END>`` and ``<PAD>``. ``encode`` is both; ``decode`` inverts it;
``layout_errors`` counts rows that break the ``<BEG> chars <END> <PAD>...`` layout.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from perfcases.augment.spec import BEG, CHARSET, END, PAD, SEQ_LEN, SPECIALS, UNK, VOCAB

# Token id of every Unicode code point; NUL (the separator in ``to_flat``) maps to <PAD>.
_LOOKUP = np.full(0x110000, UNK, dtype=np.uint8)
_LOOKUP[0] = PAD
for _char, _id in VOCAB.items():
    _LOOKUP[ord(_char)] = _id

# The same for single bytes, as a bytes.translate table (used on ASCII text).
_ASCII = _LOOKUP[:256].tobytes()

# The character each id decodes to: specials other than <UNK> never appear between <BEG> and <END>.
_CHARS = np.array(["", "", "", "\N{REPLACEMENT CHARACTER}", *CHARSET])
assert len(_CHARS) == len(SPECIALS) + len(CHARSET)


def starts(lengths: np.ndarray) -> np.ndarray:
    """Where each row begins in the flat array."""
    return np.cumsum(lengths) - lengths


def to_flat(strings: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """``(chars, lengths)``: the uint8 ids of all characters, string after string, and each
    string's length (int64). Strings must not contain NUL: it separates them here."""
    text = "\0".join(strings) + "\0"
    if text.isascii():  # the usual case: one bytes.translate maps and drops the separators
        raw = text.encode("ascii")
        separators = np.flatnonzero(np.frombuffer(raw, dtype=np.uint8) == 0)
        chars = np.frombuffer(bytearray(raw.translate(_ASCII, b"\0")), dtype=np.uint8)  # writable
    else:
        ids = _LOOKUP.take(np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32))
        separators = np.flatnonzero(ids == PAD)
        chars = ids[ids != PAD]
    if len(separators) != max(len(strings), 1):
        raise ValueError("strings must not contain NUL characters")
    return chars, np.diff(separators[:len(strings)], prepend=-1) - 1


def frame(chars: np.ndarray, lengths: np.ndarray, seq_len: int = SEQ_LEN) -> np.ndarray:
    """(rows, seq_len) uint8 tokens: ``<BEG>``, a row's first ``seq_len - 2`` ids, ``<END>``,
    then ``<PAD>``; ``chars`` and ``lengths`` as ``to_flat`` returns them.

    Each row is the ``seq_len - 2`` ids from its start (one gather of a sliding-window view),
    with what lies past its length (the next rows) zeroed to ``<PAD>``.
    """
    body = seq_len - 2
    if body < 0:
        raise ValueError(f"seq_len must be at least 2 (<BEG> and <END>), got {seq_len}")
    padded = np.zeros(len(chars) + body, dtype=np.uint8)
    padded[:len(chars)] = chars
    rows = sliding_window_view(padded, body)[starts(lengths)]
    rows *= np.arange(body) < lengths[:, None]  # <PAD> is 0
    tokens = np.empty((len(lengths), seq_len), dtype=np.uint8)
    tokens[:, 0] = BEG
    tokens[:, 1:1 + body] = rows
    tokens[:, -1] = PAD
    tokens[np.arange(len(lengths)), np.minimum(lengths, body) + 1] = END
    return tokens


def encode(strings: Sequence[str], seq_len: int = SEQ_LEN) -> np.ndarray:
    """Tokenise strings without augmenting them: (n, seq_len) uint8."""
    return frame(*to_flat(strings), seq_len)


def decode(tokens: np.ndarray) -> list[str]:
    """The characters between ``<BEG>`` and ``<END>`` of each row (``<UNK>`` as U+FFFD)."""
    ends = np.argmax(tokens == END, axis=1)
    chars = _CHARS[tokens]
    return ["".join(row[1:end]) for row, end in zip(chars.tolist(), ends.tolist())]


def layout_errors(tokens: np.ndarray) -> int:
    """Rows that are not ``<BEG>``, characters, one ``<END>``, then only ``<PAD>``."""
    col = np.arange(tokens.shape[1])
    is_end = tokens == END
    end = np.argmax(is_end, axis=1)[:, None]
    ok = (
        (tokens[:, 0] == BEG)
        & (is_end.sum(axis=1) == 1)
        & ((tokens >= len(SPECIALS)) | (tokens == UNK) | (col == 0) | (col >= end)).all(axis=1)
        & ((tokens == PAD) | (col <= end)).all(axis=1)
    )
    return int(len(tokens) - ok.sum())
