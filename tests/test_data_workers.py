"""`abr_lab.data.workers`: ``num_workers: auto`` is 0 on a CPU and the spare cores when a GPU trains; counts pass
through; anything else is refused by name, by every DataModule."""

from __future__ import annotations

from types import SimpleNamespace

import lightning as L
import pytest

from abr_lab.data import workers
from abr_lab.data.workers import check_workers, loader_workers
from abr_lab.lstm_extractor.datamodule import SinusoidDataModule
from abr_lab.optimized_unet.datamodule import ABRDataModule
from abr_lab.puzzle_cnn.datamodule import PuzzlePhotosDataModule
from abr_lab.rawnet2.datamodule import SpoofSynthDataModule


def gpu_trainer(devices: int) -> SimpleNamespace:
    """What `loader_workers` reads of a Trainer on a GPU machine: a non-CPU accelerator and the devices here."""
    return SimpleNamespace(accelerator=object(), num_devices=devices)


def test_a_count_is_used_as_given_whatever_the_device():
    assert loader_workers(3, None) == 3 and loader_workers(0, gpu_trainer(1)) == 0


def test_auto_is_no_worker_on_a_cpu_or_without_a_trainer():
    assert loader_workers("auto", None) == 0
    assert loader_workers("auto", L.Trainer(accelerator="cpu", logger=False)) == 0


@pytest.mark.parametrize(("cores", "devices", "expected"), [(16, 1, 8), (16, 2, 7), (4, 4, 0), (6, 2, 2), (64, 1, 8)])
def test_auto_on_a_gpu_shares_the_cores_between_the_devices_less_the_training_process(
    monkeypatch, cores, devices, expected
):
    monkeypatch.setattr(workers, "usable_cores", lambda: cores)
    assert loader_workers("auto", gpu_trainer(devices)) == expected


@pytest.mark.parametrize("value", [-1, "lots", True, 2.5])
def test_anything_else_is_refused_by_name(value):
    with pytest.raises(ValueError, match="num_workers"):
        check_workers(value)


@pytest.mark.parametrize("make", [SinusoidDataModule, ABRDataModule, SpoofSynthDataModule, PuzzlePhotosDataModule])
def test_datamodules_take_auto_and_refuse_a_bad_value(make):
    make(num_workers="auto")
    with pytest.raises(ValueError, match="num_workers"):
        make(num_workers="lots")
