"""RawBoost-style data boosting of training waveforms (after Tak et al., ICASSP 2022), our own implementation.

A spoofing detector trained on a few attack systems learns those systems' artefacts; RawBoost degrades every training
clip, bona fide and spoof alike, with random channel and noise effects that carry no class information, so that
the detector has to rely on cues that survive them. Three algorithms, applied in the order given:

- ``lnl`` linear and non-linear convolutive noise: the clip (peak-normalised) and its powers x², …, x⁵ each pass
  through their own random cascade of 1–5 FIR band-stop (notch) filters; the non-linear terms are added 5–20 dB
  below the linear one (a random channel with harmonic distortion).
- ``isd`` impulsive signal-dependent noise: 10 % of the samples, at random positions, get x ← x + 2·u·x with
  u ~ U(-1, 1) (clipping- and packet-loss-like impulses whose size follows the signal).
- ``ssi`` stationary signal-independent noise: white noise through a random notch cascade (coloured), added at an
  SNR of 10–40 dB.

The result is rescaled to the clip's original RMS, so the level distribution (shared by both classes in
`spoof_synth`) stays as it was. Parameters follow the RawBoost paper's ASVspoof LA settings.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.signal import fftconvolve, firwin

ALGORITHMS = ("lnl", "isd", "ssi")


def random_notch_filter(
    rng: np.random.Generator,
    sample_rate: int = 16_000,
    max_bands: int = 5,
    freq_hz: tuple[float, float] = (20.0, 8000.0),
    width_hz: tuple[float, float] = (100.0, 1000.0),
    taps: tuple[int, int] = (10, 100),
) -> np.ndarray:
    """FIR coefficients of a cascade of 1..`max_bands` band-stop filters at random centres and widths."""
    nyquist = sample_rate / 2
    b = np.ones(1)
    for _ in range(int(rng.integers(1, max_bands + 1))):
        centre, width = rng.uniform(*freq_hz), rng.uniform(*width_hz)
        low = float(np.clip(centre - width / 2, 1.0, nyquist - 2.0))
        high = float(np.clip(centre + width / 2, low + 1.0, nyquist - 1.0))
        num_taps = int(rng.integers(taps[0], taps[1] + 1)) | 1  # odd: a band-stop FIR needs a type I filter
        b = np.convolve(b, firwin(num_taps, [low, high], fs=sample_rate))  # pass_zero=True: band-stop
    return b


def _filter(b: np.ndarray, x: np.ndarray) -> np.ndarray:
    """`x` through the linear-phase FIR `b`, centred (no delay): the filtered clip stays aligned with the clip."""
    return fftconvolve(x, b, mode="same")


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x**2)))


def lnl_convolutive(x: np.ndarray, rng: np.random.Generator, orders: int = 5) -> np.ndarray:
    """Linear + non-linear convolutive noise: Σ_j g_j · notch_j * (x / peak)^j, j = 1..`orders`."""
    u = x / (np.max(np.abs(x)) + 1e-12)
    y = _filter(random_notch_filter(rng), u)
    linear_rms = _rms(y)
    for order in range(2, orders + 1):
        term = _filter(random_notch_filter(rng), u**order)
        gain = linear_rms * 10 ** (-rng.uniform(5, 20) / 20) / (_rms(term) + 1e-12)
        y = y + gain * term
    return y


def isd_impulsive(x: np.ndarray, rng: np.random.Generator, share: float = 0.1, gain: float = 2.0) -> np.ndarray:
    """Impulsive signal-dependent noise at a random `share` of the samples."""
    y = x.copy()
    positions = rng.choice(len(x), size=int(share * len(x)), replace=False)
    y[positions] += gain * rng.uniform(-1, 1, len(positions)) * x[positions]
    return y


def ssi_additive(x: np.ndarray, rng: np.random.Generator, snr_db: tuple[float, float] = (10, 40)) -> np.ndarray:
    """Stationary coloured noise (white noise through a random notch cascade) at a random SNR."""
    noise = _filter(random_notch_filter(rng), rng.standard_normal(len(x)))
    scale = _rms(x) / (_rms(noise) + 1e-12) * 10 ** (-rng.uniform(*snr_db) / 20)
    return x + scale * noise


_APPLY = {"lnl": lnl_convolutive, "isd": isd_impulsive, "ssi": ssi_additive}


def check_algorithms(algorithms: Sequence[str]) -> tuple[str, ...]:
    """The algorithm names as a tuple; an error naming any unknown one."""
    names = tuple(str(a) for a in algorithms)
    unknown = [a for a in names if a not in ALGORITHMS]
    if unknown:
        raise ValueError(f"unknown RawBoost algorithm(s) {unknown}: expected any of {'|'.join(ALGORITHMS)}")
    return names


def rawboost(audio: np.ndarray, algorithms: Sequence[str], rng: np.random.Generator) -> np.ndarray:
    """`audio` through the named algorithms in order, rescaled to its RMS; float32, same length."""
    x = np.asarray(audio, dtype=np.float64)
    rms = _rms(x)
    if rms == 0:  # digital silence: nothing to shape, and no level to restore
        return np.asarray(audio, dtype=np.float32).copy()
    for name in check_algorithms(algorithms):
        x = _APPLY[name](x, rng)
    return (x * rms / (_rms(x) + 1e-12)).astype(np.float32)
