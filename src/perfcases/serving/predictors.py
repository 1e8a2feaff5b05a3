"""The three ways the service runs the model on one uploaded image.

- ``PerRequestModel`` (naive, as reported): builds the model inside the request, then runs it.
- ``PreloadedModel``: the model is built once at start-up; requests run it concurrently at
  batch 1 under ``torch.inference_mode``.
- ``BatchedModel``: the preloaded model behind a micro-batching queue, so concurrent requests
  share one forward pass.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import nn

from perfcases.serving.batching import MicroBatcher
from perfcases.serving.models import ModelSpec, build_model

__all__ = ["BatchedModel", "PerRequestModel", "Prediction", "Predictor", "PreloadedModel"]


@dataclass(frozen=True)
class Prediction:
    """Top-1 class of one image, and where the request's time went (seconds).

    ``build_s`` includes waiting for other requests' builds: they draw from torch's one global
    random generator, so concurrent builds run one at a time (see ``models.build_model``).
    """

    class_index: int
    probability: float
    build_s: float = 0.0
    queued_s: float = 0.0
    forward_s: float = 0.0
    batch_size: int = 1


class Predictor(Protocol):
    def predict(self, image: torch.Tensor) -> Prediction:
        """Classify one ``(3, H, W)`` image tensor."""
        ...

    def close(self) -> None:
        """Release threads and memory held for serving."""
        ...


def _top1(logits: torch.Tensor) -> list[tuple[int, float]]:
    probability, index = logits.softmax(dim=-1).max(dim=-1)
    return [(int(i), float(p)) for i, p in zip(index.tolist(), probability.tolist())]


class PerRequestModel:
    """The reported handler: ``model = vit_l_32()`` inside the request, then a forward pass."""

    def __init__(self, spec: ModelSpec, seed: int = 0, device: str = "cpu") -> None:
        self.spec = spec
        self.seed = seed
        self.device = device

    def predict(self, image: torch.Tensor) -> Prediction:
        start = time.perf_counter()
        model = build_model(self.spec, self.seed).to(self.device)  # the reported cost: construction on every request
        built = time.perf_counter()
        ((index, probability),) = _top1(model(image.unsqueeze(0).to(self.device)))
        return Prediction(index, probability, build_s=built - start, forward_s=time.perf_counter() - built)

    def close(self) -> None:
        pass


class PreloadedModel:
    """One model built at start-up, shared by all request threads (inference is read-only)."""

    def __init__(self, model: nn.Module, device: str = "cpu") -> None:
        self.model = model.to(device)
        self.device = device

    def predict(self, image: torch.Tensor) -> Prediction:
        start = time.perf_counter()
        with torch.inference_mode():
            ((index, probability),) = _top1(self.model(image.unsqueeze(0).to(self.device)))
        return Prediction(index, probability, forward_s=time.perf_counter() - start)

    def close(self) -> None:
        pass


class BatchedModel:
    """The preloaded model behind a ``MicroBatcher``: concurrent requests share one forward pass."""

    def __init__(self, model: nn.Module, *, max_batch: int = 8, max_wait_s: float = 0.005,
                 device: str = "cpu", dtype: torch.dtype = torch.float32) -> None:
        self.model = model.to(device)
        self.device, self.dtype = device, dtype
        self.batcher: MicroBatcher[torch.Tensor, tuple[int, float, float]] = MicroBatcher(
            self._forward, max_batch=max_batch, max_wait_s=max_wait_s, name="serving-batcher")

    def _forward(self, images: Sequence[torch.Tensor]) -> list[tuple[int, float, float]]:
        start = time.perf_counter()
        with torch.inference_mode():
            batch = torch.stack(list(images)).to(self.device, self.dtype)
            top1 = _top1(self.model(batch).float())
        elapsed = time.perf_counter() - start
        return [(index, probability, elapsed) for index, probability in top1]

    def predict(self, image: torch.Tensor) -> Prediction:
        done = self.batcher.submit(image)
        index, probability, forward_s = done.value
        return Prediction(index, probability, queued_s=done.waited_s, forward_s=forward_s,
                          batch_size=done.batch_size)

    def close(self) -> None:
        self.batcher.close()

