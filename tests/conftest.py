"""Shared fixtures: the real config, shrunk to run in seconds on a CPU."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import DictConfig

from abr_lab.config import compose_config

# Tiny sinusoid task: 8 train signals of 0.5 s (0.3-s training windows), a 1-layer 8-unit LSTM, 100-step chunks.
TINY_LSTM = [
    "model=lstm_extractor",
    "model.arch=lstm_extractor_tiny",
    "model.chunk_len=100",
    "model.settle_s=0.1",
    "model.warmup_steps=1",
    "data.duration_s=0.5",
    "data.train_window_s=0.3",
    "data.num_train=8",
    "data.num_val=4",
    "data.num_test=4",
    "data.batch_size=8",
    "trainer=cpu",
    "trainer.log_every_n_steps=1",
]

# Tiny ABR task: the small simulated data set, the tiny U-Net.
TINY_UNET = [
    "model=optimized_unet",
    "model.arch=optimized_unet_tiny",
    "data=abr_small",
    "data.batch_size=32",
    "trainer=cpu",
    "trainer.max_epochs=1",
    "trainer.log_every_n_steps=1",
    "model.warmup_steps=2",
    "model.figure_every_n_epochs=1",
    "callbacks.waterfall.every_n_epochs=1",
]

# The tiny U-Net on a 12-patient simulation, two training batches, no logger: seconds, and a real checkpoint.
TINY_UNET_CHECKPOINT = [
    "model=optimized_unet",
    "model.arch=optimized_unet_tiny",
    "model.warmup_steps=1",
    "model.figure_every_n_epochs=0",
    "data=abr_small",
    "data.simulator.num_patients=12",
    "data.batch_size=8",
    "trainer=cpu",
    "trainer.max_epochs=1",
    "+trainer.limit_train_batches=2",
    "+trainer.limit_val_batches=1",
    "+trainer.limit_test_batches=1",
    "+trainer.num_sanity_val_steps=0",
    "logger=none",
]

# Tiny anti-spoofing task: 0.2-0.3 s utterances, 4,000-sample clips, the few-thousand-parameter RawNet2.
TINY_SPOOF = [
    "model=rawnet2",
    "model.arch=rawnet2_tiny",
    "data.num_train=20",
    "data.num_val=10",
    "data.num_test=20",
    "data.min_seconds=0.2",
    "data.max_seconds=0.3",
    "data.clip_samples=4000",
    "data.batch_size=10",
    "trainer=cpu",
    "trainer.max_epochs=1",
    "trainer.log_every_n_steps=1",
]

# Tiny puzzle task: 64-px puzzles cut 2 x 2, the test ResNet backbone.
TINY_PUZZLE = [
    "model=puzzle_cnn",
    "model.arch=puzzle_cnn_tiny",
    "model.warmup_steps=1",
    "data.puzzle_size=64",
    "data.rows=2",
    "data.cols=2",
    "data.pieces_per_puzzle=4",
    "data.puzzles_per_epoch=4",
    "data.puzzles_per_image=1",
    "data.batch_size=2",
    "trainer=cpu",
    "trainer.max_epochs=1",
    "trainer.log_every_n_steps=1",
]


@pytest.fixture
def tiny_cfg(tmp_path: Path):
    """Factory: the tiny LSTM config rooted in `tmp_path` (data, outputs), plus extra overrides."""

    def make(*overrides: str, run: str = "run") -> DictConfig:
        return compose_config([*TINY_LSTM, *overrides], output_dir=tmp_path / run, root_dir=tmp_path)

    return make
