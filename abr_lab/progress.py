"""The training progress bar: Lightning's, with the step's loss read to the host only when the bar redraws.

Once a value is logged with `self.log(..., prog_bar=True)` in `training_step`, Lightning reads it to the host at
the end of every step (it converts each progress-bar value to a Python number, the last one logged too, so logging it
only on some steps does not help), and on a GPU that read waits for the step's kernels: the host cannot fetch the next
batch while the device computes (`abr_lab.host_sync`). The modules therefore log `train/loss` for the loggers
only; this bar shows the loss that `training_step` returned, read at the bar's `refresh_rate`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import TQDMProgressBar
from torch import Tensor


class LossProgressBar(TQDMProgressBar):
    """`TQDMProgressBar` (same arguments) that adds ``loss``: the training loss of the step it last redrew at."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._pending: Tensor | None = None  # the latest step's loss, still on the device
        self._shown: float | None = None

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        loss = outputs.get("loss") if isinstance(outputs, Mapping) else outputs
        self._pending = loss.detach() if isinstance(loss, Tensor) and loss.numel() == 1 else None
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)  # redraws (get_metrics) or not

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        if self._pending is not None:  # read only here, when the bar is drawn
            self._shown, self._pending = float(self._pending), None
        metrics = super().get_metrics(trainer, pl_module)
        return metrics if self._shown is None else {"loss": f"{self._shown:.4g}", **metrics}
