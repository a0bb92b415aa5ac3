"""Access to the run's loggers shared by LightningModules and callbacks."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from lightning.pytorch.loggers import Logger, TensorBoardLogger


def tensorboard_writers(loggers: Iterable[Logger]) -> list[Any]:
    """The `SummaryWriter` of every TensorBoard logger among `loggers` (empty when there is none): figures and text
    go there; other loggers (CSV) take scalars only."""
    return [logger.experiment for logger in loggers if isinstance(logger, TensorBoardLogger)]
