"""`abr_lab.progress.LossProgressBar`: the bar shows the step's loss, read to the host only at the steps it redraws."""

from __future__ import annotations

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from torch.utils.data import DataLoader, TensorDataset

from abr_lab.host_sync import HostSyncCounter
from abr_lab.progress import LossProgressBar


class Tiny(L.LightningModule):
    """Logs its loss for the loggers only, as the families do; remembers each step's loss."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)
        self.losses: list[torch.Tensor] = []

    def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self.layer(batch[0]).pow(2).mean()
        self.log("train/loss", loss, batch_size=len(batch[0]))
        self.losses.append(loss.detach())
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


class ReadsPerStep(Callback):
    """Host reads of each training step, from its start to the next step's start (or the epoch's end)."""

    def __init__(self, counter: HostSyncCounter) -> None:
        self.counter, self.reads, self.before = counter, [], 0

    def _close(self) -> None:
        total = self.counter.total("read")
        self.reads.append(total - self.before)
        self.before = total

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx:
            self._close()
        else:
            self.before = self.counter.total("read")

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._close()


def test_the_loss_is_read_only_at_the_steps_the_bar_redraws():
    counter, module, bar = HostSyncCounter(), Tiny(), LossProgressBar(refresh_rate=3)
    reads = ReadsPerStep(counter)
    trainer = L.Trainer(
        max_epochs=1, logger=False, enable_checkpointing=False, enable_model_summary=False, callbacks=[reads, bar]
    )
    with counter:
        trainer.fit(module, DataLoader(TensorDataset(torch.randn(7, 2)), batch_size=1))
    assert reads.reads == [0, 0, 1, 0, 0, 1, 1]  # redraws after steps 3 and 6, and at the epoch's last step
    assert bar.get_metrics(trainer, module)["loss"] == f"{module.losses[-1].item():.4g}"
    assert "train/loss" in trainer.callback_metrics  # the loggers and callbacks still get it


def test_a_bar_shows_nothing_before_the_first_step():
    trainer = L.Trainer(logger=False, enable_checkpointing=False, enable_model_summary=False)
    assert "loss" not in LossProgressBar().get_metrics(trainer, Tiny())
