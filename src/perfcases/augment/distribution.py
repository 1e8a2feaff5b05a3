"""Do two augmentations follow the same distribution of edits? Chi-square tests on what changed.

``edit_profile`` describes each output string against its input, from the tokens alone except
for the method (which only the augmenter knows): the length change, how many token positions
differ, and the first position that differs. ``compare`` tests, for each of those joint with
the method (and for the method alone), whether two profiles come from one distribution
(``scipy.stats.chi2_contingency`` on a 2 x cells table), and whether the method frequencies
match ``PROBABILITIES`` (``scipy.stats.chisquare``). A p-value below ``ALPHA`` rejects.
``method_share_error`` is the cheap check for large batches: the largest relative deviation of
a method's share from its probability.

scipy.stats is imported on first use (1.6-2.5 s measured here, under contention): tests that
only time the augmentation, and the Scalene profiles of their failures, do not pay for it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from perfcases.augment.spec import END, METHODS, PROBABILITIES, Augmented
from perfcases.augment.tokens import encode

ALPHA = 0.001  # significance threshold of every test here
MIN_CELL = 10  # cells with fewer observations (both samples together) are pooled into one, or dropped
STATISTICS = ("length_change", "changed_positions", "first_change")


def edit_profile(inputs: Sequence[str], result: Augmented) -> dict[str, np.ndarray]:
    """Per string: ``method``, ``length_change``, ``changed_positions`` (token positions that
    differ from the unedited encoding) and ``first_change`` (-1 when nothing changed).

    Needs rows long enough that nothing was truncated: that would hide length changes.
    """
    original = encode(inputs, result.tokens.shape[1])
    before = np.argmax(original == END, axis=1)
    after = np.argmax(result.tokens == END, axis=1)
    if (original[:, -1] != 0).any() or (result.tokens[:, -1] != 0).any():
        raise ValueError("some strings were truncated: profile with a longer seq_len")
    differs = original != result.tokens
    return {
        "method": result.edits.astype(np.int64),
        "length_change": after - before,
        "changed_positions": differs.sum(axis=1),
        "first_change": np.where(differs.any(axis=1), differs.argmax(axis=1), -1),
    }


def compare(reference: dict[str, np.ndarray], candidate: dict[str, np.ndarray]) -> dict[str, float]:
    """p-values: ``method`` (frequencies, reference vs candidate), ``method_vs_spec`` (the
    candidate's frequencies vs ``PROBABILITIES``) and each of ``STATISTICS`` joint with the method."""
    p = {"method": _same_distribution(reference["method"], candidate["method"]),
         "method_vs_spec": method_vs_spec(candidate["method"])}
    for name in STATISTICS:
        p[name] = _same_distribution(_joint(reference["method"], reference[name]),
                                     _joint(candidate["method"], candidate[name]))
    return p


def method_vs_spec(methods: np.ndarray) -> float:
    """Chi-square goodness-of-fit p-value of the methods drawn against ``PROBABILITIES``."""
    from scipy import stats

    observed = np.bincount(methods, minlength=len(METHODS))
    return float(stats.chisquare(observed, np.asarray(PROBABILITIES) * observed.sum()).pvalue)


def method_share_error(methods: np.ndarray) -> float:
    """The largest ``|share - probability| / probability`` over the methods."""
    shares = np.bincount(methods, minlength=len(METHODS)) / max(len(methods), 1)
    return float(np.max(np.abs(shares - PROBABILITIES) / PROBABILITIES))


def _joint(method: np.ndarray, value: np.ndarray) -> np.ndarray:
    """One integer per (method, value) pair (values are small: > -1000 and < 1000)."""
    return method * 2000 + value + 1000


def _same_distribution(a: np.ndarray, b: np.ndarray) -> float:
    """Chi-square p-value that samples ``a`` and ``b`` of integer categories share a distribution."""
    from scipy import stats

    cells, index = np.unique(np.concatenate([a, b]), return_inverse=True)
    table = np.stack([np.bincount(index[:len(a)], minlength=len(cells)),
                      np.bincount(index[len(a):], minlength=len(cells))])
    rare = table.sum(axis=0) < MIN_CELL
    table = np.column_stack([table[:, ~rare], table[:, rare].sum(axis=1)])
    table = table[:, table.sum(axis=0) >= MIN_CELL]  # the pooled cell too, when it stays small
    if table.shape[1] < 2:
        return 1.0
    return float(stats.chi2_contingency(table).pvalue)
