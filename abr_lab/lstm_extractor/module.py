"""LightningModule of the LSTM extractor: truncated BPTT training, full-sequence evaluation, per-frequency metrics.

Lightning 2.x has no built-in truncated BPTT, so training uses manual optimisation: each signal is cut into chunks
of `chunk_len` steps; the LSTM state is carried from chunk to chunk and detached between them, so gradients flow
through time inside a chunk (never across), and every chunk is one optimiser step. State starts at zero for each
new batch of signals.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from torch import Tensor, nn

from abr_lab.loggers import tensorboard_writers
from abr_lab.lstm_extractor.network import LSTMState, build_inputs, detach_state
from abr_lab.metrics import WaveformMetrics
from abr_lab.metrics.mean import SplitMean
from abr_lab.optim import parameter_groups, warmup_cosine
from abr_lab.registry import compile_network, create_model
from abr_lab.summary import set_example_input

Batch = dict[str, Tensor]
LR_PARTS = ("lstm", "head")


class ExtractionMetrics(nn.Module):
    """One stage's metrics: overall and per frequency over whole signals, and MSE after the settling time."""

    def __init__(self, stage: str, freqs: Sequence[float], settle_steps: int) -> None:
        super().__init__()
        self.stage, self.settle_steps = stage, settle_steps
        self.whole = WaveformMetrics(group_names=tuple(f"{f:g}hz" for f in freqs))
        self.settled = WaveformMetrics()

    def update(self, pred: Tensor, target: Tensor, freq_index: Tensor) -> None:
        """pred, target (b, t); freq_index (b,)."""
        self.whole.update(pred, target, freq_index)
        if pred.shape[1] > self.settle_steps:
            self.settled.update(pred[:, self.settle_steps :], target[:, self.settle_steps :])

    def compute_and_reset(self) -> dict[str, Tensor]:
        """`<stage>/<metric>[_<freq>hz]` and `<stage>/mse_settled` for what was seen this epoch; then reset.

        Every process calls this (the values are synced), and keys depend only on the synced counts.
        """
        values = {f"{self.stage}/{k}": v for k, v in self.whole.compute().items()}
        settled = self.settled.compute()
        if "mse" in settled:
            values[f"{self.stage}/mse_settled"] = settled["mse"]
        with torch.inference_mode(False):  # fresh states must not be inference tensors: fit may follow validate
            self.whole.reset()
            self.settled.reset()
        return values


class LSTMExtractorModule(L.LightningModule):
    """Trains a registered LSTM extractor variant with truncated BPTT.

    Args:
        arch: registered variant name (`abr_lab.registry.list_models("lstm_extractor")`).
        arch_kwargs: overrides of the variant's keyword arguments (e.g. ``{"hidden_size": 128}``).
        freqs: the data's frequencies in Hz (their number sets the condition width; names the metrics).
        fs: the data's sampling rate in Hz (turns `settle_s` into steps, labels the figures).
        lr: peak learning rate of AdamW.
        lr_multipliers: a factor on `lr` per part (``lstm``, ``head``); 1 where not given.
        weight_decay: AdamW weight decay of the weight matrices (not of biases).
        warmup_steps: linear warm-up, in batches (the rate changes once per batch, not per chunk), before the
            cosine decay.
        min_lr_ratio: floor of the cosine decay as a fraction of `lr`.
        chunk_len: truncated-BPTT length in steps: gradients flow through time within a chunk only.
        grad_clip: max global gradient norm per optimiser step (0 disables).
        settle_s: `mse_settled` skips this many seconds at the start of each signal, where no causal
            estimator can know the amplitude and phase yet.
        figure_every_n_epochs: how often the validation figure goes to TensorBoard (0 disables).
        compile: compile the network with torch.compile (`abr_lab.registry.compile_network`); checkpoints load
            into an uncompiled network.
        chrono_init: initialise the LSTM gate biases for memories as long as the slowest period, fs / min(freqs)
            steps (chrono initialisation); without it the LSTM starts with a memory of a few steps and learns
            the task several times more slowly.
    """

    def __init__(
        self,
        arch: str = "lstm_extractor",
        arch_kwargs: dict[str, Any] | None = None,
        freqs: Sequence[float] = (1.0, 3.0, 5.0, 7.0),
        fs: float = 1000.0,
        lr: float = 3e-3,
        lr_multipliers: dict[str, float] | None = None,
        weight_decay: float = 0.0,
        warmup_steps: int = 100,
        min_lr_ratio: float = 0.05,
        chunk_len: int = 500,
        grad_clip: float = 1.0,
        settle_s: float = 1.0,
        figure_every_n_epochs: int = 1,
        chrono_init: bool = True,
        compile: bool = False,
    ) -> None:
        super().__init__()
        if chunk_len < 1:
            raise ValueError(f"chunk_len={chunk_len}: need >= 1")
        self.save_hyperparameters()
        self.automatic_optimization = False  # truncated BPTT: one optimiser step per chunk
        self.freqs = [float(f) for f in freqs]
        init = {"chrono_max_steps": int(round(fs / min(self.freqs)))} if chrono_init else {}
        self.net = create_model(arch, in_chans=1 + len(self.freqs), **{**init, **(arch_kwargs or {})})
        if compile:
            compile_network(self.net)
        settle_steps = int(round(settle_s * fs))
        self.metrics = nn.ModuleDict({s: ExtractionMetrics(s, self.freqs, settle_steps) for s in ("val", "test")})
        # the split's MSE as a sum and a count: exact across processes (a mean of per-process means is not)
        self.split_loss = nn.ModuleDict({s: SplitMean() for s in ("val", "test")})
        self._figure: tuple[Batch, Tensor] | None = None  # first validation batch and its prediction

    def setup(self, stage: str) -> None:
        set_example_input(self, stage, lambda batch: (build_inputs(batch["mixture"], batch["condition"]),))

    def forward(self, x: Tensor, state: LSTMState | None = None) -> tuple[Tensor, LSTMState]:
        return self.net(x, state)

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        optimizer, scheduler = self.optimizers(), self.lr_schedulers()
        x = build_inputs(batch["mixture"], batch["condition"])  # (b, t, 1 + k)
        target = batch["target"]  # (b, t)
        state: LSTMState | None = None  # a new batch of signals starts from zero state
        total, steps = x.new_zeros(()), 0
        for start in range(0, x.shape[1], self.hparams.chunk_len):
            stop = start + self.hparams.chunk_len
            loss, state = self.chunk_loss(x[:, start:stop], target[:, start:stop], state)
            optimizer.zero_grad(set_to_none=True)
            self.manual_backward(loss)
            if self.hparams.grad_clip > 0:
                self.clip_gradients(optimizer, gradient_clip_val=self.hparams.grad_clip, gradient_clip_algorithm="norm")
            optimizer.step()
            state = detach_state(state)  # carry the values, cut the graph
            total, steps = total + loss.detach(), steps + 1
        scheduler.step()
        loss = total / steps
        self.log("train/loss", loss, batch_size=x.shape[0])
        return loss

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        pred = self._evaluate(batch, "val")
        if batch_idx == 0:
            self._figure = batch, pred

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def predict_step(self, batch: Batch, batch_idx: int) -> Tensor:
        return self.net(build_inputs(batch["mixture"], batch["condition"]))[0]

    def configure_optimizers(self) -> dict[str, Any]:
        groups = parameter_groups(
            self.net,
            lambda name, _: "head" if name.startswith("head.") else "lstm",
            LR_PARTS,
            self.hparams.lr,
            self.hparams.weight_decay,
            self.hparams.lr_multipliers,
        )
        optimizer = torch.optim.AdamW(groups, lr=self.hparams.lr)
        # stepped once per batch of signals (all chunks of a batch share one rate)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        warmup = min(self.hparams.warmup_steps, total // 2)
        scheduler = warmup_cosine(optimizer, warmup, total, self.hparams.min_lr_ratio)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_validation_epoch_end(self) -> None:
        self._log_metrics("val")
        every = self.hparams.figure_every_n_epochs
        if every and self._figure is not None and self.current_epoch % every == 0:
            self._log_figure(*self._figure)
        self._figure = None

    def on_test_epoch_end(self) -> None:
        self._log_metrics("test")

    def chunk_loss(self, x: Tensor, target: Tensor, state: LSTMState | None) -> tuple[Tensor, LSTMState]:
        """MSE of one truncated-BPTT chunk: x (b, l, 1 + k), target (b, l); returns the loss and the final state."""
        pred, state = self.net(x, state)  # (b, l)
        return F.mse_loss(pred, target), state

    def _evaluate(self, batch: Batch, stage: str) -> Tensor:
        x = build_inputs(batch["mixture"], batch["condition"])  # (b, t, 1 + k)
        pred, _ = self.net(x)  # (b, t): the whole signal in one pass from zero state
        target = batch["target"]
        self.split_loss[stage].update(F.mse_loss(pred, target), weight=x.shape[0])  # equal lengths: a mean of rows
        self.log(f"{stage}/loss", self.split_loss[stage], batch_size=x.shape[0])
        self.metrics[stage].update(pred, target, batch["freq_index"])
        return pred

    def _log_metrics(self, stage: str) -> None:
        for key, value in self.metrics[stage].compute_and_reset().items():
            self.log(key, value, prog_bar=key == f"{stage}/mse")

    def _log_figure(self, batch: Batch, pred: Tensor) -> None:
        writers = tensorboard_writers(self.loggers)
        if not writers:
            return
        fig = extraction_figure(batch, pred, self.freqs, self.hparams.fs)
        for writer in writers:
            writer.add_figure("val/extraction", fig, global_step=self.current_epoch)


def extraction_figure(batch: Batch, pred: Tensor, freqs: Sequence[float], fs: float, seconds: float = 3.0) -> Figure:
    """Mixture, target and prediction of the first example of each frequency in `batch`, over the first seconds."""
    steps = min(batch["mixture"].shape[1], int(seconds * fs))
    t = torch.arange(steps) / fs
    fig = Figure(figsize=(10, 2.2 * len(freqs)))
    axes = fig.subplots(len(freqs), 1, sharex=True, squeeze=False)[:, 0]
    for k, (ax, f) in enumerate(zip(axes, freqs, strict=True)):
        rows = (batch["freq_index"] == k).nonzero()
        if len(rows) == 0:
            ax.set_title(f"{f:g} Hz: no example in this batch")
            continue
        i = int(rows[0])
        ax.plot(t, batch["mixture"][i, :steps].cpu(), color="0.7", lw=0.8, label="mixture")
        ax.plot(t, batch["target"][i, :steps].cpu(), color="k", lw=1.2, label="target")
        ax.plot(t, pred[i, :steps].float().cpu(), color="tab:red", lw=1.0, ls="--", label="prediction")
        ax.set_title(f"{f:g} Hz")
    axes[0].legend(loc="upper right", ncol=3)
    axes[-1].set_xlabel("time (s)")
    fig.tight_layout()
    return fig
