"""A callback that SIGKILLs its own process at a given training step: a crash that leaves no chance to clean up."""

from __future__ import annotations

import os
import signal
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback


class KillAtStep(Callback):
    """SIGKILL the process after the first batch that reaches global step `step`; a negative step never kills."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if 0 <= self.step <= trainer.global_step:
            os.kill(os.getpid(), signal.SIGKILL)
