"""Learning-rate schedules shared by the families."""

from __future__ import annotations

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


def warmup_cosine(optimizer: Optimizer, warmup_steps: int, total_steps: int, min_lr_ratio: float = 0.0) -> LambdaLR:
    """Linear warm-up over `warmup_steps`, then cosine decay to `min_lr_ratio` × the base rate at `total_steps`.

    Steps past `total_steps` stay at the floor, so a resumed or extended run never sees the rate climb again.
    """
    if warmup_steps < 0 or total_steps < 1 or not 0 <= min_lr_ratio <= 1:
        raise ValueError(
            f"warmup_steps={warmup_steps}, total_steps={total_steps}, min_lr_ratio={min_lr_ratio}: "
            "need warmup_steps >= 0, total_steps >= 1, 0 <= min_lr_ratio <= 1"
        )

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return LambdaLR(optimizer, factor)
