"""Input strings like the report's (``ccinterview``): one to three dictionary words.

Words are the ``VOCABULARY_SIZE`` most frequent lowercase entries (1 to 12 letters) of the
English frequency dictionary that ``symspellpy`` ships (MIT licence), so nothing is downloaded.
Generation is vectorised: word rows are gathered from a padded byte table, separators written
in, the zero padding dropped, and the bytes split into strings once.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import cache
from importlib import resources

import numpy as np

DICTIONARY = "frequency_dictionary_en_82_765.txt"
VOCABULARY_SIZE = 30_000
MAX_WORD = 12
WORDS_PER_STRING = (0.35, 0.40, 0.25)  # probability of 1, 2, 3 words
CHUNK = 100_000  # strings per progress step
# Mixed into the seed so that the data never shares a random stream with an augmentation seeded
# alike: with a bare SeedSequence(seed) the first chunk's word counts and the optimized
# variant's method draws came from the same uniforms, and half the shuffled strings had three
# words instead of a quarter (the distribution test caught it).
_STREAM = 0x5EED_0F_DA7A

_WORD = re.compile(rf"[a-z]{{1,{MAX_WORD}}}")


@cache
def dictionary_words() -> tuple[str, ...]:
    """The most frequent dictionary words, in frequency order."""
    text = (resources.files("symspellpy") / DICTIONARY).read_text(encoding="utf-8")
    words = (line.split(" ", 1)[0] for line in text.splitlines())
    return tuple(w for w in words if _WORD.fullmatch(w))[:VOCABULARY_SIZE]


def make_strings(n: int, seed: int = 0, on_progress: Callable[[int], object] | None = None) -> list[str]:
    """``n`` strings of one to three space-separated words, the same for the same seed."""
    words = dictionary_words()
    table = np.zeros((len(words), MAX_WORD + 1), dtype=np.uint8)  # one spare byte for a separator
    table[:, :MAX_WORD] = np.array(words, dtype=f"S{MAX_WORD}").view(np.uint8).reshape(len(words), MAX_WORD)
    word_lengths = np.array([len(w) for w in words])
    strings: list[str] = []
    chunk_seeds = np.random.SeedSequence([_STREAM, seed]).spawn(-(-n // CHUNK))
    for start, chunk_seed in zip(range(0, n, CHUNK), chunk_seeds):
        rng = np.random.default_rng(chunk_seed)
        per_string = rng.choice(len(WORDS_PER_STRING), size=min(CHUNK, n - start), p=WORDS_PER_STRING) + 1
        ids = rng.integers(len(words), size=int(per_string.sum()))
        last = np.zeros(len(ids), dtype=bool)
        last[np.cumsum(per_string) - 1] = True
        slots = table[ids]
        slots[np.arange(len(ids)), word_lengths[ids]] = np.where(last, ord("\n"), ord(" "))
        strings += slots[slots != 0].tobytes().decode("ascii").split("\n")[:-1]
        if on_progress is not None:
            on_progress(len(per_string))
    return strings
