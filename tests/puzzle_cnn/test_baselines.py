"""The template-matching baseline (abr_lab/puzzle_cnn/baselines.py) on a synthetic textured puzzle."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from abr_lab.losses import box_iou
from abr_lab.puzzle_cnn.baselines import TemplateMatcher, core_bounds, evaluate_template_matching
from abr_lab.puzzle_cnn.images import to_tensor

SIZE, CELL, PIECE = 128, 32, 48  # puzzle side, grid cell side (4 x 4 grid), piece canvas side
MARGIN = (PIECE - CELL) // 2  # the cell sits at [MARGIN, MARGIN + CELL) of the piece canvas


@pytest.fixture(scope="module")
def puzzle() -> np.ndarray:
    """Smooth random texture (128, 128, 3) uint8: noise blurred at two scales, stretched to 0..255."""
    rng = np.random.default_rng(0)
    noise = rng.random((SIZE, SIZE, 3)).astype(np.float32)
    image = cv2.GaussianBlur(noise, (0, 0), 1.5) + cv2.GaussianBlur(noise, (0, 0), 5) * 2
    image -= image.min((0, 1))
    return (255 * image / image.max((0, 1))).astype(np.uint8)


def piece_mask(knob: bool) -> np.ndarray:
    """(48, 48) bool: the cell's square, plus a round knob (radius 6) on its right side when `knob`."""
    mask = np.zeros((PIECE, PIECE), bool)
    mask[MARGIN : MARGIN + CELL, MARGIN : MARGIN + CELL] = True
    if knob:
        yy, xx = np.mgrid[:PIECE, :PIECE]
        mask |= (yy - PIECE / 2) ** 2 + (xx - (MARGIN + CELL + 3)) ** 2 <= 6**2
    return mask


def cut_piece(puzzle: np.ndarray, row: int, col: int, k: int, knob: bool, seed: int = 1):
    """(piece, mask, true box) of cell (row, col) turned by k (piece = rot90(upright, k)); noisy background."""
    y, x = row * CELL - MARGIN, col * CELL - MARGIN
    mask = piece_mask(knob)
    background = np.random.default_rng(seed).integers(0, 256, (PIECE, PIECE, 3), dtype=np.uint8)
    upright = np.where(mask[..., None], puzzle[y : y + PIECE, x : x + PIECE], background)
    box = np.array([col * CELL, row * CELL, (col + 1) * CELL, (row + 1) * CELL], np.float32) / SIZE
    return np.ascontiguousarray(np.rot90(upright, k)), np.ascontiguousarray(np.rot90(mask, k)), box


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float(box_iou(torch.from_numpy(np.asarray(a, np.float32)), torch.from_numpy(np.asarray(b, np.float32))))


@pytest.mark.parametrize("knob", [False, True], ids=["rectangle", "jigsaw"])
@pytest.mark.parametrize("k", [0, 1, 2, 3])
def test_finds_rotation_and_cell(puzzle, k, knob):
    piece, mask, box = cut_piece(puzzle, row=1, col=2, k=k, knob=knob)
    result = TemplateMatcher().match(piece, mask, puzzle)
    assert result.rotation == k
    assert result.box.shape == (4,)
    assert iou(result.box, box) > 0.8
    assert result.score > 0.9


def test_survives_a_brightness_and_contrast_change(puzzle):
    piece, mask, box = cut_piece(puzzle, row=2, col=1, k=3, knob=True)
    changed = np.clip(piece.astype(np.float32) * 0.7 + 40, 0, 255).astype(np.uint8)
    result = TemplateMatcher(method="ccoeff_normed").match(changed, mask, puzzle)
    assert result.rotation == 3 and iou(result.box, box) > 0.8


def test_core_leaves_the_knob_out():
    mask = piece_mask(knob=True)
    assert core_bounds(mask) == (MARGIN, MARGIN + CELL, MARGIN, MARGIN + CELL)


def test_bad_options_raise(puzzle):
    with pytest.raises(ValueError, match="method='sqdiff'"):
        TemplateMatcher(method="sqdiff")
    with pytest.raises(ValueError, match="scales"):
        TemplateMatcher(scales=())
    piece, mask, _ = cut_piece(puzzle, 1, 1, 0, knob=False)
    with pytest.raises(ValueError, match="mask"):
        TemplateMatcher().match(piece, mask.astype(np.uint8), puzzle)
    with pytest.raises(ValueError, match="empty"):
        TemplateMatcher().match(piece, np.zeros_like(mask), puzzle)


def contract_batch(puzzle: np.ndarray) -> dict[str, torch.Tensor]:
    """One puzzle, three pieces, as the DataModule yields them."""
    cells, rotations = [(1, 1), (1, 2), (2, 1)], [0, 1, 2]  # inner cells: the piece canvas stays inside
    cut = [
        cut_piece(puzzle, r, c, k, knob=True, seed=i)
        for i, ((r, c), k) in enumerate(zip(cells, rotations, strict=True))
    ]
    pieces, masks, boxes = (list(part) for part in zip(*cut, strict=True))
    return {
        "puzzle": to_tensor(puzzle)[None],  # (1, 3, S, S)
        "piece": torch.stack([to_tensor(p) for p in pieces]),  # (3, 3, s, s)
        "mask": torch.from_numpy(np.stack(masks)[:, None].astype(np.float32)),  # (3, 1, s, s)
        "puzzle_index": torch.zeros(3, dtype=torch.long),
        "box": torch.from_numpy(np.stack(boxes)),
        "rotation": torch.tensor(rotations),
        "cell": torch.tensor(cells),
    }


def test_evaluate_template_matching(puzzle):
    batch = contract_batch(puzzle)
    report = evaluate_template_matching([batch], TemplateMatcher())
    expected = {"iou", "acc_iou50", "centre_error", "rotation_accuracy", "spread_ratio"}
    assert set(report) == expected | {"confusion", "pieces", "seconds_per_piece"}
    assert report["pieces"] == 3
    assert report["rotation_accuracy"] == 1 and report["acc_iou50"] == 1
    assert report["iou"] > 0.8 and report["spread_ratio"] == pytest.approx(1, abs=0.1)
    assert np.array_equal(np.diag(report["confusion"])[:3], [1, 1, 1]) and sum(map(sum, report["confusion"])) == 3
    assert all(isinstance(report[key], float) for key in expected | {"seconds_per_piece"})


def test_evaluate_respects_limit(puzzle):
    batch = contract_batch(puzzle)
    assert evaluate_template_matching([batch, batch], TemplateMatcher(), limit=4)["pieces"] == 4
    with pytest.raises(ValueError, match="limit"):
        evaluate_template_matching([batch], TemplateMatcher(), limit=0)
