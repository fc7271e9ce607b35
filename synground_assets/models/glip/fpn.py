"""GLIP's FPN for the Swin body (backbone/__init__.py:37-74, backbone/fpn.py, microsoft/GLIP 9dda955):
C3-C5 (Swin stages 1-3) -> P3-P5 with plain convs (bias, no norm, no ReLU), nearest top-down,
P6 = conv3x3/2 on P5 (in == out channels, fpn.py:148-153), P7 = conv3x3/2 on relu(P6)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class LastLevelP6P7(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.p6 = nn.Conv2d(channels, channels, 3, 2, 1)
        self.p7 = nn.Conv2d(channels, channels, 3, 2, 1)

    def forward(self, p5: torch.Tensor) -> list[torch.Tensor]:
        p6 = self.p6(p5)
        return [p6, self.p7(F.relu(p6))]


class FPN(nn.Module):
    def __init__(self, in_channels: tuple[int, int, int], channels: int):
        super().__init__()
        # Names fpn_inner2..4 / fpn_layer2..4: the official list starts with a skipped 0 (stage 0).
        for idx, width in enumerate(in_channels, 2):
            self.add_module(f"fpn_inner{idx}", nn.Conv2d(width, channels, 1))
            self.add_module(f"fpn_layer{idx}", nn.Conv2d(channels, channels, 3, 1, 1))
        self.top_blocks = LastLevelP6P7(channels)

    def forward(self, c3: torch.Tensor, c4: torch.Tensor, c5: torch.Tensor) -> list[torch.Tensor]:
        last_inner = self.fpn_inner4(c5)
        results = [self.fpn_layer4(last_inner)]
        for feature, inner, layer in ((c4, self.fpn_inner3, self.fpn_layer3), (c3, self.fpn_inner2, self.fpn_layer2)):
            lateral = inner(feature)
            if lateral.shape[-2:] != last_inner.shape[-2:]:
                top_down = F.interpolate(last_inner, size=lateral.shape[-2:], mode="nearest")
            else:
                top_down = last_inner
            last_inner = lateral + top_down
            results.insert(0, layer(last_inner))
        return results + self.top_blocks(results[-1])
