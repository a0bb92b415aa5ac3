"""RawBoost-style augmentation: shapes, level, determinism, what each algorithm does, and the training-only rule."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.signal import freqz

from abr_lab.rawnet2.augment import ALGORITHMS, isd_impulsive, random_notch_filter, rawboost, ssi_additive


def _clip(seed: int = 0, n: int = 16_000) -> np.ndarray:
    t = np.arange(n) / 16_000
    rng = np.random.default_rng(seed)
    return (0.05 * np.sin(2 * np.pi * 220 * t) + 0.01 * rng.standard_normal(n)).astype(np.float32)


@pytest.mark.parametrize("algorithms", [[a] for a in ALGORITHMS] + [["lnl", "isd"], list(ALGORITHMS)])
def test_rawboost_keeps_length_level_and_is_seeded(algorithms):
    x = _clip()
    y = rawboost(x, algorithms, np.random.default_rng(1))
    assert y.shape == x.shape and y.dtype == np.float32 and np.isfinite(y).all()
    assert np.sqrt(np.mean(y**2)) == pytest.approx(np.sqrt(np.mean(x**2)), rel=1e-4)  # level unchanged
    assert not np.allclose(y, x)
    np.testing.assert_array_equal(y, rawboost(x, algorithms, np.random.default_rng(1)))
    assert not np.array_equal(y, rawboost(x, algorithms, np.random.default_rng(2)))


def test_notch_filter_stops_a_band_and_passes_the_rest():
    rng = np.random.default_rng(3)
    b = random_notch_filter(rng, max_bands=1, freq_hz=(4000, 4000), width_hz=(1000, 1000), taps=(101, 101))
    freqs, response = freqz(b, worN=4096, fs=16_000)
    gain = np.abs(response)
    assert gain[np.argmin(np.abs(freqs - 4000))] < 0.05  # the notch
    assert gain[np.argmin(np.abs(freqs - 1000))] == pytest.approx(1, abs=0.05)  # pass band
    assert len(b) % 2 == 1


def test_isd_touches_the_given_share_by_at_most_the_gain():
    x = _clip()
    y = isd_impulsive(x.astype(np.float64), np.random.default_rng(0), share=0.1, gain=2.0)
    changed = y != x
    assert changed.sum() == pytest.approx(0.1 * len(x), abs=1)
    assert np.all(np.abs(y - x) <= 2.0 * np.abs(x) + 1e-12)


def test_ssi_adds_noise_at_the_drawn_snr():
    x = _clip().astype(np.float64)
    y = ssi_additive(x, np.random.default_rng(0), snr_db=(20, 20))
    snr = 10 * np.log10(np.mean(x**2) / np.mean((y - x) ** 2))
    assert snr == pytest.approx(20, abs=1e-6)


def test_silence_and_unknown_algorithm():
    assert not rawboost(np.zeros(100, np.float32), ["lnl", "ssi"], np.random.default_rng(0)).any()
    with pytest.raises(ValueError, match=r"unknown RawBoost algorithm\(s\) \['codec'\]"):
        rawboost(_clip(), ["lnl", "codec"], np.random.default_rng(0))
