"""The ABR multi-task loss: each function against numbers worked out by hand, masking, and `ABRLoss` bookkeeping."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from abr_lab.optimized_unet.losses import (
    TASKS,
    ABRLoss,
    focal_loss,
    gaussian_nll,
    huber,
    masked_mean,
    spectral_loss,
)

HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)
B, W, C, T = 4, 3, 5, 32


def approx(x: Tensor) -> float:
    return pytest.approx(x.item(), rel=1e-5, abs=1e-6)


# --- masked_mean -----------------------------------------------------------------------------------------------------


def test_masked_mean_hand_value_and_no_mask() -> None:
    values = torch.tensor([1.0, 2.0, 3.0, 10.0])
    mask = torch.tensor([True, False, True, False])
    assert masked_mean(values, mask).item() == pytest.approx((1.0 + 3.0) / 2)
    assert masked_mean(values, None).item() == pytest.approx(16.0 / 4)


def test_masked_mean_ignores_nan_and_inf_outside_mask() -> None:
    values = torch.tensor([1.0, float("nan"), 3.0, float("inf")])
    mask = torch.tensor([True, False, True, False])
    assert masked_mean(values, mask).item() == pytest.approx(2.0)


def test_masked_mean_empty_mask_is_zero_with_zero_gradient() -> None:
    values = torch.tensor([1.0, float("nan"), 5.0], requires_grad=True)
    out = masked_mean(values * 2, torch.zeros(3, dtype=torch.bool))
    assert out.item() == 0.0
    out.backward()
    assert torch.equal(values.grad, torch.zeros(3))


def test_masked_mean_rejects_mismatched_mask() -> None:
    with pytest.raises(ValueError, match="mask shape"):
        masked_mean(torch.zeros(2, 3), torch.ones(3, dtype=torch.bool))


# --- gaussian_nll / huber ------------------------------------------------------------------------------------------


def test_gaussian_nll_hand_value() -> None:
    mean = torch.tensor([0.0, 1.0])
    log_sigma = torch.tensor([0.0, math.log(2.0)])
    target = torch.tensor([1.0, 2.0])
    # entry 0: sigma 1, residual 1 -> 0.5 log 2π + 0 + 0.5 * 1²
    # entry 1: sigma 2, residual 1 -> 0.5 log 2π + log 2 + 0.5 * (1/2)²
    expected = ((HALF_LOG_2PI + 0.0 + 0.5) + (HALF_LOG_2PI + math.log(2.0) + 0.5 * 0.25)) / 2
    assert gaussian_nll(mean, log_sigma, target).item() == pytest.approx(expected, rel=1e-6)
    # the same as torch's full Gaussian NLL, which is parameterised by the variance
    torch_value = F.gaussian_nll_loss(mean, target, torch.exp(2 * log_sigma), full=True)
    assert gaussian_nll(mean, log_sigma, target).item() == pytest.approx(torch_value.item(), rel=1e-6)


def test_gaussian_nll_clamps_log_sigma() -> None:
    mean, target = torch.tensor([0.0]), torch.tensor([1.0])
    log_sigma = torch.tensor([-50.0], requires_grad=True)
    value = gaussian_nll(mean, log_sigma, target)
    # evaluated at log_sigma = -7: 0.5 log 2π - 7 + 0.5 * (1 / e^-7)²
    assert value.item() == pytest.approx(HALF_LOG_2PI - 7.0 + 0.5 * math.exp(14.0), rel=1e-5)
    value.backward()
    assert log_sigma.grad.item() == 0.0  # outside the range the clamp passes no gradient


def test_gaussian_nll_masked_entries_do_not_matter() -> None:
    mean = torch.tensor([[0.0, 1.0], [2.0, 3.0]], requires_grad=True)
    log_sigma = torch.zeros(2, 2, requires_grad=True)
    mask = torch.tensor([[True, False], [False, True]])
    target = torch.tensor([[1.0, float("nan")], [1e30, 3.0]])
    value = gaussian_nll(mean, log_sigma, target, mask)
    # entries (0,0): residual 1; (1,1): residual 0
    assert value.item() == pytest.approx(((HALF_LOG_2PI + 0.5) + HALF_LOG_2PI) / 2, rel=1e-6)
    value.backward()
    assert torch.isfinite(mean.grad).all() and torch.isfinite(log_sigma.grad).all()
    assert mean.grad[0, 1] == 0 and mean.grad[1, 0] == 0
    # d/dmean of 0.5 (t - m)² / 2 entries at (0,0): -(t - m) / 2 = -0.5
    assert mean.grad[0, 0].item() == pytest.approx(-0.5)


def test_gaussian_nll_empty_mask_is_zero_with_finite_gradient() -> None:
    mean = torch.zeros(2, 3, requires_grad=True)
    log_sigma = torch.zeros(2, 3, requires_grad=True)
    target = torch.full((2, 3), float("nan"))
    value = gaussian_nll(mean, log_sigma, target, torch.zeros(2, 3, dtype=torch.bool))
    assert value.item() == 0.0
    value.backward()
    assert torch.equal(mean.grad, torch.zeros(2, 3)) and torch.equal(log_sigma.grad, torch.zeros(2, 3))


def test_huber_hand_value_and_matches_torch() -> None:
    mean = torch.tensor([0.0, 0.0, 0.0])
    target = torch.tensor([0.5, 3.0, -100.0])
    mask = torch.tensor([True, True, False])
    # |r| = 0.5 <= 1: 0.5 * 0.5² = 0.125; |r| = 3 > 1: 1 * (3 - 0.5 * 1) = 2.5
    assert huber(mean, target, mask).item() == pytest.approx((0.125 + 2.5) / 2)
    # delta = 2: 0.5 * 0.25 = 0.125; 2 * (3 - 0.5 * 2) = 4
    assert huber(mean, target, mask, delta=2.0).item() == pytest.approx((0.125 + 4.0) / 2)
    unmasked = F.huber_loss(mean, target, delta=1.0)
    assert huber(mean, target).item() == pytest.approx(unmasked.item())


def test_huber_ignores_nan_outside_mask() -> None:
    mean = torch.tensor([0.0, 0.0], requires_grad=True)
    value = huber(mean, torch.tensor([0.5, float("nan")]), torch.tensor([True, False]))
    assert value.item() == pytest.approx(0.125)
    value.backward()
    assert torch.isfinite(mean.grad).all()


# --- focal_loss ------------------------------------------------------------------------------------------------------


def test_focal_gamma_zero_equals_weighted_cross_entropy() -> None:
    torch.manual_seed(0)
    logits = torch.randn(8, C)
    target = torch.randint(0, C, (8,))
    weight = torch.tensor([1.0, 2.0, 0.5, 3.0, 1.5])
    torch.testing.assert_close(focal_loss(logits, target, weight, gamma=0.0), F.cross_entropy(logits, target, weight))
    torch.testing.assert_close(focal_loss(logits, target, None, gamma=0.0), F.cross_entropy(logits, target))


def test_focal_hand_value_down_weights_easy_examples() -> None:
    # two classes, logits (0, 0) -> p_y = 1/2; logits (log 3, 0) with y = 0 -> p_y = 3/4 (the easier example)
    logits = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0]])
    target = torch.tensor([0, 0])
    hard = (1 - 0.5) ** 2 * -math.log(0.5)  # 0.25 * log 2
    easy = (1 - 0.75) ** 2 * -math.log(0.75)  # 0.0625 * log(4/3)
    assert focal_loss(logits, target, gamma=2.0).item() == pytest.approx((hard + easy) / 2, rel=1e-5)
    # relative to cross entropy, the easy example is down-weighted 4 times more than the hard one
    assert easy / -math.log(0.75) == pytest.approx((hard / -math.log(0.5)) / 4)
    # class weights: w = (2, 1), both y = 0 -> (2 hard + 2 easy) / (2 + 2), the same weighted mean
    weighted = focal_loss(logits, target, torch.tensor([2.0, 1.0]), gamma=2.0)
    assert weighted.item() == pytest.approx((hard + easy) / 2, rel=1e-5)
    # w = (3, 1) with targets (0, 1): sample 1 has p_y = 1/4 -> (3 hard + 1 * (3/4)² * -log(1/4)) / 4
    mixed = focal_loss(logits, torch.tensor([0, 1]), torch.tensor([3.0, 1.0]), gamma=2.0)
    assert mixed.item() == pytest.approx((3 * hard + 0.5625 * math.log(4.0)) / 4, rel=1e-5)


def test_focal_zero_weight_sum_is_zero_with_zero_gradient() -> None:
    logits = torch.randn(3, C, requires_grad=True)
    value = focal_loss(logits, torch.tensor([1, 1, 1]), torch.tensor([1.0, 0.0, 1.0, 1.0, 1.0]))
    assert value.item() == 0.0
    value.backward()
    assert torch.equal(logits.grad, torch.zeros(3, C))


# --- spectral_loss ---------------------------------------------------------------------------------------------------


def test_spectral_loss_hand_value() -> None:
    # T = 4: pred = (1, 0, 0, 0) has rfft (1, 1, 1), target = 0 -> mean((1, 1, 1)²) / 4
    pred = torch.tensor([[[1.0, 0.0, 0.0, 0.0]]])
    assert spectral_loss(pred, torch.zeros_like(pred)).item() == pytest.approx(1.0 / 4)
    # a circular shift keeps every magnitude: no spectral loss
    assert spectral_loss(pred, torch.roll(pred, 1, dims=-1)).item() == pytest.approx(0.0, abs=1e-7)


def test_spectral_loss_has_waveform_mse_scale() -> None:
    torch.manual_seed(0)
    pred = torch.randn(2, 1, 256)
    # against silence the magnitude difference is the full spectrum: by Parseval close to the MSE (within edge bins)
    mse = F.mse_loss(pred, torch.zeros_like(pred)).item()
    assert spectral_loss(pred, torch.zeros_like(pred)).item() == pytest.approx(mse, rel=0.1)


# --- ABRLoss ---------------------------------------------------------------------------------------------------------


def make_batch(seed: int = 0, requires_grad: bool = True) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    gen = torch.Generator().manual_seed(seed)

    def rand(*shape: int) -> Tensor:
        return torch.randn(*shape, generator=gen).requires_grad_(requires_grad)

    pred = {
        "signal": rand(B, 1, T),
        "presence": rand(B, W),
        "latency": rand(B, W),
        "latency_log_sigma": rand(B, W),
        "amplitude": rand(B, W),
        "amplitude_log_sigma": rand(B, W),
        "class": rand(B, C),
        "threshold": rand(B),
        "threshold_log_sigma": rand(B),
    }
    peak_mask = torch.tensor([[True, False, True], [True, True, True], [False, False, True], [False, False, False]])
    latency = torch.randn(B, W, generator=gen).masked_fill(~peak_mask, float("nan"))  # absent peaks: NaN
    target = {
        "signal": torch.randn(B, 1, T, generator=gen),
        "peak_mask": peak_mask,
        "latency": latency,
        "amplitude": torch.randn(B, W, generator=gen).masked_fill(~peak_mask, 1e30),
        "label": torch.tensor([0, 1, 4, 2]),
        "threshold": torch.randn(B, generator=gen),
    }
    return pred, target


WEIGHTS = {
    "signal": 1.0,
    "spectral": 0.5,
    "presence": 2.0,
    "latency": 1.5,
    "amplitude": 0.7,
    "class": 1.2,
    "threshold": 0.3,
}


def test_abr_loss_total_is_weighted_sum_of_parts() -> None:
    loss = ABRLoss(WEIGHTS, class_weights=torch.tensor([1.0, 2.0, 1.0, 0.5, 3.0]))
    pred, target = make_batch()
    total, parts = loss(pred, target)
    assert set(parts) == set(TASKS)
    assert all(part.ndim == 0 and torch.isfinite(part) for part in parts.values())
    assert total.item() == pytest.approx(sum(WEIGHTS[t] * parts[t].item() for t in TASKS), rel=1e-6)


def test_abr_loss_parts_match_the_functions() -> None:
    class_weights = torch.tensor([1.0, 2.0, 1.0, 0.5, 3.0])
    loss = ABRLoss(WEIGHTS, focal_gamma=1.5, class_weights=class_weights)
    pred, target = make_batch()
    _, parts = loss(pred, target)
    mask = target["peak_mask"]
    assert parts["signal"].item() == approx(F.mse_loss(pred["signal"], target["signal"]))
    assert parts["spectral"].item() == approx(spectral_loss(pred["signal"], target["signal"]))
    assert parts["presence"].item() == approx(F.binary_cross_entropy_with_logits(pred["presence"], mask.float()))
    expected_latency = gaussian_nll(pred["latency"], pred["latency_log_sigma"], target["latency"], mask)
    assert parts["latency"].item() == approx(expected_latency)
    expected_class = focal_loss(pred["class"], target["label"], class_weights, gamma=1.5)
    assert parts["class"].item() == approx(expected_class)
    expected_threshold = gaussian_nll(pred["threshold"], pred["threshold_log_sigma"], target["threshold"])
    assert parts["threshold"].item() == approx(expected_threshold)


def test_changing_a_weight_at_run_time_changes_total_by_delta_times_part() -> None:
    loss = ABRLoss(WEIGHTS)
    pred, target = make_batch()
    total, parts = loss(pred, target)
    loss.weights["latency"] += 0.25
    new_total, _ = loss(pred, target)
    assert new_total.item() - total.item() == pytest.approx(0.25 * parts["latency"].item(), rel=1e-4)


def test_spectral_skipped_at_weight_zero_but_other_zero_weights_logged() -> None:
    loss = ABRLoss({**WEIGHTS, "spectral": 0.0, "class": 0.0})
    pred, target = make_batch()
    total, parts = loss(pred, target)
    assert "spectral" not in parts and "class" in parts
    assert total.item() == pytest.approx(sum(loss.weights[t] * parts[t].item() for t in parts), rel=1e-6)


def test_gradients_reach_every_used_prediction() -> None:
    pred, target = make_batch()
    total, _ = ABRLoss(WEIGHTS)(pred, target)
    total.backward()
    for key, tensor in pred.items():
        assert tensor.grad is not None, key
        assert torch.isfinite(tensor.grad).all(), key
        assert tensor.grad.abs().sum() > 0, key


def test_huber_regression_ignores_log_sigma_heads() -> None:
    loss = ABRLoss(WEIGHTS, regression="huber", huber_delta=0.5)
    pred, target = make_batch()
    sigma_keys = ("latency_log_sigma", "amplitude_log_sigma", "threshold_log_sigma")
    pred = {key: value for key, value in pred.items() if key not in sigma_keys}  # not needed under huber
    total, parts = loss(pred, target)
    expected = huber(pred["amplitude"], target["amplitude"], target["peak_mask"], delta=0.5)
    assert parts["amplitude"].item() == approx(expected)
    total.backward()
    assert torch.isfinite(pred["amplitude"].grad).all() and pred["amplitude"].grad.abs().sum() > 0


def test_missing_inputs_raise_key_error_naming_the_key() -> None:
    loss = ABRLoss(WEIGHTS)
    pred, target = make_batch()
    with pytest.raises(KeyError, match="latency_log_sigma"):
        loss({k: v for k, v in pred.items() if k != "latency_log_sigma"}, target)
    with pytest.raises(KeyError, match="peak_mask"):
        loss(pred, {k: v for k, v in target.items() if k != "peak_mask"})


def test_bad_weights_and_options_raise_with_the_name() -> None:
    with pytest.raises(ValueError, match=r"unknown task 'foo'.*known: signal"):
        ABRLoss({**WEIGHTS, "foo": 1.0})
    with pytest.raises(ValueError, match="missing task 'threshold'"):
        ABRLoss({k: v for k, v in WEIGHTS.items() if k != "threshold"})
    with pytest.raises(ValueError, match="loss.weights.class"):
        ABRLoss({**WEIGHTS, "class": -1.0})
    with pytest.raises(ValueError, match=r"'mse'.*gaussian_nll, huber"):
        ABRLoss(WEIGHTS, regression="mse")


def test_from_config() -> None:
    cfg = {"weights": WEIGHTS, "regression": "huber", "huber_delta": 2.0, "focal_gamma": 0.0}
    loss = ABRLoss.from_config(cfg, class_weights=torch.ones(C))
    assert (loss.regression, loss.huber_delta, loss.focal_gamma) == ("huber", 2.0, 0.0)
    assert loss.weights == WEIGHTS and loss.weights is not WEIGHTS
    assert torch.equal(loss.class_weights, torch.ones(C))
    with pytest.raises(ValueError, match="bogus"):
        ABRLoss.from_config({**cfg, "bogus": 1})


def test_class_weights_buffer_set_and_restored_from_state_dict() -> None:
    loss = ABRLoss(WEIGHTS)
    assert loss.class_weights.numel() == 0  # unweighted
    loss.set_class_weights(torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0], dtype=torch.float64))
    assert loss.class_weights.dtype == torch.float32 and "class_weights" in dict(loss.named_buffers())
    fresh = ABRLoss(WEIGHTS)
    fresh.load_state_dict(loss.state_dict())
    assert torch.equal(fresh.class_weights, loss.class_weights)
