"""Curriculum schedules: shapes at known points, positions, config errors, and the callback in a real fit
(values set before each epoch, logged, stored in checkpoints so a resumed run continues where it stopped)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from abr_lab.curriculum import Constant, Curriculum, Knob, Ramp, Step, collect_knobs, parse_schedule
from abr_lab.data.shared import SharedValues


def test_constant_everywhere() -> None:
    schedule = parse_schedule("k", {"shape": "constant", "value": 0.25})
    assert schedule == Constant(0.25)
    assert [schedule(p) for p in (0.0, 0.5, 7.0)] == [0.25, 0.25, 0.25]


def test_linear_ramp_holds_its_ends() -> None:
    ramp = parse_schedule("k", {"shape": "linear", "start": 0.2, "end": 0.6, "from": 1.0, "to": 3.0})
    assert isinstance(ramp, Ramp) and not ramp.cosine
    assert [ramp(p) for p in (0.0, 0.2, 0.3, 0.4, 0.6, 1.0)] == pytest.approx([1.0, 1.0, 1.5, 2.0, 3.0, 3.0])


def test_cosine_ramp_is_slow_at_both_ends() -> None:
    ramp = parse_schedule("k", {"shape": "cosine", "start": 0.0, "end": 1.0, "from": 0.0, "to": 1.0})
    assert ramp(0.5) == pytest.approx(0.5)
    assert ramp(0.25) == pytest.approx(0.5 * (1 - math.cos(math.pi / 4)))  # 0.146: below the linear 0.25
    assert ramp(0.0) == 0.0 and ramp(1.0) == 1.0


def test_step_switches_at_each_milestone() -> None:
    step = parse_schedule("k", {"shape": "step", "at": [2, 5], "values": [0.0, 0.5, 1.0]})
    assert step == Step((2.0, 5.0), (0.0, 0.5, 1.0))
    assert [step(e) for e in range(7)] == [0.0, 0.0, 0.5, 0.5, 0.5, 1.0, 1.0]


@pytest.mark.parametrize(
    ("cfg", "match"),
    [
        ({"shape": "sawtooth"}, r"k\.shape: unknown shape 'sawtooth'"),
        ({"value": 1.0}, r"k: expected a mapping with a 'shape'"),
        ({"shape": "linear", "start": 0, "end": 1, "from": 0}, r"missing \['to'\]"),
        ({"shape": "constant", "value": 1, "until": 3}, r"unknown \['until'\]"),
        ({"shape": "linear", "start": 0.5, "end": 0.5, "from": 0, "to": 1}, "need 0 <= start < end"),
        ({"shape": "step", "at": [3, 2], "values": [0, 1, 2]}, "need increasing 'at'"),
        ({"shape": "step", "at": [1], "values": [0]}, r"len\(values\) = len\(at\) \+ 1"),
        ({"shape": "constant", "value": "high"}, "curriculum.knobs.k: could not convert"),
    ],
)
def test_schedule_config_errors_name_the_knob(cfg: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        parse_schedule("k", cfg)


class _Trainer:
    def __init__(self, max_epochs: int | None) -> None:
        self.max_epochs = max_epochs


def test_fraction_positions_follow_max_epochs_and_epoch_positions_do_not() -> None:
    knobs = {"k": {"shape": "linear", "start": 0.0, "end": 0.5, "from": 0.0, "to": 1.0}}
    by_fraction = Curriculum(knobs, unit="fraction")
    assert [by_fraction.values_at(_Trainer(4), e)["k"] for e in range(4)] == [0.0, 0.5, 1.0, 1.0]
    assert by_fraction.values_at(_Trainer(200), 50)["k"] == pytest.approx(0.5)
    by_epoch = Curriculum({"k": {**knobs["k"], "end": 2.0}}, unit="epoch")
    assert [by_epoch.values_at(_Trainer(4), e)["k"] for e in range(4)] == [0.0, 0.5, 1.0, 1.0]
    assert by_epoch.values_at(_Trainer(200), 1)["k"] == 0.5


def test_fraction_unit_needs_max_epochs() -> None:
    curriculum = Curriculum({"k": {"shape": "constant", "value": 1.0}})
    with pytest.raises(ValueError, match="needs trainer.max_epochs"):
        curriculum.values_at(_Trainer(-1), 0)


def test_unknown_unit_and_empty_curriculum_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown unit 'steps'"):
        Curriculum({"k": {"shape": "constant", "value": 1.0}}, unit="steps")
    with pytest.raises(ValueError, match="curriculum=none"):
        Curriculum({})


# ---------------------------------------------------------------------------------------------------------------
# the callback in a fit, on a toy module and datamodule that offer one knob each


class ToyModule(L.LightningModule):
    """Linear regression whose training loss is multiplied by the knob `loss.scale`."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(2, 1)
        self.scale = 1.0

    def curriculum_knobs(self) -> dict[str, Knob]:
        return {"loss.scale": Knob(lambda: self.scale, lambda v: setattr(self, "scale", v), 0.0)}

    def training_step(self, batch: list[Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        return self.scale * nn.functional.mse_loss(self.layer(x).squeeze(-1), y)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.01)


class ToyData(L.LightningDataModule):
    def __init__(self) -> None:
        super().__init__()
        self.noise = 0.0

    def curriculum_knobs(self) -> dict[str, Knob]:
        return {"data.noise": Knob(lambda: self.noise, lambda v: setattr(self, "noise", v), 0.0, 1.0)}

    def train_dataloader(self) -> DataLoader:
        x = torch.randn(16, 2)
        return DataLoader(TensorDataset(x, x.sum(-1)), batch_size=8)


class Recorder(L.Callback):
    """What the knobs held during each training epoch (read at its first batch)."""

    def __init__(self) -> None:
        self.seen: dict[int, tuple[float, float]] = {}

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: Any, batch: Any, batch_idx: int) -> None:
        values = (round(pl_module.scale, 6), round(trainer.datamodule.noise, 6))
        self.seen.setdefault(trainer.current_epoch, values)


class StopAfter(L.Callback):
    def __init__(self, epochs: int) -> None:
        self.epochs = epochs

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: Any) -> None:
        if trainer.current_epoch + 1 >= self.epochs:
            trainer.should_stop = True


STAGED = {
    "loss.scale": {"shape": "step", "at": [0.25, 0.75], "values": [0.0, 1.0, 2.0]},
    "data.noise": {"shape": "linear", "start": 0.0, "end": 1.0, "from": 0.0, "to": 0.8},
}


def fit(tmp_path: Path, *callbacks: L.Callback, ckpt_path: str | None = None, logger: Any = False) -> L.Trainer:
    trainer = L.Trainer(
        max_epochs=4,
        accelerator="cpu",
        devices=1,
        callbacks=[Curriculum(STAGED), *callbacks],
        logger=logger,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(ToyModule(), datamodule=ToyData(), ckpt_path=ckpt_path)
    return trainer


EXPECTED = {0: (0.0, 0.0), 1: (1.0, 0.2), 2: (1.0, 0.4), 3: (2.0, 0.6)}


def test_knobs_hold_the_scheduled_values_during_each_epoch_and_are_logged(tmp_path: Path) -> None:
    from lightning.pytorch.loggers import CSVLogger

    recorder = Recorder()
    fit(tmp_path, recorder, logger=CSVLogger(tmp_path, name="csv"))
    assert recorder.seen == EXPECTED
    rows = (tmp_path / "csv" / "version_0" / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    logged = [dict(zip(header, r.split(","), strict=True)) for r in rows[1:]]
    noise = [float(r["curriculum/data.noise"]) for r in logged if r["curriculum/data.noise"]]
    assert noise == pytest.approx([0.0, 0.2, 0.4, 0.6])


def test_a_resumed_run_continues_at_the_same_schedule_point(tmp_path: Path) -> None:
    first = fit(tmp_path, StopAfter(2))
    ckpt = tmp_path / "half.ckpt"
    first.save_checkpoint(ckpt)
    state = torch.load(ckpt, weights_only=False)["callbacks"]["Curriculum"]
    assert state == {"values": pytest.approx({"loss.scale": 1.0, "data.noise": 0.2}), "epoch": 1}

    recorder = Recorder()
    fit(tmp_path, recorder, ckpt_path=str(ckpt))
    assert recorder.seen == {2: EXPECTED[2], 3: EXPECTED[3]}


def test_an_unknown_knob_is_named_with_the_known_ones(tmp_path: Path) -> None:
    trainer = L.Trainer(
        max_epochs=1, logger=False, callbacks=[Curriculum({"loss.typo": {"shape": "constant", "value": 1}})]
    )
    with pytest.raises(ValueError, match=r"unknown knob 'loss.typo'.*known: data.noise, loss.scale"):
        trainer.fit(ToyModule(), datamodule=ToyData())


def test_a_value_outside_the_knobs_range_is_refused_before_training(tmp_path: Path) -> None:
    bad = {"data.noise": {"shape": "linear", "start": 0, "end": 1, "from": 0.0, "to": 1.5}}
    trainer = L.Trainer(max_epochs=1, logger=False, callbacks=[Curriculum(bad)])
    with pytest.raises(ValueError, match=r"data.noise = 1.5 is outside its range \[0.0, 1.0\]"):
        trainer.fit(ToyModule(), datamodule=ToyData())


def test_a_knob_offered_twice_is_refused() -> None:
    class Both(ToyData):
        def curriculum_knobs(self) -> dict[str, Knob]:
            return {"loss.scale": Knob(lambda: 0.0, lambda v: None)}

    with pytest.raises(ValueError, match="knob 'loss.scale' is offered twice"):
        collect_knobs(ToyModule(), Both())


# ---------------------------------------------------------------------------------------------------------------
# a data knob read inside persistent DataLoader workers, in a real fit


class LiveDataset(torch.utils.data.Dataset):
    """Every item carries the value of the shared knob as the worker that built it saw it."""

    def __init__(self) -> None:
        self.live = SharedValues(level=0.0)

    def __len__(self) -> int:
        return 8

    def __getitem__(self, index: int) -> Tensor:
        return torch.tensor([float(index), self.live["level"]])


class WorkerData(L.LightningDataModule):
    def __init__(self) -> None:
        super().__init__()
        self.dataset = LiveDataset()

    def curriculum_knobs(self) -> dict[str, Knob]:
        return {"data.level": self.dataset.live.knob("level", low=0.0)}

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.dataset, batch_size=2, num_workers=2, persistent_workers=True)


class LevelModule(L.LightningModule):
    """Records the knob value each training batch was built with, per epoch."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(1, 1)
        self.levels: dict[int, set[float]] = {}

    def training_step(self, batch: Tensor, batch_idx: int) -> Tensor:
        self.levels.setdefault(self.current_epoch, set()).update(batch[:, 1].tolist())
        return self.layer(batch[:, :1]).pow(2).mean()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.01)


def test_a_data_knob_reaches_persistent_workers_before_each_epoch_starts(tmp_path: Path) -> None:
    # workers prefetch as soon as an epoch's iterator exists: every batch of epoch e must carry epoch e's value
    module = LevelModule()
    trainer = L.Trainer(
        max_epochs=3,
        accelerator="cpu",
        devices=1,
        callbacks=[Curriculum({"data.level": {"shape": "step", "at": [1, 2], "values": [0.0, 1.0, 2.0]}}, "epoch")],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(module, datamodule=WorkerData())
    assert module.levels == {0: {0.0}, 1: {1.0}, 2: {2.0}}
