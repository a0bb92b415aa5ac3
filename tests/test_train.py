"""End-to-end runs of train.py on the tiny LSTM task: outputs, logs, resume, the command line, multirun; and every
family under bf16-mixed."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import hydra
import lightning as L
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from abr_lab.config import compose_config
from abr_lab.lstm_extractor import LSTMExtractorModule
from abr_lab.train import objective, train
from tests.conftest import TINY_LSTM, TINY_PUZZLE, TINY_SPOOF, TINY_UNET_CHECKPOINT

REPO = Path(__file__).resolve().parents[1]


def test_fast_dev_run_writes_metrics(tiny_cfg, tmp_path):
    cfg = tiny_cfg("debug=fdr")
    summary = train(cfg)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["test"]["test/mse"] == pytest.approx(summary["test"]["test/mse"])
    assert metrics["num_parameters"] == sum(
        p.numel() for p in LSTMExtractorModule(arch="lstm_extractor_tiny").parameters()
    )
    assert metrics["best_checkpoint"] is None  # fast_dev_run saves no checkpoint
    assert (tmp_path / "run" / "config.yaml").read_text().startswith("seed: 42")


def test_two_epochs_leave_checkpoints_logs_and_metrics(tiny_cfg, tmp_path):
    cfg = tiny_cfg("trainer.max_epochs=2")
    summary = train(cfg)
    run = tmp_path / "run"
    assert (run / "checkpoints" / "last.ckpt").is_file()
    best = Path(summary["best_checkpoint"])
    assert best.is_file() and best.parent == run / "checkpoints"
    assert objective(cfg, summary) == pytest.approx(float(summary["best_score"]))

    events = EventAccumulator(str(run / "tensorboard")).Reload()
    scalars = events.Tags()["scalars"]
    for tag in ("train/loss", "val/mse", "val/mse_1hz", "val/r2", "val/snr_db", "val/corr", "test/mse"):
        assert tag in scalars, tag
    assert "val/extraction" in events.Tags()["images"]

    metrics = json.loads((run / "metrics.json").read_text())
    assert {"test/mse", "test/r2", "test/snr_db", "test/corr", "test/mse_7hz"} <= set(metrics["test"])
    assert metrics["epochs"] == 2

    # the checkpoint alone rebuilds the model: no Hydra, no config
    model = LSTMExtractorModule.load_from_checkpoint(best, weights_only=True)
    assert model.hparams.arch == "lstm_extractor_tiny"


def test_lstm_noise_curriculum_is_applied_and_logged_every_epoch(tiny_cfg, tmp_path):
    train(tiny_cfg("trainer.max_epochs=2", "curriculum=lstm_noise_ramp", "data.noise_std=0.2"))
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard")).Reload()
    noise = [e.value for e in events.Scalars("curriculum/data.noise_std")]
    assert noise == pytest.approx([0.0, 0.2])  # cosine from 0 to the data's level by half-way
    assert {"health/alerts", "lr-AdamW/lstm", "lr-AdamW/head/no_decay"} <= set(events.Tags()["scalars"])


def test_resume_from_last_continues_the_epoch_counter(tiny_cfg, tmp_path):
    first = train(tiny_cfg("trainer.max_epochs=2", run="first"))
    last = tmp_path / "first" / "checkpoints" / "last.ckpt"
    ckpt = torch.load(last, map_location="cpu", weights_only=False)
    assert ckpt["epoch"] == 1 and ckpt["global_step"] == first["global_step"]

    resumed = train(tiny_cfg("trainer.max_epochs=3", f"ckpt_path={last}", run="second"))
    assert resumed["epochs"] == 3
    steps_per_epoch = first["global_step"] // 2
    assert resumed["global_step"] == first["global_step"] + steps_per_epoch
    events = EventAccumulator(str(tmp_path / "second" / "tensorboard")).Reload()
    epochs_logged = {int(e.value) for e in events.Scalars("epoch")}
    assert min(epochs_logged) == 2  # training went on at the third epoch, not from scratch


def test_last_checkpoint_is_the_final_epoch_even_without_improvement(tiny_cfg, tmp_path):
    summary = train(tiny_cfg("trainer.max_epochs=3", "model.lr=0"))  # weights frozen: val never improves
    ckpts = tmp_path / "run" / "checkpoints"
    assert Path(summary["best_checkpoint"]).name == "epoch000.ckpt"
    assert torch.load(ckpts / "last.ckpt", map_location="cpu", weights_only=False)["epoch"] == 2
    assert summary["epochs"] == 3 and summary["best_score"] is not None


def test_ema_callbacks_validate_checkpoint_and_resume_the_averaged_weights(tiny_cfg, tmp_path):
    cfg = tiny_cfg("callbacks=ema", "callbacks.ema.decay=0.9", "trainer.max_epochs=2")
    summary = train(cfg)
    ckpt = torch.load(summary["best_checkpoint"], map_location="cpu", weights_only=True)
    averaged, raw = ckpt["state_dict"], ckpt["current_model_state"]
    assert averaged.keys() == raw.keys()
    assert any(not torch.equal(averaged[k], raw[k]) for k in raw)  # the checkpoint holds the average, not the raw

    # the monitored score is the averaged weights' own: validating the checkpoint again gives it back
    model = LSTMExtractorModule.load_from_checkpoint(summary["best_checkpoint"], weights_only=True)
    datamodule = hydra.utils.instantiate(cfg.data, _convert_="all")
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    (score,) = trainer.validate(model, datamodule=datamodule, verbose=False)
    assert score[cfg.monitor.metric] == pytest.approx(summary["best_score"], rel=1e-5)

    # a run resumed with the callback loads both weight sets and its state, and goes on at the next epoch
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    resumed = train(
        tiny_cfg("callbacks=ema", "callbacks.ema.decay=0.9", "trainer.max_epochs=3", f"ckpt_path={last}", run="more")
    )
    assert resumed["epochs"] == 3 and resumed["global_step"] == summary["global_step"] * 3 // 2


def _cli(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    flags = [a for a in args if a.startswith("-")]  # flags (-m) first; the test's overrides after the tiny task's
    overrides = [a for a in args if not a.startswith("-")]
    cmd = [sys.executable, str(REPO / "train.py"), *flags, *TINY_LSTM, "logger=csv", *overrides]
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    if check:
        assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_command_line_run_layout(tmp_path):
    result = _cli("trainer.max_epochs=1", cwd=tmp_path)
    runs = list((tmp_path / "outputs" / "lstm_extractor").iterdir())
    assert len(runs) == 1
    run = runs[0]
    for name in (".hydra/config.yaml", "config.yaml", "metrics.json", "checkpoints/last.ckpt", "csv/metrics.csv"):
        assert (run / name).exists(), name
    assert "monitor:" in result.stdout  # the resolved config is printed


def test_multirun_with_ddp_sim_makes_one_sweep_with_one_directory_per_job(tmp_path):
    # spawned DDP workers must not re-launch the command line (which would start a second sweep)
    _cli("-m", "trainer=ddp_sim", "trainer.max_epochs=1", "model.lr=1e-3,2e-3", cwd=tmp_path)
    sweeps = list((tmp_path / "multirun").iterdir())
    assert len(sweeps) == 1
    jobs = sorted(p.name for p in sweeps[0].iterdir() if p.is_dir() and not p.name.startswith("."))
    assert jobs == ["0", "1"]
    for job in jobs:
        assert (sweeps[0] / job / "metrics.json").is_file()


def test_multirun_refuses_ddp_that_relaunches_the_command_line(tmp_path):
    result = _cli("-m", "trainer=ddp_sim", "trainer.strategy=ddp", "model.lr=1e-3,2e-3", cwd=tmp_path, check=False)
    assert result.returncode != 0
    assert "inside a Hydra multirun" in result.stderr and "use trainer=ddp_sim" in result.stderr
    (sweep,) = (tmp_path / "multirun").iterdir()  # no second sweep was started
    assert not list(sweep.rglob("*.ckpt"))


def test_ddp_sim_runs_two_processes_and_syncs_every_frequency(tiny_cfg, tmp_path):
    cfg = tiny_cfg("trainer=ddp_sim", "trainer.max_epochs=1", "logger=csv")
    summary = train(cfg)
    # each process sees only some conditions (DistributedSampler interleaves); the synced metrics cover all four
    assert {f"test/mse_{f}hz" for f in (1, 3, 5, 7)} <= set(summary["test"])
    assert summary["epochs"] == 1 and summary["best_score"] is not None
    assert len(list((tmp_path / "run" / "checkpoints").glob("*.ckpt"))) == 2  # best + last, written once


def test_compiled_network_trains_and_its_checkpoint_loads_uncompiled(tiny_cfg, monkeypatch):
    compiled = []
    original = torch.nn.Module.compile

    def eager_compile(self: torch.nn.Module, *args, **kwargs) -> None:
        # TorchDynamo's graph capture without Inductor's C++ build (over a minute on this CPU; measured by hand)
        compiled.append(type(self).__name__)
        original(self, *args, **{**kwargs, "backend": "eager"})

    monkeypatch.setattr(torch.nn.Module, "compile", eager_compile)
    summary = train(tiny_cfg("model.compile=true", "trainer.max_epochs=1"))
    assert compiled == ["LSTMExtractor"]
    state = torch.load(summary["best_checkpoint"], map_location="cpu", weights_only=True)["state_dict"]
    assert not any("_orig_mod" in key for key in state)

    model = LSTMExtractorModule.load_from_checkpoint(summary["best_checkpoint"], compile=False, weights_only=True)
    assert model.net._compiled_call_impl is None and compiled == ["LSTMExtractor"]
    x = torch.randn(2, 50, 1 + len(model.freqs))
    trained = LSTMExtractorModule.load_from_checkpoint(summary["best_checkpoint"], weights_only=True)  # compiles
    torch.testing.assert_close(trained.net(x)[0], model.net(x)[0])


@pytest.mark.parametrize(
    "overrides",
    [TINY_LSTM, TINY_UNET_CHECKPOINT, TINY_SPOOF, TINY_PUZZLE],
    ids=["lstm_extractor", "optimized_unet", "rawnet2", "puzzle_cnn"],
)
def test_every_family_trains_and_tests_under_bf16_mixed(overrides, tmp_path):
    """``trainer=gpu`` trains in bf16-mixed: each family's training, validation and test steps run under Lightning's
    bf16 autocast (here the CPU's) to finite metrics. PuzzleCNN's correlation once failed there on a GPU (mixed
    bf16 and float32 in one index_put)."""
    cfg = compose_config(
        [*overrides, "trainer.precision=bf16-mixed", "debug=fdr"], output_dir=tmp_path / "run", root_dir=tmp_path
    )
    summary = train(cfg)
    assert summary["test"] and all(math.isfinite(v) for v in summary["test"].values()), summary["test"]
