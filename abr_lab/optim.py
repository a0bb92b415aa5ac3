"""Optimisation pieces shared by the families: parameter groups with per-part learning rates, the LR schedule."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from torch import nn
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


def parameter_groups(
    module: nn.Module,
    group_of: Callable[[str, nn.Parameter], str],
    names: Sequence[str],
    lr: float,
    weight_decay: float,
    lr_multipliers: Mapping[str, float] | None = None,
    no_decay: Sequence[str] = (),
) -> list[dict[str, Any]]:
    """Optimizer parameter groups with a learning-rate multiplier per named part of a model.

    `group_of(name, parameter)` says which of `names` a parameter belongs to (e.g. ``transformer``, ``ssm``,
    ``heads``); each part gets ``lr × lr_multipliers[part]`` (1 where not given). Matrices decay with `weight_decay`;
    vectors (norms, biases) and every parameter of the parts in `no_decay` do not. Each group carries a ``name``
    (``<part>`` or ``<part>/no_decay``), which `LearningRateMonitor` uses to log ``lr-<Optimizer>/<name>``.
    Empty groups are left out.
    """
    multipliers = dict(lr_multipliers or {})
    unknown = sorted(set(multipliers) - set(names))
    if unknown:
        raise ValueError(f"lr_multipliers: unknown part {unknown[0]!r}; known: {', '.join(names)}")
    for part, value in multipliers.items():
        if not (math.isfinite(value) and value >= 0):
            raise ValueError(f"lr_multipliers.{part} must be a finite number >= 0, got {value!r}")
    grouped: dict[tuple[str, bool], list[nn.Parameter]] = {}
    for name, param in module.named_parameters():
        if not param.requires_grad:
            continue
        part = group_of(name, param)
        if part not in names:
            raise ValueError(f"parameter {name} was put in part {part!r}, not one of {list(names)}")
        decays = param.ndim >= 2 and part not in no_decay
        grouped.setdefault((part, decays), []).append(param)
    return [
        {
            "params": params,
            "name": part if decays else f"{part}/no_decay",
            "lr": lr * multipliers.get(part, 1.0),
            "weight_decay": weight_decay if decays else 0.0,
        }
        for (part, decays), params in sorted(grouped.items(), key=lambda kv: (names.index(kv[0][0]), not kv[0][1]))
    ]
