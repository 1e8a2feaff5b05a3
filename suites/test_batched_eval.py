"""Batched evaluation.

Report: a small CNN scored on 10,000 held-out MNIST images one image at a time took 3.29 s
(acc 0.9887); a batched DataLoader took 1.45 s. The claim checked here: the optimized path
(ONNX Runtime, tuned batches) evaluates a held-out image within a per-image budget, in little
memory, at accuracy >= 0.98, and with at least 10x the naive loop's throughput on the same
machine. The images are synthetic digits (src/perfcases/digits.py; why: docs/batched_eval.md).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import pytest
import torch

from perfcases import batched_eval, digits
from perfcases.device import gpu_budget
from perfcases.batched_eval import Classifier
from perfcases.digits import DigitSet
from pytest_perfguard import perf_budget

HELD_OUT = {"ci": 2_000, "full": 10_000}  # full: the report's 10,000 images
AGREEMENT_IMAGES = 300  # images on which every variant must predict what the per-image loop predicts
SPEEDUP_IMAGES = 2_000  # the selected variant's share of the speed-up test (the CI scale's set)
SPEEDUP_NAIVE_IMAGES = 100  # the per-image loop's cost per image does not depend on how many
SPEEDUP_REPEATS = 5  # interleaved timings per side; the best of each is compared


@pytest.fixture(scope="module")
def classifier(device: str) -> Classifier:
    return batched_eval.load_classifier(device=device)


@pytest.fixture(scope="module")
def held_out(scale: str, progress: Callable) -> DigitSet:
    n = HELD_OUT[scale]
    with progress(n, "held-out digits") as advance:
        return digits.generate(n, batched_eval.HELD_OUT_SEED, on_progress=advance)


# Report: 329 us per image one at a time (3.29 s / 10,000), 145 us with the DataLoader.
# Measured here under --perf on a shared 2-core machine with other jobs running (load 3-8):
# optimized median 9-23 us per image (7 runs), peak RSS growth 0.8-12 MiB (ONNX Runtime's
# convolution buffers for a batch of 256, counted when their pages are new), accuracy 0.9945 on
# 2,000 images, 0.9955 on 10,000; naive 266 us per image at best (the sweep, one torch thread), median
# 3.0-8.2 ms under --perf (two threads, stalled by the neighbours). Budgets: 2.2x the slowest
# optimized median, 5x under the naive loop's best; 2.7x the largest memory growth (one batch of
# all 2,000 images took 85 MiB); the accuracy floor.
# On CUDA (not measured here: no GPU was available) the same budgets apply, plus the GPU memory the
# model and one batch of 256 images may hold (~0.5 MB of weights, ~13 MB of activations).
@perf_budget(latency="50us", memory="32MiB", accuracy=0.98, **gpu_budget("256MiB"))
def test_batched_eval_scores_held_out_digits_within_budget(perf, pick_variant, classifier, held_out):
    evaluate = pick_variant(batched_eval)
    result = perf(evaluate, classifier, held_out, items=len(held_out))
    perf.record(accuracy=result.accuracy)


def _seconds_per_image(evaluate: Callable[[Classifier, DigitSet], object], classifier: Classifier,
                       images: DigitSet, timings: list[float]) -> None:
    start = time.perf_counter()
    evaluate(classifier, images)
    timings.append((time.perf_counter() - start) / len(images))


# The target, judged on whatever machine runs it: the selected variant on 2,000 held-out
# images and the per-image loop on the first 100 of them, timed alternately, best of 5 each (a
# neighbour can slow a run down, never speed it up). Measured here under load: 80-400x, because
# the per-image loop's thousands of tiny 2-thread OpenMP regions stall whenever a neighbour holds
# a core; 32x best against best with one torch thread (docs/batched_eval.md).
@perf_budget(metrics={"speedup_vs_naive": ">=10"})
def test_optimized_has_10x_the_naive_throughput_on_this_machine(perf, pick_variant, classifier, held_out):
    if not perf.enabled:
        pytest.skip("a timing claim: measured under --perf")
    evaluate = pick_variant(batched_eval)
    images, few = held_out[:SPEEDUP_IMAGES], held_out[:SPEEDUP_NAIVE_IMAGES]
    naive_times: list[float] = []
    variant_times: list[float] = []
    evaluate(classifier, images)  # warm-up: first-call allocations are not throughput
    for _ in range(SPEEDUP_REPEATS):
        _seconds_per_image(batched_eval.naive, classifier, few, naive_times)
        _seconds_per_image(evaluate, classifier, images, variant_times)
    perf.record(speedup_vs_naive=min(naive_times) / min(variant_times))


@pytest.fixture(scope="module")
def per_image_loop(classifier: Classifier, held_out: DigitSet) -> batched_eval.EvalResult:
    return batched_eval.naive(classifier, held_out[:AGREEMENT_IMAGES])


@pytest.mark.parametrize("name", ["dataloader", "batched", "optimized"])
def test_variant_predicts_the_same_as_the_per_image_loop(name, classifier, held_out, per_image_loop):
    result = batched_eval.VARIANTS[name](classifier, held_out[:AGREEMENT_IMAGES])  # 256 + a partial batch
    np.testing.assert_array_equal(result.predictions, per_image_loop.predictions)
    assert result.accuracy == per_image_loop.accuracy


def test_committed_onnx_model_computes_the_same_logits_as_the_weights(classifier, held_out):
    inputs = batched_eval.to_input(held_out.images[:256])
    with torch.inference_mode():
        expected = classifier.module(torch.from_numpy(inputs).to(classifier.device)).cpu().numpy()
    assert classifier.session is not None
    logits = classifier.session.run(None, {"image": inputs})[0]
    np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-4)


def test_digit_generator_is_deterministic_under_a_seed():
    n = 2_100  # more than one generation chunk (2,048 images)
    first = digits.generate(n, seed=7)
    again = digits.generate(n, seed=7)
    np.testing.assert_array_equal(first.images, again.images)
    np.testing.assert_array_equal(first.labels, again.labels)
    prefix = digits.generate(500, seed=7)  # a smaller set is the start of a larger one
    np.testing.assert_array_equal(prefix.images, first.images[:500])
    np.testing.assert_array_equal(prefix.labels, first.labels[:500])
    other = digits.generate(500, seed=8)
    assert (other.images != prefix.images).any(axis=(1, 2)).all()  # every image differs
    assert set(np.unique(first.labels)) == set(range(10))
    assert first.images.dtype == np.uint8 and first.images.shape == (n, digits.SIZE, digits.SIZE)
