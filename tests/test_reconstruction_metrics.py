"""ReconstructionMetrics against hand-computed values and numpy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from abr_lab.metrics import ReconstructionMetrics
from abr_lab.metrics.reconstruction import row_correlation

TARGET = torch.tensor([[0.0, 1.0, 2.0, 3.0], [1.0, -1.0, 1.0, -1.0], [2.0, 2.0, 2.0, 2.0]])
PRED = torch.tensor([[0.0, 1.0, 2.0, 5.0], [0.5, -1.0, 1.0, 0.0], [1.0, 2.0, 3.0, 4.0]])


def test_correlation_against_numpy_and_flat_target_skipped():
    metric = ReconstructionMetrics()
    metric.update(PRED, TARGET)
    out = metric.compute()
    r0, r1 = (np.corrcoef(PRED[i].numpy(), TARGET[i].numpy())[0, 1] for i in range(2))
    assert out["corr"].item() == pytest.approx((r0 + r1) / 2, rel=1e-6)  # row 2 (constant target) is left out
    assert metric.n.item() == 3 and metric.corr_n.item() == 2
    assert "corr_response" not in out and "snr_db_response" not in out  # no response given
    # Pooled SNR: Σt² = 14 + 4 + 16 = 34; Σerr² = 4 + 1.25 + 6 = 11.25.
    assert out["snr_db"].item() == pytest.approx(10 * math.log10(34 / 11.25), rel=1e-6)
    assert all(math.isfinite(v.item()) for v in out.values())


def test_response_masking():
    metric = ReconstructionMetrics()
    metric.update(PRED, TARGET, torch.tensor([True, False, True]))
    out = metric.compute()
    r0 = np.corrcoef(PRED[0].numpy(), TARGET[0].numpy())[0, 1]
    assert out["corr_response"].item() == pytest.approx(r0, rel=1e-6)  # row 2 responds but has no defined r
    assert metric.corr_response_n.item() == 1
    # Response rows 0 and 2: Σt² = 14 + 16 = 30, Σerr² = 4 + 6 = 10.
    assert out["snr_db_response"].item() == pytest.approx(10 * math.log10(3), rel=1e-6)
    assert "corr" in out and "snr_db" in out
    none = ReconstructionMetrics()
    none.update(PRED, TARGET, torch.zeros(3, dtype=torch.bool))
    assert not any(key.endswith("_response") for key in none.compute())  # no response rows: left out


def test_flatness_is_relative_to_scale():
    ramp = torch.arange(4.0, dtype=torch.float64)  # float64 so the 1e6 offset keeps its 1e-4 ripple
    target = torch.stack([1e-9 * ramp, 1e6 + 1e-4 * ramp, ramp, ramp])
    pred = torch.stack([1e-9 * ramp, ramp, torch.full((4,), 3.0), ramp.flip(0)])
    r, defined = row_correlation(pred, target)
    assert defined.tolist() == [True, False, False, True]  # tiny but varying: defined; offset-dominated or flat: not
    assert r.tolist() == pytest.approx([1.0, 0.0, 0.0, -1.0])
    nan_pred = pred.clone()
    nan_pred[0, 1] = float("nan")
    assert row_correlation(nan_pred, target)[1].tolist() == [False, False, False, True]


def test_accumulating_updates_equals_one_update_and_reset():
    g = torch.Generator().manual_seed(0)
    target = torch.randn(13, 50, generator=g)
    target[4] = 0.5  # a flat row among them
    pred = target + 0.7 * torch.randn(13, 50, generator=g)
    response = torch.rand(13, generator=g) < 0.5
    response[4] = True
    pooled, once = ReconstructionMetrics(), ReconstructionMetrics()
    pooled.update(pred[:6], target[:6], response[:6])
    pooled.update(pred[6:], target[6:], response[6:])
    once.update(pred, target, response)
    a, b = pooled.compute(), once.compute()
    assert a.keys() == {"corr", "corr_response", "snr_db", "snr_db_response"} == b.keys()
    for key in a:
        assert a[key].item() == pytest.approx(b[key].item(), rel=1e-6), key
    rows = [i for i in range(13) if i != 4]
    expected = np.mean([np.corrcoef(pred[i].numpy(), target[i].numpy())[0, 1] for i in rows])
    assert a["corr"].item() == pytest.approx(expected, rel=1e-5)
    pooled.reset()
    with pytest.warns(UserWarning, match="before the ``update``"):  # torchmetrics' warning; the dict is empty
        assert pooled.compute() == {}


def test_no_key_when_nothing_defined_and_bad_shapes():
    metric = ReconstructionMetrics()
    metric.update(torch.zeros(2, 5), torch.zeros(2, 5), torch.tensor([True, False]))  # flat, Σt² = 0, Σerr² = 0
    assert metric.compute() == {}
    perfect = ReconstructionMetrics()
    perfect.update(TARGET[:2], TARGET[:2])
    out = perfect.compute()
    assert out["corr"].item() == pytest.approx(1.0) and "snr_db" not in out  # Σerr² = 0: no finite SNR
    with pytest.raises(ValueError, match=r"pred has shape \(4,\)"):
        ReconstructionMetrics().update(torch.zeros(4), torch.zeros(4))
    with pytest.raises(ValueError, match=r"target has shape \(2, 3\), expected \(2, 4\)"):
        ReconstructionMetrics().update(torch.zeros(2, 4), torch.zeros(2, 3))
    with pytest.raises(ValueError, match=r"response has shape \(3,\), expected \(2,\)"):
        ReconstructionMetrics().update(torch.zeros(2, 4), torch.zeros(2, 4), torch.ones(3, dtype=torch.bool))
