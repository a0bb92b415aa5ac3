"""Metrics for predicted waveforms: MSE, R², SNR (dB) and Pearson correlation over all samples of a stage."""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import MeanSquaredError, Metric, MetricCollection, PearsonCorrCoef, R2Score


def snr_db(target_energy: Tensor, error_energy: Tensor) -> Tensor:
    """10·log10(Σ target² / Σ (target − prediction)²); +inf for a perfect prediction."""
    return 10 * torch.log10(target_energy / error_energy)


class SignalNoiseRatio(Metric):
    """SNR in dB of a prediction against its target, pooled over every sample seen (not a mean of per-batch SNRs)."""

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_state("target_energy", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("error_energy", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, preds: Tensor, target: Tensor) -> None:
        if preds.shape != target.shape:
            raise ValueError(f"preds {tuple(preds.shape)} and target {tuple(target.shape)} must have the same shape")
        self.target_energy += target.double().square().sum()
        self.error_energy += (target.double() - preds.double()).square().sum()

    def compute(self) -> Tensor:
        return snr_db(self.target_energy, self.error_energy).float()


def signal_metrics() -> MetricCollection:
    """MSE, R², SNR and correlation of flattened waveforms; clone it per stage (`clone(prefix="val/")`)."""
    return MetricCollection(
        {"mse": MeanSquaredError(), "r2": R2Score(), "snr_db": SignalNoiseRatio(), "corr": PearsonCorrCoef()}
    )
