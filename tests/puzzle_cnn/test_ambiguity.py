"""Look-alike counting: right places by IoU on a hand case, a copied patch is a look-alike place, a patch that a
quarter turn leaves unchanged is a look-alike turn, a unique patch is neither, the rank of the first right place
among distinct peaks on a hand-made map, and mismatched batches are refused."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from abr_lab.puzzle_cnn.ambiguity import first_right_peak, look_alikes, right_places, summarise

SIZE, CELL, CANVAS = 32, 8, 12  # puzzle side, cell side, piece canvas side (px)


def right_box(row: int, col: int) -> Tensor:
    return torch.tensor([col, row, col + 1, row + 1], dtype=torch.float32) * CELL / SIZE


def piece_of(puzzle: Tensor, row: int, col: int, turns: int) -> Tensor:
    """(3, CANVAS, CANVAS): cell (row, col) of a (3, SIZE, SIZE) puzzle, centred on a flat canvas, turned."""
    canvas = torch.full((3, CANVAS, CANVAS), -3.0)
    pad = (CANVAS - CELL) // 2
    top, left = row * CELL, col * CELL
    canvas[:, pad : pad + CELL, pad : pad + CELL] = puzzle[:, top : top + CELL, left : left + CELL]
    return torch.rot90(canvas, turns, dims=(-2, -1))


def batch(puzzle: Tensor, cells: list[tuple[int, int, int]], noise: float = 0.0) -> dict[str, Tensor]:
    """The `collate_puzzles` contract for one puzzle and pieces (row, col, turns); `noise` on the pieces only."""
    pieces = torch.stack([piece_of(puzzle, r, c, k) for r, c, k in cells])
    if noise:
        pieces = torch.where(pieces == -3.0, pieces, pieces + noise * torch.randn_like(pieces))
    return {
        "puzzle": puzzle[None],
        "piece": pieces,
        "box": torch.stack([right_box(r, c) for r, c, _ in cells]),
        "rotation": torch.tensor([k for _, _, k in cells]),
        "puzzle_index": torch.zeros(len(cells), dtype=torch.long),
    }


def test_right_places_are_where_a_box_of_the_cell_scores_iou_at_least_half() -> None:
    right = right_places(right_box(1, 1)[None], SIZE, CANVAS)[0]  # (S, S); the cell spans 8..16, centre 12.0
    assert right[12, 12] and right[11, 11]  # an even canvas: entry 12 compares the window centred on 12.0
    # shifted by a quarter cell along x (2 px): IoU = 0.75 / 1.25 = 0.6; by half a cell (4 px): 0.5 / 1.5 = 1/3
    assert right[12, 12 + 2] and not right[12, 12 + 4]
    # a quarter cell along both: (0.75^2) / (2 - 0.75^2) = 0.39
    assert not right[12 + 2, 12 + 2]
    odd = right_places(right_box(1, 1)[None], SIZE, CANVAS + 1)[0]  # odd: entry j is centred on j + 0.5
    assert odd[12, 13] and not odd[12, 14]  # 0.5 px down and 1.5 px right: IoU 0.62; 2.5 px right: 0.48


def test_a_copied_patch_is_a_look_alike_place_and_a_unique_one_is_not() -> None:
    torch.manual_seed(0)
    puzzle = torch.rand(3, SIZE, SIZE)
    puzzle[:, 16:24, 24:32] = puzzle[:, 8:16, 8:16]  # cell (2, 3) repeats cell (1, 1)
    cells = [(1, 1, 1), (0, 2, 3)]
    clean, changed = batch(puzzle, cells), batch(puzzle, cells, noise=0.05)
    found = look_alikes(clean, changed, erode_pixels=0, blur=0.0)
    assert found.place_rival[0] > 0.999 and found.own[0] < found.place_rival[0]  # the copy: as close as can be
    assert found.look_alike_place.tolist() == [True, False]
    assert found.look_alike_turn.tolist() == [False, False]
    assert found.placed[1] and found.turned.all()  # both turned right; the unique cell is placed too
    assert found.rank[1] == 1 and found.rank[0] in (1, 2)  # the copy's right place is its first or second peak
    figures = summarise(found)
    assert figures["pieces"] == 2 and figures["look_alike_place"] == 0.5 and figures["pixel_turned"] == 1.0


def test_a_patch_that_a_quarter_turn_leaves_alone_is_a_look_alike_turn() -> None:
    torch.manual_seed(1)
    puzzle = torch.rand(3, SIZE, SIZE)
    quarter = torch.rand(3, 4, 4)
    block = torch.cat(
        [
            torch.cat([quarter, torch.rot90(quarter, -1, dims=(-2, -1))], dim=-1),
            torch.cat([torch.rot90(quarter, 1, dims=(-2, -1)), torch.rot90(quarter, 2, dims=(-2, -1))], dim=-1),
        ],
        dim=-2,
    )  # (3, 8, 8) equal to its own quarter turn
    torch.testing.assert_close(torch.rot90(block, 1, dims=(-2, -1)), block)
    puzzle[:, 0:8, 0:8] = block
    clean, changed = batch(puzzle, [(0, 0, 2)]), batch(puzzle, [(0, 0, 2)], noise=0.05)
    found = look_alikes(clean, changed, erode_pixels=0, blur=0.0)
    assert found.turn_rival[0] > 0.999 and found.look_alike_turn.item()


def test_first_right_peak_ranks_distinct_peaks_not_the_shoulders_of_one() -> None:
    location = torch.zeros(1, 16, 16)
    location[0, 2, 2], location[0, 2, 3] = 1.0, 0.95  # a peak and its shoulder one column on
    location[0, 10, 10], location[0, 5, 12] = 0.9, 0.8
    right = torch.zeros(1, 16, 16, dtype=torch.bool)
    right[0, 5, 12] = True
    one, none = torch.tensor([1]), torch.tensor([0])
    assert first_right_peak(location, right, one).item() == 3  # (2, 2), (10, 10), then (5, 12)
    assert first_right_peak(location, right, none).item() == 4  # unsuppressed, the shoulder is a peak of its own
    assert first_right_peak(location, right, one, count=2).item() == 3  # not among the first 2: count + 1
    right[0, 2, 2] = True
    assert first_right_peak(location, right, one).item() == 1
    small = torch.zeros(1, 4, 4)
    small[0, 3, 3] = 1.0
    rest = torch.ones(1, 4, 4, dtype=torch.bool)
    rest[0, 3, 3] = False
    # the first peak's window covers the whole map: no second candidate, not a hit where nothing is left
    assert first_right_peak(small, rest, torch.tensor([8]), count=5).item() == 6


def test_batches_that_are_not_one_batch_rendered_twice_are_refused() -> None:
    puzzle = torch.rand(3, SIZE, SIZE)
    with pytest.raises(ValueError, match="'rotation'"):
        look_alikes(batch(puzzle, [(0, 0, 1)]), batch(puzzle, [(0, 0, 2)]))
