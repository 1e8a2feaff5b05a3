"""Preloaded model serving: a Flask ``/predict`` endpoint classifying uploads.

Report: the handler built ``torchvision.models.vit_l_32()`` on every request, 10.71 s per
request on average (max 11.33 s); loading the model once, batching and serving concurrently
brought it to 0.192 s (max 0.40 s).

``VARIANTS`` maps a variant name to a factory ``(spec, seed) -> Predictor``:

- ``naive``: the model is built inside each request, as reported;
- ``preloaded``: built once at start-up, run at batch 1 under ``torch.inference_mode``;
- ``batched``: preloaded, plus a micro-batching queue (one forward pass for concurrent requests);
- ``optimized``: batched, with the Linear layers quantized to int8 (dynamic quantization); on
  CUDA, where that quantization does not run, the batched model in float16 instead.

Every factory takes the torch ``device`` (``"cpu"`` or ``"cuda"``) the model runs on.

int8 is in ``optimized`` because it measurably helps: at CI scale, 5 interleaved load runs (8
clients, 320 requests each) gave medians of 140 requests/s for ``optimized`` against 105 for
``batched``, p50 56 ms against 78 ms (measured here, on a busy 2-core machine); and it moves
the float32 model's answers little (``suites/test_serving.py::test_answers_match_the_float32_model``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from perfcases.serving.models import SPECS, ModelSpec, build_model, quantize_linear_int8
from perfcases.serving.predictors import (
    BatchedModel,
    PerRequestModel,
    Predictor,
    PreloadedModel,
)

__all__ = ["SPECS", "VARIANTS", "batched", "naive", "optimized", "preloaded"]

MAX_BATCH = 8  # as many as the suite's concurrent clients
MAX_WAIT_S = 0.005  # the bounded wait of a batch that is not full: a lone request waits this long


def naive(spec: ModelSpec, seed: int = 0, device: str = "cpu") -> Predictor:
    return PerRequestModel(spec, seed, device)


def preloaded(spec: ModelSpec, seed: int = 0, device: str = "cpu") -> Predictor:
    return PreloadedModel(build_model(spec, seed), device)


def batched(spec: ModelSpec, seed: int = 0, device: str = "cpu") -> Predictor:
    return BatchedModel(build_model(spec, seed), max_batch=MAX_BATCH, max_wait_s=MAX_WAIT_S, device=device)


def optimized(spec: ModelSpec, seed: int = 0, device: str = "cpu") -> Predictor:
    if device != "cpu":
        return BatchedModel(build_model(spec, seed).half(), max_batch=MAX_BATCH, max_wait_s=MAX_WAIT_S,
                            device=device, dtype=torch.float16)
    model = quantize_linear_int8(build_model(spec, seed))
    return BatchedModel(model, max_batch=MAX_BATCH, max_wait_s=MAX_WAIT_S)


VARIANTS: dict[str, Callable[..., Predictor]] = {
    "naive": naive, "preloaded": preloaded, "batched": batched, "optimized": optimized,
}
