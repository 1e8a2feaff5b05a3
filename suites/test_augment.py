"""Text augmentation.

Report: 1.2 M short strings (``ccinterview``) augmented with misspellings (character removal,
substitution, noise characters, word shuffle; one method per string at set probabilities), then
char-tokenised to a fixed length with ``<BEG>``, ``<END>``, ``<PAD>``: 50 s, and neither
multiprocessing nor partial NumPy helped. The fix vectorises the whole batch. The claims: at
least 10x the naive throughput on the same machine, the full 1.2 M in well under 10 s, flat
memory, and the same output distribution as the naive code, deterministic under a seed.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import NamedTuple

import numpy as np
import pytest

from perfcases import augment
from perfcases.augment import distribution, vectorized
from perfcases.augment.naive import tokenize as naive_tokenize
from perfcases.augment.spec import (
    BEG,
    CHARSET,
    END,
    LETTERS,
    MAX_EDITS,
    METHODS,
    NOISE,
    NOISE_CHARS,
    NONE,
    PAD,
    REMOVE,
    SEQ_LEN,
    SHUFFLE,
    SUBSTITUTE,
    VOCAB,
    Augmented,
)
from pytest_perfguard import perf_budget

SEED = 2024
STRINGS = {"ci": 100_000, "full": 1_200_000}  # per measured call; full: as reported
PROFILE_STRINGS = 50_000  # per side of the distribution test
PROFILE_SEQ_LEN = 64  # long enough that no profiled string is truncated
SPEEDUP_STRINGS = 20_000
SAMPLE = 5_000  # strings per functional check
EDGE_CASES = ["", "a", "ab", "a b", "a  b", " a", "a ", "café au lait", "x" * 50,
              "one two three four five six seven"]
P_VALUES = ("method", "method_vs_spec", *distribution.STATISTICS)


class Reference(NamedTuple):
    """The naive code's output on the profile sample, and its edit profile."""

    sample: list[str]
    result: Augmented
    profile: dict[str, np.ndarray]


@pytest.fixture(scope="session")
def strings(scale: str, progress: Callable[[int, str], AbstractContextManager[Callable[[int], object]]]) -> list[str]:
    """The batch each measured call augments (generated in about 0.5 s for 1.2 M here)."""
    n = STRINGS[scale]
    with progress(n, "augment: generating strings") as advance:
        return augment.make_strings(n, seed=SEED, on_progress=advance)


@pytest.fixture(scope="module")
def reference(strings: list[str]) -> Reference:
    sample = strings[:PROFILE_STRINGS]
    result = augment.naive(sample, seed=SEED + 1, seq_len=PROFILE_SEQ_LEN)
    return Reference(sample, result, distribution.edit_profile(sample, result))


# Measured here under contention (2-core x86_64 shared with other jobs, load 5-8): CI (100k per
# call) optimized 1.29-1.82 M strings/s, naive 73-79 k/s; full (1.2 M per call) optimized
# 1.27-1.33 M/s (0.90-0.94 s per call), naive 21.4 s for one call. Memory growth: optimized
# 7.0-8.4 MiB (CI) and 74-81 MiB (full: the previous call's 38 MB of tokens is still alive while
# the next is computed), naive 40-42 MiB (CI) and 445 MiB for one full call.
# Each method's share within 5 % of its probability: at 100k strings the standard error of a
# share is 0.5-0.8 % of it, so 5 % is at least a 6-sigma band (the chi-square tests are below).
# Counted under callgrind (`pytest suites/test_augment.py --perf-instructions`): 2,542 instructions
# per string, the same in two processes (README, "Instruction counts"). The ceiling is the
# claim a clock cannot make on a shared machine: about 18 % above today's count, judged the same
# under any load.
@perf_budget(throughput="600k/s", memory="128MiB", instructions="3k",
             metrics={"layout_errors": "==0", "method_share_error": "<=0.05"})
def test_augments_and_tokenises_over_600k_strings_per_second(perf, pick_variant, strings):
    run = pick_variant(augment)
    result = perf(run, strings, seed=SEED, items=len(strings))
    perf.record(layout_errors=augment.layout_errors(result.tokens),
                method_share_error=distribution.method_share_error(result.edits))


# Measured here under contention: 18.0x-19.2x in four runs (best of five CPU times); best of
# three wall times read 14.9x-21.9x between runs.
@perf_budget(metrics={"speedup_vs_naive": ">=10"})
def test_is_at_least_10x_faster_than_the_reported_code(perf, pick_variant, strings):
    """The issue's target, independent of the machine's speed: both variants timed here,
    alternately, best of five each. The clock is this process's CPU time: both variants run
    on one thread, and a neighbour taking the core away cannot inflate it."""
    if not perf.enabled:
        pytest.skip("a timing claim: measured under --perf")
    run = pick_variant(augment)
    sample = strings[:SPEEDUP_STRINGS]
    run(sample, seed=SEED)  # warm-up
    best = {"naive": math.inf, "candidate": math.inf}
    for _ in range(5):
        for name, variant in (("naive", augment.naive), ("candidate", run)):
            start = time.process_time()
            variant(sample, seed=SEED)
            best[name] = min(best[name], time.process_time() - start)
    perf.record(speedup_vs_naive=best["naive"] / best["candidate"])


@perf_budget(metrics={f"{name}_p": f">={distribution.ALPHA}" for name in P_VALUES})
def test_edits_follow_the_naive_distribution(perf, pick_variant, reference):
    """Chi-square tests (scipy.stats, p >= 0.001 passes) of the edit methods and, per method,
    of the length change, the number of changed positions and the first changed position,
    against the naive code at another seed; plus the method frequencies against the spec."""
    run = pick_variant(augment)
    candidate = distribution.edit_profile(reference.sample,
                                          run(reference.sample, seed=SEED, seq_len=PROFILE_SEQ_LEN))
    p = distribution.compare(reference.profile, candidate)
    perf.record(**{f"{name}_p": p[name] for name in P_VALUES})


def test_distribution_check_catches_misplaced_removals(reference):
    """The check has teeth: the same removals taken from the end of each string instead of
    uniform positions keep every count right, and the first-change test rejects them."""
    texts = augment.decode(reference.result.tokens)
    misplaced = [original[:len(text)] if method == REMOVE else text
                 for original, method, text in zip(reference.sample, reference.result.edits, texts)]
    tampered = Augmented(augment.encode(misplaced, PROFILE_SEQ_LEN), reference.result.edits)
    p = distribution.compare(reference.profile, distribution.edit_profile(reference.sample, tampered))
    assert p["first_change"] < distribution.ALPHA, p
    assert p["method"] > distribution.ALPHA and p["length_change"] > distribution.ALPHA, p


@pytest.mark.parametrize("name", sorted(augment.VARIANTS))
def test_same_seed_gives_the_same_output(name, strings):
    run = augment.VARIANTS[name]
    sample = strings[:SAMPLE if name == "naive" else 2 * vectorized.CHUNK + SAMPLE]  # optimized: 3 chunks
    first, again, other = run(sample, seed=SEED), run(sample, seed=SEED), run(sample, seed=SEED + 1)
    assert np.array_equal(first.tokens, again.tokens) and np.array_equal(first.edits, again.edits)
    assert not np.array_equal(first.tokens, other.tokens)


@pytest.mark.parametrize("name", sorted(augment.VARIANTS))
def test_each_string_is_edited_as_its_method_says(name, strings):
    texts = strings[:SAMPLE] + EDGE_CASES * 20
    result = augment.VARIANTS[name](texts, seed=SEED, seq_len=PROFILE_SEQ_LEN)
    originals = augment.decode(augment.encode(texts, PROFILE_SEQ_LEN))  # as tokenised: <UNK> shown as U+FFFD
    broken = [(original, METHODS[method], text, why)
              for original, method, text in zip(originals, result.edits, augment.decode(result.tokens))
              if (why := _broken_rule(original, method, text))]
    assert not broken, f"{len(broken)} strings break their method's rule, e.g. {broken[:3]}"
    assert set(result.edits.tolist()) == set(range(len(METHODS)))


@pytest.mark.parametrize("name", sorted(augment.VARIANTS))
def test_rows_are_framed_and_truncated_as_documented(name, strings):
    """``<BEG>``, the first ``seq_len - 2`` characters, ``<END>``, then ``<PAD>``."""
    run = augment.VARIANTS[name]
    texts = strings[:SAMPLE] + EDGE_CASES
    full = augment.decode(run(texts, seed=SEED, seq_len=PROFILE_SEQ_LEN).tokens)
    framed = run(texts, seed=SEED, seq_len=SEQ_LEN).tokens
    assert any(len(text) > SEQ_LEN - 2 for text in full), "the sample should exercise truncation"
    assert augment.layout_errors(framed) == 0
    assert augment.decode(framed) == [text[:SEQ_LEN - 2] for text in full]


def test_decode_inverts_encode_up_to_the_truncation():
    rng = np.random.default_rng(SEED)
    alphabet = np.array(list(CHARSET))
    texts = ["".join(rng.choice(alphabet, size=n)) for n in rng.integers(0, 2 * SEQ_LEN, size=2_000)]
    assert augment.decode(augment.encode(texts)) == [text[:SEQ_LEN - 2] for text in texts]
    assert augment.encode(["ab"], seq_len=6).tolist() == [[BEG, VOCAB["a"], VOCAB["b"], END, PAD, PAD]]
    assert augment.decode(augment.encode(["café"])) == ["caf\N{REPLACEMENT CHARACTER}"]
    with pytest.raises(ValueError, match="NUL"):
        augment.encode(["a\0b"])


def test_naive_per_character_tokeniser_matches_the_lookup_table(strings):
    texts = strings[:SAMPLE] + EDGE_CASES
    per_character = np.array([naive_tokenize(text) for text in texts], dtype=np.uint8)
    assert np.array_equal(per_character, augment.encode(texts))


def _broken_rule(original: str, method: int, text: str) -> str | None:
    """Why ``text`` cannot be ``original`` edited by ``method`` (spec.py), or None."""
    change = len(text) - len(original)
    if method == NONE:
        return None if text == original else "changed"
    if method == REMOVE:
        most = min(MAX_EDITS, max(len(original) - 1, 0))
        if not -most <= change <= (-1 if most else 0):
            return f"removed {-change} characters"
        remaining = iter(original)
        return None if all(char in remaining for char in text) else "not a subsequence of the input"
    if method == SUBSTITUTE:
        changed = [b for a, b in zip(original, text) if a != b]
        if change or len(changed) > MAX_EDITS or not all(char in LETTERS for char in changed):
            return f"length change {change}, substituted {changed}"
        return None
    if method == NOISE:
        kept = "".join(char for char in text if char not in NOISE_CHARS)
        return None if 1 <= change <= MAX_EDITS and kept == original else f"inserted {change}, kept {kept!r}"
    if method == SHUFFLE:
        return None if sorted(text.split(" ")) == sorted(original.split(" ")) else "words differ"
    return f"unknown method {method}"
