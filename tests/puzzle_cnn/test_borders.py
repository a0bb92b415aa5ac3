"""The border rule and the grid's: flat sides and cores read off generated pieces, where they allow a piece to lie,
and the grid read off a puzzle's pieces together."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from abr_lab.puzzle_cnn.borders import allowed_places, cell_sizes, core_box, flat_sides, grid_places, read_grid
from abr_lab.puzzle_cnn.generator import MAX_STRENGTH, make_puzzle, piece_canvas, render_piece
from abr_lab.puzzle_cnn.network import PuzzleNet, rotation_hypotheses, silhouette
from abr_lab.registry import create_model

ROWS = COLS = 4


def border_truth(row: int, col: int) -> list[bool]:
    """Flat sides (top, right, bottom, left) of the upright piece of cell (row, col)."""
    return [row == 0, col == COLS - 1, row == ROWS - 1, col == 0]


@pytest.fixture(scope="module")
def puzzle():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(150, 200, 3), dtype=np.uint8)  # landscape: letterboxed top and bottom
    return make_puzzle(image, 256, ROWS, COLS, jigsaw=True, crop_min_area=1.0, rng=rng)


@pytest.mark.parametrize("strength", [0.0, 1.0])
def test_flat_sides_are_the_border_sides_of_every_piece_read_off_its_outline(puzzle, strength: float) -> None:
    rng = np.random.default_rng(1)
    for row in range(ROWS):
        for col in range(COLS):
            piece = render_piece(puzzle, row, col, 104, strength, rng)
            canvas = torch.from_numpy(piece.image).permute(2, 0, 1)[None].float() / 255  # (1, 3, s, s)
            upright = rotation_hypotheses(canvas)[piece.rotation][None]  # (1, 3, s, s): the turn undone
            outline = silhouette(upright)[:, 0] > 0.5  # (1, s, s)
            flat, size = flat_sides(outline)
            assert flat[0].tolist() == border_truth(row, col), (row, col, piece.rotation)
            x0, y0, x1, y1 = puzzle.grid.cell_px(row, col)
            np.testing.assert_allclose(size[0].numpy(), [x1 - x0, y1 - y0], rtol=0.15)


def test_core_box_leaves_tabs_out_and_keeps_blanks() -> None:
    mask = torch.zeros(1, 20, 20, dtype=torch.bool)
    mask[0, 5:15, 5:15] = True  # the cell
    mask[0, 2:5, 9:11] = True  # a tab above
    mask[0, 9:11, 12:15] = False  # a blank on the right
    assert core_box(mask)[0].tolist() == [5, 15, 5, 15]
    flat, size = flat_sides(mask)
    assert flat[0].tolist() == [False, False, True, True]  # top: a tab; right: a blank; bottom, left: straight
    assert size[0].tolist() == [10.0, 10.0]


def test_allowed_places_on_a_hand_made_grid() -> None:
    """A 4 x 4 grid over the whole canvas (cells 0.25 wide), an 8 x 8 heatmap (centres (i + 0.5) / 8)."""
    content = torch.tensor([[0.0, 0.0, 1.0, 1.0]]).expand(3, 4)
    flat = torch.tensor(
        [
            [True, False, False, True],  # top-left corner piece
            [False, False, False, False],  # interior piece
            [True, True, True, True],  # every side flat: a rectangle, nothing to go by
        ]
    )[:, None].expand(3, 4, 4)  # the same at every hypothesis
    size = torch.full((3, 4, 2), 0.25)
    allowed = allowed_places(flat, size, content, (8, 8))  # (3, 4, 8, 8)
    corner, interior = torch.zeros(8, 8, dtype=torch.bool), torch.zeros(8, 8, dtype=torch.bool)
    corner[:2, :2] = True  # centres within half a cell of the top-left corner cell's centre
    interior[2:6, 2:6] = True  # centres a whole cell inside every edge
    assert torch.equal(allowed[0, 0], corner) and torch.equal(allowed[1, 0], interior)
    assert allowed[2].all()


def test_allowed_places_follow_the_letterbox_and_each_hypothesis() -> None:
    """A bottom-edge piece on a picture letterboxed to y in [0.25, 0.75]: turned pieces put the flat side elsewhere."""
    content = torch.tensor([[0.0, 0.25, 1.0, 0.75]])
    flat = torch.tensor([[[False, False, True, False], [False, True, False, False]]])  # hypotheses: bottom, right
    size = torch.full((1, 2, 2), 0.125)
    allowed = allowed_places(flat, size, content, (16, 16))  # centres (i + 0.5) / 16
    rows = allowed[0, 0].any(dim=1).nonzero().squeeze(1).tolist()
    assert rows == [10, 11]  # bottom edge within half a cell of y = 0.75: centre y in (0.625, 0.75)
    # left and right knobbed: half a cell inside, centre x in [0.125, 0.875]
    assert allowed[0, 0, 10].nonzero().squeeze(1).tolist() == list(range(2, 14))
    columns = allowed[0, 1].any(dim=0).nonzero().squeeze(1).tolist()
    assert columns == [14, 15]  # the right edge within half a cell of x = 1
    # top and bottom knobbed: centre y in [0.375, 0.625], half a cell inside the letterboxed picture
    assert allowed[0, 1].any(dim=1).nonzero().squeeze(1).tolist() == list(range(6, 10))


def test_the_border_prior_lowers_only_the_ruled_out_places_and_keeps_the_true_one(puzzle) -> None:
    torch.manual_seed(0)
    net = create_model("puzzle_cnn_tiny", border_prior=7.0).eval()
    assert isinstance(net, PuzzleNet)
    rng = np.random.default_rng(2)
    pieces = [render_piece(puzzle, row, col, 104, 1.0, rng) for row, col in [(0, 0), (1, 2), (3, 1)]]
    piece = torch.stack([torch.from_numpy(p.image).permute(2, 0, 1).float() / 255 for p in pieces])  # (3, 3, s, s)
    canvas = torch.from_numpy(puzzle.canvas).permute(2, 0, 1)[None].float() / 255  # (1, 3, S, S)
    content = torch.from_numpy(puzzle.grid.content_box())[None]  # (1, 4)
    index = torch.zeros(3, dtype=torch.long)
    with torch.no_grad():
        on = net(piece, canvas, index, content)["heatmap"]
        net.border_prior = 0.0
        off = net(piece, canvas, index, content)["heatmap"]
    drop = off - on  # (3, 4, h, w): 0 where allowed, the prior where ruled out
    assert torch.allclose(drop[drop.abs() > 1e-4], torch.tensor(7.0))
    h, w = on.shape[-2:]
    for i, p in enumerate(pieces):
        x1, y1, x2, y2 = p.box
        centre = int((y1 + y2) / 2 * h), int((x1 + x2) / 2 * w)
        assert drop[i, p.rotation, centre[0], centre[1]].abs() < 1e-4, "the true place and turn are allowed"
        assert (drop[i] > 1).float().mean() > 0.5, "most places are ruled out"


def test_grid_places_on_a_hand_made_grid() -> None:
    """A 2 x 4 grid over a picture at y in [0.125, 0.875]: cells 0.25 wide, 0.375 tall (taller than wide)."""
    content, grid = torch.tensor([[0.0, 0.125, 1.0, 0.875]]), torch.tensor([[2, 4]])
    assert torch.allclose(cell_sizes(content, grid), torch.tensor([[0.25, 0.375]]))
    size = torch.tensor([[[0.2, 0.3], [0.3, 0.2], [0.2, 0.2], [0.3, 0.2]]])  # (1, r, 2): tall, wide, square, wide
    places = grid_places(size, content, grid, (16, 16))  # (1, 4, 16, 16), centres (i + 0.5) / 16
    # within 0.15 of a cell of a centre: x centres 0.125, 0.375, ... +- 0.0375; y centres 0.3125, 0.6875 +- 0.05625
    columns = places[0, 0].any(dim=0).nonzero().squeeze(1).tolist()
    rows = places[0, 0].any(dim=1).nonzero().squeeze(1).tolist()
    assert columns == [1, 2, 5, 6, 9, 10, 13, 14] and rows == [4, 5, 10, 11]
    assert places[0, 2].equal(places[0, 0]), "a square core rules no turn out"
    assert not places[0, 1].any() and not places[0, 3].any(), "a wide piece cannot lie in a tall cell"


def test_grid_places_keep_the_nearest_entries_when_cells_are_small() -> None:
    """3 x 3 cells over an 8 x 8 heatmap: cell centres 1/6, 1/2, 5/6, entry centres (i + 0.5) / 8. 0.15 of a cell
    (0.05) keeps entries 1 and 6 (0.021 away) but neither of the middle cell's two (0.0625 away): half an entry
    (0.0625) is the floor that keeps them."""
    places = grid_places(
        torch.full((1, 1, 2), 0.3), torch.tensor([[0.0, 0.0, 1.0, 1.0]]), torch.tensor([[3, 3]]), (8, 8)
    )
    assert places[0, 0].any(dim=0).nonzero().squeeze(1).tolist() == [1, 3, 4, 6]
    assert places[0, 0].any(dim=1).nonzero().squeeze(1).tolist() == [1, 3, 4, 6]


def test_the_known_grid_never_rules_out_the_true_place_and_turn(puzzle) -> None:
    """Every piece of a generated 4 x 4 jigsaw (oblong cells), photographed at full strength: the grid's rule keeps
    the entry at its cell's centre at its true turn, and rules out the turns across the cell."""
    rng = np.random.default_rng(3)
    content = torch.from_numpy(puzzle.grid.content_box())[None]  # (1, 4)
    grid = torch.tensor([[ROWS, COLS]])
    cell = cell_sizes(content, grid)[0]
    assert (cell[0] / cell[1] - 1).abs() > 0.08, "the fixture's cells are oblong"
    h = w = 128
    for row in range(ROWS):
        for col in range(COLS):
            piece = render_piece(puzzle, row, col, 104, 1.0, rng)
            canvas = torch.from_numpy(piece.image).permute(2, 0, 1)[None].float() / 255  # (1, 3, s, s)
            outlines = silhouette(rotation_hypotheses(canvas))[:, 0] > 0.5  # (r, s, s)
            _, size = flat_sides(outlines)  # (r, 2) px
            places = grid_places(size[None] / puzzle.canvas.shape[0], content, grid, (h, w))  # (1, r, h, w)
            x1, y1, x2, y2 = piece.box
            i, j = int((y1 + y2) / 2 * h), int((x1 + x2) / 2 * w)
            assert places[0, piece.rotation, i, j], (row, col, piece.rotation)
            assert not places[0, (piece.rotation + 1) % 4].any(), (row, col, piece.rotation)


def test_a_known_grid_lowers_only_what_it_rules_out_and_boxes_the_cell(puzzle) -> None:
    torch.manual_seed(0)
    net = create_model("puzzle_cnn_tiny", border_prior=0.0, grid_prior=5.0).eval()
    rng = np.random.default_rng(4)
    pieces = [render_piece(puzzle, row, col, 104, 1.0, rng) for row, col in [(0, 3), (2, 1)]]
    piece = torch.stack([torch.from_numpy(p.image).permute(2, 0, 1).float() / 255 for p in pieces])  # (2, 3, s, s)
    canvas = torch.from_numpy(puzzle.canvas).permute(2, 0, 1)[None].float() / 255  # (1, 3, S, S)
    content, grid = torch.from_numpy(puzzle.grid.content_box())[None], torch.tensor([[ROWS, COLS]])
    index = torch.zeros(2, dtype=torch.long)
    with torch.no_grad():
        known = net(piece, canvas, index, content, grid)
        unknown = net(piece, canvas, index, content)
    drop = unknown["heatmap"] - known["heatmap"]  # (2, 4, h, w): 0 where the grid allows, the prior elsewhere
    assert torch.allclose(drop[drop.abs() > 1e-4], torch.tensor(5.0))
    h, w = drop.shape[-2:]
    cell = cell_sizes(content, grid)[0]  # (2,) (w, h)
    for i, p in enumerate(pieces):
        x1, y1, x2, y2 = p.box
        assert drop[i, p.rotation, int((y1 + y2) / 2 * h), int((x1 + x2) / 2 * w)].abs() < 1e-4
        assert (drop[i] > 1).float().mean() > 0.9, "off-centre places and the turns across the cell are ruled out"
    box = known["box"]
    torch.testing.assert_close(box[:, 2:] - box[:, :2], cell.expand(2, 2), atol=1e-5, rtol=0)


def peaked_heatmaps(centres: list[tuple[float, float]], shape: tuple[int, int]) -> torch.Tensor:
    """(n, r, h, w) logits, each piece's single peak (+10) at its (x, y) centre at rotation 0."""
    h, w = shape
    heatmap = torch.zeros(len(centres), 4, h, w)
    for i, (x, y) in enumerate(centres):
        heatmap[i, 0, int(y * h), int(x * w)] = 10.0
    return heatmap


@pytest.mark.parametrize("cols", [5, 6])
def test_among_the_grids_the_cores_allow_the_pieces_matches_pick_one(cols: int) -> None:
    """Cores 1.05 x a sixth wide (5.7 cells across: 5 or 6 both within reach) and a quarter high: the grid is the
    one on whose cell centres the pieces' heatmaps peak."""
    rng = np.random.default_rng(6)
    cells = [(int(rng.integers(cols)), int(rng.integers(4))) for _ in range(12)]
    centres = [((c + 0.5) / cols, (r + 0.5) / 4) for c, r in cells]
    core = torch.tensor([1.05 / 6, 0.25])  # (w, h) upright
    size = torch.stack([core, core.flip(0), core, core.flip(0)])[None].expand(12, 4, 2)  # (n, r, 2)
    grid = read_grid(peaked_heatmaps(centres, (96, 96)), size, torch.tensor([0.0, 0.0, 1.0, 1.0]))
    assert grid.tolist() == [4, cols]


def test_the_cores_bound_the_grids_read() -> None:
    """Peaks on a 14 x 14 grid's centres, cores of a 10 x 10 grid's cells: only grids of 8-12 cells a side (10
    +- `GRID_SEARCH`, rounded out) are weighed, so 14 x 14 is not read."""
    centres = [((c + 0.5) / 14, (r + 0.5) / 14) for r in range(14) for c in range(14)]
    size = torch.tensor([0.1, 0.1]).expand(len(centres), 4, 2)
    grid = read_grid(peaked_heatmaps(centres, (112, 112)), size, torch.tensor([0.0, 0.0, 1.0, 1.0]))
    assert 8 <= grid.min() and grid.max() <= 12


@pytest.mark.parametrize(("rows", "cols"), [(4, 4), (3, 5)])
def test_the_network_reads_a_jigsaws_grid_off_its_photographed_pieces(rows: int, cols: int) -> None:
    """Every piece of a generated jigsaw at full photometric strength, through the untrained tiny network (its
    pixel level places them), with no grid told: it reads the grid and answers its cells."""
    rng = np.random.default_rng(7)
    image = rng.integers(0, 256, size=(150, 200, 3), dtype=np.uint8)
    puzzle = make_puzzle(image, 256, rows, cols, jigsaw=True, crop_min_area=1.0, rng=rng)
    side = piece_canvas(256, rows, cols, True, MAX_STRENGTH)
    cells = [(row, col) for row in range(rows) for col in range(cols)]
    piece = torch.stack(
        [
            torch.from_numpy(render_piece(puzzle, row, col, side, 1.0, rng).image).permute(2, 0, 1).float() / 255
            for row, col in cells
        ]
    )  # (n, 3, s, s)
    canvas = torch.from_numpy(puzzle.canvas).permute(2, 0, 1)[None].float() / 255  # (1, 3, S, S)
    content = torch.from_numpy(puzzle.grid.content_box())[None]  # (1, 4)
    torch.manual_seed(0)
    net = create_model("puzzle_cnn_tiny").eval()
    with torch.no_grad():
        out = net(piece, canvas, torch.zeros(len(cells), dtype=torch.long), content, read_grids=True)
    assert out["grid"].tolist() == [[rows, cols]]
    cell = cell_sizes(content, out["grid"])[0]  # (2,) (w, h)
    torch.testing.assert_close(out["box"][:, 2:] - out["box"][:, :2], cell.expand(len(cells), 2))


def test_a_grid_is_read_or_told_not_both(puzzle) -> None:
    net = create_model("puzzle_cnn_tiny").eval()
    piece, canvas = torch.zeros(1, 3, 104, 104), torch.zeros(1, 3, 256, 256)
    with pytest.raises(ValueError, match="read it or be told it, not both"):
        net(piece, canvas, torch.zeros(1, dtype=torch.long), None, torch.tensor([[4, 4]]), read_grids=True)


def test_cores_too_small_for_the_heatmap_read_its_finest_grid() -> None:
    """Specks of outline (cores a thousandth of the canvas) ask for 1,000 cells a side: the heatmap's 32 is the most
    that can be read."""
    size = torch.full((3, 4, 2), 1e-3)
    grid = read_grid(torch.zeros(3, 4, 32, 32), size, torch.tensor([0.0, 0.0, 1.0, 1.0]))
    assert grid.tolist() == [32, 32]
