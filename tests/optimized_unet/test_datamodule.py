"""ABR DataModule: patient-level splits without leakage, train-only statistics, train-only augmentation."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from hydra.utils import instantiate

from abr_lab.config import compose_config
from abr_lab.optimized_unet.datamodule import ABRDataModule, Normalization, SimulatedABRDataModule
from abr_lab.optimized_unet.generator import SimulatorSpec, simulate
from abr_lab.optimized_unet.schema import CLASS_NAMES, write_abr_file

EQUAL_CLASSES = {"num_patients": 60, "seed": 2, "class_prevalence": [1, 1, 1, 1, 1]}


@pytest.fixture(scope="module")
def sim_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    records = simulate(SimulatorSpec(**EQUAL_CLASSES)).records
    return write_abr_file(tmp_path_factory.mktemp("abr") / "sim.h5", records, {}, source="simulator")


def make(path: Path, **kwargs) -> ABRDataModule:
    dm = ABRDataModule(path=str(path), batch_size=16, **kwargs)
    dm.setup()
    return dm


def test_config_builds_and_generates(tmp_path: Path) -> None:
    cfg = compose_config(["data=abr_small"], output_dir=tmp_path / "run", root_dir=tmp_path)
    dm = instantiate(cfg.data, _convert_="all")
    assert isinstance(dm, SimulatedABRDataModule)
    dm.prepare_data()
    dm.setup()
    assert dm.data_path().parent == tmp_path / "data" / "abr" and dm.data_path().exists()
    batch = next(iter(dm.train_dataloader()))
    b, t = 64, 300
    shapes = {k: tuple(v.shape) for k, v in batch.items()}
    assert shapes == {
        "signal": (b, 1, t),
        "clean": (b, 1, t),
        "static": (b, 4),
        "static_raw": (b, 4),
        "peaks": (b, 3, 2),
        "peak_mask": (b, 3),
        "label": (b,),
        "threshold": (b,),
        "index": (b,),
    }
    assert batch["peak_mask"].dtype == torch.bool and batch["label"].dtype == torch.long


def test_unknown_options_are_named(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="num_patiens"):
        SimulatedABRDataModule(data_dir=str(tmp_path), simulator={"num_patiens": 3})
    with pytest.raises(ValueError, match="shift"):
        ABRDataModule(path="x.h5", augment={"shift": 1.0})
    cfg = compose_config(["data=abr_file"], output_dir=tmp_path / "run", root_dir=tmp_path)
    with pytest.raises(Exception, match="path"):
        instantiate(cfg.data)  # data.path is mandatory for a file


def test_patients_never_straddle_splits_and_classes_are_stratified(sim_file: Path) -> None:
    dm = make(sim_file)
    ids = {split: set(dm.split_records(split).patient_id) for split in ("train", "val", "test")}
    assert not ids["train"] & ids["val"] and not ids["train"] & ids["test"] and not ids["val"] & ids["test"]
    assert sum(len(dm.splits[s]) for s in dm.splits) == len(dm.records)
    for split in ("val", "test"):
        assert set(dm.split_records(split).label) == set(range(len(CLASS_NAMES)))  # every class in every split
    again, other = make(sim_file), make(sim_file, split_seed=1)
    assert again.fingerprint == dm.fingerprint and other.fingerprint != dm.fingerprint


def test_normalisation_is_fitted_on_train_only(sim_file: Path, tmp_path: Path) -> None:
    dm = make(sim_file)
    held_out = np.concatenate([dm.splits["val"], dm.splits["test"]])
    records = dm.records
    signal, static = records.signal.copy(), records.static.copy()
    signal[held_out] *= 100.0
    static[held_out, 0] += 30.0
    changed = dataclasses.replace(records, signal=signal, static=static)
    path = write_abr_file(tmp_path / "changed.h5", changed, {}, source="simulator")
    assert make(path).normalization == dm.normalization  # held-out data do not move the statistics
    assert dm.normalization == Normalization.fit(records.subset(dm.splits["train"]))
    train = dm.datasets["train"]
    assert train.static.mean(0).abs().max() < 1e-4 and (train.static.std(0) - 1).abs().max() < 0.01
    assert float(train.signal.std()) == pytest.approx(dm.normalization.signal_std, rel=1e-4)


def test_normalisation_travels_with_the_checkpoint(sim_file: Path, tmp_path: Path) -> None:
    class Tiny(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.layer = torch.nn.Linear(4, 1)

        def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
            return self.layer(batch["static"]).pow(2).mean()

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=0.01)

    dm = ABRDataModule(path=str(sim_file), batch_size=16)
    trainer = L.Trainer(max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False)
    trainer.fit(Tiny(), datamodule=dm)
    trainer.save_checkpoint(tmp_path / "x.ckpt")
    stored = torch.load(tmp_path / "x.ckpt", weights_only=False)["ABRDataModule"]
    assert stored["normalization"]["signal_std"] == dm.normalization.signal_std

    resumed = make(sim_file)
    tampered = {**stored, "normalization": {**stored["normalization"], "signal_std": 123.0}}
    resumed.load_state_dict(tampered)
    assert resumed.normalization.signal_std == 123.0 and resumed.datasets["val"].norm.signal_std == 123.0
    other_split = make(sim_file, split_seed=5)
    with pytest.raises(ValueError, match="another patient split"):
        other_split.load_state_dict(stored)


def test_augmentation_is_train_only_and_moves_labels_with_the_signal(sim_file: Path) -> None:
    dm = make(sim_file, augment={"probability": 1.0, "shift_ms": 0.2, "scale": 0.2})
    val = dm.datasets["val"]
    assert torch.equal(val[0]["signal"], val[0]["signal"])  # no randomness outside train
    train = dm.datasets["train"]
    loud_normal = train.peak_mask[:, 2] & (train.label == 0) & (train.static_raw[:, 1] == 80)
    row = int(torch.nonzero(loud_normal)[0])
    torch.manual_seed(0)
    items = [train[row] for _ in range(20)]
    assert len({float(item["signal"].sum()) for item in items}) > 1
    time_ms = 1000.0 * torch.arange(train.signal.shape[1]) / train.fs_hz
    ratio = []
    for item in items:
        clean = item["clean"][0] * dm.normalization.signal_std  # µV
        latency, amplitude = item["peaks"][2]
        at = int(torch.argmin((time_ms - latency).abs()))
        assert abs(int(torch.argmax(clean[at - 4 : at + 5])) - 4) <= 1  # the peak moved with its label
        ratio.append(float(clean[at] / amplitude))
    assert np.std(ratio) < 0.05 * abs(np.mean(ratio))  # amplitude labels scale with the signal


def test_noise_augmentation_hits_the_requested_snr(sim_file: Path) -> None:
    dm = make(sim_file, augment={"probability": 1.0, "noise_snr_db": [10.0, 10.0]})
    train = dm.datasets["train"]
    row = int(torch.nonzero(train.peak_mask[:, 2])[0])
    added = torch.stack([train[row]["signal"][0] for _ in range(200)]) - train.signal[row] / train.norm.signal_std
    clean_power = (train.clean[row] / train.norm.signal_std).pow(2).mean()
    assert 10 * torch.log10(clean_power / added.pow(2).mean()) == pytest.approx(10.0, abs=0.3)


def test_curriculum_knobs_set_the_augmentation_snr_and_probability(sim_file: Path) -> None:
    dm = make(sim_file, augment={"probability": 1.0, "noise_snr_db": [10.0, 10.0]})
    knobs = dm.curriculum_knobs()
    assert set(knobs) == {"data.augment_probability", "data.noise_snr_db"}
    train = dm.datasets["train"]
    row = int(torch.nonzero(train.peak_mask[:, 2])[0])
    clean_power = (train.clean[row] / train.norm.signal_std).pow(2).mean()

    def snr_db() -> float:
        added = torch.stack([train[row]["signal"][0] for _ in range(200)]) - train.signal[row] / train.norm.signal_std
        return float(10 * torch.log10(clean_power / added.pow(2).mean()))

    knobs["data.noise_snr_db"].set(20.0)  # easier: the SNR range [10, 10] moves to [20, 20]
    assert snr_db() == pytest.approx(20.0, abs=0.3)
    knobs["data.augment_probability"].set(0.0)  # no augmentation at all
    assert torch.equal(train[row]["signal"][0], train.signal[row] / train.norm.signal_std)


def test_no_data_knob_without_the_augmentation_it_would_drive(sim_file: Path) -> None:
    assert make(sim_file, augment={"probability": 0.0}).curriculum_knobs() == {}
    assert set(make(sim_file, augment={"scale": 0.1}).curriculum_knobs()) == {"data.augment_probability"}


def test_balanced_sampling_and_class_weights(sim_file: Path) -> None:
    records = simulate(SimulatorSpec(num_patients=80, seed=4)).records  # clinical prevalence: ~80 % normal
    path = write_abr_file(sim_file.parent / "clinical.h5", records, {}, source="simulator")
    dm = make(path, balanced_sampling=True)
    train_labels = dm.datasets["train"].label
    weights = dm.class_weights
    assert float(weights[train_labels].mean()) == pytest.approx(1.0)
    torch.manual_seed(0)
    drawn = torch.cat([b["label"] for _, b in zip(range(40), dm.train_dataloader(), strict=False)])
    shares = torch.bincount(drawn, minlength=5).float() / len(drawn)
    present = torch.bincount(train_labels, minlength=5) > 0
    assert (shares[present] - 1 / present.sum()).abs().max() < 0.08
    assert float((train_labels == 0).float().mean()) > 0.6  # the file itself is imbalanced


def test_any_signal_length(tmp_path: Path) -> None:
    records = simulate(SimulatorSpec(num_patients=8, seed=1, fs_hz=16000.0, duration_ms=10.0)).records
    dm = make(write_abr_file(tmp_path / "short.h5", records, {}, source="simulator"))
    assert next(iter(dm.val_dataloader()))["signal"].shape[-1] == 160


def test_loader_settings_reach_the_dataloader(sim_file: Path) -> None:
    dm = make(sim_file, num_workers=1, pin_memory=True, persistent_workers=True)
    loader = dm.train_dataloader()
    assert loader.num_workers == 1 and loader.pin_memory and loader.persistent_workers
    assert not make(sim_file, num_workers=0).val_dataloader().persistent_workers
