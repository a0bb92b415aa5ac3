"""Audio input for RawNet2: read any WAV/FLAC as 16 kHz mono float32, and the reference clip rule.

RawNet2 (Tak et al., ICASSP 2021, the ASVspoof 2021 baseline) sees a fixed number of raw samples per utterance
(64 600, about 4 s at 16 kHz). Its reference data loader takes the first 64 600 samples of a long clip and *tiles* a
short one (repeats it end to start) rather than zero-padding it, so a short utterance never turns into a tell-tale
block of silence. `fit_clip` is that rule, with an optional start for random crops during training.
"""

from __future__ import annotations

from math import gcd
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

AUDIO_SUFFIXES = (".wav", ".flac")


class AudioError(ValueError):
    """An audio file is unreadable, empty, or holds non-finite samples; the message names the file."""


def _resample(audio: np.ndarray, orig_rate: int, new_rate: int) -> np.ndarray:
    """Polyphase resampling by the reduced ratio new_rate / orig_rate (scipy's anti-aliasing FIR)."""
    g = gcd(orig_rate, new_rate)
    return resample_poly(audio, new_rate // g, orig_rate // g)


def read_audio(path: str | Path, sample_rate: int = 16_000) -> np.ndarray:
    """Read a WAV/FLAC file (anything libsndfile reads) as a 1-D float32 mono waveform at `sample_rate`.

    Multi-channel audio is averaged to mono. A file at another sample rate is resampled with
    `scipy.signal.resample_poly` (polyphase, anti-aliased, up/down by the rates divided by their gcd) rather than
    refused, because real corpora (In-the-Wild, user folders) mix 16, 22.05, 44.1 and 48 kHz recordings; the output
    length is ``ceil(n * sample_rate / file_rate)``.

    Args:
        path: audio file.
        sample_rate: rate of the returned waveform in Hz.

    Raises:
        AudioError: the file cannot be read (soundfile's reason is included), has no samples, or has NaN/inf samples.
        ValueError: `sample_rate` is not positive.
    """
    if sample_rate < 1:
        raise ValueError(f"sample_rate must be a positive number of Hz, got {sample_rate}")
    path = Path(path)
    try:
        audio, file_rate = sf.read(path, dtype="float32", always_2d=True)  # (t, channels)
    except (sf.SoundFileError, RuntimeError, OSError) as err:
        raise AudioError(f"{path}: not a readable audio file ({err})") from err
    if audio.shape[0] == 0:
        raise AudioError(f"{path}: the file holds no samples")
    if not np.isfinite(audio).all():
        raise AudioError(f"{path}: the file holds non-finite (NaN or inf) samples")
    mono = audio.mean(axis=1)  # (t,)
    if file_rate != sample_rate:
        mono = _resample(mono, int(file_rate), sample_rate)
    return np.ascontiguousarray(mono, dtype=np.float32)


def fit_clip(audio: np.ndarray, length: int, start: int = 0) -> np.ndarray:
    """Exactly `length` samples of `audio` from `start`, tiling (never zero-padding) when the clip runs out.

    The clip is read as if it were circular: index ``(start + i) % len(audio)``. With ``start=0`` this is the ASVspoof
    RawNet2 reference rule: a long clip is truncated to its first `length` samples, a short one is repeated end to
    start until it is `length` long (``[1, 2, 3]``, length 7 -> ``[1, 2, 3, 1, 2, 3, 1]``).

    Args:
        audio: 1-D waveform, at least one sample.
        length: number of samples to return, >= 1.
        start: first sample, ``0 <= start < len(audio)`` (see `random_start`).

    Raises:
        ValueError: `audio` is not 1-D or is empty, `length` < 1, or `start` is outside the clip.
    """
    if audio.ndim != 1:
        raise ValueError(f"audio must be 1-D (samples,), got shape {audio.shape}")
    n = audio.shape[0]
    if n == 0:
        raise ValueError("audio is empty: there is nothing to tile")
    if length < 1:
        raise ValueError(f"length must be >= 1, got {length}")
    if not 0 <= start < n:
        raise ValueError(f"start must be in [0, {n}) for a clip of {n} samples, got {start}")
    if start + length <= n:
        return audio[start : start + length].copy()
    return audio[(start + np.arange(length)) % n]


def random_start(num_samples: int, length: int, rng: np.random.Generator) -> int:
    """A uniformly random crop start in ``[0, num_samples - length]``; 0 when the clip is not longer than `length`."""
    if length < 1:
        raise ValueError(f"length must be >= 1, got {length}")
    if num_samples <= length:
        return 0
    return int(rng.integers(0, num_samples - length + 1))


def list_audio_files(folder: str | Path) -> list[Path]:
    """All files under `folder` (recursively) whose suffix is in `AUDIO_SUFFIXES` (any case), sorted.

    Raises:
        AudioError: `folder` is not a directory, or holds no audio file.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise AudioError(f"{folder}: audio folder does not exist")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file())
    if not files:
        raise AudioError(f"{folder}: no audio files ({', '.join(AUDIO_SUFFIXES)}) found in the folder")
    return files
