"""LPRNet (Zherzdev & Gruzdev, 2018) as in the public reference implementation.

Follows sirius-ai/LPRNet_Pytorch ``model/LPRNet.py`` layer for layer: the same backbone
(a 3x3 stem, three ``small_basic_block`` stacks, 64/128/256 channels), the same four kept
feature maps pooled to a 4x18 grid and concatenated as global context, a 1x1 "container"
convolution, and the mean over the height, which leaves 18 time steps of class scores for
greedy CTC decoding. Input: RGB plates 94 wide, 24 high, shape (N, 3, 24, 94). With the
reference's 68 classes it has 446,976 parameters; with our 35 (34 characters and the CTC
blank) 318,837, 1.3 MB in float32.

Two deliberate differences, both exact or opt-in:

* The reference applies ``nn.MaxPool3d`` with a kernel of depth 1 to a 4-D (N, C, H, W)
  tensor, which PyTorch reads as one unbatched (C=N, D=C, H, W) volume: the depth stride
  therefore keeps every s-th *channel*. ``ChannelStridePool`` writes the same thing in 2-D
  (``max_pool2d``, then a channel stride slice); the outputs are identical, and unlike the
  3-D form it exports to ONNX and quantizes.
* The reference divides each global-context map by ``mean(f ** 2)`` over the *whole batch*,
  so a plate's scores depend on its batch-mates. ``context_norm="batch"`` keeps that;
  ``context_norm="sample"`` takes the mean per plate, so batch 1 and batch 100 agree.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "LPRNet", "SmallBasicBlock", "ChannelStridePool", "ContextNorm", "TIME_STEPS", "INPUT_SIZE", "greedy_decode",
]

INPUT_SIZE = (24, 94)  # height, width
TIME_STEPS = 18  # width of the final feature map: one class distribution per step

ContextNorm = Literal["batch", "sample"]


class SmallBasicBlock(nn.Module):
    """1x1 squeeze to a quarter of the channels, 3x1 and 1x3 convolutions, 1x1 expand."""

    def __init__(self, ch_in: int, ch_out: int) -> None:
        super().__init__()
        mid = ch_out // 4
        self.block = nn.Sequential(
            nn.Conv2d(ch_in, mid, kernel_size=1),
            nn.ReLU(),
            nn.Conv2d(mid, mid, kernel_size=(3, 1), padding=(1, 0)),
            nn.ReLU(),
            nn.Conv2d(mid, mid, kernel_size=(1, 3), padding=(0, 1)),
            nn.ReLU(),
            nn.Conv2d(mid, ch_out, kernel_size=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class ChannelStridePool(nn.Module):
    """The reference's ``MaxPool3d(kernel=(1, 3, 3), stride=(sc, sh, sw))`` on a 4-D tensor.

    Depth kernel 1 with depth stride ``sc`` over the channel axis = keep every ``sc``-th
    channel; the remaining (3, 3) window is an ordinary 2-D max pool. Max pooling works per
    channel, so pooling first and then keeping channels gives the same result, and the strided
    channel slice then copies the smaller pooled map: measured here, that halved onnxruntime's
    int8 Slice time (0.40 -> 0.20 ms per plate at batch 1; its channels-last layout makes a
    channel stride an element-by-element gather).
    """

    def __init__(self, channel_stride: int, stride: tuple[int, int]) -> None:
        super().__init__()
        self.channel_stride = channel_stride
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(x, kernel_size=3, stride=self.stride)
        return x[:, :: self.channel_stride] if self.channel_stride > 1 else x


class LPRNet(nn.Module):
    """LPRNet for ``num_classes`` characters (the CTC blank included, last).

    ``forward`` returns logits of shape (N, num_classes, 18): class scores per time step.
    """

    KEPT = (2, 6, 13, 22)  # backbone outputs that feed the global context, as in the reference

    def __init__(self, num_classes: int, dropout: float = 0.5, context_norm: ContextNorm = "sample") -> None:
        super().__init__()
        if context_norm not in ("batch", "sample"):
            raise ValueError(f"context_norm must be 'batch' or 'sample', got {context_norm!r}")
        self.num_classes = num_classes
        self.context_norm = context_norm
        self.backbone = nn.Sequential(
            nn.Conv2d(3, 64, kernel_size=3),  # 0
            nn.BatchNorm2d(64),
            nn.ReLU(),  # 2: kept
            ChannelStridePool(1, (1, 1)),
            SmallBasicBlock(64, 128),  # 4
            nn.BatchNorm2d(128),
            nn.ReLU(),  # 6: kept
            ChannelStridePool(2, (1, 2)),
            SmallBasicBlock(64, 256),  # 8
            nn.BatchNorm2d(256),
            nn.ReLU(),  # 10
            SmallBasicBlock(256, 256),  # 11
            nn.BatchNorm2d(256),
            nn.ReLU(),  # 13: kept
            ChannelStridePool(4, (1, 2)),  # 14
            nn.Dropout(dropout),
            nn.Conv2d(64, 256, kernel_size=(1, 4)),  # 16
            nn.BatchNorm2d(256),
            nn.ReLU(),  # 18
            nn.Dropout(dropout),
            nn.Conv2d(256, num_classes, kernel_size=(13, 1)),  # 20
            nn.BatchNorm2d(num_classes),
            nn.ReLU(),  # 22: kept
        )
        self.container = nn.Conv2d(64 + 128 + 256 + num_classes, num_classes, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kept: list[torch.Tensor] = []
        for i, layer in enumerate(self.backbone):
            x = layer(x)
            if i in self.KEPT:
                kept.append(x)
        context = [
            F.avg_pool2d(kept[0], kernel_size=5, stride=5),  # 64 x 22 x 92 -> 64 x 4 x 18
            F.avg_pool2d(kept[1], kernel_size=5, stride=5),  # 128 x 20 x 90 -> 128 x 4 x 18
            F.avg_pool2d(kept[2], kernel_size=(4, 10), stride=(4, 2)),  # 256 x 18 x 44 -> 256 x 4 x 18
            kept[3],  # classes x 4 x 18
        ]
        x = torch.cat([self._normalise(f) for f in context], dim=1)
        return self.container(x).mean(dim=2)

    def _normalise(self, f: torch.Tensor) -> torch.Tensor:
        """Divide a context map by its mean square: over the batch (reference) or per plate."""
        if self.context_norm == "batch":
            return f / f.pow(2).mean()
        return f / f.pow(2).mean(dim=(1, 2, 3), keepdim=True)


def greedy_decode(logits: np.ndarray, alphabet: str, blank: int) -> list[str]:
    """Greedy CTC decoding of (N, classes, 18) scores: best class per step, repeats merged, blanks dropped."""
    best = np.asarray(logits).argmax(axis=1)  # (N, T)
    texts = []
    for steps in best:
        keep = np.ones(len(steps), dtype=bool)
        keep[1:] = steps[1:] != steps[:-1]
        texts.append("".join(alphabet[c] for c in steps[keep] if c != blank))
    return texts
