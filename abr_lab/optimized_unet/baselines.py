"""The two baselines a user would try first on the ABR tasks, scored on the test split with `ABRMetrics`.

- `gbt_baseline`: scikit-learn histogram gradient boosting on the raw recording (pairs of samples averaged, i.e.
  decimated ×2: 20 kHz -> 10 kHz keeps the 100–3000 Hz response band and halves the features) next to the four raw
  static parameters (age, intensity, rate, Fmp). One model per output: class, presence of each wave, latency and
  amplitude of each wave (trained on the present peaks only), threshold. Each model is trained for `max_iter`
  boosting iterations, then its number of iterations is chosen on the val split (staged predictions; val
  log-loss or MSE). The test split is only scored.
- `cnn_baseline`: a plain 1-D CNN (`CNNBaseline`) with class, presence, peak and threshold heads, trained with
  Lightning on the DataModule's own loaders; the epoch with the lowest val loss is the one scored.

Both return the `ABRMetrics.compute()` dict as floats plus ``fit_seconds`` (training and model selection).
Latency and amplitude are scored on the truly present peaks, whatever presence the model predicted.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from abr_lab.metrics import ABRMetrics
from abr_lab.optimized_unet.datamodule import ABRDataModule, Normalization
from abr_lab.optimized_unet.schema import CLASS_NAMES, WAVES, ABRRecords
from abr_lab.progress import LossProgressBar

# --------------------------------------------------------------------------------------------------------------
# Gradient-boosted trees


def gbt_features(records: ABRRecords, static_only: bool = False, clean: bool = False) -> np.ndarray:
    """Features (N, T // 2 + 4): the recording with adjacent samples averaged (µV), then raw age, level, rate, Fmp.

    Averaging pairs is a crude low-pass before halving the rate, so the 100–3000 Hz response band (below the new
    Nyquist frequency, fs / 4) survives without aliasing the out-of-band noise. With `clean`, the noise-free
    waveform replaces the recording (the oracle: what the waveform says when no noise hides it). With
    `static_only`, just the four static parameters (N, 4): what a model reaches without reading the waveform.
    """
    if static_only:
        return records.static.astype(np.float32)
    if clean and records.clean is None:
        raise ValueError("gbt_features(clean=True): these records hold no clean waveform (only simulated data do)")
    signal = (records.clean if clean else records.signal).astype(np.float32)
    half = signal.shape[1] // 2
    decimated = signal[:, : 2 * half].reshape(len(signal), half, 2).mean(axis=2)
    return np.concatenate([decimated, records.static.astype(np.float32)], axis=1)


def quantile_edges(x: np.ndarray, max_bins: int = 255) -> list[np.ndarray]:
    """Per feature of `x` (N, F), the distinct inner quantiles splitting it into at most `max_bins` bins."""
    q = np.quantile(x, np.linspace(0.0, 1.0, max_bins + 1)[1:-1], axis=0)  # (max_bins - 1, F)
    return [np.unique(q[:, f]) for f in range(x.shape[1])]


def quantise(x: np.ndarray, edges: list[np.ndarray]) -> np.ndarray:
    """Bin codes (N, F) float32 of `x` under `edges` (from `quantile_edges` on the train split).

    HistGradientBoosting bins its input into 255 quantile bins anyway; doing it once here, on unweighted train data,
    gives every model the same bins and spares sklearn's per-feature weighted-percentile binning, which takes
    10+ s whenever sample weights are given (the class-weighted class model).
    """
    return np.stack([np.searchsorted(e, x[:, f], side="right") for f, e in enumerate(edges)], axis=1).astype(np.float32)


def _staged_at(stages: Iterator[np.ndarray], index: int) -> np.ndarray:
    """The `index`-th item of a staged-prediction generator (0 = after the first iteration)."""
    for i, prediction in enumerate(stages):
        if i == index:
            return prediction
    raise IndexError(f"the model has fewer than {index + 1} stages")


def _best_stage(stages: Iterator[np.ndarray], loss: Callable[[np.ndarray], float]) -> int:
    """Index of the staged prediction with the lowest `loss` (the first on ties)."""
    losses = [loss(prediction) for prediction in stages]
    return int(np.argmin(losses))


def _log_loss(proba: np.ndarray, classes: np.ndarray, y: np.ndarray, weight: np.ndarray | None = None) -> float:
    """Mean (optionally weighted) negative log-likelihood of labels `y` under `proba` (n, len(classes))."""
    column = np.searchsorted(classes, y)
    known = (column < len(classes)) & (classes[np.minimum(column, len(classes) - 1)] == y)
    p = np.where(known, proba[np.arange(len(y)), np.minimum(column, len(classes) - 1)], 0.0)  # unseen class: p = 0
    nll = -np.log(np.clip(p, 1e-15, 1.0))
    return float(np.average(nll, weights=weight))


def _fit_classifier(
    x: np.ndarray,
    y: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    x_test: np.ndarray,
    seed: int,
    max_iter: int,
    balanced: bool = False,
) -> np.ndarray:
    """Test-split labels of a classifier whose iteration count is chosen by val log-loss (class-weighted if
    `balanced`, the weighting it was trained with)."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    classes = np.unique(y)
    if len(classes) == 1:  # nothing to learn (possible on tiny data): predict the only class seen
        return np.full(len(x_test), classes[0])
    model = HistGradientBoostingClassifier(
        max_iter=max_iter,
        early_stopping=False,
        class_weight="balanced" if balanced else None,
        random_state=seed,
    )
    model.fit(x, y)
    if len(y_val) == 0:
        return model.predict(x_test)
    weight = None
    if balanced:  # val samples weighted as sklearn's "balanced" weights the train samples
        counts = {c: n for c, n in zip(*np.unique(y, return_counts=True), strict=True)}
        weight = np.array([len(y) / (len(classes) * counts[c]) if c in counts else 0.0 for c in y_val])
        weight = None if weight.sum() == 0 else weight
    best = _best_stage(model.staged_predict_proba(x_val), lambda p: _log_loss(p, model.classes_, y_val, weight))
    return _staged_at(model.staged_predict(x_test), best)


def _fit_regressor(
    x: np.ndarray,
    y: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    x_test: np.ndarray,
    seed: int,
    max_iter: int,
) -> np.ndarray:
    """Test-split predictions of a regressor whose iteration count is chosen by val MSE."""
    from sklearn.ensemble import HistGradientBoostingRegressor

    if len(y) == 0:  # no training target (e.g. a wave never present on tiny data)
        return np.zeros(len(x_test))
    model = HistGradientBoostingRegressor(max_iter=max_iter, early_stopping=False, random_state=seed)
    model.fit(x, y)
    if len(y_val) == 0:
        return model.predict(x_test)
    best = _best_stage(model.staged_predict(x_val), lambda p: float(np.mean((p - y_val) ** 2)))
    return _staged_at(model.staged_predict(x_test), best)


def gbt_baseline(
    dm: ABRDataModule, seed: int = 0, max_iter: int = 200, static_only: bool = False, clean: bool = False
) -> dict[str, float]:
    """Gradient-boosted trees per output on decimated raw recordings + raw static parameters (see module doc).

    Args:
        dm: the DataModule (its train / val / test splits; set up here if it was not).
        seed: random state of every model.
        max_iter: boosting iterations trained per model; the count used is chosen on val (<= max_iter).
        static_only: use only age, level, rate and Fmp (no waveform): the floor a signal model must clear, since
            the level of a threshold search and Fmp already say much about wave V and the threshold.
        clean: read the noise-free waveform instead of the recording (simulated data only): an oracle whose
            errors are the ambiguity no denoising can remove (e.g. a normal ear below its threshold looks deaf).

    Returns:
        `ABRMetrics` of the test split as floats, plus ``fit_seconds``.
    """
    _ensure_setup(dm)
    train, val, test = (dm.split_records(split) for split in ("train", "val", "test"))
    start = time.perf_counter()
    x, x_val, x_test = (gbt_features(r, static_only, clean) for r in (train, val, test))
    edges = quantile_edges(x)
    x, x_val, x_test = quantise(x, edges), quantise(x_val, edges), quantise(x_test, edges)
    n_test, n_waves = len(test), len(WAVES)
    class_pred = _fit_classifier(x, train.label, x_val, val.label, x_test, seed, max_iter, balanced=True)
    presence = np.zeros((n_test, n_waves), dtype=bool)
    peaks_pred = np.zeros((n_test, n_waves, 2))
    for w in range(n_waves):
        mask, mask_val = train.peak_mask[:, w], val.peak_mask[:, w]
        presence[:, w] = _fit_classifier(x, mask, x_val, mask_val, x_test, seed, max_iter).astype(bool)
        for j in range(2):  # latency, amplitude: trained and selected on present peaks only
            y, y_val = train.peaks[mask, w, j], val.peaks[mask_val, w, j]
            peaks_pred[:, w, j] = _fit_regressor(x[mask], y, x_val[mask_val], y_val, x_test, seed, max_iter)
    threshold_pred = _fit_regressor(x, train.threshold_db, x_val, val.threshold_db, x_test, seed, max_iter)
    fit_seconds = time.perf_counter() - start

    metric = ABRMetrics()
    metric.update(
        class_pred=torch.as_tensor(class_pred.astype(np.int64)),
        label=torch.as_tensor(test.label.astype(np.int64)),
        peaks_pred=torch.as_tensor(peaks_pred),
        peaks=torch.as_tensor(test.peaks.astype(np.float64)),
        peak_mask=torch.as_tensor(test.peak_mask),
        threshold_pred=torch.as_tensor(threshold_pred),
        threshold=torch.as_tensor(test.threshold_db.astype(np.float64)),
        presence_pred=torch.as_tensor(presence),
    )
    return _as_floats(metric.compute(), fit_seconds)


# --------------------------------------------------------------------------------------------------------------
# 1-D CNN


class CNNBaseline(L.LightningModule):
    """A plain 1-D CNN with class, wave-presence, peak (latency, amplitude) and threshold heads.

    Body: len(channels) × [Conv1d k7 -> BatchNorm -> ReLU -> MaxPool 2], global average pool; the pooled features
    are concatenated with the normalised static vector and fed to an MLP trunk, then to linear heads. Peaks and
    threshold are predicted standardised with the train split's statistics (`Normalization`), so the four loss
    terms have comparable scales: class-weighted cross-entropy + presence BCE + MSE over present peaks + MSE.

    The module keeps a copy of its weights from the epoch with the lowest val loss (`best_state`); `test_step`
    feeds `test_metrics` (`ABRMetrics`) in physical units.
    """

    def __init__(
        self,
        normalization: Normalization,
        class_weights: Tensor | None = None,
        channels: tuple[int, ...] = (32, 64, 64, 128),
        hidden: int = 128,
        num_static: int = 4,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["normalization", "class_weights"])
        self.num_classes, self.num_waves = len(CLASS_NAMES), len(WAVES)
        layers: list[nn.Module] = []
        in_channels = 1
        for out_channels in channels:
            layers += [
                nn.Conv1d(in_channels, out_channels, kernel_size=7, padding=3),
                nn.BatchNorm1d(out_channels),
                nn.ReLU(inplace=True),
                nn.MaxPool1d(2),
            ]
            in_channels = out_channels
        self.body = nn.Sequential(*layers)
        self.trunk = nn.Sequential(
            nn.Linear(in_channels + num_static, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, hidden), nn.ReLU()
        )
        self.class_head = nn.Linear(hidden, self.num_classes)
        self.presence_head = nn.Linear(hidden, self.num_waves)
        self.peak_head = nn.Linear(hidden, self.num_waves * 2)
        self.threshold_head = nn.Linear(hidden, 1)

        weights = torch.ones(self.num_classes) if class_weights is None else torch.as_tensor(class_weights).float()
        self.register_buffer("class_weights", weights)
        peak_mean = torch.tensor([normalization.latency_mean, normalization.amplitude_mean]).T  # (W, 2)
        peak_std = torch.tensor([normalization.latency_std, normalization.amplitude_std]).T
        self.register_buffer("peak_mean", peak_mean.float())
        self.register_buffer("peak_std", peak_std.float())
        self.register_buffer("threshold_mean", torch.tensor(normalization.threshold_mean, dtype=torch.float32))
        self.register_buffer("threshold_std", torch.tensor(normalization.threshold_std, dtype=torch.float32))

        self.test_metrics = ABRMetrics()
        self.best_state: dict[str, Tensor] | None = None
        self.best_val_loss = float("inf")
        self.best_epoch = -1
        self._val_sum = 0.0
        self._val_count = 0

    def forward(self, signal: Tensor, static: Tensor) -> dict[str, Tensor]:
        """Raw head outputs; peaks and threshold standardised (see `predict` for physical units)."""
        # signal (B, 1, T), static (B, S)
        features = self.body(signal).mean(dim=-1)  # (B, C) global average pool
        h = self.trunk(torch.cat([features, static], dim=-1))  # (B, hidden)
        return {
            "logits": self.class_head(h),  # (B, num_classes)
            "presence": self.presence_head(h),  # (B, W) logits
            "peaks": self.peak_head(h).view(-1, self.num_waves, 2),  # (B, W, 2) standardised latency, amplitude
            "threshold": self.threshold_head(h).squeeze(-1),  # (B,) standardised
        }

    def loss(self, out: dict[str, Tensor], batch: dict[str, Tensor]) -> Tensor:
        """Weighted CE + presence BCE + MSE over present peaks + threshold MSE, all on standardised targets."""
        mask = batch["peak_mask"].bool()  # (B, W)
        ce = F.cross_entropy(out["logits"], batch["label"], weight=self.class_weights)
        bce = F.binary_cross_entropy_with_logits(out["presence"], mask.float())
        peaks = (batch["peaks"] - self.peak_mean) / self.peak_std  # (B, W, 2)
        squared = (out["peaks"] - peaks).pow(2)[mask]  # (P, 2) present peaks only
        peak_mse = squared.mean() if squared.numel() else out["peaks"].sum() * 0.0
        threshold = (batch["threshold"] - self.threshold_mean) / self.threshold_std
        return ce + bce + peak_mse + F.mse_loss(out["threshold"], threshold)

    def predict(self, out: dict[str, Tensor]) -> dict[str, Tensor]:
        """Predictions in physical units: class index, presence (logit > 0), peaks (ms, µV), threshold (dB)."""
        return {
            "class_pred": out["logits"].argmax(dim=-1),
            "presence_pred": out["presence"] > 0,
            "peaks_pred": out["peaks"] * self.peak_std + self.peak_mean,
            "threshold_pred": out["threshold"] * self.threshold_std + self.threshold_mean,
        }

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        loss = self.loss(self(batch["signal"], batch["static"]), batch)
        self.log("train/loss", loss, batch_size=len(batch["label"]))
        return loss

    def on_validation_epoch_start(self) -> None:
        self._val_sum, self._val_count = 0.0, 0

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        b = len(batch["label"])
        loss = self.loss(self(batch["signal"], batch["static"]), batch)
        self._val_sum += float(loss) * b
        self._val_count += b

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking or self._val_count == 0:
            return
        val_loss = self._val_sum / self._val_count
        self.log("val/loss", val_loss, prog_bar=True)
        if val_loss < self.best_val_loss:  # keep the best epoch's weights in memory
            self.best_val_loss, self.best_epoch = val_loss, self.current_epoch
            self.best_state = {k: v.detach().clone() for k, v in self.state_dict().items()}

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        pred = self.predict(self(batch["signal"], batch["static"]))
        self.test_metrics.update(
            label=batch["label"],
            peaks=batch["peaks"],
            peak_mask=batch["peak_mask"],
            threshold=batch["threshold"],
            **pred,
        )

    def configure_optimizers(self) -> dict[str, Any]:
        optimizer = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
        epochs = max(1, self.trainer.max_epochs or 1)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
        return {"optimizer": optimizer, "lr_scheduler": scheduler}


def cnn_baseline(
    dm: ABRDataModule,
    epochs: int = 10,
    seed: int = 0,
    progress: bool = False,
    **model_kwargs: Any,
) -> dict[str, float]:
    """Train `CNNBaseline` on the train split for `epochs` epochs, keep the best val-loss epoch, score it on test.

    Args:
        dm: the DataModule (its loaders, normalisation and class weights; set up here if it was not).
        epochs: training epochs (the weights scored are those of the epoch with the lowest val loss).
        seed: seed of initialisation and shuffling.
        progress: show Lightning's progress bar.
        **model_kwargs: `CNNBaseline` arguments (channels, hidden, lr, weight_decay).

    Returns:
        `ABRMetrics` of the test split as floats, plus ``fit_seconds`` and ``best_epoch``.
    """
    _ensure_setup(dm)
    assert dm.normalization is not None
    L.seed_everything(seed, workers=True, verbose=False)
    model = CNNBaseline(dm.normalization, dm.class_weights, **model_kwargs)
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=epochs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=progress,
        callbacks=[LossProgressBar()] if progress else [],
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    start = time.perf_counter()
    trainer.fit(model, train_dataloaders=dm.train_dataloader(), val_dataloaders=dm.val_dataloader())
    fit_seconds = time.perf_counter() - start
    if model.best_state is not None:
        model.load_state_dict(model.best_state)
    model.test_metrics.reset()
    trainer.test(model, dataloaders=dm.test_dataloader(), verbose=False)
    result = _as_floats(model.test_metrics.compute(), fit_seconds)
    result["best_epoch"] = float(model.best_epoch)
    return result


# --------------------------------------------------------------------------------------------------------------


def _ensure_setup(dm: ABRDataModule) -> None:
    if dm.records is None:
        dm.prepare_data()
        dm.setup()


def _as_floats(metrics: dict[str, Tensor], fit_seconds: float) -> dict[str, float]:
    out = {key: float(value) for key, value in metrics.items()}
    out["fit_seconds"] = float(fit_seconds)
    return out
