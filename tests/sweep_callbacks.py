"""Test-only Lightning callbacks for sweep tests, set on the command line (`+callbacks.<name>._target_=...`)."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback


class DivergeOnJob(Callback):
    """Makes one job of a multirun diverge: after its first training batch every weight is NaN.

    Validation, the objective and `metrics.json` then see what a blown-up run gives (the same as ``model.lr=1e30``
    on the tiny LSTM), but in a chosen job rather than wherever a sampler puts a huge learning rate.

    Args:
        job_num: this job's number (``${hydra:job.num}``).
        diverging_job: the job number that diverges.
    """

    def __init__(self, job_num: int, diverging_job: int) -> None:
        self.diverges = job_num == diverging_job

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        if self.diverges:
            with torch.no_grad():
                for param in pl_module.parameters():
                    param.fill_(float("nan"))
