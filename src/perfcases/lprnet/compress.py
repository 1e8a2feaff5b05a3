"""Model compression steps applied before deployment: L1 pruning and Conv+BN folding.

Both return a new model and leave their input untouched, so one trained model can feed
every variant of the suite.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn.utils import fusion, prune

from .model import LPRNet, SmallBasicBlock

__all__ = ["prune_l1", "fold_batchnorm", "sparsity"]


def prune_l1(model: LPRNet, amount: float) -> LPRNet:
    """Zero the ``amount`` fraction of smallest-magnitude weights in every convolution.

    L1-unstructured pruning layer by layer (``torch.nn.utils.prune.l1_unstructured``), made
    permanent: the weights stay dense tensors, so neither the file nor the dense kernels get
    smaller or faster; pruning pays only with sparse storage or sparse kernels.
    """
    pruned = copy.deepcopy(model)
    for module in pruned.modules():
        if isinstance(module, nn.Conv2d):
            prune.l1_unstructured(module, name="weight", amount=amount)
            prune.remove(module, "weight")
    return pruned


def sparsity(model: nn.Module) -> float:
    """Fraction of convolution weights that are exactly zero."""
    weights = [m.weight for m in model.modules() if isinstance(m, nn.Conv2d)]
    zeros = sum(int((w == 0).sum()) for w in weights)
    return zeros / sum(w.numel() for w in weights)


def fold_batchnorm(model: LPRNet) -> LPRNet:
    """Fold every BatchNorm of the backbone into the convolution before it (inference only).

    In LPRNet each BatchNorm follows a convolution directly, or a ``SmallBasicBlock`` whose
    last layer is a convolution. The BatchNorm is replaced by ``nn.Identity`` so the backbone
    keeps its indices (the kept feature maps are picked by index).
    """
    folded = copy.deepcopy(model).eval()
    layers = folded.backbone
    for i, layer in enumerate(layers):
        if not isinstance(layer, nn.BatchNorm2d):
            continue
        before = layers[i - 1]
        if isinstance(before, SmallBasicBlock):
            block = before.block
            block[len(block) - 1] = _fold(block[len(block) - 1], layer)
        elif isinstance(before, nn.Conv2d):
            layers[i - 1] = _fold(before, layer)
        else:
            raise TypeError(f"backbone[{i}] is a BatchNorm after {type(before).__name__}, not a convolution")
        layers[i] = nn.Identity()
    return folded


def _fold(conv: nn.Module, bn: nn.BatchNorm2d) -> nn.Conv2d:
    if not isinstance(conv, nn.Conv2d):
        raise TypeError(f"cannot fold BatchNorm into {type(conv).__name__}")
    with torch.no_grad():
        return fusion.fuse_conv_bn_eval(conv, bn)
