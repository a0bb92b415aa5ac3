"""Kalman and band-pass baselines against what they must do on known signals."""

from __future__ import annotations

import numpy as np
import pytest

from abr_lab.lstm_extractor.baselines import bandpass_extract, kalman_extract, mse_report, uniform_second_moment
from abr_lab.lstm_extractor.generator import SinusoidSpec, generate


def test_uniform_second_moment():
    assert uniform_second_moment(0.0, 3.0) == pytest.approx(3.0)  # E[A²] = 9/3
    assert uniform_second_moment(2.0, 2.0) == 4.0


def test_kalman_recovers_components_after_the_first_second():
    spec = SinusoidSpec(duration_s=3.0)
    mixture, targets, _ = generate(spec, 8, np.random.default_rng(0))
    estimate = kalman_extract(mixture, spec.freqs, spec.fs, spec.noise_std, spec.amp_range)
    report = mse_report(estimate, targets, settle_steps=1000)
    assert report["mse_settled"] < 1e-3
    assert report["mse"] < 0.05


def test_kalman_beats_the_bandpass():
    spec = SinusoidSpec(duration_s=4.0)
    mixture, targets, _ = generate(spec, 8, np.random.default_rng(1))
    kalman = mse_report(kalman_extract(mixture, spec.freqs, spec.fs, spec.noise_std, spec.amp_range), targets, 1000)
    bandpass = mse_report(bandpass_extract(mixture, spec.freqs, spec.fs, 0.5, 1), targets, 1000)
    assert kalman["mse"] < bandpass["mse"] and kalman["mse_settled"] < bandpass["mse_settled"]


def test_bandpass_passes_its_frequency_and_scales_by_the_component_count():
    fs, t = 1000.0, np.arange(8000) / 1000.0
    pure = np.sin(2 * np.pi * 3.0 * t)[None, :] / 4  # one component of a 4-term mean
    out = bandpass_extract(pure, (3.0, 7.0), fs, bandwidth_hz=1.0, order=2)
    steady = slice(4000, None)
    assert np.abs(out[0, 0, steady]).max() == pytest.approx(0.5, rel=0.05)  # ×k, k = 2 frequencies here
    assert np.abs(out[0, 1, steady]).max() < 0.02  # the 7 Hz channel rejects 3 Hz
