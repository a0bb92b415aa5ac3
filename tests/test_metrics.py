"""Shared metrics against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from abr_lab.metrics import SignalNoiseRatio, signal_metrics, snr_db


def test_snr_pools_energy_over_batches():
    metric = SignalNoiseRatio()
    metric.update(torch.tensor([1.0, 1.0]), torch.tensor([2.0, 0.0]))  # target energy 4, error 2
    metric.update(torch.tensor([3.0]), torch.tensor([3.0]))  # target energy 9, error 0
    assert metric.compute().item() == pytest.approx(10 * math.log10(13 / 2))


def test_snr_of_a_perfect_prediction_is_infinite():
    assert math.isinf(snr_db(torch.tensor(1.0), torch.tensor(0.0)).item())


def test_snr_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="same shape"):
        SignalNoiseRatio().update(torch.zeros(3), torch.zeros(4))


def test_signal_metrics_collection():
    target = torch.tensor([0.0, 1.0, 2.0, 3.0])
    pred = torch.tensor([0.0, 1.0, 2.0, 5.0])
    values = signal_metrics().clone(prefix="val/")(pred, target)
    assert values["val/mse"].item() == pytest.approx(1.0)
    assert values["val/r2"].item() == pytest.approx(1 - 4 / 5)  # SSE 4, SST 5
    assert values["val/corr"].item() == pytest.approx(float(torch.corrcoef(torch.stack([pred, target]))[0, 1]))
