"""The run's loggers: access shared by LightningModules and callbacks, and a CSV logger that survives a resume."""

from __future__ import annotations

import csv
from collections.abc import Iterable
from typing import Any

from lightning.pytorch.loggers import CSVLogger, Logger, TensorBoardLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment


def tensorboard_writers(loggers: Iterable[Logger]) -> list[Any]:
    """The `SummaryWriter` of every TensorBoard logger among `loggers` (empty when there is none): figures and text
    go there; other loggers (CSV) take scalars only."""
    return [logger.experiment for logger in loggers if isinstance(logger, TensorBoardLogger)]


class _AppendingWriter(ExperimentWriter):
    """Lightning's CSV writer, except that an existing `metrics.csv` is continued rather than deleted."""

    def _check_log_dir_exists(self) -> None:
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as file:
                self.metrics_keys = next(csv.reader(file), [])


class AppendingCSVLogger(CSVLogger):
    """`CSVLogger` that keeps the rows already in its `metrics.csv`: a run resumed in its own directory
    (`abr_lab.resume`) appends to its log, where Lightning's logger would delete it."""

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment
