"""abr_lab.summary: the model summary of a fit counts one training sample's FLOPs, and reading it changes nothing."""

from __future__ import annotations

import hydra
import lightning as L
import pytest
import torch
from lightning.pytorch.utilities.model_summary import summarize

from abr_lab.config import compose_config
from abr_lab.lstm_extractor import LSTMExtractorModule, SinusoidDataModule
from abr_lab.rawnet2 import RawNet2Module, SpoofSynthDataModule
from tests.conftest import TINY_LSTM, TINY_PUZZLE, TINY_SPOOF, TINY_UNET


def fit_nothing(module: L.LightningModule, datamodule: L.LightningDataModule, **kwargs) -> None:
    """A fit of no epochs: setup and the model summary run, no training step does."""
    args = dict(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False, max_epochs=0)
    L.Trainer(**{**args, **kwargs}).fit(module, datamodule)


def sinusoids(tmp_path) -> SinusoidDataModule:
    return SinusoidDataModule(data_dir=str(tmp_path), duration_s=0.25, num_train=2, num_val=1, num_test=1, batch_size=2)


def test_lstm_summary_counts_one_training_signal(tmp_path) -> None:
    module = LSTMExtractorModule(arch="lstm_extractor_tiny", chunk_len=100, settle_s=0.1)
    fit_nothing(module, sinusoids(tmp_path))
    (x,) = module.example_input_array
    steps = 250  # one training signal: 0.25 s at 1 kHz
    assert x.shape == (1, steps, 5)
    matrices = [p for name, p in module.net.named_parameters() if p.ndim == 2]  # LSTM gates and the read-out
    by_hand = sum(2 * steps * p.numel() for p in matrices)
    assert summarize(module).total_flops == by_hand


def test_no_example_without_a_summary_or_when_compiled(tmp_path) -> None:
    module = LSTMExtractorModule(arch="lstm_extractor_tiny", chunk_len=100, settle_s=0.1)
    fit_nothing(module, sinusoids(tmp_path), enable_model_summary=False)
    assert module.example_input_array is None
    module.hparams.compile = True  # as model.compile=true: the summary's forward would compile a graph of its own
    fit_nothing(module, sinusoids(tmp_path))
    assert module.example_input_array is None


def test_reading_the_sample_leaves_the_rng_alone(tmp_path) -> None:
    """Random crops draw from torch's RNG: the sample is read with it forked."""
    datamodule = SpoofSynthDataModule(
        data_dir=str(tmp_path),
        num_train=4,
        num_val=2,
        num_test=2,
        min_seconds=0.2,
        max_seconds=0.3,
        clip_samples=1000,
        random_crop=True,
        batch_size=2,
    )
    module = RawNet2Module(arch="rawnet2_tiny")
    fit_nothing(module, datamodule)
    assert module.example_input_array[0].shape == (1, 1000)
    torch.manual_seed(0)
    module.setup("fit")
    after_setup = torch.rand(3)
    torch.manual_seed(0)
    assert torch.equal(torch.rand(3), after_setup)


@pytest.mark.parametrize("tiny", [TINY_LSTM, TINY_UNET, TINY_SPOOF, TINY_PUZZLE], ids=lambda t: t[0])
def test_every_family_summary_counts_flops(tiny, tmp_path) -> None:
    """Each family's example runs through its `forward` as collated by its own loader: one sample (a puzzle
    with its pieces), FLOPs counted."""
    cfg = compose_config(tiny, output_dir=tmp_path / "run", root_dir=tmp_path)
    module = hydra.utils.instantiate(cfg.model, _convert_="all")
    fit_nothing(module, hydra.utils.instantiate(cfg.data, _convert_="all"))
    first = module.example_input_array[0]
    assert first.shape[0] == (cfg.data.get("pieces_per_puzzle") or 1)
    assert summarize(module).total_flops > 0
