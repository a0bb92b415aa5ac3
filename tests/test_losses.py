"""`abr_lab.losses`: box IoU, the Complete-IoU loss and the margin cross-entropy against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from abr_lab.layers.cosine import OneClassCosineHead
from abr_lab.losses import box_iou, ciou_loss, margin_cross_entropy


def boxes(*rows: list[float]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64)


def test_identical_boxes_cost_nothing() -> None:
    b = boxes([0.1, 0.2, 0.5, 0.6], [0.0, 0.0, 1.0, 0.5])
    torch.testing.assert_close(box_iou(b, b, eps=0.0), torch.ones(2, dtype=torch.float64))
    torch.testing.assert_close(
        ciou_loss(b, b, reduction="none"), torch.zeros(2, dtype=torch.float64), atol=1e-6, rtol=0
    )


def test_disjoint_boxes_keep_a_centre_distance_term() -> None:
    # unit squares 2 apart: IoU 0, centres 2 apart, enclosing box 3 x 1 -> 1 - 0 + 4 / 10, same aspect -> v = 0
    pred, target = boxes([0.0, 0.0, 1.0, 1.0]), boxes([2.0, 0.0, 3.0, 1.0])
    torch.testing.assert_close(ciou_loss(pred, target, eps=0.0), torch.tensor(1.4, dtype=torch.float64))
    pred.requires_grad_(True)
    ciou_loss(pred, target).backward()
    assert pred.grad[0, 0] + pred.grad[0, 2] < 0  # sliding the box towards the target lowers the loss


def test_nested_boxes() -> None:
    # target 2 x 2 at the origin, prediction 1 x 1 in its centre: IoU 1/4, same centre, same aspect -> 0.75
    pred, target = boxes([0.5, 0.5, 1.5, 1.5]), boxes([0.0, 0.0, 2.0, 2.0])
    torch.testing.assert_close(ciou_loss(pred, target, eps=0.0), torch.tensor(0.75, dtype=torch.float64))


def test_overlap_with_aspect_mismatch() -> None:
    # pred [0,0,2,1] (2 x 1), target [0,0,1,1]: IoU 1/2, centres (1, .5) vs (.5, .5): rho^2 = .25, c^2 = 4 + 1
    pred, target = boxes([0.0, 0.0, 2.0, 1.0]), boxes([0.0, 0.0, 1.0, 1.0])
    v = 4 / math.pi**2 * (math.atan(1.0) - math.atan(2.0)) ** 2
    alpha = v / (1 - 0.5 + v)
    expected = 1 - 0.5 + 0.25 / 5 + alpha * v
    torch.testing.assert_close(ciou_loss(pred, target, eps=0.0), torch.tensor(expected, dtype=torch.float64))


def test_reductions_and_errors() -> None:
    pred, target = boxes([0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 2.0, 1.0]), boxes([2.0, 0.0, 3.0, 1.0], [0.0, 0.0, 1.0, 1.0])
    per_box = ciou_loss(pred, target, reduction="none")
    assert per_box.shape == (2,)
    torch.testing.assert_close(ciou_loss(pred, target, reduction="sum"), per_box.sum())
    torch.testing.assert_close(ciou_loss(pred, target), per_box.mean())
    with pytest.raises(ValueError, match="reduction='max'"):
        ciou_loss(pred, target, reduction="max")
    with pytest.raises(ValueError, match=r"\(\.\.\., 4\)"):
        ciou_loss(pred[:, :3], target[:, :3])


def test_margin_cross_entropy_without_margin_is_cross_entropy() -> None:
    torch.manual_seed(0)
    logits, labels = torch.randn(6, 2), torch.tensor([0, 1, 1, 0, 0, 1])
    weight = torch.tensor([0.1, 0.9])
    torch.testing.assert_close(margin_cross_entropy(logits, labels), F.cross_entropy(logits, labels))
    torch.testing.assert_close(
        margin_cross_entropy(logits, labels, weight=weight), F.cross_entropy(logits, labels, weight=weight)
    )
    torch.testing.assert_close(
        margin_cross_entropy(logits, labels, reduction="none"), F.cross_entropy(logits, labels, reduction="none")
    )


def test_margin_cross_entropy_is_oc_softmax_on_the_cosine_head() -> None:
    """OC-softmax (alpha 20, margins 0.9 bona fide / 0.2 spoof) by hand: log(1 + exp(alpha (m_y - cos) (-1)^y))."""
    head = OneClassCosineHead(2, scale=20.0, centre=0.55)
    with torch.no_grad():
        head.direction.copy_(torch.tensor([1.0, 0.0]))
    cos = torch.tensor([0.95, 0.5])  # a bona fide clip inside the cone, a spoof not far enough out
    x = torch.stack((cos, (1 - cos**2).sqrt()), dim=1)
    labels = torch.tensor([1, 0])
    expected = torch.tensor([math.log1p(math.exp(20 * (0.9 - 0.95))), math.log1p(math.exp(20 * (0.5 - 0.2)))])
    loss = margin_cross_entropy(head(x), labels, margin=20 * 0.35, reduction="none")
    torch.testing.assert_close(loss, expected)
    assert expected[0] == pytest.approx(0.31326, abs=1e-5) and expected[1] == pytest.approx(6.00248, abs=1e-5)


def test_margin_cross_entropy_refuses_other_shapes() -> None:
    with pytest.raises(ValueError, match=r"\(b, 2\) logits"):
        margin_cross_entropy(torch.zeros(4, 3), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="reduction="):
        margin_cross_entropy(torch.zeros(4, 2), torch.zeros(4, dtype=torch.long), reduction="max")
