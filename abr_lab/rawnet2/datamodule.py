"""DataModules of the anti-spoofing family: generated audio (`spoof_synth`) and real corpora read from disk
(ASVspoof 2019 LA, In-the-Wild).

Every split serves fixed-length clips by the reference rule (`abr_lab.rawnet2.audio.fit_clip`): the first
`clip_samples` samples, shorter clips tiled rather than zero-padded; with `random_crop` the training split takes a
random window instead of the first, and with `rawboost` its clips are degraded by RawBoost-style channel and noise
effects (`abr_lab.rawnet2.augment`). Items are ``{"audio": (t,), "label": () 1 = bona fide, "attack": () index into
the DataModule's attack_ids}``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import lightning as L
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from abr_lab.curriculum import Knob
from abr_lab.data import DataFileError
from abr_lab.data.samplers import evaluation_sampler
from abr_lab.data.shared import SharedValues
from abr_lab.data.workers import check_workers, loader_workers
from abr_lab.rawnet2.audio import fit_clip, random_start, read_audio
from abr_lab.rawnet2.augment import check_algorithms, rawboost
from abr_lab.rawnet2.corpora import Utterance, asvspoof2019_la, read_in_the_wild, split_by_speaker
from abr_lab.rawnet2.generator import (
    ATTACK_IDS,
    SAMPLE_RATE,
    SPLITS,
    SpoofClips,
    SpoofSynthSpec,
    read_split,
    split_path,
    write_split,
)

REFERENCE_CLIP_SAMPLES = 64_600  # ~4.04 s at 16 kHz, the ASVspoof 2021 RawNet2 baseline's input


class ClipSource(Protocol):
    """Where a split's clips come from: labels and attack indices up front, audio on demand."""

    labels: np.ndarray  # (n,) 1 = bona fide, 0 = spoof
    attacks: np.ndarray  # (n,) index into the DataModule's attack_ids

    def __len__(self) -> int: ...

    def load(self, index: int) -> np.ndarray: ...


class SynthSource:
    """A generated split held in memory (int16, a few hundred MB at the default size)."""

    def __init__(self, clips: SpoofClips) -> None:
        self.clips = clips
        self.labels, self.attacks = clips.label.astype(np.int64), clips.attack.astype(np.int64)

    def __len__(self) -> int:
        return len(self.clips)

    def load(self, index: int) -> np.ndarray:
        return self.clips.clip(index)


class FileSource:
    """Utterances on disk, decoded (and resampled if needed) when an item is read."""

    def __init__(self, utterances: Sequence[Utterance], attack_ids: Sequence[str], sample_rate: int) -> None:
        self.utterances, self.sample_rate = list(utterances), sample_rate
        index = {name: i for i, name in enumerate(attack_ids)}
        self.labels = np.array([u.label for u in self.utterances], dtype=np.int64)
        self.attacks = np.array([index[u.attack] for u in self.utterances], dtype=np.int64)

    def __len__(self) -> int:
        return len(self.utterances)

    def load(self, index: int) -> np.ndarray:
        return read_audio(self.utterances[index].path, self.sample_rate)


class SpoofDataset(Dataset):
    """Fixed-length clips of a source. ``live["clip_samples"]`` (shared memory: a curriculum knob reaches DataLoader
    workers) sets the length; `random_crop` draws the window's start at random instead of taking the first;
    `rawboost` names the RawBoost algorithms applied, in order, to every clip before it is cut."""

    def __init__(
        self, source: ClipSource, clip_samples: int, random_crop: bool = False, rawboost: Sequence[str] = ()
    ) -> None:
        if clip_samples < 1:
            raise ValueError(f"clip_samples={clip_samples}: need >= 1")
        self.source, self.random_crop, self.rawboost = source, random_crop, check_algorithms(rawboost)
        self.live = SharedValues(clip_samples=clip_samples)

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        audio = self.source.load(index)  # (n,) float32
        length = int(round(self.live["clip_samples"]))
        start = 0
        if self.random_crop or self.rawboost:  # seeded through torch, which Lightning seeds per DataLoader worker
            rng = np.random.default_rng(int(torch.randint(0, 2**31 - 1, ())))
            if self.rawboost:
                audio = rawboost(audio, self.rawboost, rng)
            if self.random_crop:
                start = random_start(len(audio), length, rng)
        return {
            "audio": torch.from_numpy(np.ascontiguousarray(fit_clip(audio, length, start), dtype=np.float32)),
            "label": torch.tensor(self.source.labels[index]),
            "attack": torch.tensor(self.source.attacks[index]),
        }


class SpoofDataModule(L.LightningDataModule):
    """What the family's DataModules share: the clip rule, loaders, the attack table and the curriculum knob.

    Subclasses fill `self.sources` (split -> ClipSource) in `setup` and set `attack_ids` (index 0 = bona fide "-")
    and `train_attacks` (the attack names seen in training; test attacks outside it are "unseen").
    """

    attack_ids: tuple[str, ...] = ("-",)
    train_attacks: tuple[str, ...] = ()

    def __init__(
        self,
        clip_samples: int,
        random_crop: bool,
        rawboost: Sequence[str],
        batch_size: int,
        num_workers: int | str,
    ) -> None:
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size}: need >= 1")
        self.clip_samples, self.random_crop, self.rawboost = clip_samples, random_crop, check_algorithms(rawboost)
        self.batch_size, self.num_workers = batch_size, check_workers(num_workers)
        self.sources: dict[str, ClipSource] = {}
        self.datasets: dict[str, SpoofDataset] = {}

    @property
    def unseen_attacks(self) -> tuple[str, ...]:
        """Spoof attacks of the test split that training never saw (empty until setup)."""
        if "test" not in self.sources:
            return ()
        seen = set(self.train_attacks) | {"-"}
        present = {self.attack_ids[i] for i in np.unique(self.sources["test"].attacks)}
        return tuple(a for a in self.attack_ids if a in present and a not in seen)

    def _make_datasets(self) -> None:
        for split, source in self.sources.items():
            if split not in self.datasets:
                train = split == "train"
                self.datasets[split] = SpoofDataset(
                    source,
                    self.clip_samples,
                    random_crop=self.random_crop and train,
                    rawboost=self.rawboost if train else (),
                )

    def curriculum_knobs(self) -> dict[str, Knob]:
        """``data.clip_samples``: length of the training clips (validation and test keep `clip_samples`)."""
        if "train" not in self.datasets:
            raise RuntimeError(f"{type(self).__name__}.curriculum_knobs: call setup('fit') first")
        return {"data.clip_samples": self.datasets["train"].live.knob("clip_samples", low=1)}

    def class_counts(self, split: str) -> dict[str, int]:
        labels = self.sources[split].labels
        return {"bonafide": int((labels == 1).sum()), "spoof": int((labels == 0).sum())}

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        if split not in self.datasets:
            raise RuntimeError(f"{type(self).__name__}: split {split!r} is not set up; call setup() first")
        return DataLoader(
            self.datasets[split],
            batch_size=self.batch_size,
            shuffle=shuffle,
            sampler=None if shuffle else evaluation_sampler(self.datasets[split]),
            num_workers=(workers := loader_workers(self.num_workers, self.trainer)),
            persistent_workers=workers > 0,
            drop_last=shuffle and len(self.datasets[split]) > self.batch_size,  # no size-1 batch for BatchNorm
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)


class SpoofSynthDataModule(SpoofDataModule):
    """Generated speech-like bona fide audio and spoofs from attack systems (`abr_lab.rawnet2.generator`).

    Generated once per parameter set into `data_dir` (HDF5, int16), then held in memory. Val shares the training
    attacks unless `val_attacks` names others; the test split adds attacks absent from training, as in ASVspoof.

    Args:
        data_dir: folder of the generated files (a file name carries its parameters' hash).
        num_train, num_val, num_test: clips per split.
        seed: base seed; each split and clip draws from its own stream.
        min_seconds, max_seconds: range of utterance durations.
        bonafide_fraction: share of bona fide clips in each split.
        train_attacks: attack systems of the train split (and of val unless `val_attacks` is set).
        test_attacks: attack systems of the test split.
        val_attacks: attack systems of the val split; None = the training ones. A held-out attack here (``A08``, a
            vocoder in no other split) makes early stopping and checkpoint selection reward detecting an attack
            training never saw; keep the test attacks out of it, or they are no longer unseen.
        clip_samples: samples per clip fed to the model (64,600 = the reference's ~4 s).
        random_crop: training clips start at a random sample instead of the first.
        rawboost: RawBoost algorithms (``lnl``, ``isd``, ``ssi``) applied in order to every training clip; none by
            default (the reference trains without).
        batch_size: clips per batch, all splits.
        num_workers: DataLoader workers, or ``auto`` (`abr_lab.data.workers`: none on a CPU, where the audio sits
            in memory and 0 is enough; the spare cores when a GPU trains).
    """

    attack_ids = ATTACK_IDS

    def __init__(
        self,
        data_dir: str = "data/spoof_synth",
        num_train: int = 2000,
        num_val: int = 500,
        num_test: int = 2000,
        seed: int = 42,
        min_seconds: float = 2.5,
        max_seconds: float = 4.5,
        bonafide_fraction: float = 0.2,
        train_attacks: Sequence[str] = ("A01", "A02", "A03", "A04"),
        test_attacks: Sequence[str] = ("A01", "A02", "A05", "A06", "A07"),
        val_attacks: Sequence[str] | None = None,
        clip_samples: int = REFERENCE_CLIP_SAMPLES,
        random_crop: bool = False,
        rawboost: Sequence[str] = (),
        batch_size: int = 32,
        num_workers: int | str = 0,
    ) -> None:
        super().__init__(clip_samples, random_crop, rawboost, batch_size, num_workers)
        self.save_hyperparameters()
        self.spec = SpoofSynthSpec(
            min_seconds=min_seconds,
            max_seconds=max_seconds,
            bonafide_fraction=bonafide_fraction,
            train_attacks=tuple(train_attacks),
            test_attacks=tuple(test_attacks),
            val_attacks=None if val_attacks is None else tuple(val_attacks),
        )
        self.train_attacks = self.spec.attacks("train")
        self.sizes = {"train": num_train, "val": num_val, "test": num_test}
        for split, n in self.sizes.items():
            if n < 2:
                raise ValueError(f"num_{split}={n}: need at least 2 clips (one of each class)")
        self.data_dir, self.seed = Path(data_dir), seed

    def path(self, split: str) -> Path:
        return split_path(self.data_dir, self.spec, split, self.sizes[split], self.seed)

    def prepare_data(self) -> None:
        for split in SPLITS:
            write_split(self.data_dir, self.spec, split, self.sizes[split], self.seed)

    def setup(self, stage: str | None = None) -> None:
        for split in SPLITS:
            if split not in self.sources:
                path = self.path(split)
                if not path.exists():
                    raise DataFileError(f"{path}: missing; prepare_data() generates it")
                self.sources[split] = SynthSource(read_split(path))
        self._make_datasets()


class ASVspoof2019DataModule(SpoofDataModule):
    """The ASVspoof 2019 LA corpus from `root` (FLAC + CM protocols; train / dev / eval as train / val / test).

    Args:
        root: folder holding ``ASVspoof2019_LA_train``, ``_dev``, ``_eval`` and ``ASVspoof2019_LA_cm_protocols``.
        sample_rate: rate the model expects; files at another rate are resampled (polyphase).
        clip_samples, random_crop, rawboost, batch_size, num_workers: as `SpoofSynthDataModule`.
    """

    attack_ids = ("-", *(f"A{i:02d}" for i in range(1, 20)))
    train_attacks = tuple(f"A{i:02d}" for i in range(1, 7))

    def __init__(
        self,
        root: str,
        sample_rate: int = SAMPLE_RATE,
        clip_samples: int = REFERENCE_CLIP_SAMPLES,
        random_crop: bool = False,
        rawboost: Sequence[str] = (),
        batch_size: int = 32,
        num_workers: int | str = 4,
    ) -> None:
        super().__init__(clip_samples, random_crop, rawboost, batch_size, num_workers)
        self.save_hyperparameters()
        self.root, self.sample_rate = Path(root), sample_rate

    def setup(self, stage: str | None = None) -> None:
        for split in SPLITS:
            if split not in self.sources:
                utterances = asvspoof2019_la(self.root, split)
                unknown = sorted({u.attack for u in utterances} - set(self.attack_ids))
                if unknown:
                    raise DataFileError(f"{self.root}: {split} protocol names unknown systems {unknown}")
                if split == "train":
                    self.train_attacks = tuple(sorted({u.attack for u in utterances} - {"-"}))
                self.sources[split] = FileSource(utterances, self.attack_ids, self.sample_rate)
        self._make_datasets()


class InTheWildDataModule(SpoofDataModule):
    """The In-the-Wild deepfake corpus (Müller et al. 2022) from `root` (``meta.csv`` + audio), split by speaker.

    The corpus has no official split (it is an evaluation set); the speakers are divided into train / val / test
    by `split_fractions` of the utterances, no speaker in two splits, deterministically by `seed`. Spoofs carry no
    system label: every spoof is attack ``spoof``.

    Args:
        root: folder with ``meta.csv`` (``file,speaker,label``) and the audio files it names.
        split_fractions: shares of utterances for train, val, test.
        seed: seed of the speaker split.
        sample_rate, clip_samples, random_crop, rawboost, batch_size, num_workers: as `ASVspoof2019DataModule`.
    """

    attack_ids = ("-", "spoof")
    train_attacks = ("spoof",)

    def __init__(
        self,
        root: str,
        split_fractions: Sequence[float] = (0.7, 0.1, 0.2),
        seed: int = 0,
        sample_rate: int = SAMPLE_RATE,
        clip_samples: int = REFERENCE_CLIP_SAMPLES,
        random_crop: bool = False,
        rawboost: Sequence[str] = (),
        batch_size: int = 32,
        num_workers: int | str = 4,
    ) -> None:
        super().__init__(clip_samples, random_crop, rawboost, batch_size, num_workers)
        self.save_hyperparameters()
        if len(split_fractions) != 3:
            raise ValueError(f"split_fractions={list(split_fractions)}: need three shares (train, val, test)")
        self.root, self.sample_rate = Path(root), sample_rate
        self.split_fractions, self.seed = tuple(float(f) for f in split_fractions), seed

    def setup(self, stage: str | None = None) -> None:
        if self.sources:
            return
        splits = split_by_speaker(read_in_the_wild(self.root), self.split_fractions, self.seed)  # type: ignore[arg-type]
        for split in SPLITS:
            self.sources[split] = FileSource(splits[split], self.attack_ids, self.sample_rate)
        self._make_datasets()
