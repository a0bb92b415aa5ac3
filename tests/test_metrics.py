"""Shared metrics against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from abr_lab.metrics import SplitMean, WaveformMetrics


def test_scores_match_hand_computed_values():
    target = torch.tensor([[0.0, 1.0, 2.0, 3.0]])
    pred = torch.tensor([[0.0, 1.0, 2.0, 5.0]])
    values = WaveformMetrics()(pred, target)
    assert values["mse"].item() == pytest.approx(1.0)
    assert values["r2"].item() == pytest.approx(1 - 4 / 5)  # SSE 4, SST 5
    assert values["snr_db"].item() == pytest.approx(10 * math.log10(14 / 4))  # Σt² 14, Σ(t-p)² 4
    assert values["corr"].item() == pytest.approx(np.corrcoef(pred[0], target[0])[0, 1], rel=1e-6)


def test_values_pool_over_batches_and_split_by_group():
    metric = WaveformMetrics(group_names=("a", "b", "c"))
    metric.update(torch.tensor([[1.0, 1.0]]), torch.tensor([[2.0, 0.0]]), torch.tensor([0]))  # err 2 over 2
    metric.update(torch.tensor([[3.0, 0.0], [1.0, 1.0]]), torch.tensor([[3.0, 2.0], [1.0, 1.0]]), torch.tensor([1, 0]))
    values = metric.compute()
    assert values["mse"].item() == pytest.approx((2 + 4 + 0) / 6)
    assert values["mse_a"].item() == pytest.approx(2 / 4)
    assert values["mse_b"].item() == pytest.approx(4 / 2)
    assert "mse_c" not in values  # a group with no data is absent, never NaN


def test_perfect_prediction_and_bad_shapes():
    values = WaveformMetrics()(torch.ones(2, 3) * torch.arange(3.0), torch.ones(2, 3) * torch.arange(3.0))
    assert values["mse"].item() == 0 and math.isinf(values["snr_db"].item())
    with pytest.raises(ValueError, match="equal"):
        WaveformMetrics().update(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="index"):
        WaveformMetrics(group_names=("a",)).update(torch.zeros(1, 3), torch.zeros(1, 3), torch.tensor([1]))


def test_split_mean_weights_batches_and_survives_an_inference_mode_reset():
    mean = SplitMean()
    mean.update(torch.tensor(1.0), weight=3)  # a batch mean of 3 examples
    mean.update(torch.tensor([2.0, 4.0]), weight=torch.tensor([1.0, 0.5]))  # per-example values and weights
    assert mean.compute().item() == pytest.approx((3 * 1 + 2 + 2) / 4.5)
    with torch.inference_mode():  # trainer.validate, then fit's validation under no_grad
        mean.reset()
    with torch.no_grad():
        mean.update(torch.tensor(5.0), weight=2)
    assert mean.compute().item() == 5.0
