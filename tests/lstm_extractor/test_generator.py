"""The sinusoid generator: shapes, the two noise models, seeds, spectra, and its HDF5 files."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from abr_lab.data import DataFileError
from abr_lab.lstm_extractor.generator import SinusoidSpec, generate, split_path, split_seed, write_split


def test_per_signal_components_mix_into_the_mixture():
    spec = SinusoidSpec(duration_s=2.0)
    mixture, targets, _ = generate(spec, 16, np.random.default_rng(0))
    assert mixture.shape == (16, 2000) and targets.shape == (16, 4, 2000)
    assert mixture.dtype == targets.dtype == np.float32
    residual = mixture - targets.mean(axis=1)
    assert residual.std() == pytest.approx(0.1, rel=0.05)  # exactly the Gaussian noise
    amplitudes = np.abs(targets).max(axis=-1)
    assert amplitudes.min() > 0.49 and amplitudes.max() <= 2.0


def test_per_step_targets_are_pure_sines():
    spec = SinusoidSpec(duration_s=1.0, noise_model="per_step", noise_std=0.0)
    mixture, targets, _ = generate(spec, 4, np.random.default_rng(0))
    t = np.arange(1000) / 1000
    for k, f in enumerate(spec.freqs):
        np.testing.assert_allclose(targets[:, k], np.broadcast_to(np.sin(2 * np.pi * f * t), (4, 1000)), atol=1e-6)
    assert np.abs(mixture).max() <= 1.2  # mean of four terms bounded by 1.2 each


@pytest.mark.parametrize("noise_model", ["per_signal", "per_step"])
def test_spectral_peak_of_each_target_is_its_frequency(noise_model):
    spec = SinusoidSpec(noise_model=noise_model)
    _, targets, _ = generate(spec, 2, np.random.default_rng(1))
    freqs_axis = np.fft.rfftfreq(spec.num_steps, 1 / spec.fs)
    for k, f in enumerate(spec.freqs):
        spectrum = np.abs(np.fft.rfft(targets[:, k], axis=-1)).mean(0)
        assert freqs_axis[spectrum.argmax()] == pytest.approx(f)


def test_splits_draw_from_different_seeds():
    spec = SinusoidSpec(duration_s=0.1)
    draws = {s: generate(spec, 4, np.random.default_rng(split_seed(42, s)))[0] for s in ("train", "val", "test")}
    assert not np.allclose(draws["train"], draws["val"]) and not np.allclose(draws["val"], draws["test"])
    again = generate(spec, 4, np.random.default_rng(split_seed(42, "train")))[0]
    np.testing.assert_array_equal(draws["train"], again)


def test_invalid_spec_names_the_option():
    with pytest.raises(ValueError, match="noise_model"):
        SinusoidSpec(noise_model="bogus")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="freqs"):
        SinusoidSpec(freqs=(600.0,))


def test_files_are_reused_and_new_parameters_get_a_new_file(tmp_path):
    spec = SinusoidSpec(duration_s=0.2)
    path = write_split(tmp_path, spec, "train", 3, seed=1, progress=False)
    with h5py.File(path) as f:
        assert f["mixture"].shape == (3, 200) and f["targets"].shape == (3, 4, 200)
        assert "generator_hash" in f.attrs and f.attrs["fs"] == 1000.0
    stamp = path.stat().st_mtime_ns
    assert write_split(tmp_path, spec, "train", 3, seed=1, progress=False) == path
    assert path.stat().st_mtime_ns == stamp  # not regenerated

    other = write_split(tmp_path, SinusoidSpec(duration_s=0.2, noise_std=0.2), "train", 3, seed=1, progress=False)
    assert other != path and path.stat().st_mtime_ns == stamp  # old file untouched
    assert not list(tmp_path.glob("*.tmp"))  # no temp file left behind


def test_corrupt_file_is_reported_and_left_alone(tmp_path):
    spec = SinusoidSpec(duration_s=0.2)
    path = split_path(tmp_path, spec, "val", 2, seed=0)
    path.write_bytes(b"not an hdf5 file")
    with pytest.raises(DataFileError, match=str(path)):
        write_split(tmp_path, spec, "val", 2, seed=0, progress=False)
    assert path.read_bytes() == b"not an hdf5 file"


def test_incomplete_file_names_the_missing_key(tmp_path):
    spec = SinusoidSpec(duration_s=0.2)
    path = write_split(tmp_path, spec, "test", 2, seed=0, progress=False)
    with h5py.File(path, "a") as f:
        del f["targets"]
    before = path.read_bytes()
    with pytest.raises(DataFileError, match="'targets'"):
        write_split(tmp_path, spec, "test", 2, seed=0, progress=False)
    assert path.read_bytes() == before
