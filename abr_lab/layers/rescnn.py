"""Multi-scale residual 1-D CNN (ResCNN): a bottleneck option of the ABR U-Net.

A `ResCNNBlock` looks at its input through several kernel sizes at once (parallel convolutions, by default 3, 5 and 7
steps wide), fuses the concatenated branches with a 1×1 convolution, and adds the result to the block's input. The
identity skip lets a stack of blocks start close to the identity map and keeps the gradient path short; the parallel
kernels let each block mix short and longer context at the bottleneck's (already downsampled) time resolution.
`ResCNNStack` chains `num_blocks` such blocks. Both keep the shape (B, C, L) for any length L.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def _check_kernel_sizes(kernel_sizes: Sequence[int]) -> tuple[int, ...]:
    """Return `kernel_sizes` as a tuple, or raise ValueError unless it is a non-empty list of odd sizes >= 1.

    Odd sizes keep 'same' padding (k // 2 on each side) symmetric, so every branch returns exactly L steps and the
    branches can be concatenated and added to the input.
    """
    sizes = tuple(kernel_sizes)
    if not sizes:
        raise ValueError("kernel_sizes must name at least one kernel size")
    for k in sizes:
        if isinstance(k, bool) or not isinstance(k, int) or k < 1 or k % 2 == 0:
            raise ValueError(f"kernel_sizes must be odd integers >= 1, got {sizes!r}")
    return sizes


def _check_dropout(dropout: float) -> None:
    """Raise ValueError unless `dropout` is a probability in [0, 1)."""
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")


class ResCNNBlock(nn.Module):
    """One multi-scale residual block: ReLU(x + Dropout(BN(Conv1×1(cat_k ReLU(BN(Conv_k(x))))))).

    Each branch is Conv1d(channels → width, kernel k, 'same' padding) → BatchNorm1d → ReLU. The branch widths split
    `channels` as `channels // n` each with the remainder on the last branch (170/170/172 for 512 channels and three
    kernels), so the concatenation has exactly `channels` channels again and the 1×1 fusion convolution can mix the
    scales without changing the width; the identity skip therefore needs no projection.

    The convolutions carry no bias: each is followed by BatchNorm, whose shift makes a bias redundant (and its gradient
    identically zero in training mode).

    Args:
        channels: C, the width of the input and output.
        kernel_sizes: one branch per size; odd, >= 1.
        dropout: drop probability applied to the fused branch output before the residual addition.

    Shapes: input (B, C, L), output (B, C, L), any L >= 1. In training mode BatchNorm needs more than one value per
    channel, i.e. B · L > 1.
    """

    def __init__(self, channels: int, kernel_sizes: Sequence[int] = (3, 5, 7), dropout: float = 0.1) -> None:
        super().__init__()
        sizes = _check_kernel_sizes(kernel_sizes)
        n = len(sizes)
        if channels < n:
            raise ValueError(
                f"channels must be >= the number of branches ({n}) so each branch is non-empty, got {channels}"
            )
        _check_dropout(dropout)

        self.channels = channels
        self.kernel_sizes = sizes
        base = channels // n
        # Equal split, remainder on the last branch: widths always sum to `channels`.
        self.branch_widths: tuple[int, ...] = (base,) * (n - 1) + (channels - base * (n - 1),)

        self.branches = nn.ModuleList(
            nn.Sequential(
                nn.Conv1d(channels, width, kernel_size=k, padding=k // 2, bias=False),
                nn.BatchNorm1d(width),
                nn.ReLU(inplace=True),  # in place on BatchNorm's fresh output: saves one activation per branch
            )
            for k, width in zip(sizes, self.branch_widths, strict=True)
        )
        self.fusion = nn.Sequential(
            nn.Conv1d(channels, channels, kernel_size=1, bias=False),
            nn.BatchNorm1d(channels),
            nn.Dropout(dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block to `x` of shape (B, C, L); returns (B, C, L)."""
        # x: (B, C, L)
        scales = [branch(x) for branch in self.branches]  # n tensors (B, width_i, L), sum of width_i = C
        multi_scale = torch.cat(scales, dim=1)  # (B, C, L)
        fused = self.fusion(multi_scale)  # (B, C, L): 1×1 conv mixes scales; BN; dropout
        return torch.relu(fused + x)  # (B, C, L): identity residual, then ReLU


class ResCNNStack(nn.Module):
    """`num_blocks` ResCNN blocks in sequence, all of width `channels`; (B, C, L) → (B, C, L).

    Args:
        channels: C, the width of the input and output (the U-Net's bottleneck width).
        num_blocks: how many blocks to chain, >= 1.
        kernel_sizes: kernel sizes of every block's branches; odd, >= 1.
        dropout: each block's dropout probability.
    """

    def __init__(
        self,
        channels: int,
        num_blocks: int = 3,
        kernel_sizes: Sequence[int] = (3, 5, 7),
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        if isinstance(num_blocks, bool) or not isinstance(num_blocks, int) or num_blocks < 1:
            raise ValueError(f"num_blocks must be an integer >= 1, got {num_blocks!r}")
        self.channels = channels
        self.num_blocks = num_blocks
        self.kernel_sizes = _check_kernel_sizes(kernel_sizes)
        self.blocks = nn.ModuleList(ResCNNBlock(channels, self.kernel_sizes, dropout) for _ in range(num_blocks))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the blocks in order to `x` of shape (B, C, L); returns (B, C, L)."""
        # x: (B, C, L)
        for block in self.blocks:
            x = block(x)  # (B, C, L) after every block
        return x  # (B, C, L)

    def get_receptive_field(self) -> int:
        """Receptive field of the stack in time steps: k_max + (num_blocks − 1)(k_max − 1); 19 for the defaults.

        This is the receptive field as the design defines it: the number of consecutive input positions that one
        output position depends on, with the model in eval mode. Within a block the widest path is the k_max branch
        (the 1×1 fusion and the identity skip add no width), so each block widens the field by k_max − 1 and n
        blocks see k_max + (n − 1)(k_max − 1) positions, centred on the output position.

        Two caveats: in training mode BatchNorm normalises with statistics of the whole batch, so every output then
        depends on every input position; and the count is in steps of the bottleneck, where the U-Net's encoder has
        already downsampled the signal, so in raw samples the span is larger by the encoder's stride (plus the
        encoder's own receptive field).
        """
        k_max = max(self.kernel_sizes)
        return k_max + (self.num_blocks - 1) * (k_max - 1)
