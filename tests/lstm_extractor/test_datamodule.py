"""SinusoidDataModule: batches, windows, and refusing bad files."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from abr_lab.data import DataFileError
from abr_lab.lstm_extractor import SinusoidDataModule


def make_dm(tmp_path, **kwargs) -> SinusoidDataModule:
    args = dict(data_dir=str(tmp_path), duration_s=0.3, num_train=4, num_val=2, num_test=2, batch_size=4)
    return SinusoidDataModule(**{**args, **kwargs})


def test_batches_pair_every_signal_with_every_condition(tmp_path):
    dm = make_dm(tmp_path)
    dm.prepare_data()
    dm.setup("fit")
    assert len(dm.datasets["train"]) == 16
    batch = next(iter(dm.val_dataloader()))
    assert batch["mixture"].shape == (4, 300) and batch["target"].shape == (4, 300)
    assert batch["condition"].shape == (4, 4)
    torch.testing.assert_close(batch["condition"].argmax(-1), batch["freq_index"])
    torch.testing.assert_close(batch["mixture"][0], batch["mixture"][3])  # same signal, four conditions


def test_train_windows_are_random_crops_of_whole_signals(tmp_path):
    dm = make_dm(tmp_path, train_window_s=0.1)
    dm.prepare_data()
    dm.setup("fit")
    item = dm.datasets["train"][5]
    assert item["mixture"].shape == (100,)
    full = dm.datasets["train"].mixture[1].numpy()
    start = np.flatnonzero(np.isclose(full, item["mixture"][0].item()))
    assert any(np.allclose(full[s : s + 100], item["mixture"].numpy()) for s in start)
    assert dm.datasets["val"][0]["mixture"].shape == (300,)  # evaluation on whole signals


def test_window_longer_than_the_signal_is_refused(tmp_path):
    with pytest.raises(ValueError, match="train_window_s"):
        make_dm(tmp_path, train_window_s=1.0)


def test_nan_in_a_file_is_an_error_naming_file_and_key(tmp_path):
    dm = make_dm(tmp_path)
    dm.prepare_data()
    with h5py.File(dm.path("train"), "a") as f:
        f["mixture"][0, 0] = np.nan
    with pytest.raises(DataFileError, match=r"train.*'mixture'.*NaN"):
        dm.setup("fit")


def test_wrong_shape_is_an_error(tmp_path):
    dm = make_dm(tmp_path)
    dm.prepare_data()
    with h5py.File(dm.path("test"), "a") as f:
        data = f["targets"][()]
        del f["targets"]
        f["targets"] = data[:, :2]
    with pytest.raises(DataFileError, match="'targets' has shape"):
        dm.setup("test")


def test_noise_knob_rescales_the_training_noise_and_reaches_persistent_workers(tmp_path):
    dm = make_dm(tmp_path, noise_std=0.1)
    dm.prepare_data()
    dm.setup("fit")
    knob = dm.curriculum_knobs()["data.noise_std"]
    train = dm.datasets["train"]
    assert knob.get() == pytest.approx(0.1)
    signal = torch.arange(len(train)) // train.num_freqs  # item -> its signal
    clean = (train.mixture - 0.1 * train.noise)[signal]  # (items, t)

    # persistent workers keep their own copy of the dataset for the whole run; the knob must still reach them
    loader = DataLoader(train, batch_size=len(train), num_workers=2, persistent_workers=True)
    for noise_std in (0.0, 0.5, 0.3):
        knob.set(noise_std)  # between epochs, as the curriculum does
        batch = next(iter(loader))
        torch.testing.assert_close(batch["mixture"], clean + noise_std * train.noise[signal], atol=1e-5, rtol=0)
    val = dm.datasets["val"]
    torch.testing.assert_close(val[0]["mixture"], val.mixture[0])  # evaluation keeps the file's noise
