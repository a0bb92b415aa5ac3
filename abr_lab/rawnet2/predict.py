"""Scoring audio with a trained spoofing detector: a folder of WAV/FLAC files (or one file) -> a CSV of scores.

The family's one scoring path: ``python predict.py ckpt_path=... input=<folder>`` (`abr_lab.predict`) and
``python -m abr_lab.rawnet2.deploy predict`` both end in `score_folder`. Every file is read as mono at the sample rate
of training (resampled if needed) and cut by the clip rule of training (`clip_rule`: the first `clip_samples`
samples, short files tiled, `abr_lab.rawnet2.audio.fit_clip`), so a file is scored as the test split was.

The CSV has one row per file: ``file`` (relative to the folder), ``score`` (bona fide log-odds: higher means bona
fide) and ``p_bonafide`` = sigmoid(score). No decision threshold is applied: choose one on your own development data
(the EER threshold a training run logs is tied to its data).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.special import expit
from torch import Tensor, nn

from abr_lab.predict import Option, Trained, batches, number, write_csv
from abr_lab.rawnet2.audio import AUDIO_SUFFIXES, AudioError, fit_clip, list_audio_files, read_audio
from abr_lab.rawnet2.datamodule import REFERENCE_CLIP_SAMPLES
from abr_lab.rawnet2.generator import SAMPLE_RATE
from abr_lab.rawnet2.network import bonafide_score

OPTIONS: dict[str, Option] = {}
SUFFIX = ".csv"
BATCH_SIZE = 16
HEADER = ("file", "score", "p_bonafide")


class Scorer(nn.Module):
    """A network that returns the detection score: (b, t) waveforms -> (b,) bona fide log-odds."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, audio: Tensor) -> Tensor:
        return bonafide_score(self.net(audio))


def clip_rule(data: Mapping[str, Any]) -> tuple[int, int]:
    """(sample_rate, clip_samples) of a DataModule's arguments (a config's ``data`` or the hyperparameters saved in
    a checkpoint); the generated data has no ``sample_rate`` argument and is at `SAMPLE_RATE`."""
    return int(data.get("sample_rate", SAMPLE_RATE)), int(data.get("clip_samples", REFERENCE_CLIP_SAMPLES))


def audio_inputs(path: str | Path) -> tuple[Path, list[Path]]:
    """(the folder file names are given relative to, the audio files): every WAV/FLAC under a folder, or one file.

    Raises:
        AudioError: the path does not exist, is a file of another type, or is a folder without audio files.
    """
    path = Path(path)
    if path.is_dir():
        return path, list_audio_files(path)
    if not path.exists():
        raise AudioError(f"{path}: no such audio file or folder")
    if path.suffix.lower() not in AUDIO_SUFFIXES:
        raise AudioError(
            f"{path}: a {path.suffix or 'suffix-less'} file; expected a folder of audio files or one audio file "
            f"({', '.join(AUDIO_SUFFIXES)})"
        )
    return path.parent, [path]


def score_files(
    scorer: nn.Module,
    paths: Sequence[Path],
    sample_rate: int,
    clip_samples: int,
    batch_size: int = BATCH_SIZE,
    device: str | torch.device = "cpu",
) -> np.ndarray:
    """Scores of audio files by the clip rule of training (first `clip_samples`, short files tiled), (n,)."""
    scores = []
    with torch.inference_mode():
        for rows in batches(len(paths), batch_size):
            clips = [fit_clip(read_audio(p, sample_rate), clip_samples) for p in paths[rows]]
            audio = torch.from_numpy(np.stack(clips)).to(device)  # (b, clip_samples)
            scores.append(scorer(audio).float().cpu().numpy())  # (b,)
    return np.concatenate(scores) if scores else np.zeros(0, dtype=np.float32)


def score_folder(
    scorer: nn.Module,
    input: str | Path,
    out: str | Path,
    sample_rate: int,
    clip_samples: int,
    batch_size: int = BATCH_SIZE,
    device: str | torch.device = "cpu",
) -> Path:
    """Score every WAV/FLAC file under `input` (or the one file `input`) into the CSV `out`, written atomically
    (an unreadable file fails the whole run, naming it, and leaves no CSV)."""
    root, paths = audio_inputs(input)
    scores = score_files(scorer.to(device).eval(), paths, sample_rate, clip_samples, batch_size, device)
    probabilities = expit(scores.astype(np.float64))  # sigmoid without overflow warnings
    rows = (
        (path.relative_to(root).as_posix(), number(score), number(p))
        for path, score, p in zip(paths, scores, probabilities, strict=True)
    )
    return write_csv(Path(out), HEADER, rows)


def run(trained: Trained, input: Path, out: Path, *, batch_size: int, device: torch.device) -> Path:
    """`abr_lab.predict`'s entry: the clip rule comes from the (possibly overridden) config's ``data``."""
    sample_rate, clip_samples = clip_rule(trained.cfg.data)
    return score_folder(Scorer(trained.module.net), input, out, sample_rate, clip_samples, batch_size, device)
