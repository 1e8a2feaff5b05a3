"""The served models: a small ViT at CI scale, torchvision's ``vit_l_32`` at full scale.

Nothing is downloaded: weights are random, drawn under a seed, so every build of a scale's
model is the same model and every variant of the service gives the same answers.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import torch
from torch import nn

from perfcases.compat import import_torchvision

__all__ = ["SPECS", "ModelSpec", "build_model", "quantize_linear_int8"]


@dataclass(frozen=True)
class ModelSpec:
    """What a scale serves: how to build the model and the square input size it expects."""

    name: str
    image_size: int
    factory: Callable[[], nn.Module]


# Imported once, here: torchvision's first import is not safe from several request threads at once.
_torchvision = import_torchvision()


def _small_vit() -> nn.Module:
    # A ViT of width 512 (8 heads) and 6 layers on 64 px inputs (4 patches of 32 px), 21 M params.
    # Sized to keep the report's cost structure, construction >> inference: measured here (one
    # thread) it builds in 142 ms, 53x its int8 forward pass per image at batch 8 (2.7 ms); for
    # vit_l_32 the report gives 3.3 s against 71 ms, 46x.
    return _torchvision.models.VisionTransformer(
        image_size=64, patch_size=32, num_layers=6, num_heads=8, hidden_dim=512, mlp_dim=2048,
    )


def _vit_l_32() -> nn.Module:
    return _torchvision.models.vit_l_32()  # as reported (weights=None: random init)


SPECS: dict[str, ModelSpec] = {
    "ci": ModelSpec("small ViT (21 M params)", 64, _small_vit),
    "full": ModelSpec("vit_l_32 (306 M params)", 224, _vit_l_32),
}

# The global CPU generator is shared by every thread; seeding it and building under one lock is
# what makes a build deterministic when a server builds models in several threads at once.
_SEEDED_BUILD = threading.Lock()


def build_model(spec: ModelSpec, seed: int = 0) -> nn.Module:
    """Construct ``spec``'s model with weights drawn under ``seed``, in eval mode.

    torchvision zero-initialises the classifier head, which would make every prediction class 0
    whatever the image; the head is drawn from N(0, 0.02) instead, so predictions depend on the
    image and the variants can be compared on them.
    """
    with _SEEDED_BUILD, torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = spec.factory()
        head = cast(nn.Linear, model.get_submodule("heads.head"))
        nn.init.normal_(head.weight, std=0.02)
        nn.init.normal_(head.bias, std=0.02)
    return model.eval()


def quantize_linear_int8(model: nn.Module) -> nn.Module:
    """Dynamic int8 quantization of the Linear layers (weights int8, activations quantized per batch).

    ``torch.ao.quantization`` warns that it is deprecated in favour of torchao, which is not a
    dependency here; the API still works on the pinned torch 2.13, so the warnings are silenced.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", message=r"torch\.quantize_per_tensor", category=UserWarning)
        return torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)
