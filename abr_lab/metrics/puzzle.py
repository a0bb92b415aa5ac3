"""Jigsaw-piece localisation metrics: box IoU, IoU >= 0.5 accuracy, centre error, rotation accuracy, spread ratio.

Every score comes from running sums reduced across processes by summation (a float64 vector of `STATS` and a 4 x 4
rotation confusion matrix of counts), so the values are exact under DDP whatever each process saw. The spread ratio
compares the spread of the predicted box centres with that of the true ones: about 1 for a model that follows the
pieces, about 0 for one that has collapsed onto a single answer (a failure the mean IoU alone can hide when the true
boxes cluster). Boxes are (x1, y1, x2, y2), normalised to the puzzle canvas; the IoU is `abr_lab.losses.box_iou`.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric

from abr_lab.losses import box_iou

NUM_ROTATIONS = 4
IOU_THRESHOLD = 0.5
# running sums over pieces: count, Σ IoU, count with IoU >= 0.5, Σ centre error, count with the right rotation, then
# Σ and Σ² of the predicted and true centre coordinates (for the variances of the spread ratio)
STATS = (
    "n",
    "sum_iou",
    "n_iou50",
    "sum_centre_error",
    "n_rotation_correct",
    "sum_pcx",
    "sum_pcy",
    "sum_pcx2",
    "sum_pcy2",
    "sum_tcx",
    "sum_tcy",
    "sum_tcx2",
    "sum_tcy2",
)


def _check_inputs(pred_box: Tensor, true_box: Tensor, pred_rotation: Tensor, true_rotation: Tensor) -> None:
    """ValueError naming the argument when the shapes, dtypes or rotation values break the contract."""
    if pred_box.ndim != 2 or pred_box.shape[-1] != 4:
        raise ValueError(f"pred_box must be (n, 4), got shape {tuple(pred_box.shape)}")
    n = pred_box.shape[0]
    if tuple(true_box.shape) != (n, 4):
        raise ValueError(f"true_box has shape {tuple(true_box.shape)}, expected ({n}, 4) like pred_box")
    for name, value in (("pred_rotation", pred_rotation), ("true_rotation", true_rotation)):
        if tuple(value.shape) != (n,):
            raise ValueError(f"{name} has shape {tuple(value.shape)}, expected ({n},)")
        if value.is_floating_point():
            raise ValueError(f"{name} must hold integer rotation classes 0..3, got dtype {value.dtype}")
        if n and (int(value.min()) < 0 or int(value.max()) >= NUM_ROTATIONS):
            raise ValueError(f"{name} must be in 0..{NUM_ROTATIONS - 1}, got values in [{value.min()}, {value.max()}]")
    if n and bool((true_box[:, 2] <= true_box[:, 0]).any()):
        raise ValueError("true_box has a box with x2 <= x1: the centre error is divided by the true width")


def centres(box: Tensor) -> Tensor:
    """Centres (..., 2) as (cx, cy) of (..., 4) boxes."""
    return (box[..., :2] + box[..., 2:]) / 2


def puzzle_stats(pred_box: Tensor, true_box: Tensor, pred_rotation: Tensor, true_rotation: Tensor) -> Tensor:
    """The sums of `STATS` over n pieces, float64 (len(STATS),).

    Args:
        pred_box, true_box: (n, 4) boxes (x1, y1, x2, y2), normalised.
        pred_rotation, true_rotation: (n,) integer rotation classes in 0..3.
    """
    _check_inputs(pred_box, true_box, pred_rotation, true_rotation)
    pred, true = pred_box.detach().double(), true_box.detach().double()
    iou = box_iou(pred, true, eps=1e-12)  # (n,); in float64 a tiny eps keeps small boxes' IoU exact
    pc, tc = centres(pred), centres(true)  # (n, 2) each
    centre_error = torch.linalg.vector_norm(pc - tc, dim=-1) / (true[:, 2] - true[:, 0])  # (n,)
    n = torch.tensor(float(pred.shape[0]), dtype=torch.float64, device=pred.device)
    sums = [
        n,
        iou.sum(),
        (iou >= IOU_THRESHOLD).double().sum(),
        centre_error.sum(),
        (pred_rotation.long() == true_rotation.long()).double().sum(),
        *pc.sum(0),
        *(pc**2).sum(0),
        *tc.sum(0),
        *(tc**2).sum(0),
    ]
    return torch.stack(sums)


def rotation_confusion(pred_rotation: Tensor, true_rotation: Tensor) -> Tensor:
    """(4, 4) int64 counts, rows the true rotation, columns the predicted one."""
    index = true_rotation.long() * NUM_ROTATIONS + pred_rotation.long()
    return torch.bincount(index, minlength=NUM_ROTATIONS**2).reshape(NUM_ROTATIONS, NUM_ROTATIONS)


def _spread(n: Tensor, sum_x: Tensor, sum_y: Tensor, sum_x2: Tensor, sum_y2: Tensor) -> Tensor:
    """sqrt(var(x) + var(y)) from sums (population variances, clamped at 0 against rounding)."""
    var = (sum_x2 - sum_x**2 / n) / n + (sum_y2 - sum_y**2 / n) / n
    return var.clamp(min=0).sqrt()


def puzzle_scores(stats: Tensor) -> dict[str, Tensor]:
    """The scores of summed `stats` (len(STATS),) as float32 scalars.

    Keys: ``iou`` (mean IoU), ``acc_iou50`` (share with IoU >= 0.5), ``centre_error`` (mean centre distance over the
    true box width), ``rotation_accuracy`` and ``spread_ratio`` (spread of the predicted centres over that of the
    true ones). All NaN when no piece was seen; the spread ratio is NaN or inf while the true centres do not vary.
    """
    if tuple(stats.shape) != (len(STATS),):
        raise ValueError(f"stats must be ({len(STATS)},) sums of {STATS}, got shape {tuple(stats.shape)}")
    s = dict(zip(STATS, stats.double().unbind(), strict=True))
    n = s["n"]
    pred_spread = _spread(n, s["sum_pcx"], s["sum_pcy"], s["sum_pcx2"], s["sum_pcy2"])
    true_spread = _spread(n, s["sum_tcx"], s["sum_tcy"], s["sum_tcx2"], s["sum_tcy2"])
    scores = {
        "iou": s["sum_iou"] / n,
        "acc_iou50": s["n_iou50"] / n,
        "centre_error": s["sum_centre_error"] / n,
        "rotation_accuracy": s["n_rotation_correct"] / n,
        "spread_ratio": pred_spread / true_spread,
    }
    return {key: value.float() for key, value in scores.items()}


class PuzzleMetrics(Metric):
    """Where-and-how-turned scores of predicted piece boxes and rotations, pooled over a stage (and every process).

    `update(pred_box (n, 4), true_box (n, 4), pred_rotation (n,), true_rotation (n,))` with normalised
    (x1, y1, x2, y2) boxes and integer rotation classes 0..3. `compute()` returns the dict of `puzzle_scores`;
    `confusion()` the (4, 4) int64 rotation confusion matrix (rows true, columns predicted), synced likewise.
    """

    is_differentiable = False
    higher_is_better = None
    full_state_update = False

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_state("stats", torch.zeros(len(STATS), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state(
            "confmat", torch.zeros(NUM_ROTATIONS, NUM_ROTATIONS, dtype=torch.long), dist_reduce_fx="sum"
        )  # true x predicted

    def update(self, pred_box: Tensor, true_box: Tensor, pred_rotation: Tensor, true_rotation: Tensor) -> None:
        self.stats += puzzle_stats(pred_box, true_box, pred_rotation, true_rotation).to(self.stats.device)
        self.confmat += rotation_confusion(pred_rotation, true_rotation).to(self.confmat.device)

    def compute(self) -> dict[str, Tensor]:
        return puzzle_scores(self.stats)

    def confusion(self) -> Tensor:
        """The (4, 4) rotation confusion counts of every process (a collective call under DDP), rows true."""
        if self._is_synced:
            return self.confmat.clone()
        with self.sync_context(dist_sync_fn=self.dist_sync_fn, should_sync=self._to_sync, should_unsync=True):
            return self.confmat.clone()
