"""Losses shared by the families. Boxes are (x1, y1, x2, y2) with x1 <= x2 and y1 <= y2, in any common unit.

`ciou_loss` is the Complete-IoU loss of Zheng et al. (AAAI 2020, "Distance-IoU Loss: Faster and Better Learning for
Bounding Box Regression"): 1 - IoU + ρ²(centres) / c² + α·v, where c is the diagonal of the smallest box enclosing
both, v = 4/π² (atan(w_t/h_t) - atan(w_p/h_p))² measures the aspect-ratio mismatch and α = v / (1 - IoU + v) is
treated as a constant in the backward pass, as the paper prescribes. Unlike GIoU, its centre-distance term keeps a
useful gradient when the boxes are disjoint.

`margin_cross_entropy` is two-class cross-entropy on the log-odds ``s = logits[:, 1] − logits[:, 0]`` with a margin:
class 1 is pushed to ``s >= margin`` and class 0 to ``s <= −margin``. With margin 0 it equals `F.cross_entropy`;
on the log-odds of `abr_lab.layers.cosine.OneClassCosineHead`, ``scale · (cos − centre)``, and with ``margin =
scale · (m_1 − m_0) / 2``, ``centre = (m_1 + m_0) / 2``, it is OC-softmax (Zhang et al. 2021):
``log(1 + exp(α (m_y − cos) (−1)^y))`` with m_1 = 0.9 for the target class and m_0 = 0.2 for the other.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

REDUCTIONS = ("mean", "sum", "none")


def _check_boxes(pred: Tensor, target: Tensor) -> None:
    if pred.shape != target.shape or pred.shape[-1:] != (4,):
        raise ValueError(f"boxes must both be (..., 4), got pred {tuple(pred.shape)} and target {tuple(target.shape)}")


def _reduce(values: Tensor, reduction: str) -> Tensor:
    if reduction == "mean":
        return values.mean()
    if reduction == "sum":
        return values.sum()
    if reduction == "none":
        return values
    raise ValueError(f"reduction={reduction!r}: expected one of {'|'.join(REDUCTIONS)}")


def box_iou(pred: Tensor, target: Tensor, eps: float = 1e-7) -> Tensor:
    """Element-wise IoU of two (..., 4) box tensors -> (...)."""
    _check_boxes(pred, target)
    width = (torch.minimum(pred[..., 2], target[..., 2]) - torch.maximum(pred[..., 0], target[..., 0])).clamp(min=0)
    height = (torch.minimum(pred[..., 3], target[..., 3]) - torch.maximum(pred[..., 1], target[..., 1])).clamp(min=0)
    inter = width * height
    area_p = (pred[..., 2] - pred[..., 0]).clamp(min=0) * (pred[..., 3] - pred[..., 1]).clamp(min=0)
    area_t = (target[..., 2] - target[..., 0]).clamp(min=0) * (target[..., 3] - target[..., 1]).clamp(min=0)
    return inter / (area_p + area_t - inter + eps)


def ciou_loss(pred: Tensor, target: Tensor, reduction: str = "mean", eps: float = 1e-7) -> Tensor:
    """Complete-IoU loss of (..., 4) predicted and target boxes; 0 for identical boxes, up to ~3 when far apart."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction={reduction!r}: expected one of {'|'.join(REDUCTIONS)}")
    iou = box_iou(pred, target, eps)
    # centre distance over the enclosing box's diagonal
    centre_p = (pred[..., :2] + pred[..., 2:]) / 2
    centre_t = (target[..., :2] + target[..., 2:]) / 2
    rho2 = ((centre_p - centre_t) ** 2).sum(-1)
    enclose_wh = torch.maximum(pred[..., 2:], target[..., 2:]) - torch.minimum(pred[..., :2], target[..., :2])
    c2 = (enclose_wh**2).sum(-1) + eps
    # aspect-ratio consistency, alpha without gradient
    w_p, h_p = (pred[..., 2] - pred[..., 0]).clamp(min=eps), (pred[..., 3] - pred[..., 1]).clamp(min=eps)
    w_t, h_t = (target[..., 2] - target[..., 0]).clamp(min=eps), (target[..., 3] - target[..., 1]).clamp(min=eps)
    v = (4 / math.pi**2) * (torch.atan(w_t / h_t) - torch.atan(w_p / h_p)) ** 2
    with torch.no_grad():
        alpha = v / (1 - iou + v + eps)
    return _reduce(1 - iou + rho2 / c2 + alpha * v, reduction)


def margin_cross_entropy(
    logits: Tensor, labels: Tensor, margin: float = 0.0, weight: Tensor | None = None, reduction: str = "mean"
) -> Tensor:
    """Two-class cross-entropy of (b, 2) logits against (b,) labels in {0, 1}, with a `margin` on the log-odds.

    Per example: ``softplus(margin − s)`` for class 1 and ``softplus(s + margin)`` for class 0, s the log-odds of
    class 1. `weight` (2,) weights the classes; the ``mean`` is then the weighted mean, as `F.cross_entropy`'s.
    """
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction={reduction!r}: expected one of {'|'.join(REDUCTIONS)}")
    if logits.ndim != 2 or logits.shape[1] != 2 or labels.shape != logits.shape[:1]:
        raise ValueError(f"need (b, 2) logits and (b,) labels, got {tuple(logits.shape)} and {tuple(labels.shape)}")
    sign = 2.0 * labels.to(logits.dtype) - 1.0  # (b,) +1 for class 1, −1 for class 0
    log_odds = logits[:, 1] - logits[:, 0]  # (b,)
    per_example = F.softplus(margin - sign * log_odds)  # (b,)
    if weight is None:
        return _reduce(per_example, reduction)
    w = weight.to(logits.dtype)[labels]  # (b,)
    if reduction == "mean":
        return (w * per_example).sum() / w.sum()
    return _reduce(w * per_example, reduction)
