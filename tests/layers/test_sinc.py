"""Sinc filterbank: mel-spaced pass bands, fixed filters built once, learnable cut-offs that get gradients."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from abr_lab.layers.sinc import SincFilterbank, hz_to_mel, mel_band_edges, mel_to_hz, sinc_bandpass


def test_mel_scale_round_trip_and_reference_points() -> None:
    assert float(hz_to_mel(0.0)) == 0.0
    assert float(hz_to_mel(700.0)) == pytest.approx(2595 * np.log10(2))
    hz = torch.tensor([0.0, 100.0, 1000.0, 8000.0], dtype=torch.float64)
    torch.testing.assert_close(mel_to_hz(hz_to_mel(hz)), hz)


def test_band_edges_are_evenly_spaced_on_the_mel_scale() -> None:
    edges = mel_band_edges(20, 0.0, 8000.0)
    assert edges.shape == (21,)
    assert float(edges[0]) == pytest.approx(0.0, abs=1e-9) and float(edges[-1]) == pytest.approx(8000.0)
    steps = torch.diff(hz_to_mel(edges))
    torch.testing.assert_close(steps, torch.full_like(steps, float(steps[0])))
    assert bool((torch.diff(edges)[1:] > torch.diff(edges)[:-1]).all())  # bands widen in Hz with frequency


def test_linear_scale_spaces_the_bands_evenly_in_hz() -> None:
    bank = SincFilterbank(channels=20, kernel_size=64, scale="linear")
    low, high = bank.band_edges()
    torch.testing.assert_close(high - low, torch.full((20,), 400.0))  # 8 kHz / 20 bands
    assert float(low[0]) == 0.0 and float(high[-1]) == pytest.approx(8000.0)
    assert "linear-spaced" in repr(bank)
    with pytest.raises(ValueError, match="scale='bark'"):
        SincFilterbank(channels=4, kernel_size=64, scale="bark")


def test_fixed_filters_pass_their_band_and_are_built_once() -> None:
    bank = SincFilterbank(channels=20, kernel_size=1024, sample_rate=16_000)
    assert bank.kernel_size == 1025  # made odd, as the reference
    assert list(bank.parameters()) == []  # fixed: nothing to learn
    assert "filters" not in bank.state_dict()  # derived from the config, not saved
    assert bank.kernels() is bank.kernels()  # the same buffer every call: never rebuilt
    response = np.abs(np.fft.rfft(bank.kernels()[:, 0].double().numpy(), n=16_000))  # (c, 8001) at 1 Hz per bin
    low, high = bank.band_edges()
    for c in range(0, 20, 3):
        centre = int((low[c] + high[c]) / 2)
        assert response[c, centre] == pytest.approx(1.0, abs=0.1)  # unit gain inside the band
        far = int(high[c] * 1.6) + 200
        if far < 8000:
            assert response[c, far] < 0.05  # stop band


def test_filters_match_the_closed_form() -> None:
    low, high = torch.tensor([300.0], dtype=torch.float64), torch.tensor([700.0], dtype=torch.float64)
    h = sinc_bandpass(low, high, 5, 16_000.0)[0].numpy()
    n = np.arange(-2, 3)
    ideal = 2 * 700 / 16_000 * np.sinc(2 * 700 * n / 16_000) - 2 * 300 / 16_000 * np.sinc(2 * 300 * n / 16_000)
    np.testing.assert_allclose(h, ideal * np.hamming(5), rtol=1e-12)
    with pytest.raises(ValueError, match="odd"):
        sinc_bandpass(low, high, 4, 16_000.0)


def test_forward_shape_and_errors() -> None:
    bank = SincFilterbank(channels=4, kernel_size=64)
    assert bank(torch.randn(2, 1, 500)).shape == (2, 4, 500 - 65 + 1)
    with pytest.raises(ValueError, match="batch, 1, samples"):
        bank(torch.randn(2, 500))
    with pytest.raises(ValueError, match="shorter"):
        bank(torch.randn(2, 1, 10))
    with pytest.raises(ValueError, match="max_hz"):
        SincFilterbank(channels=4, kernel_size=64, max_hz=9000.0)


def test_learnable_filters_start_at_the_mel_bank_and_learn() -> None:
    fixed = SincFilterbank(channels=6, kernel_size=128)
    learn = SincFilterbank(channels=6, kernel_size=128, learnable=True)
    torch.testing.assert_close(learn.kernels(), fixed.kernels(), atol=1e-6, rtol=1e-4)
    learn(torch.randn(2, 1, 400)).pow(2).mean().backward()
    assert learn.low_offset.grad is not None and learn.low_offset.grad.abs().sum() > 0
    assert learn.width.grad is not None and learn.width.grad.abs().sum() > 0
