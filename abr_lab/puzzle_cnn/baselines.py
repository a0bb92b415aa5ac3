"""The classic baseline for placing a jigsaw piece: OpenCV normalised cross-correlation template matching.

What a practitioner tries first (Lewis, "Fast normalized cross-correlation", Vision Interface 1995; OpenCV's
``matchTemplate``): for each of the four rotation hypotheses, turn the piece back upright, crop it to its mask and
slide it over the puzzle at a few scales with masked normalised cross-correlation, so the background around the
piece's outline takes no part in the score; the best (rotation, scale, location) wins. The piece's grid cell excludes
the jigsaw tabs, so the box returned is the piece's "core", estimated from the mask as the rows and columns that are
mostly covered, placed where the template matched. No learning, no data beyond the piece and the puzzle: the floor
PuzzleCNN must clear, and a measure of how much the photometric changes and the tabs cost plain correlation.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import torch

from abr_lab.metrics.puzzle import PuzzleMetrics
from abr_lab.puzzle_cnn.borders import core_box
from abr_lab.puzzle_cnn.images import to_uint8

METHODS = {"ccoeff_normed": cv2.TM_CCOEFF_NORMED, "ccorr_normed": cv2.TM_CCORR_NORMED}


@dataclass(frozen=True)
class MatchResult:
    """Where a piece matched: its cell box (4,) normalised (x1, y1, x2, y2), its rotation k (piece = rot90(upright,
    k)) and the correlation score of the match (in [-1, 1], higher = better)."""

    box: np.ndarray
    rotation: int
    score: float


def mask_bounds(mask: np.ndarray) -> tuple[int, int, int, int]:
    """(y0, y1, x0, x1), end-exclusive, of the True pixels of a (h, w) bool mask; ValueError if it is empty."""
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    if rows.size == 0:
        raise ValueError("mask is empty: the piece has no pixel to match")
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def core_bounds(mask: np.ndarray) -> tuple[int, int, int, int]:
    """(y0, y1, x0, x1), end-exclusive, of the piece's core in a (h, w) bool mask (`borders.core_box`: tabs out,
    blanks in)."""
    y0, y1, x0, x1 = core_box(torch.from_numpy(np.ascontiguousarray(mask))[None])[0].tolist()
    return y0, y1, x0, x1


def _check_images(piece: np.ndarray, mask: np.ndarray, puzzle: np.ndarray) -> None:
    if piece.ndim != 3 or piece.shape[2] != 3 or piece.dtype != np.uint8:
        raise ValueError(f"piece must be (s, s, 3) uint8, got {piece.shape} {piece.dtype}")
    if mask.shape != piece.shape[:2] or mask.dtype != bool:
        raise ValueError(f"mask must be bool {piece.shape[:2]} like the piece, got {mask.shape} {mask.dtype}")
    if puzzle.ndim != 3 or puzzle.shape[2] != 3 or puzzle.dtype != np.uint8:
        raise ValueError(f"puzzle must be (S, S, 3) uint8, got {puzzle.shape} {puzzle.dtype}")


class TemplateMatcher:
    """Masked normalised cross-correlation over 4 rotations x `scales`; see the module docstring.

    Args:
        scales: template scale factors tried (the piece is at puzzle scale up to a slight jitter).
        method: ``ccoeff_normed`` (zero-mean NCC: insensitive to brightness and contrast changes) or
            ``ccorr_normed`` (plain NCC).
    """

    def __init__(self, scales: Sequence[float] = (0.9, 1.0, 1.1), method: str = "ccoeff_normed") -> None:
        if method not in METHODS:
            raise ValueError(f"method={method!r}: expected one of {'|'.join(METHODS)}")
        self.scales = tuple(float(s) for s in scales)
        if not self.scales or not all(math.isfinite(s) and s > 0 for s in self.scales):
            raise ValueError(f"scales must be a non-empty sequence of positive factors, got {tuple(scales)}")
        self.method = method

    def _best_location(self, puzzle: np.ndarray, template: np.ndarray, mask: np.ndarray) -> tuple[float, int, int]:
        """(score, x, y) of the best top-left corner of `template` in `puzzle`; NaN / inf scores count as -inf."""
        scores = cv2.matchTemplate(puzzle, template, METHODS[self.method], mask=mask.astype(np.uint8))
        scores = np.where(np.isfinite(scores), scores, -np.inf)
        y, x = np.unravel_index(int(np.argmax(scores)), scores.shape)
        return float(scores[y, x]), int(x), int(y)

    def match(self, piece: np.ndarray, mask: np.ndarray, puzzle: np.ndarray) -> MatchResult:
        """Best cell box and rotation of a (s, s, 3) uint8 `piece` with its (s, s) bool `mask` in an (S, S, 3)
        uint8 `puzzle`. A piece no scale fits into the puzzle, or whose scores are all undefined, gets the whole
        canvas, rotation 0 and score -inf."""
        _check_images(piece, mask, puzzle)
        puzzle = np.ascontiguousarray(puzzle)
        size_y, size_x = puzzle.shape[:2]
        best_score, best_box, best_rotation = -math.inf, np.array([0.0, 0.0, 1.0, 1.0]), 0
        for r in range(4):
            upright, upright_mask = np.rot90(piece, -r), np.rot90(mask, -r)  # undo hypothesis r
            y0, y1, x0, x1 = mask_bounds(upright_mask)
            template, template_mask = upright[y0:y1, x0:x1], upright_mask[y0:y1, x0:x1]
            core = core_bounds(template_mask)
            for scale in self.scales:
                h, w = max(1, round((y1 - y0) * scale)), max(1, round((x1 - x0) * scale))
                if h > size_y or w > size_x:
                    continue
                resized = cv2.resize(np.ascontiguousarray(template), (w, h), interpolation=cv2.INTER_LINEAR)
                resized_mask = cv2.resize(template_mask.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST)
                if not resized_mask.any():
                    continue
                score, x, y = self._best_location(puzzle, resized, resized_mask)
                if score > best_score:
                    sy, sx = h / (y1 - y0), w / (x1 - x0)  # the scale actually applied, after rounding
                    cy0, cy1, cx0, cx1 = core
                    box = np.array([x + cx0 * sx, y + cy0 * sy, x + cx1 * sx, y + cy1 * sy])
                    best_score, best_box, best_rotation = score, box / [size_x, size_y, size_x, size_y], r
        return MatchResult(box=best_box.astype(np.float32), rotation=best_rotation, score=best_score)


def _match_batch(batch: dict[str, Any], matcher: TemplateMatcher, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Predicted boxes (count, 4) and rotations (count,) of the first `count` pieces of a contract batch."""
    puzzles: dict[int, np.ndarray] = {}  # puzzle row -> uint8 image, converted once
    boxes, rotations = np.zeros((count, 4), np.float32), np.zeros(count, np.int64)
    for i in range(count):
        index = int(batch["puzzle_index"][i])
        if index not in puzzles:
            puzzles[index] = to_uint8(batch["puzzle"][index])
        piece, mask = to_uint8(batch["piece"][i]), (batch["mask"][i, 0] > 0.5).cpu().numpy()
        result = matcher.match(piece, mask, puzzles[index])
        boxes[i], rotations[i] = result.box, result.rotation
    return boxes, rotations


def evaluate_template_matching(
    batches: Iterable[dict[str, Any]], matcher: TemplateMatcher, limit: int | None = None
) -> dict[str, Any]:
    """`PuzzleMetrics` of `matcher` over batches of the batch contract (at most `limit` pieces in all).

    Returns:
        The computed scores as floats (``iou``, ``acc_iou50``, ``centre_error``, ``rotation_accuracy``,
        ``spread_ratio``), ``confusion`` (4 x 4 list of counts, rows the true rotation), ``pieces`` (how many were
        matched) and ``seconds_per_piece`` (wall time of conversion and matching per piece).
    """
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be None (every piece) or >= 1, got {limit}")
    metrics = PuzzleMetrics()
    pieces, seconds = 0, 0.0
    for batch in batches:
        count = len(batch["piece"]) if limit is None else min(len(batch["piece"]), limit - pieces)
        start = time.perf_counter()
        boxes, rotations = _match_batch(batch, matcher, count)
        seconds += time.perf_counter() - start
        true_box, true_rotation = batch["box"][:count].float().cpu(), batch["rotation"][:count].long().cpu()
        metrics.update(torch.from_numpy(boxes), true_box, torch.from_numpy(rotations), true_rotation)
        pieces += count
        if limit is not None and pieces >= limit:
            break
    if pieces == 0:
        raise ValueError("evaluate_template_matching: no piece to match (the batches are empty)")
    scores = {key: float(value) for key, value in metrics.compute().items()}
    return scores | {
        "confusion": metrics.confusion().tolist(),
        "pieces": pieces,
        "seconds_per_piece": seconds / pieces,
    }
