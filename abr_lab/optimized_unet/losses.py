"""The multi-task loss of the ABR U-Net: waveform, spectrum, peak presence, latency, amplitude, class, threshold.

Every target is standardised by the caller (the DataModule's `Normalization`), so the unweighted task losses have
comparable scales and the weights in the config are the only knob that balances them. `ABRLoss` returns the
weighted total and every unweighted part, so the parts can be logged whatever their weight, and its `weights` dict
may be changed at run time (a curriculum) because `forward` reads it at each call.

The masked reductions are written so that masked-out entries can hold anything (NaN latencies of absent peaks,
huge placeholders) without turning the loss or its gradient into NaN.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

TASKS: tuple[str, ...] = ("signal", "spectral", "presence", "latency", "amplitude", "class", "threshold")
REGRESSIONS: tuple[str, ...] = ("gaussian_nll", "huber")
LOG_SIGMA_RANGE: tuple[float, float] = (-7.0, 7.0)
_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)
_CONFIG_KEYS: tuple[str, ...] = ("weights", "regression", "huber_delta", "focal_gamma")


def masked_mean(values: Tensor, mask: Tensor | None) -> Tensor:
    """Mean of `values` over the entries where the boolean `mask` (same shape) is True; all entries if it is None.

    Masked-out entries are replaced by 0 with `torch.where` before summing, so NaN or inf there cannot leak into the
    result. When the mask selects nothing the result is a zero that stays in the graph (its gradient is zeros), so a
    batch without e.g. any present wave V still trains the other tasks instead of producing NaN.
    """
    if mask is None:
        return values.mean()
    if mask.shape != values.shape:
        raise ValueError(f"mask shape {tuple(mask.shape)} differs from values shape {tuple(values.shape)}")
    total = torch.where(mask, values, torch.zeros_like(values)).sum()  # ()
    return total / mask.sum().clamp_min(1)  # an empty mask gives 0 / 1


def _fill_masked(target: Tensor, mask: Tensor | None) -> Tensor:
    """`target` with its masked-out entries set to 0, so that a NaN there cannot reach the gradient.

    `torch.where` alone in `masked_mean` is not enough: the backward of an expression such as `(target - mean) ** 2`
    multiplies the zero gradient of a masked-out entry by a NaN partial derivative, which gives NaN.
    """
    if mask is None:
        return target
    return torch.where(mask, target, torch.zeros_like(target))


def gaussian_nll(mean: Tensor, log_sigma: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
    """Masked mean of the full Gaussian negative log-likelihood of `target` under N(mean, sigma²), sigma = e^log_sigma.

    Per entry: 0.5·log(2π) + log_sigma + 0.5·((target - mean) / sigma)². The constant keeps the value a true NLL
    (comparable across runs and with the literature); it does not change the gradient. `log_sigma` is clamped to
    [-7, 7] first: without it a near-perfect fit drives sigma to 0 and the squared term's 1/sigma² explodes (and a
    bad start can drive sigma to inf). Outside the range the clamp passes no gradient to `log_sigma`.
    All tensors share one shape, e.g. (B, W) or (B,).
    """
    target = _fill_masked(target, mask)
    log_sigma = log_sigma.clamp(*LOG_SIGMA_RANGE)
    z = (target - mean) * torch.exp(-log_sigma)  # standardised residual, same shape
    return masked_mean(_HALF_LOG_2PI + log_sigma + 0.5 * z**2, mask)


def huber(mean: Tensor, target: Tensor, mask: Tensor | None = None, delta: float = 1.0) -> Tensor:
    """Masked mean of the Huber loss (as `F.huber_loss(..., reduction="none")`): quadratic below `delta`, linear above.

    The robust alternative to `gaussian_nll` when outliers (mislabelled peaks) matter more than calibrated sigmas.
    """
    target = _fill_masked(target, mask)
    return masked_mean(F.huber_loss(mean, target, reduction="none", delta=delta), mask)


def focal_loss(logits: Tensor, target: Tensor, weight: Tensor | None = None, gamma: float = 2.0) -> Tensor:
    """Class-weighted focal loss (Lin et al. 2017): cross entropy with easy examples down-weighted by (1 - p_y)^gamma.

    logits (B, C), target (B,) int64, weight (C,) or None. Per sample: -w[y] · (1 - p_y)^gamma · log p_y; reduced as
    sum over samples / sum of w[y], the same weighted mean as `F.cross_entropy`, which it equals exactly when
    gamma = 0. A batch whose weights sum to 0 gives a zero that stays in the graph.
    """
    log_p = F.log_softmax(logits, dim=-1).gather(1, target[:, None]).squeeze(1)  # (B,) log p_y
    loss = -log_p  # (B,)
    if gamma != 0:
        one_minus_p = (-torch.expm1(log_p)).clamp_min(0.0)  # (B,) 1 - p_y, accurate when p_y is near 1
        loss = one_minus_p**gamma * loss
    if weight is None:
        return loss.mean()
    w = weight.to(dtype=loss.dtype)[target]  # (B,)
    w_sum = w.sum()
    return (w * loss).sum() / torch.where(w_sum > 0, w_sum, torch.ones_like(w_sum))


def spectral_loss(pred: Tensor, target: Tensor) -> Tensor:
    """Mean squared difference of the rfft magnitudes of `pred` and `target` (B, 1, T) along time, divided by T.

    Comparing magnitudes ignores phase, so a waveform with the right frequency content but a small shift is not
    punished twice. By Parseval, the mean over the T//2 + 1 bins of |X_k|² is about Σ_t x_t², so dividing by T gives
    the scale of a per-sample MSE and the weight of this term is comparable to that of the waveform MSE. The FFT is
    done in float32 (half precision FFTs are restricted to power-of-two lengths).
    """
    pred_mag = torch.fft.rfft(pred.float(), dim=-1).abs()  # (B, 1, T//2 + 1)
    target_mag = torch.fft.rfft(target.float(), dim=-1).abs()  # (B, 1, T//2 + 1)
    return F.mse_loss(pred_mag, target_mag) / pred.shape[-1]


def _require(tensors: Mapping[str, Tensor], key: str, what: str) -> Tensor:
    """`tensors[key]`, or a KeyError that says which input lacks which key."""
    if key not in tensors:
        raise KeyError(f"{what} is missing '{key}' (has: {sorted(tensors)})")
    return tensors[key]


class ABRLoss(nn.Module):
    """Weighted sum of the seven ABR task losses; `forward` returns `(total, parts)` with the unweighted parts.

    Tasks (pred / target keys; W = 3 waves, C = 5 classes; every tensor standardised by the caller):

    - signal: MSE between pred "signal" and target "signal" (B, 1, T) (the clean waveform or the recording).
    - spectral: `spectral_loss` of the same pair; skipped (absent from parts) when its weight is 0, as it costs FFTs.
    - presence: BCE-with-logits of pred "presence" (B, W) against target "peak_mask" (B, W) bool, over all B·W.
    - latency / amplitude: `gaussian_nll` of pred "<task>" and "<task>_log_sigma" (B, W), or `huber` of the mean
      only, over the present peaks (peak_mask) only. With huber the "*_log_sigma" heads are neither read nor
      trained.
    - class: `focal_loss` of pred "class" (B, C) against target "label" (B,) with `class_weights` (unweighted while
      the buffer is empty) and `focal_gamma`.
    - threshold: `gaussian_nll` / `huber` of pred "threshold" (and "threshold_log_sigma") (B,) over all rows.

    Every part is computed even at weight 0 (for logging), except spectral. Zero-weight parts are left out of the
    total rather than multiplied by 0, so a NaN in a part that is switched off cannot poison the total or its
    gradient; otherwise total = Σ weights[task] · parts[task].
    """

    class_weights: Tensor

    def __init__(
        self,
        weights: Mapping[str, float],
        regression: str = "gaussian_nll",
        huber_delta: float = 1.0,
        focal_gamma: float = 2.0,
        class_weights: Tensor | None = None,
    ) -> None:
        super().__init__()
        unknown = [key for key in weights if key not in TASKS]
        if unknown:
            raise ValueError(f"loss.weights: unknown task {unknown[0]!r}; known: {', '.join(TASKS)}")
        missing = [task for task in TASKS if task not in weights]
        if missing:
            raise ValueError(
                f"loss.weights: missing task {missing[0]!r}; every task needs a weight: {', '.join(TASKS)}"
            )
        for task in TASKS:
            value = float(weights[task])
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"loss.weights.{task} must be a finite number >= 0, got {weights[task]!r}")
        if regression not in REGRESSIONS:
            raise ValueError(f"loss.regression: unknown option {regression!r}; allowed: {', '.join(REGRESSIONS)}")
        if not huber_delta > 0:
            raise ValueError(f"loss.huber_delta must be > 0, got {huber_delta!r}")
        if not focal_gamma >= 0:
            raise ValueError(f"loss.focal_gamma must be >= 0, got {focal_gamma!r}")
        # The configured weights: the objective validation measures (training may pass a curriculum's instead).
        self.weights: dict[str, float] = {task: float(weights[task]) for task in TASKS}
        self.regression = regression
        self.huber_delta = float(huber_delta)
        self.focal_gamma = float(focal_gamma)
        # (C,) float, or (0,) for "unweighted"; a buffer so it follows the module's device and lands in checkpoints.
        self.register_buffer("class_weights", torch.empty(0))
        if class_weights is not None:
            self.set_class_weights(class_weights)

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any], class_weights: Tensor | None = None) -> ABRLoss:
        """Build from a config mapping {"weights": {...}, "regression", "huber_delta", "focal_gamma"} (all but
        "weights" optional); an unknown top-level key raises ValueError rather than being silently ignored."""
        unknown = sorted(str(key) for key in cfg if key not in _CONFIG_KEYS)
        if unknown:
            raise ValueError(f"loss: unknown option(s) {', '.join(unknown)}; known: {', '.join(_CONFIG_KEYS)}")
        if "weights" not in cfg:
            raise ValueError(f"loss: 'weights' is required (one per task: {', '.join(TASKS)})")
        options = {key: cfg[key] for key in _CONFIG_KEYS[1:] if key in cfg}
        return cls(weights=dict(cfg["weights"]), class_weights=class_weights, **options)

    def set_class_weights(self, weights: Tensor) -> None:
        """Replace the class weights (C,) (any length; e.g. inverse class frequencies from the training split)."""
        if weights.ndim != 1 or not torch.all(weights >= 0):
            raise ValueError(f"class weights must be a 1-D tensor of values >= 0, got {weights!r}")
        self.class_weights = weights.detach().to(device=self.class_weights.device, dtype=torch.float32).clone()

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        """Resize the class-weight buffer to the checkpoint's first (it may be empty here and (C,) there)."""
        stored = state_dict.get(prefix + "class_weights")
        if isinstance(stored, Tensor) and stored.shape != self.class_weights.shape:
            self.class_weights = torch.empty_like(stored, device=self.class_weights.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _regress(
        self, pred: Mapping[str, Tensor], target: Mapping[str, Tensor], task: str, mask: Tensor | None
    ) -> Tensor:
        """The latency / amplitude / threshold loss: gaussian_nll with the "<task>_log_sigma" head, or huber."""
        mean = _require(pred, task, "pred")
        goal = _require(target, task, "target")
        if self.regression == "huber":
            return huber(mean, goal, mask, delta=self.huber_delta)
        return gaussian_nll(mean, _require(pred, f"{task}_log_sigma", "pred"), goal, mask)

    def forward(
        self, pred: Mapping[str, Tensor], target: Mapping[str, Tensor], weights: Mapping[str, float] | None = None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Return (weighted total, {task: unweighted scalar loss}); see the class docstring for the inputs.

        `weights` replaces the configured weights for this call (a curriculum's training weights; validation keeps
        the configured ones, so its loss measures one objective all run long)."""
        weights = self.weights if weights is None else weights
        signal = _require(pred, "signal", "pred")  # (B, 1, T)
        signal_target = _require(target, "signal", "target")  # (B, 1, T)
        peak_mask = _require(target, "peak_mask", "target").bool()  # (B, W)

        parts: dict[str, Tensor] = {"signal": F.mse_loss(signal, signal_target)}
        if weights["spectral"] != 0:
            parts["spectral"] = spectral_loss(signal, signal_target)
        presence = _require(pred, "presence", "pred")  # (B, W) logits
        parts["presence"] = F.binary_cross_entropy_with_logits(presence, peak_mask.to(presence.dtype))
        parts["latency"] = self._regress(pred, target, "latency", peak_mask)
        parts["amplitude"] = self._regress(pred, target, "amplitude", peak_mask)
        class_weights = self.class_weights if self.class_weights.numel() else None
        parts["class"] = focal_loss(
            _require(pred, "class", "pred"), _require(target, "label", "target"), class_weights, self.focal_gamma
        )
        parts["threshold"] = self._regress(pred, target, "threshold", None)

        terms = [weights[task] * loss for task, loss in parts.items() if weights[task] != 0]
        total = sum(terms[1:], terms[0]) if terms else parts["signal"] * 0.0
        return total, parts
