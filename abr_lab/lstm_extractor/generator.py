"""Sinusoid-mixture generator for the LSTM extractor task.

Four sines (1, 3, 5, 7 Hz by default) sampled at 1 kHz for 10 s are averaged into one mixture; the model is told
which one to pull out (a one-hot condition) and must output it. Two noise models:

- ``per_signal``: amplitude ~ U(0.5, 2) and phase ~ U(0, 2π) drawn once per component and signal; the mixture is
  the mean of the four components plus Gaussian noise; the target is the selected component, amplitude and phase
  included.
- ``per_step``: amplitude ~ U(0.8, 1.2) and phase ~ U(0, 2π) redrawn at every step (the course assignment's task);
  the target is the pure ``sin(2π f t)``.

Files are HDF5 with datasets ``mixture`` (N, T), ``targets`` (N, K, T) and ``noise`` (N, T), float32, K = number of
frequencies. ``noise`` holds the unit-variance draws behind the mixture's noise (mixture = clean mean +
noise_std · noise), so the DataModule can serve the same signals at another noise level (a curriculum knob).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import h5py
import numpy as np
from tqdm.auto import tqdm

from abr_lab.data import ensure_generated, params_hash

NoiseModel = Literal["per_signal", "per_step"]
NOISE_MODELS: tuple[str, ...] = ("per_signal", "per_step")
AMP_RANGES: dict[str, tuple[float, float]] = {"per_signal": (0.5, 2.0), "per_step": (0.8, 1.2)}
SPLITS: tuple[str, ...] = ("train", "val", "test")
KEYS: tuple[str, ...] = ("mixture", "targets", "noise")
GENERATOR_VERSION = 2  # bump when the maths changes so cached files are not reused


@dataclass(frozen=True)
class SinusoidSpec:
    """Everything that determines a generated split; hashed into the file name."""

    freqs: tuple[float, ...] = (1.0, 3.0, 5.0, 7.0)
    fs: float = 1000.0
    duration_s: float = 10.0
    noise_model: NoiseModel = "per_signal"
    noise_std: float = 0.1

    def __post_init__(self) -> None:
        object.__setattr__(self, "freqs", tuple(float(x) for x in self.freqs))
        if self.noise_model not in NOISE_MODELS:
            raise ValueError(f"noise_model={self.noise_model!r}: expected one of {NOISE_MODELS}")
        if len(self.freqs) < 1 or min(self.freqs) <= 0 or max(self.freqs) >= self.fs / 2:
            raise ValueError(f"freqs={self.freqs}: need at least one frequency in (0, fs/2 = {self.fs / 2})")
        if self.duration_s <= 0 or self.noise_std < 0:
            raise ValueError(f"duration_s={self.duration_s}, noise_std={self.noise_std}: need > 0 and >= 0")

    @property
    def amp_range(self) -> tuple[float, float]:
        """Amplitude range the noise model prescribes."""
        return AMP_RANGES[self.noise_model]

    @property
    def num_steps(self) -> int:
        return int(round(self.duration_s * self.fs))

    def time(self) -> np.ndarray:
        """Sample times in seconds, shape (T,)."""
        return np.arange(self.num_steps, dtype=np.float64) / self.fs


def split_seed(seed: int, split: str) -> np.random.SeedSequence:
    """Independent random streams for train / val / test from one user seed."""
    return np.random.SeedSequence([seed, SPLITS.index(split)])


def generate(
    spec: SinusoidSpec, num_signals: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Generate `num_signals` mixtures, their per-frequency targets and the unit noise in the mixtures.

    Returns:
        mixture (N, T), targets (N, K, T) and noise (N, T), float32; mixture includes noise_std · noise.
    """
    t = spec.time()  # (T,)
    f = np.asarray(spec.freqs, dtype=np.float64)[None, :, None]  # (1, K, 1)
    n, k = num_signals, len(spec.freqs)
    lo, hi = spec.amp_range
    if spec.noise_model == "per_signal":
        amp = rng.uniform(lo, hi, size=(n, k, 1))  # (N, K, 1)
        phase = rng.uniform(0, 2 * np.pi, size=(n, k, 1))
        targets = amp * np.sin(2 * np.pi * f * t + phase)  # (N, K, T)
        mixture = targets.mean(axis=1)  # (N, T)
    else:
        amp = rng.uniform(lo, hi, size=(n, k, t.size))  # (N, K, T)
        phase = rng.uniform(0, 2 * np.pi, size=(n, k, t.size))
        mixture = (amp * np.sin(2 * np.pi * f * t + phase)).mean(axis=1)  # (N, T)
        targets = np.broadcast_to(np.sin(2 * np.pi * f * t), (n, k, t.size))  # (N, K, T)
    noise = rng.standard_normal(size=mixture.shape)  # (N, T), drawn even at noise_std 0: a knob may add noise
    mixture = mixture + spec.noise_std * noise
    return mixture.astype(np.float32), np.ascontiguousarray(targets, dtype=np.float32), noise.astype(np.float32)


def split_params(spec: SinusoidSpec, split: str, num_signals: int, seed: int) -> dict:
    return {**asdict(spec), "split": split, "num_signals": num_signals, "seed": seed, "version": GENERATOR_VERSION}


def split_path(data_dir: str | Path, spec: SinusoidSpec, split: str, num_signals: int, seed: int) -> Path:
    """File of one split; the parameter hash is in the name, so changing a parameter never overwrites a file."""
    digest = params_hash(split_params(spec, split, num_signals, seed))
    return Path(data_dir) / f"{spec.noise_model}_{split}_{digest}.h5"


def write_split(
    data_dir: str | Path,
    spec: SinusoidSpec,
    split: str,
    num_signals: int,
    seed: int,
    chunk: int = 64,
    progress: bool = True,
) -> Path:
    """Generate one split into `data_dir` unless a matching file is already there; returns its path."""
    path = split_path(data_dir, spec, split, num_signals, seed)

    def write(f: h5py.File) -> None:
        rng = np.random.default_rng(split_seed(seed, split))
        t = spec.num_steps
        mix = f.create_dataset("mixture", (num_signals, t), dtype="float32", chunks=(1, t))
        tgt = f.create_dataset("targets", (num_signals, len(spec.freqs), t), dtype="float32", chunks=(1, 1, t))
        noise = f.create_dataset("noise", (num_signals, t), dtype="float32", chunks=(1, t))
        f.attrs["fs"], f.attrs["freqs"] = spec.fs, np.asarray(spec.freqs)
        bar = tqdm(total=num_signals, desc=f"sinusoids {split}", unit="signal", disable=not progress, leave=False)
        for start in range(0, num_signals, chunk):
            stop = min(start + chunk, num_signals)
            mix[start:stop], tgt[start:stop], noise[start:stop] = generate(spec, stop - start, rng)
            bar.update(stop - start)
        bar.close()

    return ensure_generated(path, split_params(spec, split, num_signals, seed), write, KEYS)
