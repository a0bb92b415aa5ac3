"""Classical causal baselines for the sinusoid-extraction task.

- `kalman_extract`: the Kalman filter for the known frequencies. Under ``per_signal`` every component is
  α·sin(ωt) + β·cos(ωt) with constant (α, β), so the mixture is a linear Gaussian model of a static state
  θ = (α_k, β_k)_k observed through known regressors; the Kalman filter (here: recursive least squares with the
  Gaussian prior of θ) is the optimal causal linear estimator of every component at every step.
- `bandpass_extract`: a causal Butterworth band-pass around each frequency, scaled by the number of components
  (the mixture is their mean): what a signal-processing user would try first.

Both see the mixture up to and including step t, like the LSTM.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import signal as sps


def uniform_second_moment(lo: float, hi: float) -> float:
    """E[A²] for A ~ U(lo, hi)."""
    return (hi**3 - lo**3) / (3 * (hi - lo)) if hi > lo else lo**2


def kalman_gains(freqs: Sequence[float], fs: float, num_steps: int, noise_std: float, prior_var: float) -> np.ndarray:
    """Kalman gains (T, 2k) of the static-state model; they do not depend on the data, so all signals share them."""
    k = len(freqs)
    regressors = _regressors(freqs, fs, num_steps) / k  # (T, 2k): y_t = h_t · θ + noise
    cov = np.eye(2 * k) * prior_var
    noise_var = max(noise_std**2, 1e-12)
    gains = np.empty_like(regressors)
    for t, h in enumerate(regressors):
        ph = cov @ h  # (2k,)
        gain = ph / (h @ ph + noise_var)
        cov -= np.outer(gain, ph)
        gains[t] = gain
    return gains


def kalman_extract(
    mixture: np.ndarray, freqs: Sequence[float], fs: float, noise_std: float, amp_range: tuple[float, float]
) -> np.ndarray:
    """Causal estimate of every component: mixture (n, t) -> (n, k, t)."""
    n, num_steps = mixture.shape
    k = len(freqs)
    prior_var = uniform_second_moment(*amp_range) / 2  # α = A cos φ with φ uniform: E[α²] = E[A²] / 2
    basis = _regressors(freqs, fs, num_steps)  # (T, 2k)
    gains = kalman_gains(freqs, fs, num_steps, noise_std, prior_var)
    theta = np.zeros((n, 2 * k))
    out = np.empty((n, k, num_steps))
    for t in range(num_steps):
        h = basis[t]
        innovation = mixture[:, t] - theta @ h / k  # (n,)
        theta += innovation[:, None] * gains[t]
        out[:, :, t] = (theta * h).reshape(n, k, 2).sum(-1)  # α sin + β cos per component
    return out.astype(np.float32)


def bandpass_extract(
    mixture: np.ndarray, freqs: Sequence[float], fs: float, bandwidth_hz: float = 1.0, order: int = 2
) -> np.ndarray:
    """Causal Butterworth band-pass of width `bandwidth_hz` around each frequency, times k: (n, t) -> (n, k, t)."""
    k = len(freqs)
    outputs = []
    for f in freqs:
        lo, hi = max(f - bandwidth_hz / 2, 1e-3), f + bandwidth_hz / 2
        sos = sps.butter(order, [lo, hi], btype="bandpass", fs=fs, output="sos")
        outputs.append(sps.sosfilt(sos, mixture, axis=-1) * k)
    return np.stack(outputs, axis=1).astype(np.float32)


def tune_bandpass(
    mixture: np.ndarray,
    targets: np.ndarray,
    freqs: Sequence[float],
    fs: float,
    bandwidths: Sequence[float] = (0.25, 0.5, 1.0, 1.5, 2.0),
    orders: Sequence[int] = (1, 2, 3),
) -> tuple[float, int]:
    """Bandwidth and order with the lowest MSE on the given (validation) split."""
    scores = {
        (bw, order): float(np.mean((bandpass_extract(mixture, freqs, fs, bw, order) - targets) ** 2))
        for bw in bandwidths
        for order in orders
    }
    return min(scores, key=scores.get)


def _regressors(freqs: Sequence[float], fs: float, num_steps: int) -> np.ndarray:
    """[sin ω_1 t, cos ω_1 t, sin ω_2 t, ...] at every step: (T, 2k)."""
    t = np.arange(num_steps) / fs
    omega = 2 * np.pi * np.asarray(freqs, dtype=np.float64)
    return np.stack([np.sin(omega[None, :] * t[:, None]), np.cos(omega[None, :] * t[:, None])], -1).reshape(
        num_steps, -1
    )


def mse_report(estimate: np.ndarray, targets: np.ndarray, settle_steps: int) -> dict[str, float]:
    """MSE over whole signals and after the first `settle_steps`: estimate and targets (n, k, t)."""
    err = (estimate - targets) ** 2
    return {"mse": float(err.mean()), "mse_settled": float(err[..., settle_steps:].mean())}


def evaluate_baselines(datamodule, settle_s: float = 1.0) -> dict[str, dict[str, float]]:
    """Kalman filter and band-pass filter on the test split of a prepared `SinusoidDataModule`.

    The band-pass width and order are chosen on the validation split, never on the test split.
    """
    spec = datamodule.spec
    datamodule.setup("test")
    val, test = datamodule.datasets["val"], datamodule.datasets["test"]
    test_mix, test_tgt = test.mixture.numpy(), test.targets.numpy()
    settle = int(round(settle_s * spec.fs))
    kalman = kalman_extract(test_mix, spec.freqs, spec.fs, spec.noise_std, spec.amp_range)
    bw, order = tune_bandpass(val.mixture.numpy(), val.targets.numpy(), spec.freqs, spec.fs)
    bandpass = bandpass_extract(test_mix, spec.freqs, spec.fs, bw, order)
    return {
        "kalman": mse_report(kalman, test_tgt, settle),
        "bandpass": {**mse_report(bandpass, test_tgt, settle), "bandwidth_hz": bw, "order": order},
        "zero": mse_report(np.zeros_like(test_tgt), test_tgt, settle),
    }
