"""ABR DataModules: patient-level splits, train-fitted normalisation, train-only augmentation.

`ABRDataModule` serves any file in the ABR schema (`data=abr_file data.path=...`); `SimulatedABRDataModule`
generates the simulator's file first (`data=abr`, the default for `model=optimized_unet`).

A batch is a dict (B = batch size, T = samples on the file's time axis, any length):

=============  ===========  ================================================================================
key            shape        meaning
=============  ===========  ================================================================================
signal         (B, 1, T)    recording divided by the train split's signal std (dimensionless)
clean          (B, 1, T)    noise-free waveform on the same scale (only for files that hold ``clean``)
static         (B, 4)       age, intensity, rate, Fmp: log1p for age and Fmp, then z-scored with train stats
static_raw     (B, 4)       the same in raw units (years, dB nHL, /s, F ratio)
peaks          (B, 3, 2)    waves I, III, V × (latency ms, amplitude µV), raw units; 0 where absent
peak_mask      (B, 3)       bool, which waves are present
label          (B,)         int64 class index (0 NORMAL, 1 NEUROPATHY, 2 SENSORINEURAL, 3 TOTAL, 4 CONDUCTIVE)
threshold      (B,)         the ear's hearing threshold, dB nHL
index          (B,)         row of the recording in the file
=============  ===========  ================================================================================

Targets stay in physical units so metrics are physical; `normalization` carries train-split target statistics
for heads that want standardised targets. The normalisation is stored in every checkpoint (`state_dict`) and
restored on resume, together with a fingerprint of the split, so a resumed run cannot silently change either.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, WeightedRandomSampler

from abr_lab.curriculum import Knob
from abr_lab.data import DataFileError
from abr_lab.data.samplers import evaluation_sampler
from abr_lab.data.shared import SharedValues
from abr_lab.data.workers import check_workers, loader_workers
from abr_lab.optimized_unet.generator import SimulatorSpec, simulated_path, write_simulation
from abr_lab.optimized_unet.schema import CLASS_NAMES, STATIC_NAMES, ABRRecords, read_abr_file

SPLITS: tuple[str, ...] = ("train", "val", "test")
LOG_STATIC: tuple[str, ...] = ("age", "fmp")  # heavy-tailed: log1p before z-scoring


@dataclass(frozen=True)
class Normalization:
    """Statistics fitted on the train split only; applied to every split."""

    signal_std: float  # µV
    static_mean: tuple[float, ...]  # after log1p of LOG_STATIC features
    static_std: tuple[float, ...]
    latency_mean: tuple[float, ...]  # per wave I, III, V over present peaks, ms
    latency_std: tuple[float, ...]
    amplitude_mean: tuple[float, ...]  # µV
    amplitude_std: tuple[float, ...]
    threshold_mean: float  # dB nHL
    threshold_std: float

    @classmethod
    def fit(cls, records: ABRRecords) -> Normalization:
        static = transform_static(records.static)
        lat, amp = records.peaks[..., 0].astype(np.float64), records.peaks[..., 1].astype(np.float64)
        lat_mean, lat_std, amp_mean, amp_std = [], [], [], []
        for w in range(records.peak_mask.shape[1]):
            present = records.peak_mask[:, w]
            for values, means, stds in ((lat[:, w], lat_mean, lat_std), (amp[:, w], amp_mean, amp_std)):
                chosen = values[present]
                means.append(float(chosen.mean()) if chosen.size else 0.0)
                stds.append(_safe_std(chosen))
        return cls(
            signal_std=_safe_std(records.signal),
            static_mean=tuple(float(x) for x in static.mean(axis=0)),
            static_std=tuple(_safe_std(static[:, j]) for j in range(static.shape[1])),
            latency_mean=tuple(lat_mean),
            latency_std=tuple(lat_std),
            amplitude_mean=tuple(amp_mean),
            amplitude_std=tuple(amp_std),
            threshold_mean=float(records.threshold_db.mean()),
            threshold_std=_safe_std(records.threshold_db),
        )

    def static(self, raw: np.ndarray) -> np.ndarray:
        """Normalised static parameters from raw ones, (..., 4)."""
        return (transform_static(raw) - np.asarray(self.static_mean)) / np.asarray(self.static_std)


def _safe_std(values: np.ndarray) -> float:
    std = float(np.asarray(values, dtype=np.float64).std()) if np.size(values) > 1 else 0.0
    return std if std > 1e-12 else 1.0


def transform_static(raw: np.ndarray) -> np.ndarray:
    out = np.asarray(raw, dtype=np.float64).copy()
    for name in LOG_STATIC:
        j = STATIC_NAMES.index(name)
        out[..., j] = np.log1p(np.maximum(out[..., j], 0.0))
    return out


@dataclass(frozen=True)
class Augmentation:
    """Train-only augmentation, each applied to an example with probability `probability`.

    Args:
        probability: chance that each enabled transform is applied to an example.
        noise_snr_db: [low, high]: add white noise at an SNR drawn from this range (relative to the clean waveform
            when the file has one, else to the recording); null disables.
        shift_ms: shift the recording (and its peak latencies) by up to ± this many ms; 0 disables.
        scale: multiply the recording (and peak amplitudes) by U(1 - scale, 1 + scale); 0 disables.
    """

    probability: float = 0.5
    noise_snr_db: tuple[float, float] | None = None
    shift_ms: float = 0.0
    scale: float = 0.0

    def __post_init__(self) -> None:
        if self.noise_snr_db is not None:
            snr = tuple(float(x) for x in self.noise_snr_db)
            if len(snr) != 2 or snr[0] > snr[1]:
                raise ValueError(f"augment.noise_snr_db={self.noise_snr_db}: expected [low, high] or null")
            object.__setattr__(self, "noise_snr_db", snr)
        if not 0 <= self.probability <= 1 or self.shift_ms < 0 or not 0 <= self.scale < 1:
            raise ValueError(f"augment {self}: need 0 <= probability <= 1, shift_ms >= 0, 0 <= scale < 1")

    @property
    def enabled(self) -> bool:
        return self.probability > 0 and (self.noise_snr_db is not None or self.shift_ms > 0 or self.scale > 0)


class ABRDataset(Dataset):
    """Recordings of one split; normalises on access so a normalisation restored from a checkpoint applies.

    The augmentation's probability and the low end of its SNR range are `live` values in shared memory: a
    curriculum may change them during training and DataLoader workers see the change.
    """

    def __init__(
        self, records: ABRRecords, rows: np.ndarray, norm: Normalization, augment: Augmentation | None = None
    ) -> None:
        self.signal = torch.from_numpy(records.signal.astype(np.float32))  # (n, T) µV
        self.clean = None if records.clean is None else torch.from_numpy(records.clean.astype(np.float32))
        self.static_raw = torch.from_numpy(records.static.astype(np.float32))  # (n, 4)
        self.peaks = torch.from_numpy(records.peaks.astype(np.float32))  # (n, 3, 2)
        self.peak_mask = torch.from_numpy(records.peak_mask.astype(bool))  # (n, 3)
        self.label = torch.from_numpy(records.label.astype(np.int64))
        self.threshold = torch.from_numpy(records.threshold_db.astype(np.float32))
        self.fs_hz, self.onset_ms = records.fs_hz, records.onset_ms
        self.index = torch.as_tensor(rows, dtype=torch.long)  # (n,) rows in the file
        self.augment = augment if augment is not None and augment.enabled else None
        snr_low = 0.0 if augment is None or augment.noise_snr_db is None else augment.noise_snr_db[0]
        self.live = SharedValues(
            probability=0.0 if self.augment is None else self.augment.probability, noise_snr_db=snr_low
        )
        self.set_normalization(norm)

    def set_normalization(self, norm: Normalization) -> None:
        self.norm = norm
        self.static = torch.from_numpy(norm.static(self.static_raw.numpy()).astype(np.float32))

    def __len__(self) -> int:
        return self.signal.shape[0]

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        signal = self.signal[i]  # (T,) µV
        clean = None if self.clean is None else self.clean[i]
        peaks = self.peaks[i].clone()  # (3, 2)
        mask = self.peak_mask[i].clone()  # (3,)
        if self.augment is not None:
            signal, clean, peaks, mask = self._augment(signal, clean, peaks, mask)
        item = {
            "signal": (signal / self.norm.signal_std).unsqueeze(0),  # (1, T)
            "static": self.static[i],
            "static_raw": self.static_raw[i],
            "peaks": peaks,
            "peak_mask": mask,
            "label": self.label[i],
            "threshold": self.threshold[i],
            "index": self.index[i],
        }
        if clean is not None:
            item["clean"] = (clean / self.norm.signal_std).unsqueeze(0)  # (1, T)
        return item

    def _augment(
        self, signal: Tensor, clean: Tensor | None, peaks: Tensor, mask: Tensor
    ) -> tuple[Tensor, Tensor | None, Tensor, Tensor]:
        aug = self.augment
        assert aug is not None
        probability = self.live["probability"]
        if aug.scale > 0 and torch.rand(()) < probability:
            factor = 1.0 + (2 * torch.rand(()) - 1) * aug.scale
            signal, peaks[:, 1] = signal * factor, peaks[:, 1] * factor
            clean = None if clean is None else clean * factor
        if aug.shift_ms > 0 and torch.rand(()) < probability:
            max_shift = int(aug.shift_ms * self.fs_hz / 1000.0)
            k = int(torch.randint(-max_shift, max_shift + 1, ()))
            signal = shift(signal, k)
            clean = None if clean is None else shift(clean, k)
            peaks[:, 0] = torch.where(mask, peaks[:, 0] + 1000.0 * k / self.fs_hz, peaks[:, 0])
            end_ms = self.onset_ms + 1000.0 * signal.shape[-1] / self.fs_hz
            inside = (peaks[:, 0] >= self.onset_ms) & (peaks[:, 0] < end_ms)
            peaks[~(mask & inside)] = 0.0
            mask = mask & inside
        if aug.noise_snr_db is not None and torch.rand(()) < probability:
            lo, hi = aug.noise_snr_db
            snr_db = self.live["noise_snr_db"] + (hi - lo) * torch.rand(())  # the range keeps its width
            power = (clean if clean is not None else signal).pow(2).mean()
            signal = signal + torch.randn_like(signal) * torch.sqrt(power / 10 ** (snr_db / 10))
        return signal, clean, peaks, mask


def shift(x: Tensor, k: int) -> Tensor:
    """Delay `x` (T,) by k samples (advance if k < 0), filling with zeros (the pre-stimulus baseline)."""
    if k == 0:
        return x
    out = torch.zeros_like(x)
    if k > 0:
        out[k:] = x[:-k]
    else:
        out[:k] = x[-k:]
    return out


def split_patients(records: ABRRecords, val_fraction: float, test_fraction: float, seed: int) -> dict[str, np.ndarray]:
    """Recording indices of train / val / test: whole patients, stratified by class, deterministic by `seed`.

    A patient's stratum is its rarest label (a patient with one neuropathic ear counts as neuropathic). Each class
    with at least three patients puts at least one in val and in test.
    """
    patients, inverse = np.unique(records.patient_id.astype(str), return_inverse=True)
    counts = np.bincount(records.label, minlength=len(CLASS_NAMES))
    rarity = np.argsort(np.argsort(counts))  # 0 = rarest class
    patient_rank = np.full(len(patients), len(CLASS_NAMES))
    np.minimum.at(patient_rank, inverse, rarity[records.label])
    stratum = np.argsort(rarity)[patient_rank]  # the class index of each patient's rarest label
    rng = np.random.default_rng(seed)
    assignment = np.empty(len(patients), dtype=np.int64)
    for c in range(len(CLASS_NAMES)):
        members = rng.permutation(np.flatnonzero(stratum == c))
        n = len(members)
        n_test, n_val = round(test_fraction * n), round(val_fraction * n)
        if n >= 3:
            n_test, n_val = max(n_test, int(test_fraction > 0)), max(n_val, int(val_fraction > 0))
        assignment[members] = 0
        assignment[members[:n_test]] = 2
        assignment[members[n_test : n_test + n_val]] = 1
    per_recording = assignment[inverse]
    return {split: np.flatnonzero(per_recording == k) for k, split in enumerate(SPLITS)}


def split_fingerprint(records: ABRRecords, splits: dict[str, np.ndarray]) -> str:
    """Short hash of which patients are in which split."""
    blob = "|".join(",".join(sorted(set(records.patient_id[splits[s]].astype(str)))) for s in SPLITS)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


class ABRDataModule(L.LightningDataModule):
    """Serves an ABR-schema HDF5 file: patient-level stratified splits, train-fitted normalisation.

    Args:
        path: the HDF5 file (see `schema`).
        val_fraction, test_fraction: shares of patients (per class) in val and test.
        split_seed: seed of the patient split.
        batch_size: examples per batch, all splits.
        num_workers, pin_memory, persistent_workers: DataLoader settings (persistent only with workers > 0);
            num_workers ``auto``: none on a CPU, the spare cores when a GPU trains (`abr_lab.data.workers`).
        balanced_sampling: draw train examples with probability inversely proportional to their class's size.
        augment: `Augmentation` fields (train split only); null or {} disables.
    """

    def __init__(
        self,
        path: str | None = None,
        val_fraction: float = 0.15,
        test_fraction: float = 0.15,
        split_seed: int = 0,
        batch_size: int = 64,
        num_workers: int | str = 0,
        pin_memory: bool = False,
        persistent_workers: bool = True,
        balanced_sampling: bool = False,
        augment: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
            raise ValueError(f"val_fraction={val_fraction}, test_fraction={test_fraction}: need shares summing < 1")
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size}: need >= 1")
        check_workers(num_workers)
        try:
            self.augment = Augmentation(**(augment or {}))
        except TypeError as err:
            raise ValueError(f"augment={augment}: {err} (known: probability, noise_snr_db, shift_ms, scale)") from err
        self.path = None if path is None else Path(path)
        self.records: ABRRecords | None = None
        self.splits: dict[str, np.ndarray] = {}
        self.datasets: dict[str, ABRDataset] = {}
        self.normalization: Normalization | None = None
        self.fingerprint: str | None = None

    def data_path(self) -> Path:
        if self.path is None:
            raise ValueError("data.path is not set: give the ABR HDF5 file to train on (data.path=...)")
        return self.path

    def setup(self, stage: str | None = None) -> None:
        if self.records is not None:
            return
        path = self.data_path()
        records = read_abr_file(path)
        splits = split_patients(records, self.hparams.val_fraction, self.hparams.test_fraction, self.hparams.split_seed)
        if len(splits["train"]) == 0:
            raise DataFileError(f"{path}: the train split is empty ({len(records)} recordings)")
        self.records, self.splits = records, splits
        self.fingerprint = split_fingerprint(records, splits)
        if self.normalization is None:
            self.normalization = Normalization.fit(records.subset(splits["train"]))
        for split in SPLITS:
            augment = self.augment if split == "train" else None
            rows = splits[split]
            self.datasets[split] = ABRDataset(records.subset(rows), rows, self.normalization, augment)
        rank_zero_info(self.summary())

    def split_records(self, split: str) -> ABRRecords:
        """The raw recordings of one split (for figures and baselines)."""
        if self.records is None:
            self.setup()
        assert self.records is not None
        return self.records.subset(self.splits[split])

    def summary(self) -> str:
        """Patients and recordings per split and class."""
        assert self.records is not None
        lines = [f"ABR data {self.data_path()} ({len(self.records)} recordings, split {self.fingerprint}):"]
        for split in SPLITS:
            idx = self.splits[split]
            patients = len(np.unique(self.records.patient_id[idx].astype(str)))
            per_class = np.bincount(self.records.label[idx], minlength=len(CLASS_NAMES))
            classes = ", ".join(f"{name} {n}" for name, n in zip(CLASS_NAMES, per_class, strict=True))
            lines.append(f"  {split:5s} {patients:5d} patients {len(idx):7d} recordings ({classes})")
        return "\n".join(lines)

    @property
    def class_weights(self) -> Tensor:
        """Inverse-frequency class weights of the train split (mean 1 over train examples; 0 for absent classes)."""
        assert self.records is not None, "call setup() first"
        counts = np.bincount(self.records.label[self.splits["train"]], minlength=len(CLASS_NAMES)).astype(np.float64)
        present = counts > 0
        weights = np.zeros_like(counts)
        weights[present] = counts.sum() / (present.sum() * counts[present])
        return torch.tensor(weights, dtype=torch.float32)

    def curriculum_knobs(self) -> dict[str, Knob]:
        """Training-data difficulty, when the augmentation uses it: ``data.augment_probability`` (each transform's
        chance) and ``data.noise_snr_db`` (the low end of the added noise's SNR range; the range keeps its width)."""
        if "train" not in self.datasets:
            raise RuntimeError(f"{type(self).__name__}.curriculum_knobs: call setup('fit') first")
        dataset = self.datasets["train"]
        knobs: dict[str, Knob] = {}
        if dataset.augment is not None:
            knobs["data.augment_probability"] = dataset.live.knob("probability", low=0.0, high=1.0)
            if dataset.augment.noise_snr_db is not None:
                knobs["data.noise_snr_db"] = dataset.live.knob("noise_snr_db")
        return knobs

    def _loader(self, split: str) -> DataLoader:
        dataset = self.datasets[split]
        sampler = None if split == "train" else evaluation_sampler(dataset)
        if split == "train" and self.hparams.balanced_sampling:
            sample_weights = self.class_weights[dataset.label]
            sampler = WeightedRandomSampler(sample_weights.double(), num_samples=len(dataset), replacement=True)
        workers = loader_workers(self.hparams.num_workers, self.trainer)
        return DataLoader(
            dataset,
            batch_size=self.hparams.batch_size,
            shuffle=split == "train" and sampler is None,
            sampler=sampler,
            num_workers=workers,
            pin_memory=self.hparams.pin_memory,
            persistent_workers=self.hparams.persistent_workers and workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train")

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")

    def state_dict(self) -> dict[str, Any]:
        if self.normalization is None:
            return {}
        return {"normalization": asdict(self.normalization), "split_fingerprint": self.fingerprint}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if not state_dict:
            return
        stored = state_dict.get("split_fingerprint")
        if self.fingerprint is not None and stored is not None and stored != self.fingerprint:
            raise ValueError(
                f"the checkpoint was trained on another patient split ({stored}, this data gives {self.fingerprint}): "
                "resume with the same data file, fractions and split_seed"
            )
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in state_dict["normalization"].items()}
        self.normalization = Normalization(**values)
        for dataset in self.datasets.values():
            dataset.set_normalization(self.normalization)


class SimulatedABRDataModule(ABRDataModule):
    """`ABRDataModule` over the simulator's file, generated once into `data_dir` (see `generator.SimulatorSpec`).

    Args:
        data_dir: folder of simulated files; a file name carries its parameters' hash.
        simulator: `SimulatorSpec` fields (num_patients, seed, fs_hz, duration_ms, class_prevalence, ...).
        **kwargs: `ABRDataModule` arguments (splits, batches, workers, sampling, augmentation).
    """

    def __init__(self, data_dir: str = "data/abr", simulator: dict[str, Any] | None = None, **kwargs: Any) -> None:
        if kwargs.pop("path", None) is not None:
            raise ValueError("data.path is for data=abr_file; the simulator names its own file")
        self.spec = SimulatorSpec.from_dict(dict(simulator or {}))
        super().__init__(path=str(simulated_path(data_dir, self.spec)), **kwargs)
        self.data_dir = Path(data_dir)

    def prepare_data(self) -> None:
        write_simulation(self.data_dir, self.spec)
