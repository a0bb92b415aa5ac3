"""Waveform metrics (MSE, R², SNR in dB, Pearson correlation), pooled over every sample of a stage, per group.

All four come from seven running sums per group, reduced across processes by summation, so the values are exact
under DDP whatever each process saw, and a group no process saw is reported as absent rather than as NaN.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric

STATS = ("n", "sum_p", "sum_t", "sum_pp", "sum_tt", "sum_pt", "sum_err2")


def waveform_stats(preds: Tensor, target: Tensor) -> Tensor:
    """The seven sums of `STATS` over the last dimension, in float64: (..., t) -> (..., 7)."""
    p, t = preds.double(), target.double()
    n = torch.full(p.shape[:-1], p.shape[-1], dtype=torch.float64, device=p.device)
    sums = (p.sum(-1), t.sum(-1), (p * p).sum(-1), (t * t).sum(-1), (p * t).sum(-1), ((t - p) ** 2).sum(-1))
    return torch.stack([n, *sums], dim=-1)


def waveform_scores(stats: Tensor) -> dict[str, Tensor]:
    """MSE, R², SNR (dB) and correlation from summed stats (..., 7); each result has shape (...)."""
    n, sum_p, sum_t, sum_pp, sum_tt, sum_pt, sum_err2 = stats.unbind(-1)
    var_t = sum_tt - sum_t**2 / n  # n · variance of the target
    var_p = sum_pp - sum_p**2 / n
    cov = sum_pt - sum_p * sum_t / n
    return {
        "mse": (sum_err2 / n).float(),
        "r2": (1 - sum_err2 / var_t).float(),
        "snr_db": (10 * torch.log10(sum_tt / sum_err2)).float(),
        "corr": (cov / torch.sqrt(var_p * var_t)).float(),
    }


class WaveformMetrics(Metric):
    """MSE, R², SNR and correlation of predicted waveforms, overall and for each of `num_groups` groups.

    `update(preds, target, group)` takes (b, t) waveforms and each row's group index (b,) (e.g. which frequency was
    extracted). `compute()` returns ``{"mse": ..., "mse_<name>": ...}`` for the groups that received data.
    """

    is_differentiable = False
    full_state_update = False

    def __init__(self, group_names: tuple[str, ...] = (), **kwargs) -> None:
        super().__init__(**kwargs)
        self.group_names = tuple(group_names)
        num_groups = max(1, len(self.group_names))
        self.add_state("stats", torch.zeros(num_groups, len(STATS), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, preds: Tensor, target: Tensor, group: Tensor | None = None) -> None:
        if preds.shape != target.shape or preds.ndim != 2:
            raise ValueError(f"preds {tuple(preds.shape)} and target {tuple(target.shape)}: need equal (b, t) shapes")
        if group is None:
            group = torch.zeros(preds.shape[0], dtype=torch.long, device=preds.device)
        if group.shape != preds.shape[:1] or (len(group) and int(group.max()) >= self.stats.shape[0]):
            raise ValueError(
                f"group {tuple(group.shape)} must give each of {preds.shape[0]} rows an index < {self.stats.shape[0]}"
            )
        self.stats.index_add_(0, group, waveform_stats(preds, target))

    def compute(self) -> dict[str, Tensor]:
        out: dict[str, Tensor] = {}
        total = self.stats.sum(0)
        if total[0] > 0:
            out.update(waveform_scores(total))
        for name, stats in zip(self.group_names, self.stats, strict=False):
            if stats[0] > 0:
                out.update({f"{key}_{name}": value for key, value in waveform_scores(stats).items()})
        return out
