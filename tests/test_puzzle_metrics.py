"""Puzzle localisation metrics (abr_lab/metrics/puzzle.py) against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from abr_lab.metrics import PuzzleMetrics, puzzle_scores, puzzle_stats, rotation_confusion
from abr_lab.metrics.puzzle import STATS

BOXES = torch.tensor([[0.0, 0.0, 0.2, 0.2], [0.5, 0.5, 0.7, 0.6], [0.2, 0.6, 0.4, 0.9]])


def scores_of(pred_box, true_box, pred_rotation=None, true_rotation=None) -> dict[str, float]:
    n = len(pred_box)
    pred_rotation = torch.zeros(n, dtype=torch.long) if pred_rotation is None else pred_rotation
    true_rotation = torch.zeros(n, dtype=torch.long) if true_rotation is None else true_rotation
    metric = PuzzleMetrics()
    metric.update(pred_box, true_box, pred_rotation, true_rotation)
    return {key: float(value) for key, value in metric.compute().items()}


def test_identical_boxes_are_perfect():
    scores = scores_of(BOXES, BOXES)
    assert set(scores) == {"iou", "acc_iou50", "centre_error", "rotation_accuracy", "spread_ratio"}
    assert scores["iou"] == pytest.approx(1, abs=1e-6)
    assert scores["acc_iou50"] == 1
    assert scores["centre_error"] == pytest.approx(0, abs=1e-9)
    assert scores["spread_ratio"] == pytest.approx(1)
    assert scores["rotation_accuracy"] == 1


def test_box_shifted_by_half_its_width():
    # overlap 0.1 x 0.2 = 0.02, union 0.04 + 0.04 - 0.02 = 0.06 -> IoU 1/3 (below 0.5); centres 0.1 apart / width 0.2
    true = torch.tensor([[0.0, 0.0, 0.2, 0.2]])
    pred = torch.tensor([[0.1, 0.0, 0.3, 0.2]])
    scores = scores_of(pred, true)
    assert scores["iou"] == pytest.approx(1 / 3, rel=1e-5)
    assert scores["acc_iou50"] == 0
    assert scores["centre_error"] == pytest.approx(0.5, rel=1e-6)


def test_centre_error_is_euclidean_over_true_width():
    true = torch.tensor([[0.0, 0.0, 0.2, 0.4]])  # width 0.2
    pred = torch.tensor([[0.03, 0.04, 0.23, 0.44]])  # centre moved by (0.03, 0.04): 0.05
    assert scores_of(pred, true)["centre_error"] == pytest.approx(0.25, rel=1e-5)


def test_rotation_accuracy_and_confusion():
    true = torch.tensor([0, 1, 2, 3, 1, 1])
    pred = torch.tensor([0, 1, 0, 3, 3, 1])
    metric = PuzzleMetrics()
    metric.update(BOXES[[0, 1, 2, 0, 1, 2]], BOXES[[0, 1, 2, 0, 1, 2]], pred, true)
    assert float(metric.compute()["rotation_accuracy"]) == pytest.approx(4 / 6)
    expected = torch.zeros(4, 4, dtype=torch.long)
    for t, p in zip(true.tolist(), pred.tolist(), strict=True):
        expected[t, p] += 1
    confusion = metric.confusion()
    assert confusion.dtype == torch.long and confusion.shape == (4, 4)
    assert torch.equal(confusion, expected)
    assert confusion[2, 0] == 1 and confusion[1, 3] == 1 and confusion[1, 1] == 2
    assert torch.equal(rotation_confusion(pred, true), expected)


def test_spread_ratio_is_zero_for_a_constant_prediction():
    constant = torch.tensor([[0.4, 0.4, 0.6, 0.6]]).repeat(3, 1)
    assert scores_of(constant, BOXES)["spread_ratio"] == pytest.approx(0, abs=1e-6)


def test_spread_ratio_of_a_scaled_prediction():
    # predicted centres at half the distance from their mean -> half the spread
    true = torch.tensor([[0.0, 0.0, 0.2, 0.2], [0.4, 0.6, 0.6, 0.8]])
    pred = torch.tensor([[0.1, 0.15, 0.3, 0.35], [0.3, 0.45, 0.5, 0.65]])
    assert scores_of(pred, true)["spread_ratio"] == pytest.approx(0.5, rel=1e-5)


def test_two_updates_equal_one_update_on_the_concatenation():
    gen = torch.Generator().manual_seed(0)
    corner = torch.rand(10, 2, generator=gen) * 0.7
    true = torch.cat([corner, corner + 0.2], 1)
    pred = true + 0.05 * torch.randn(10, 4, generator=gen)
    pred_rot, true_rot = torch.randint(0, 4, (10,), generator=gen), torch.randint(0, 4, (10,), generator=gen)
    split = PuzzleMetrics()
    split.update(pred[:4], true[:4], pred_rot[:4], true_rot[:4])
    split.update(pred[4:], true[4:], pred_rot[4:], true_rot[4:])
    whole = PuzzleMetrics()
    whole.update(pred, true, pred_rot, true_rot)
    for key, value in whole.compute().items():
        assert float(split.compute()[key]) == pytest.approx(float(value), rel=1e-6), key
    assert torch.equal(split.confusion(), whole.confusion())


def test_pure_functions_agree_with_the_metric():
    rotation = torch.tensor([0, 1, 2])
    stats = puzzle_stats(BOXES, BOXES, rotation, rotation)
    assert stats.shape == (len(STATS),) and stats.dtype == torch.float64
    assert float(puzzle_scores(stats)["iou"]) == pytest.approx(1, abs=1e-6)


@pytest.mark.filterwarnings("ignore:The ``compute`` method")
def test_no_update_gives_nan():
    scores = PuzzleMetrics().compute()
    assert all(math.isnan(float(v)) for v in scores.values())


@pytest.mark.parametrize(
    "pred_box, true_box, pred_rot, true_rot, message",
    [
        (BOXES[:, :3], BOXES[:, :3], torch.zeros(3, dtype=torch.long), torch.zeros(3, dtype=torch.long), "pred_box"),
        (BOXES, BOXES[:2], torch.zeros(3, dtype=torch.long), torch.zeros(3, dtype=torch.long), "true_box"),
        (BOXES, BOXES, torch.zeros(2, dtype=torch.long), torch.zeros(3, dtype=torch.long), "pred_rotation"),
        (BOXES, BOXES, torch.zeros(3, dtype=torch.long), torch.zeros(3, 1, dtype=torch.long), "true_rotation"),
        (BOXES, BOXES, torch.zeros(3), torch.zeros(3, dtype=torch.long), "integer"),
        (BOXES, BOXES, torch.full((3,), 4), torch.zeros(3, dtype=torch.long), "0..3"),
    ],
)
def test_bad_inputs_raise(pred_box, true_box, pred_rot, true_rot, message):
    with pytest.raises(ValueError, match=message):
        PuzzleMetrics().update(pred_box, true_box, pred_rot, true_rot)


def test_degenerate_true_box_raises():
    flat = torch.tensor([[0.3, 0.1, 0.3, 0.2]])
    with pytest.raises(ValueError, match="x2 <= x1"):
        PuzzleMetrics().update(flat, flat, torch.zeros(1, dtype=torch.long), torch.zeros(1, dtype=torch.long))
