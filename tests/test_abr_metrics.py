"""ABRMetrics against hand-computed values and against sklearn on random data."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    f1_score,
    mean_absolute_error,
    r2_score,
    recall_score,
)
from sklearn.metrics import confusion_matrix as sk_confusion_matrix

from abr_lab.metrics import ABRMetrics, regression_scores, regression_stats


def batch(
    class_pred=(0, 0, 1),
    label=(0, 1, 1),
    peaks_pred=None,
    peaks=None,
    mask=None,
    threshold_pred=(10.0, 20.0, 40.0),
    threshold=(10.0, 30.0, 30.0),
) -> dict[str, torch.Tensor]:
    """A small batch (default: 3 rows, wave V present in all, waves I and III absent)."""
    b = len(label)
    if peaks is None:
        peaks = torch.zeros(b, 3, 2)
        peaks[:, 2] = torch.tensor([[6.0, 0.3], [7.0, 0.2], [8.0, 0.1]])[:b]
    if peaks_pred is None:
        peaks_pred = peaks.clone()
    if mask is None:
        mask = torch.zeros(b, 3, dtype=torch.bool)
        mask[:, 2] = True
    return {
        "class_pred": torch.tensor(class_pred),
        "label": torch.tensor(label),
        "peaks_pred": peaks_pred,
        "peaks": peaks,
        "peak_mask": mask,
        "threshold_pred": torch.tensor(threshold_pred),
        "threshold": torch.tensor(threshold),
    }


def test_hand_computed_values_and_absent_waves_omitted():
    data = batch()
    data["peaks_pred"][:, 2, 0] = torch.tensor([6.0, 7.5, 8.5])  # latency errors 0, -0.5, -0.5
    data["peaks_pred"][:, :2] = float("nan")  # predictions for absent peaks are ignored, even NaN
    metric = ABRMetrics()
    metric.update(**data)
    out = metric.compute()
    # Classes: true (0, 1, 1), predicted (0, 0, 1). F1_0 = 2·1/(1+2) = 2/3, F1_1 = 2·1/(2+1) = 2/3.
    assert out["class/accuracy"].item() == pytest.approx(2 / 3)
    assert out["class/f1_normal"].item() == pytest.approx(2 / 3)
    assert out["class/f1_neuropathy"].item() == pytest.approx(2 / 3)
    assert out["class/macro_f1"].item() == pytest.approx(2 / 3)
    assert out["class/balanced_accuracy"].item() == pytest.approx((1 + 0.5) / 2)
    assert "class/f1_total" not in out  # a class in neither targets nor predictions does not count
    # Wave V latency: y = (6, 7, 8), SS_tot = 2, SSE = 0.5 -> R² = 0.75; MAE = 1/3. Amplitude predicted exactly.
    assert out["peaks/latency_r2_V"].item() == pytest.approx(0.75)
    assert out["peaks/latency_mae_V"].item() == pytest.approx(1 / 3)
    assert out["peaks/amplitude_r2_V"].item() == pytest.approx(1.0)
    assert out["peaks/amplitude_mae_V"].item() == pytest.approx(0.0, abs=1e-7)
    assert not any(key.endswith(("_I", "_III")) for key in out)  # waves with no present peak are absent
    assert not any(key.startswith("peaks/presence") for key in out)  # presence was never given
    # Threshold: y = (10, 30, 30), mean 70/3, SS_tot = 800/3; errors (0, 10, -10): SSE 200, MAE 20/3.
    assert out["threshold/r2"].item() == pytest.approx(1 - 200 / (800 / 3))
    assert out["threshold/mae"].item() == pytest.approx(20 / 3)
    assert all(math.isfinite(v.item()) for v in out.values())


def test_presence_f1_per_wave():
    data = batch()
    data["peak_mask"][:, 0] = torch.tensor([True, True, False])  # wave I present in rows 0, 1
    presence = data["peak_mask"].clone()
    presence[:, 0] = torch.tensor([True, False, True])  # wave I: TP 1, FP 1, FN 1 -> F1 0.5
    presence[2, 2] = False  # wave V: TP 2, FN 1 -> F1 0.8
    metric = ABRMetrics()
    metric.update(**data, presence_pred=presence)
    out = metric.compute()
    assert out["peaks/presence_f1_I"].item() == pytest.approx(0.5)
    assert out["peaks/presence_f1_V"].item() == pytest.approx(0.8)
    assert "peaks/presence_f1_III" not in out  # no true and no predicted wave III: F1 undefined, left out
    assert "peaks/latency_r2_I" in out and "peaks/latency_r2_III" not in out


def random_batches(seed: int, sizes=(17, 1, 40, 9)) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for b in sizes:
        label = torch.randint(0, 4, (b,), generator=g)  # class 4 only ever predicted, never true
        peaks = torch.rand(b, 3, 2, generator=g) * torch.tensor([8.0, 0.5])
        data = {
            "class_pred": torch.randint(0, 5, (b,), generator=g),
            "label": label,
            "peaks_pred": peaks + 0.3 * torch.randn(b, 3, 2, generator=g),
            "peaks": peaks,
            "peak_mask": torch.rand(b, 3, generator=g) < torch.tensor([0.3, 0.6, 0.9]),
            "threshold_pred": 100 * torch.rand(b, generator=g),
            "threshold": 100 * torch.rand(b, generator=g),
            "presence_pred": torch.rand(b, 3, generator=g) < 0.5,
        }
        out.append(data)
    return out


def test_agrees_with_sklearn_on_random_data():
    batches = random_batches(0)
    metric = ABRMetrics()
    for data in batches:
        metric.update(**data)
    out = metric.compute()
    cat = {k: torch.cat([d[k] for d in batches]).numpy() for k in batches[0]}
    y, p = cat["label"], cat["class_pred"]
    assert out["class/macro_f1"].item() == pytest.approx(f1_score(y, p, average="macro"), rel=1e-6)
    assert out["class/accuracy"].item() == pytest.approx(accuracy_score(y, p), rel=1e-6)
    with pytest.warns(UserWarning):  # sklearn warns that class 4 is predicted but absent from y_true
        expected_balanced = balanced_accuracy_score(y, p)
    assert out["class/balanced_accuracy"].item() == pytest.approx(expected_balanced, rel=1e-6)
    per_class = f1_score(y, p, average=None, labels=range(5))
    for c, name in enumerate(("normal", "neuropathy", "sensorineural", "total", "conductive")):
        assert out[f"class/f1_{name}"].item() == pytest.approx(per_class[c], rel=1e-6)
    for w, wave in enumerate(("I", "III", "V")):
        m = cat["peak_mask"][:, w]
        for j, field in enumerate(("latency", "amplitude")):
            yt, yp = cat["peaks"][m, w, j], cat["peaks_pred"][m, w, j]
            assert out[f"peaks/{field}_r2_{wave}"].item() == pytest.approx(r2_score(yt, yp), rel=1e-5)
            assert out[f"peaks/{field}_mae_{wave}"].item() == pytest.approx(mean_absolute_error(yt, yp), rel=1e-5)
        expected = f1_score(m, cat["presence_pred"][:, w])
        assert out[f"peaks/presence_f1_{wave}"].item() == pytest.approx(expected, rel=1e-6)
    assert out["threshold/r2"].item() == pytest.approx(r2_score(cat["threshold"], cat["threshold_pred"]), rel=1e-5)
    expected_mae = mean_absolute_error(cat["threshold"], cat["threshold_pred"])
    assert out["threshold/mae"].item() == pytest.approx(expected_mae, rel=1e-5)


def test_accumulating_updates_equals_one_update_and_reset():
    batches = random_batches(1)
    pooled, once = ABRMetrics(), ABRMetrics()
    for data in batches:
        pooled.update(**data)
    once.update(**{k: torch.cat([d[k] for d in batches]) for k in batches[0]})
    a, b = pooled.compute(), once.compute()
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].item() == pytest.approx(b[key].item(), rel=1e-6, abs=1e-9), key
    pooled.reset()
    with pytest.warns(UserWarning, match="before the ``update``"):  # torchmetrics' warning; the dict is empty
        assert pooled.compute() == {}


def test_regression_scores_edge_cases_and_bad_shapes():
    # A constant target: R² is 1 when predicted exactly, 0 otherwise (sklearn's force_finite convention).
    exact = regression_scores(regression_stats(torch.full((3,), 5.0), torch.full((3,), 5.0)))
    assert exact["r2"].item() == 1.0 and exact["mae"].item() == 0.0
    off = regression_scores(regression_stats(torch.tensor([5.0, 6.0]), torch.full((2,), 5.0)))
    assert off["r2"].item() == 0.0 and off["mae"].item() == pytest.approx(0.5)
    empty = regression_scores(regression_stats(torch.ones(2), torch.ones(2), torch.zeros(2, dtype=torch.bool)))
    assert np.isnan(empty["r2"].item())
    data = batch()
    data["peaks"] = data["peaks"][:, :2]
    with pytest.raises(ValueError, match="peaks has shape"):
        ABRMetrics().update(**data)
    with pytest.raises(ValueError, match="outside"):
        ABRMetrics().update(**batch(class_pred=(0, 5, 1)))


CLASS_NAMES = ("normal", "neuropathy", "sensorineural", "total", "conductive")


def test_recall_within_tolerance_and_confusion_against_sklearn():
    batches = random_batches(2)
    metric = ABRMetrics()
    for data in batches:
        metric.update(**data)
    out = metric.compute()
    cat = {k: torch.cat([d[k] for d in batches]).numpy() for k in batches[0]}
    y, p = cat["label"], cat["class_pred"]
    recall = recall_score(y, p, average=None, labels=range(5), zero_division=0)
    for c, name in enumerate(CLASS_NAMES[:4]):
        assert out[f"class/recall_{name}"].item() == pytest.approx(recall[c], rel=1e-6)
    assert "class/recall_conductive" not in out  # class 4 is only predicted, never true: recall undefined
    assert "class/f1_conductive" in out
    for c, name in enumerate(CLASS_NAMES):  # what the health monitor reads for class collapse
        assert out[f"class/pred_share_{name}"].item() == pytest.approx((p == c).mean(), rel=1e-6)
    within = np.abs(cat["threshold_pred"].astype(np.float64) - cat["threshold"]) <= 10
    assert out["threshold/within_10db"].item() == pytest.approx(within.mean(), rel=1e-6)
    cm = metric.confusion()
    assert cm.dtype == torch.int64 and cm.shape == (5, 5)
    np.testing.assert_array_equal(cm.numpy(), sk_confusion_matrix(y, p, labels=range(5)))
    cm[0, 0] += 100  # a copy: the state is untouched
    np.testing.assert_array_equal(metric.confusion().numpy(), sk_confusion_matrix(y, p, labels=range(5)))
    metric.update(**batches[0])  # accumulation goes on after confusion()
    assert int(metric.confusion().sum()) == len(y) + len(batches[0]["label"])


def test_recall_and_within_tolerance_by_hand():
    # True (0, 1, 1), predicted (0, 0, 1): recall_normal 1, recall_neuropathy 1/2. Threshold errors (0, 10, 10).
    metric = ABRMetrics()
    metric.update(**batch())
    out = metric.compute()
    assert out["class/recall_normal"].item() == pytest.approx(1.0)
    assert out["class/recall_neuropathy"].item() == pytest.approx(0.5)
    assert sorted(key for key in out if key.startswith("class/recall_")) == [
        "class/recall_neuropathy",
        "class/recall_normal",
    ]  # only classes present in the targets
    assert out["threshold/within_10db"].item() == pytest.approx(1.0)  # |error| = 10 is within 10 dB
    tight = ABRMetrics(threshold_tolerance_db=2.5)
    tight.update(**batch(threshold_pred=(12.0, 20.0, float("nan"))))  # errors 2, 10, NaN: one of three within
    out = tight.compute()
    assert out["threshold/within_2.5db"].item() == pytest.approx(1 / 3)
    assert "threshold/within_10db" not in out
    torch.testing.assert_close(tight.confusion(), torch.tensor([[1, 0, 0, 0, 0], [1, 1, 0, 0, 0]] + [[0] * 5] * 3))
    with pytest.raises(ValueError, match="threshold_tolerance_db"):
        ABRMetrics(threshold_tolerance_db=-1.0)
    empty = ABRMetrics()
    assert torch.equal(empty.confusion(), torch.zeros(5, 5, dtype=torch.long))
