"""Lightning callbacks of the ABR family: the waterfall figure in TensorBoard.

`WaterfallLogger` puts one ear's level series (`abr_lab.optimized_unet.figures.waterfall`) into TensorBoard: the data
alone when fit starts (so a run shows what it learns from before any number is logged), then, every few validation
epochs, the same series with the model's predictions on top, so peaks and thresholds are judged as an audiologist
would judge them rather than only through averaged metrics.

`GeneratedWaterfallLogger` draws the same kind of figure for a generated patient: the U-Net's `generate_joint`
conditioned on one validation ear's parameters and class at each of its levels, with the heads' peaks on top.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import numpy as np
import torch

from abr_lab.loggers import tensorboard_writers
from abr_lab.optimized_unet.datamodule import SPLITS
from abr_lab.optimized_unet.figures import (
    default_title,
    generated_waterfall,
    pick_series,
    series_index,
    waterfall,
)
from abr_lab.optimized_unet.schema import ABRRecords


class WaterfallLogger(L.Callback):
    """Log the waterfall of one ear to every TensorBoard logger: the data at fit start, predictions on validation.

    Args:
        split: which split's records to show (``trainer.datamodule.split_records(split)``, raw units).
        patient_id, ear: the series to show; by default `pick_series` chooses (the ear with the most levels),
            restricted to `patient_id` or `ear` when only one is given.
        every_n_epochs: log predictions after every n-th validation epoch (epochs n-1, 2n-1, ..., the same
            counting as ``check_val_every_n_epoch``, so both align).
        tag: the image is logged under ``f"{split}/{tag}"``.

    Predictions come from the LightningModule's ``waterfall_predictions(records, index) -> dict`` (keys of
    `waterfall`'s `predictions`, aligned with `index`); a module without that method gets only the data figure.
    Only global rank zero draws, and only `TensorBoardLogger`s receive the figure (other loggers are skipped).
    """

    def __init__(
        self,
        split: str = "val",
        patient_id: str | None = None,
        ear: str | None = None,
        every_n_epochs: int = 1,
        tag: str = "waterfall",
    ) -> None:
        super().__init__()
        if split not in SPLITS:
            raise ValueError(f"split={split!r}: expected one of {list(SPLITS)}")
        if isinstance(every_n_epochs, bool) or not isinstance(every_n_epochs, int) or every_n_epochs < 1:
            raise ValueError(f"every_n_epochs={every_n_epochs!r}: need an integer >= 1")
        self.split, self.patient_id, self.ear = split, patient_id, ear
        self.every_n_epochs, self.tag = every_n_epochs, tag
        self._records: ABRRecords | None = None
        self._series: tuple[str, str] | None = None
        self._index: np.ndarray | None = None

    @property
    def full_tag(self) -> str:
        return f"{self.split}/{self.tag}"

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        writers = tensorboard_writers(trainer.loggers)
        if not trainer.is_global_zero or not writers:
            return
        records, (patient_id, ear), _ = self._load(trainer)
        self._log(writers, waterfall(records, patient_id, ear), step=0)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or (trainer.current_epoch + 1) % self.every_n_epochs != 0:
            return
        predict = getattr(pl_module, "waterfall_predictions", None)
        writers = tensorboard_writers(trainer.loggers)
        if not callable(predict) or not trainer.is_global_zero or not writers:
            return
        records, (patient_id, ear), index = self._load(trainer)
        with torch.no_grad():
            predictions = predict(records, index)
        title = f"{default_title(records, patient_id, ear)}, epoch {trainer.current_epoch}"
        fig = waterfall(records, patient_id, ear, predictions=predictions, title=title)
        self._log(writers, fig, step=trainer.global_step)

    def _load(self, trainer: L.Trainer) -> tuple[ABRRecords, tuple[str, str], np.ndarray]:
        """The split's records, the chosen series and its `series_index`; read once, then cached."""
        if self._records is None or self._series is None or self._index is None:
            datamodule = trainer.datamodule
            if datamodule is None or not callable(getattr(datamodule, "split_records", None)):
                raise TypeError(
                    f"WaterfallLogger needs a datamodule with split_records(split); got {type(datamodule).__name__}"
                )
            records = datamodule.split_records(self.split)
            if self.patient_id is not None and self.ear is not None:
                series = (self.patient_id, self.ear)
            else:
                series = pick_series(records, self.patient_id, self.ear)
            self._index = series_index(records, *series)  # ValueError names a patient / ear not in the split
            self._records, self._series = records, series
        return self._records, self._series, self._index

    def _log(self, writers: list[Any], fig: Any, step: int) -> None:
        """Send `fig` to every writer; the last call closes it (a figure per epoch must not accumulate)."""
        for k, writer in enumerate(writers):
            writer.add_figure(self.full_tag, fig, global_step=step, close=k == len(writers) - 1)


class GeneratedWaterfallLogger(WaterfallLogger):
    """Every few validation epochs, the waterfall of a generated patient: signals drawn by the module's
    ``generate_joint`` with the chosen ear's age, rate, Fmp and class at each of its intensities (so the series can
    be set beside the real one of the `WaterfallLogger`), the heads' predicted peaks and threshold on top.

    Args: `seed` for the sampler's noise (the same noise every epoch: the figure changes only as the model does);
    the others as `WaterfallLogger`, with the default tag ``generated_waterfall``.
    """

    def __init__(self, tag: str = "generated_waterfall", seed: int = 0, **kwargs: Any) -> None:
        super().__init__(tag=tag, **kwargs)
        self.seed = seed

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        return  # nothing generated yet; the data's figure is the WaterfallLogger's

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or (trainer.current_epoch + 1) % self.every_n_epochs != 0:
            return
        writers = tensorboard_writers(trainer.loggers)
        if getattr(pl_module, "diffusion", None) is None or not trainer.is_global_zero or not writers:
            return
        records, (patient_id, ear), index = self._load(trainer)
        series = records.subset(index)
        generator = torch.Generator(device=pl_module.device).manual_seed(self.seed)
        out = pl_module.generate_joint(
            len(index),
            static=torch.as_tensor(series.static, dtype=torch.float32),
            labels=torch.as_tensor(series.label),
            generator=generator,
        )
        generated = {k: v.cpu().numpy() for k, v in out.items()}  # aligned with the series' rows
        title = f"generated like {default_title(records, patient_id, ear)}, epoch {trainer.current_epoch}"
        fig = generated_waterfall(series, generated, patient_id, ear, title=title)
        self._log(writers, fig, step=trainer.global_step)
