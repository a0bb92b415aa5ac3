"""Coming back to a run: resume in the same directory, and a run killed mid-epoch ends like an uninterrupted one."""

from __future__ import annotations

import csv
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from abr_lab.resume import resume_dir, rng_states, set_rng_states
from abr_lab.train import train

REPO = Path(__file__).resolve().parents[1]

# The tiny LSTM task in deterministic mode, with a data curriculum (its state must survive too) and the kill switch.
DETERMINISTIC_TINY = [
    "model=lstm_extractor",
    "model.arch=lstm_extractor_tiny",
    "model.chunk_len=100",
    "model.settle_s=0.1",
    "model.warmup_steps=1",
    "data.duration_s=0.5",
    "data.train_window_s=0.3",  # random windows: the data draws from the torch RNG
    "data.num_train=16",
    "data.num_val=4",
    "data.num_test=4",
    "data.batch_size=4",
    "data.noise_std=0.2",
    "curriculum=lstm_noise_ramp",
    "trainer=cpu",
    "trainer.deterministic=true",
    "trainer.max_epochs=3",
    "trainer.log_every_n_steps=1",
    "logger=csv",
    "+callbacks.kill._target_=tests.kill_switch.KillAtStep",
]
STEPS_PER_EPOCH = 48  # 16 batches x 3 truncated-BPTT chunks


def _train_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(REPO)}  # tests.kill_switch importable
    cmd = [sys.executable, str(REPO / "train.py"), *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_a_run_killed_mid_epoch_and_resumed_ends_like_the_uninterrupted_run(tmp_path):
    whole = _train_cli(*DETERMINISTIC_TINY, "+callbacks.kill.step=-1", "hydra.run.dir=whole", cwd=tmp_path)
    assert whole.returncode == 0, whole.stderr[-3000:]

    # killed by SIGKILL in the middle of the second epoch, in its default run directory
    killed = _train_cli(*DETERMINISTIC_TINY, f"+callbacks.kill.step={STEPS_PER_EPOCH + 12}", cwd=tmp_path)
    assert killed.returncode == -9, killed.stderr[-3000:]
    (run,) = (tmp_path / "outputs" / "lstm_extractor").iterdir()
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 0
    rows_before = len(list(csv.DictReader((run / "csv" / "metrics.csv").open())))
    assert not (run / "metrics.json").exists()

    # a resumed run keeps its model and data
    other = _train_cli(f"resume={run}", "model=rawnet2", cwd=tmp_path)
    assert other.returncode != 0 and "would change the run's config groups" in other.stderr

    # resume=true finds the latest run of the chosen model; the kill switch is disarmed by a key override
    resumed = _train_cli("model=lstm_extractor", "resume=true", "+callbacks.kill.step=-1", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert list((tmp_path / "outputs" / "lstm_extractor").iterdir()) == [run]  # no new run directory

    expected = json.loads((tmp_path / "whole" / "metrics.json").read_text())
    got = json.loads((run / "metrics.json").read_text())
    assert got["epochs"] == 3 and got["global_step"] == expected["global_step"] == 3 * STEPS_PER_EPOCH
    assert got["best_score"] == pytest.approx(expected["best_score"], rel=1e-6)
    assert got["test"] == pytest.approx(expected["test"], rel=1e-6, abs=1e-7)

    # the first invocation's record is kept; the resume has its own; the CSV log was continued, not replaced
    assert "+callbacks.kill.step=60" in (run / ".hydra" / "overrides.yaml").read_text()
    records = sorted((run / ".hydra").glob("resume-*/overrides.yaml"))  # the refused attempt, then the resume
    assert records and "resume=true" in records[-1].read_text()
    rows = list(csv.DictReader((run / "csv" / "metrics.csv").open()))
    assert len(rows) > rows_before and {r["epoch"] for r in rows} >= {"0", "1", "2"}


def test_resume_continues_the_api_run_in_its_directory(tiny_cfg, tmp_path):
    first = train(tiny_cfg("trainer.max_epochs=1"))
    resumed = train(tiny_cfg(f"resume={tmp_path / 'run'}", "trainer.max_epochs=2"))
    assert resumed["epochs"] == 2 and resumed["global_step"] == 2 * first["global_step"]
    assert Path(resumed["best_checkpoint"]).parent == tmp_path / "run" / "checkpoints"
    saved = (tmp_path / "run" / "config.yaml").read_text()
    assert "max_epochs: 2" in saved  # the run's config now records the override


def test_resume_dir_names_what_is_missing(tmp_path):
    assert resume_dir(None, None, "outputs/m/new") == "outputs/m/new"
    with pytest.raises(FileNotFoundError, match="no checkpoints/last.ckpt"):
        resume_dir(str(tmp_path), None, "outputs/m/new")
    with pytest.raises(FileNotFoundError, match="resume=true: no run under"):
        resume_dir(True, None, str(tmp_path / "m" / "new"))
    for name in ("2026-01-01_00-00-00", "2026-01-02_00-00-00"):
        (tmp_path / "m" / name / "checkpoints").mkdir(parents=True)
        (tmp_path / "m" / name / "checkpoints" / "last.ckpt").touch()
    (tmp_path / "m" / "2026-01-03_00-00-00").mkdir()  # a later run that never checkpointed
    assert resume_dir(None, "last", str(tmp_path / "m" / "new")) == str(tmp_path / "m" / "2026-01-02_00-00-00")


def test_rng_states_survive_a_weights_only_checkpoint(tmp_path):
    torch.save({"rng": rng_states()}, tmp_path / "s.pt")
    draws = (random.random(), np.random.rand(), torch.rand(()).item())
    set_rng_states(torch.load(tmp_path / "s.pt", weights_only=True)["rng"])
    assert (random.random(), np.random.rand(), torch.rand(()).item()) == draws
