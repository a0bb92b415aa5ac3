"""LSTMExtractorModule: truncated BPTT stepping, metrics, and a tiny model that learns."""

from __future__ import annotations

import lightning as L
import torch

from abr_lab.lstm_extractor import LSTMExtractorModule, SinusoidDataModule
from abr_lab.lstm_extractor.module import ExtractionMetrics


def tiny_trainer(**kwargs) -> L.Trainer:
    args = dict(
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    return L.Trainer(**{**args, **kwargs})


def test_one_optimizer_step_per_chunk(tmp_path):
    dm = SinusoidDataModule(data_dir=str(tmp_path), duration_s=0.25, num_train=2, num_val=1, num_test=1, batch_size=8)
    module = LSTMExtractorModule(arch="lstm_extractor_tiny", chunk_len=100, settle_s=0.1)
    trainer = tiny_trainer(max_epochs=1, limit_val_batches=0)
    trainer.fit(module, dm)
    assert trainer.global_step == 3  # 250 steps in chunks of 100: 100, 100, 50


def test_tiny_model_learns(tmp_path):
    L.seed_everything(0)
    dm = SinusoidDataModule(data_dir=str(tmp_path), duration_s=1.0, num_train=16, num_val=4, num_test=4, batch_size=16)
    module = LSTMExtractorModule(
        arch="lstm_extractor_tiny",
        arch_kwargs={"hidden_size": 16},
        lr=1e-2,
        chunk_len=250,
        warmup_steps=1,
        settle_s=0.2,
    )
    before = tiny_trainer().validate(module, dm, verbose=False)[0]["val/mse"]
    tiny_trainer(max_epochs=8, num_sanity_val_steps=0).fit(module, dm)
    after = tiny_trainer().validate(module, dm, verbose=False)[0]["val/mse"]
    assert after < 0.8 * before, (before, after)


def test_metrics_per_frequency_and_after_settling():
    metrics = ExtractionMetrics("val", freqs=(1.0, 3.0), settle_steps=2)
    target = torch.tensor([[1.0, 1.0, 1.0, 1.0], [2.0, 2.0, 2.0, 2.0]])
    pred = torch.tensor([[0.0, 0.0, 1.0, 1.0], [2.0, 2.0, 2.0, 0.0]])
    metrics.update(pred, target, freq_index=torch.tensor([0, 1]))
    values = metrics.compute_and_reset()
    assert values["val/mse"].item() == (1 + 1 + 4) / 8
    assert values["val/mse_settled"].item() == 4 / 4
    assert values["val/mse_1hz"].item() == 2 / 4
    assert values["val/mse_3hz"].item() == 4 / 4
    assert metrics.compute_and_reset() == {}  # reset, and nothing logged for an empty epoch
