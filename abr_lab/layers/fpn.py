"""Feature Pyramid Network (Lin et al., CVPR 2017, "Feature Pyramid Networks for Object Detection").

Turns a backbone's feature maps of growing stride and width into maps of one width that all carry the coarse
levels' semantics: a 1x1 lateral conv brings every level to `out_channels`; the top-down pathway upsamples the
coarser merged map (nearest neighbour, to the finer level's exact size, so odd sizes work) and adds it to the finer
lateral; a 3x3 conv on every merged map reduces the upsampling's aliasing. No extra levels (P6/P7) are added.

Legend: b batch · c_l input channels of level l · c out channels · h_l w_l level l's spatial size.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn


class FeaturePyramid(nn.Module):
    """FPN top-down pathway with lateral connections over any number of levels.

    Args:
        in_channels: widths of the input maps, finest (smallest stride) first.
        out_channels: width of every output map.
    """

    def __init__(self, in_channels: Sequence[int], out_channels: int) -> None:
        super().__init__()
        if len(in_channels) < 1 or any(c < 1 for c in in_channels):
            raise ValueError(f"in_channels: need at least one level, each >= 1 wide; got {list(in_channels)}")
        if out_channels < 1:
            raise ValueError(f"out_channels must be >= 1, got {out_channels}")
        self.in_channels = tuple(int(c) for c in in_channels)
        self.out_channels = int(out_channels)
        self.lateral = nn.ModuleList(nn.Conv2d(c, out_channels, kernel_size=1) for c in self.in_channels)
        self.output = nn.ModuleList(
            nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1) for _ in self.in_channels
        )

    def forward(self, features: Sequence[Tensor]) -> list[Tensor]:
        """Maps fine -> coarse [(b, c_l, h_l, w_l)] -> maps fine -> coarse [(b, c, h_l, w_l)]."""
        if len(features) != len(self.lateral):
            raise ValueError(f"FeaturePyramid expects {len(self.lateral)} maps, got {len(features)}")
        merged = [self.lateral[-1](features[-1])]  # [(b, c, h_L, w_L)] coarsest first
        for level in range(len(features) - 2, -1, -1):
            lateral = self.lateral[level](features[level])  # (b, c, h_l, w_l)
            top_down = F.interpolate(merged[-1], size=lateral.shape[-2:], mode="nearest")  # (b, c, h_l, w_l)
            merged.append(lateral + top_down)
        merged.reverse()  # fine -> coarse
        return [conv(m) for conv, m in zip(self.output, merged, strict=True)]  # [(b, c, h_l, w_l)]
