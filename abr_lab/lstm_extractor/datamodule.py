"""DataModule of the sinusoid-extraction task: generated HDF5 splits, one example per (signal, frequency)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from abr_lab.curriculum import Knob
from abr_lab.data import DataFileError, read_arrays
from abr_lab.data.samplers import evaluation_sampler
from abr_lab.data.shared import SharedValues
from abr_lab.data.workers import check_workers, loader_workers
from abr_lab.lstm_extractor.generator import KEYS, SPLITS, SinusoidSpec, split_path, write_split


class SinusoidDataset(Dataset):
    """Every mixture paired with every condition: index i -> signal i // k, frequency i % k.

    With `window` set, an item is a random window of that many steps (a new draw each time): a window of a
    stationary sine mixture is itself a mixture with other phases, so training on windows sees more signal starts
    per step of compute.

    With `noise` (n, t), the unit noise inside the mixtures, and `noise_std`, the level the file was generated
    at, ``live["noise_std"]`` serves the same signals at another noise level: mixture + (live − file) · noise. It
    lives in shared memory, so a curriculum's change reaches DataLoader workers.
    """

    def __init__(
        self,
        mixture: Tensor,
        targets: Tensor,
        window: int | None = None,
        noise: Tensor | None = None,
        noise_std: float = 0.0,
    ) -> None:
        if mixture.ndim != 2 or targets.ndim != 3 or targets.shape[0] != mixture.shape[0]:
            raise ValueError(
                f"mixture {tuple(mixture.shape)} must be (n, t) and targets {tuple(targets.shape)} (n, k, t)"
            )
        if targets.shape[2] != mixture.shape[1]:
            raise ValueError(f"mixture has {mixture.shape[1]} steps, targets {targets.shape[2]}")
        self.mixture, self.targets = mixture, targets  # (n, t), (n, k, t)
        self.num_freqs = targets.shape[1]
        self.one_hot = torch.eye(self.num_freqs)
        if window is not None and not 1 <= window <= mixture.shape[1]:
            raise ValueError(f"window={window}: need 1 <= window <= signal length {mixture.shape[1]}")
        self.window = window
        if noise is not None and noise.shape != mixture.shape:
            raise ValueError(f"noise {tuple(noise.shape)} must have the mixture's shape {tuple(mixture.shape)}")
        self.noise, self.file_noise_std = noise, float(noise_std)
        self.live = SharedValues(noise_std=self.file_noise_std)

    def __len__(self) -> int:
        return self.mixture.shape[0] * self.num_freqs

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        signal, k = divmod(index, self.num_freqs)
        steps = slice(None)
        if self.window is not None:
            start = int(torch.randint(0, self.mixture.shape[1] - self.window + 1, ()))
            steps = slice(start, start + self.window)
        mixture = self.mixture[signal, steps]  # (t,)
        extra = self.live["noise_std"] - self.file_noise_std
        if extra != 0 and self.noise is not None:
            mixture = mixture + extra * self.noise[signal, steps]
        return {
            "mixture": mixture,  # (t,)
            "condition": self.one_hot[k],  # (k,)
            "target": self.targets[signal, k, steps],  # (t,)
            "freq_index": torch.tensor(k),
        }


class SinusoidDataModule(L.LightningDataModule):
    """Generates (once) and serves the train / val / test splits, each from its own seed.

    Args:
        data_dir: folder of the generated files; a file name carries its parameters' hash.
        freqs: frequencies in Hz, one condition each.
        fs: sampling rate in Hz.
        duration_s: signal length in seconds.
        noise_model: ``per_signal`` or ``per_step`` (see `generator`).
        noise_std: std of the Gaussian noise added to the mixture.
        num_train, num_val, num_test: signals per split (each gives one example per frequency).
        seed: base seed; each split draws from its own stream.
        batch_size: examples per batch, all splits.
        num_workers: DataLoader workers, or ``auto`` (`abr_lab.data.workers`: none on a CPU, where the data sit in
            memory and 0 is fastest; the spare cores when a GPU trains).
        train_window_s: train on random windows of this length (seconds) instead of whole signals; validation and
            test always use whole signals.
    """

    def __init__(
        self,
        data_dir: str = "data/sinusoids",
        freqs: Sequence[float] = (1.0, 3.0, 5.0, 7.0),
        fs: float = 1000.0,
        duration_s: float = 10.0,
        noise_model: str = "per_signal",
        noise_std: float = 0.1,
        num_train: int = 512,
        num_val: int = 64,
        num_test: int = 128,
        seed: int = 42,
        batch_size: int = 32,
        num_workers: int | str = 0,
        train_window_s: float | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.spec = SinusoidSpec(tuple(freqs), fs, duration_s, noise_model, noise_std)  # type: ignore[arg-type]
        self.sizes = {"train": num_train, "val": num_val, "test": num_test}
        for split, n in self.sizes.items():
            if n < 1:
                raise ValueError(f"num_{split}={n}: need at least one signal")
        self.data_dir, self.seed = Path(data_dir), seed
        self.batch_size, self.num_workers = batch_size, check_workers(num_workers)
        if train_window_s is not None and not 0 < train_window_s <= duration_s:
            raise ValueError(f"train_window_s={train_window_s}: need 0 < train_window_s <= duration_s={duration_s}")
        self.train_window = None if train_window_s is None else int(round(train_window_s * fs))
        self.datasets: dict[str, SinusoidDataset] = {}

    def path(self, split: str) -> Path:
        return split_path(self.data_dir, self.spec, split, self.sizes[split], self.seed)

    def prepare_data(self) -> None:
        for split in SPLITS:
            write_split(self.data_dir, self.spec, split, self.sizes[split], self.seed)

    def setup(self, stage: str | None = None) -> None:
        for split in SPLITS:
            if split not in self.datasets:
                self.datasets[split] = self._load(split)

    def _load(self, split: str) -> SinusoidDataset:
        path = self.path(split)
        if not path.exists():
            raise DataFileError(f"{path}: missing; prepare_data() generates it")
        arrays = read_arrays(path, KEYS)
        expected = {key: (self.sizes[split], self.spec.num_steps) for key in ("mixture", "noise")}
        expected["targets"] = (self.sizes[split], len(self.spec.freqs), self.spec.num_steps)
        for key, shape in expected.items():
            if arrays[key].shape != shape:
                raise DataFileError(f"{path}: dataset '{key}' has shape {arrays[key].shape}, expected {shape}")
            if not np.isfinite(arrays[key]).all():
                raise DataFileError(f"{path}: dataset '{key}' holds NaN or infinite values")
        window = self.train_window if split == "train" else None
        tensors = {key: torch.from_numpy(arrays[key]) for key in KEYS}
        return SinusoidDataset(tensors["mixture"], tensors["targets"], window, tensors["noise"], self.spec.noise_std)

    def curriculum_knobs(self) -> dict[str, Knob]:
        """``data.noise_std``: the std of the noise in the training mixtures (validation and test keep the file's)."""
        if "train" not in self.datasets:
            raise RuntimeError("SinusoidDataModule.curriculum_knobs: call setup('fit') first")
        return {"data.noise_std": self.datasets["train"].live.knob("noise_std", low=0.0)}

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        return DataLoader(
            self.datasets[split],
            batch_size=self.batch_size,
            shuffle=shuffle,
            sampler=None if shuffle else evaluation_sampler(self.datasets[split]),
            num_workers=(workers := loader_workers(self.num_workers, self.trainer)),
            persistent_workers=workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
