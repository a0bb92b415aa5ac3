"""A split-level weighted mean: the loss of a whole validation or test split, exact across batches and processes."""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric


class SplitMean(Metric):
    """Weighted mean of per-batch (or per-example) values over a split, kept as a weighted sum and a total weight.

    Summed across processes, so the value equals one process's over the same examples, where Lightning's
    ``sync_dist`` averages the processes' means with equal weights. Updates are out of place: states that a
    `trainer.validate` reset under inference mode stay usable by the validation inside `fit` (no_grad), where
    torchmetrics' `MeanMetric` fails on its in-place update.
    """

    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        self.add_state("total", torch.zeros(()), dist_reduce_fx="sum")
        self.add_state("weight", torch.zeros(()), dist_reduce_fx="sum")

    def update(self, value: Tensor, weight: Tensor | float = 1.0) -> None:
        """`value`: a scalar or (b,) values; `weight`: a scalar or one weight per value."""
        value = value.detach().float()
        weight = torch.as_tensor(weight, dtype=value.dtype, device=value.device).expand_as(value)
        self.total = self.total + (value * weight).sum()
        self.weight = self.weight + weight.sum()

    def compute(self) -> Tensor:
        return self.total / self.weight
