"""The ABR task metrics: hearing-loss class, wave I/III/V latency and amplitude, wave presence, hearing threshold.

`ABRMetrics` is the one implementation used by every ABR model and baseline, so their numbers are comparable.
Everything comes from running sums (a confusion matrix, five regression sums per target, presence TP/FP/FN, a count
of thresholds within tolerance) reduced across processes by summation, so the values are exact under DDP whatever
each process saw. The arithmetic lives in pure functions (`confusion_scores`, `regression_stats`,
`regression_scores`) that the tests check against sklearn.

Peak latency and amplitude are scored on the peaks that are truly present (`peak_mask`), whatever the model
predicted about presence: presence has its own F1. A wave with no present peak is left out of the result rather
than reported as NaN.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torchmetrics import Metric

REGRESSION_STATS = ("n", "sum_y", "sum_yy", "sum_err2", "sum_abs_err")
PEAK_KEYS = ("latency", "amplitude")  # the two fields of a peak (`schema.PEAK_FIELDS`: ms, µV) as metric keys


def confusion_matrix(pred: Tensor, target: Tensor, num_classes: int) -> Tensor:
    """Counts (num_classes, num_classes), rows = true class, columns = predicted class, int64."""
    index = target.long() * num_classes + pred.long()
    return torch.bincount(index, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def confusion_scores(confmat: Tensor) -> dict[str, Tensor]:
    """Accuracy, balanced accuracy, per-class F1 and recall, macro F1 from a confusion matrix (C, C), as sklearn does.

    Macro F1 averages over the classes that occur in the targets or the predictions (sklearn's default label set);
    balanced accuracy averages recall over the classes that occur in the targets. Per-class F1 is ``f1`` (C,), NaN
    for a class that never occurs; ``seen`` (C,) says which classes count. Per-class recall is ``recall`` (C,), NaN
    for a class absent from the targets (recall is undefined there); ``has_support`` (C,) says which classes have it.
    Empty input gives an empty dict.
    """
    cm = confmat.double()
    total = cm.sum()
    if total == 0:
        return {}
    tp = cm.diagonal()
    support, predicted = cm.sum(1), cm.sum(0)
    seen = (support + predicted) > 0
    f1 = torch.where(seen, 2 * tp / (support + predicted).clamp_min(1), torch.full_like(tp, float("nan")))
    has_support = support > 0
    recall = torch.where(has_support, tp / support.clamp_min(1), torch.full_like(tp, float("nan")))
    return {
        "accuracy": (tp.sum() / total).float(),
        "balanced_accuracy": recall[has_support].mean().float(),
        "macro_f1": f1[seen].mean().float(),
        "f1": f1.float(),
        "seen": seen,
        "recall": recall.float(),
        "has_support": has_support,
    }


def regression_stats(pred: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
    """The five sums of `REGRESSION_STATS` over dim 0 where `mask` holds, float64: (n, ...) -> (..., 5).

    Masked-out entries contribute nothing, even when the prediction there is NaN or infinite.
    """
    y, p = target.double(), pred.double()
    if mask is None:
        mask = torch.ones_like(y, dtype=torch.bool)
    zero = torch.zeros((), dtype=torch.float64, device=y.device)
    y = torch.where(mask, y, zero)
    err = torch.where(mask, y - p, zero)
    sums = (mask.double().sum(0), y.sum(0), (y * y).sum(0), (err * err).sum(0), err.abs().sum(0))
    return torch.stack(sums, dim=-1)


def regression_scores(stats: Tensor) -> dict[str, Tensor]:
    """R² and MAE from summed stats (..., 5); each result has shape (...), NaN where n = 0.

    R² follows sklearn's `r2_score` (force_finite): 1 if a constant target is predicted exactly, 0 if not.
    """
    n, sum_y, sum_yy, sum_err2, sum_abs_err = stats.double().unbind(-1)
    n_safe = n.clamp_min(1)
    ss_tot = (sum_yy - sum_y**2 / n_safe).clamp_min(0)  # n · variance of the target
    constant = ss_tot <= 1e-12 * sum_yy.clamp_min(1e-300)
    r2 = torch.where(constant, (sum_err2 <= 1e-12 * sum_yy.clamp_min(1e-300)).double(), 1 - sum_err2 / ss_tot)
    nan = torch.full_like(n, float("nan"))
    return {
        "r2": torch.where(n > 0, r2, nan).float(),
        "mae": torch.where(n > 0, sum_abs_err / n_safe, nan).float(),
    }


class ABRMetrics(Metric):
    """Class, peak, presence and threshold metrics of ABR predictions, pooled over every update of a stage.

    `update(class_pred, label, peaks_pred, peaks, peak_mask, threshold_pred, threshold, presence_pred=None)`:

    - class_pred (B,) predicted class index, label (B,) true class index;
    - peaks_pred, peaks (B, W, 2) waves × (latency ms, amplitude µV); peak_mask (B, W) bool, the truly present
      peaks (only these are scored; predictions elsewhere are ignored);
    - threshold_pred, threshold (B,) hearing threshold, dB nHL;
    - presence_pred (B, W) bool, the predicted presence of each wave (optional; scored by F1 against peak_mask).

    `compute()` returns a flat dict of float tensors: ``class/macro_f1``, ``class/accuracy``,
    ``class/balanced_accuracy``, ``class/f1_<name lowercase>`` per class seen in targets or predictions,
    ``class/recall_<name lowercase>`` per class present in the targets (recall is undefined for the others),
    ``class/pred_share_<name lowercase>`` per class, the share of predictions that name it (a collapse shows); per wave
    ``w`` ``peaks/latency_r2_<w>``, ``peaks/latency_mae_<w>`` (ms), ``peaks/amplitude_r2_<w>``,
    ``peaks/amplitude_mae_<w>`` (µV) for waves with a present peak, ``peaks/presence_f1_<w>`` once presence was given
    (left out while F1 is undefined: no true and no predicted presence); ``threshold/r2``, ``threshold/mae`` (dB) and
    ``threshold/within_<tol>db``, the share of recordings whose predicted threshold is within
    ``threshold_tolerance_db`` of the true one (``within_10db`` for the default 10 dB; the tolerance is formatted
    with ``:g``, so 2.5 gives ``within_2.5db``). A NaN predicted threshold counts as outside the tolerance.

    `confusion()` returns the class confusion matrix (C, C), int64, rows true and columns predicted, summed over
    processes like `compute()`.
    """

    is_differentiable = False
    higher_is_better = None
    full_state_update = False

    def __init__(
        self,
        class_names: tuple[str, ...] | None = None,
        wave_names: tuple[str, ...] | None = None,
        threshold_tolerance_db: float = 10.0,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if not (math.isfinite(threshold_tolerance_db) and threshold_tolerance_db >= 0):
            raise ValueError(
                f"ABRMetrics: threshold_tolerance_db must be finite and >= 0, got {threshold_tolerance_db}"
            )
        self.threshold_tolerance_db = float(threshold_tolerance_db)
        # Imported here, not at module level: the ABR package imports `abr_lab.metrics` for its LightningModule.
        from abr_lab.optimized_unet.schema import CLASS_NAMES, WAVES

        self.class_names = tuple(CLASS_NAMES if class_names is None else class_names)
        self.wave_names = tuple(WAVES if wave_names is None else wave_names)
        c, w, s = len(self.class_names), len(self.wave_names), len(REGRESSION_STATS)
        self.add_state("confmat", torch.zeros(c, c, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("peak_stats", torch.zeros(w, len(PEAK_KEYS), s, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("presence_counts", torch.zeros(w, 3, dtype=torch.long), dist_reduce_fx="sum")  # TP FP FN
        self.add_state("presence_n", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")  # rows with presence
        self.add_state("threshold_stats", torch.zeros(s, dtype=torch.float64), dist_reduce_fx="sum")
        # Recordings with |threshold_pred - threshold| <= threshold_tolerance_db; the total is threshold_stats[0].
        self.add_state("threshold_within", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

    def update(
        self,
        class_pred: Tensor,
        label: Tensor,
        peaks_pred: Tensor,
        peaks: Tensor,
        peak_mask: Tensor,
        threshold_pred: Tensor,
        threshold: Tensor,
        presence_pred: Tensor | None = None,
    ) -> None:
        b, w = label.shape[0], len(self.wave_names)
        expected = {
            "class_pred": (class_pred, (b,)),
            "label": (label, (b,)),
            "peaks_pred": (peaks_pred, (b, w, len(PEAK_KEYS))),
            "peaks": (peaks, (b, w, len(PEAK_KEYS))),
            "peak_mask": (peak_mask, (b, w)),
            "threshold_pred": (threshold_pred, (b,)),
            "threshold": (threshold, (b,)),
        }
        if presence_pred is not None:
            expected["presence_pred"] = (presence_pred, (b, w))
        for name, (value, shape) in expected.items():
            if tuple(value.shape) != shape:
                raise ValueError(f"ABRMetrics.update: {name} has shape {tuple(value.shape)}, expected {shape}")
        c = len(self.class_names)
        for name, value in (("class_pred", class_pred), ("label", label)):
            if b and (int(value.min()) < 0 or int(value.max()) >= c):
                raise ValueError(f"ABRMetrics.update: {name} holds indices outside 0..{c - 1}")
        mask = peak_mask.bool()
        self.confmat += confusion_matrix(class_pred, label, c)
        self.peak_stats += regression_stats(peaks_pred, peaks, mask.unsqueeze(-1).expand_as(peaks))  # (W, 2, 5)
        self.threshold_stats += regression_stats(threshold_pred, threshold)
        threshold_error = (threshold_pred.double() - threshold.double()).abs()
        self.threshold_within += (threshold_error <= self.threshold_tolerance_db).sum()
        if presence_pred is not None:
            pred = presence_pred.bool()
            counts = ((pred & mask).sum(0), (pred & ~mask).sum(0), (~pred & mask).sum(0))
            self.presence_counts += torch.stack(counts, dim=-1)
            self.presence_n += b

    def compute(self) -> dict[str, Tensor]:
        out: dict[str, Tensor] = {}
        scores = confusion_scores(self.confmat)
        if scores:
            for key in ("macro_f1", "accuracy", "balanced_accuracy"):
                out[f"class/{key}"] = scores[key]
            for name, f1, seen in zip(self.class_names, scores["f1"], scores["seen"], strict=True):
                if seen:
                    out[f"class/f1_{name.lower()}"] = f1
            for name, recall, has_support in zip(
                self.class_names, scores["recall"], scores["has_support"], strict=True
            ):
                if has_support:
                    out[f"class/recall_{name.lower()}"] = recall
            shares = self.confmat.sum(0).double() / self.confmat.sum()
            for name, share in zip(self.class_names, shares, strict=True):
                out[f"class/pred_share_{name.lower()}"] = share.float()
        peak = regression_scores(self.peak_stats)  # each (W, 2)
        for i, wave in enumerate(self.wave_names):
            for j, field in enumerate(PEAK_KEYS):
                if self.peak_stats[i, j, 0] > 0:
                    out[f"peaks/{field}_r2_{wave}"] = peak["r2"][i, j]
                    out[f"peaks/{field}_mae_{wave}"] = peak["mae"][i, j]
        if self.presence_n > 0:
            tp, fp, fn = self.presence_counts.double().unbind(-1)
            for i, wave in enumerate(self.wave_names):
                denominator = 2 * tp[i] + fp[i] + fn[i]
                if denominator > 0:
                    out[f"peaks/presence_f1_{wave}"] = (2 * tp[i] / denominator).float()
        if self.threshold_stats[0] > 0:
            threshold = regression_scores(self.threshold_stats)
            out["threshold/r2"], out["threshold/mae"] = threshold["r2"], threshold["mae"]
            within = self.threshold_within.double() / self.threshold_stats[0]
            out[f"threshold/within_{self.threshold_tolerance_db:g}db"] = within.float()
        return out

    def confusion(self) -> Tensor:
        """The class confusion matrix (C, C), int64, rows = true class, columns = predicted class.

        Under DDP the matrix is summed over processes, as in `compute()` (honouring ``sync_on_compute``), and the
        local state is restored afterwards so accumulation can go on; every process must call it, since the sum is a
        collective. In a single process it is simply the local matrix. The result is a copy.
        """
        if self._is_synced:  # already inside a sync (e.g. called from compute()): the state is the synced one
            return self.confmat.clone()
        with self.sync_context(dist_sync_fn=self.dist_sync_fn, should_sync=self._to_sync, should_unsync=True):
            return self.confmat.clone()
