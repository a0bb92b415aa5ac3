"""Puzzle and piece rendering: bundled photos, crops, letterbox geometry, jigsaw masks that partition the puzzle,
rotation labels, photometric changes on the piece only, size checks and determinism."""

from __future__ import annotations

import numpy as np
import pytest

from abr_lab.puzzle_cnn.generator import (
    JPEG_STEPS,
    PHOTOS,
    Puzzle,
    jpeg_quality,
    letterbox,
    letterbox_box,
    load_photo,
    make_grid,
    make_puzzle,
    photometric,
    piece_canvas,
    piece_mask,
    random_crop,
    random_tabs,
    render_piece,
    required_piece_size,
)

RED = np.array([255, 0, 0], dtype=np.uint8)


def block_image(height: int, width: int, rows: int, cols: int) -> tuple[np.ndarray, np.ndarray]:
    """An image of rows x cols blocks, each its own colour, and the (rows, cols, 3) colours."""
    colours = np.random.default_rng(0).integers(30, 256, size=(rows, cols, 3)).astype(np.uint8)
    ys = np.minimum(np.arange(height) * rows // height, rows - 1)
    xs = np.minimum(np.arange(width) * cols // width, cols - 1)
    return colours[ys[:, None], xs[None, :]], colours


def canvas_mask(grid, tabs, row: int, col: int) -> np.ndarray:
    """A piece's mask placed on the (size, size) canvas."""
    (x0, y0, x1, y1), mask = piece_mask(grid, tabs, row, col)
    pad = max(0, -x0, -y0, x1 - grid.size, y1 - grid.size)
    big = np.zeros((grid.size + 2 * pad, grid.size + 2 * pad), dtype=bool)
    big[y0 + pad : y1 + pad, x0 + pad : x1 + pad] = mask
    inside = big[pad : pad + grid.size, pad : pad + grid.size]
    assert inside.sum() == big.sum()  # nothing of a piece lies off the canvas
    return inside


def test_bundled_photos_load_as_rgb():
    for name in PHOTOS:
        image = load_photo(name)
        assert image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8 and min(image.shape[:2]) >= 256
    camera = load_photo("camera")
    assert (camera[..., 0] == camera[..., 1]).all()  # grey, repeated to three channels
    with pytest.raises(ValueError, match="unknown photo 'lena'.*astronaut"):
        load_photo("lena")


def test_random_crops_respect_area_aspect_and_bounds():
    rng = np.random.default_rng(1)
    for _ in range(200):
        x0, y0, x1, y1 = random_crop((300, 400, 3), 0.35, rng)
        assert 0 <= x0 < x1 <= 400 and 0 <= y0 < y1 <= 300
        assert (x1 - x0) * (y1 - y0) >= 0.34 * 300 * 400
        assert 0.74 <= (x1 - x0) / (y1 - y0) <= 1.34
    x0, y0, x1, y1 = random_crop((1000, 20), 0.35, rng)  # too thin for the aspect range: shrinks, keeps the aspect
    assert x1 - x0 <= 20 and 0.7 <= (x1 - x0) / (y1 - y0) <= 1.4


@pytest.mark.parametrize("size", [64, 200])  # shrink (area interpolation) and enlarge (bilinear)
def test_letterbox_maps_boxes_where_the_content_lands(size):
    image = np.full((60, 90, 3), 40, dtype=np.uint8)
    image[10:40, 30:60] = RED
    canvas, scale, pad_x, pad_y = letterbox(image, size)
    assert canvas.shape == (size, size, 3) and scale == pytest.approx(size / 90) and pad_x == 0
    assert pad_y == (size - round(60 * scale)) // 2 > 0
    assert (canvas[:pad_y] == 0).all() and (canvas[pad_y + round(60 * scale) :] == 0).all()  # black padding
    x1, y1, x2, y2 = np.round(letterbox_box(np.array([30, 10, 60, 40]), scale, pad_x, pad_y, size) * size).astype(int)
    assert (canvas[y1 + 1 : y2 - 1, x1 + 1 : x2 - 1] == RED).all()
    red = (canvas == RED).all(axis=2)
    red[y1 - 1 : y2 + 1, x1 - 1 : x2 + 1] = False
    assert not red.any()  # no red outside the mapped box


def test_grid_boxes_lie_on_their_cells():
    image, colours = block_image(90, 120, 3, 4)
    canvas, scale, pad_x, pad_y = letterbox(image, 80)
    grid = make_grid((pad_x, pad_y, pad_x + round(120 * scale), pad_y + round(90 * scale)), 3, 4, 80)
    for row in range(3):
        for col in range(4):
            x1, y1, x2, y2 = np.round(grid.cell_box(row, col) * 80).astype(int)
            assert (canvas[y1 + 1 : y2 - 1, x1 + 1 : x2 - 1] == colours[row, col]).all()


def test_unrotated_piece_shows_its_cell_on_a_plain_background():
    image, colours = block_image(96, 96, 2, 3)
    canvas, _, _, _ = letterbox(image, 96)
    puzzle = Puzzle(canvas, make_grid((0, 0, 96, 96), 2, 3, 96), None, (0, 0, 96, 96))
    piece = render_piece(puzzle, 1, 2, 48, 0.0, np.random.default_rng(0), rotation=0)
    assert piece.image.shape == (48, 48, 3) and piece.mask.shape == (48, 48) and piece.cell == (1, 2)
    np.testing.assert_allclose(piece.box, [64 / 96, 0.5, 1.0, 1.0])
    assert (piece.image[piece.mask] == colours[1, 2]).all() and piece.mask.sum() == 32 * 48
    background = piece.image[~piece.mask]
    assert (background == background[0]).all()


def test_rotation_label_is_the_applied_rotation():
    image = np.random.default_rng(0).integers(0, 256, size=(100, 80, 3)).astype(np.uint8)
    seen = set()
    for seed in range(12):
        puzzle = make_puzzle(image, 96, 3, 3, True, 0.5, np.random.default_rng(seed))
        rotated = render_piece(puzzle, 1, 2, 48, 0.0, np.random.default_rng(seed))
        upright = render_piece(puzzle, 1, 2, 48, 0.0, np.random.default_rng(seed), rotation=0)
        np.testing.assert_array_equal(np.rot90(rotated.image, -rotated.rotation), upright.image)
        np.testing.assert_array_equal(np.rot90(rotated.mask, -rotated.rotation), upright.mask)
        seen.add(rotated.rotation)
    assert seen == {0, 1, 2, 3}


def test_jigsaw_masks_of_neighbours_are_complementary():
    grid = make_grid((3, 10, 93, 86), 3, 4, 96)
    tabs = random_tabs(3, 4, np.random.default_rng(0))
    masks = {(r, c): canvas_mask(grid, tabs, r, c) for r in range(3) for c in range(4)}
    band = 5  # px either side of a shared edge: more than a knob reaches, less than the way to another edge's knob
    for (r, c), mask in masks.items():
        x0, y0, x1, y1 = grid.cell_px(r, c)
        strips = []
        if c + 1 < 4:
            strips.append(((r, c + 1), np.s_[y0:y1, x1 - band : x1 + band]))
        if r + 1 < 3:
            strips.append(((r + 1, c), np.s_[y1 - band : y1 + band, x0:x1]))
        for neighbour, strip in strips:
            a, b = mask[strip], masks[neighbour][strip]
            assert not (a & b).any() and (a | b).all()  # the tab of one is the blank of the other
    count = sum(m.astype(int) for m in masks.values())
    content = np.zeros((96, 96), dtype=bool)
    content[10:86, 3:93] = True
    assert (count[content] == 1).all() and (count[~content] == 0).all()  # the pieces partition the content


def test_interior_edges_carry_knobs_and_plain_pieces_are_rectangles():
    grid = make_grid((0, 0, 96, 96), 3, 3, 96)
    jigsaw = canvas_mask(grid, random_tabs(3, 3, np.random.default_rng(2)), 1, 1)
    plain = canvas_mask(grid, None, 1, 1)
    assert plain.sum() == 32 * 32 and plain[32:64, 32:64].all()
    # each of the four edges has a tab (pixels just outside the cell) or else a blank (pixels missing inside)
    for outside, inside in (
        (jigsaw[32:64, 31], jigsaw[32:64, 32]),
        (jigsaw[32:64, 64], jigsaw[32:64, 63]),
        (jigsaw[31, 32:64], jigsaw[32, 32:64]),
        (jigsaw[64, 32:64], jigsaw[63, 32:64]),
    ):
        assert outside.any() != (not inside.all())


def test_photometric_changes_the_piece_only():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(32, 32, 3)).astype(np.uint8)
    mask = np.zeros((32, 32), dtype=bool)
    mask[8:24, 8:24] = True
    np.testing.assert_array_equal(photometric(image, mask, 0.0, np.random.default_rng(3)), image)
    changed = photometric(image, mask, 1.0, np.random.default_rng(3))
    np.testing.assert_array_equal(changed[~mask], image[~mask])
    assert (changed[mask] != image[mask]).any()


def test_jpeg_quality_spans_the_strengths_range_from_one_draw():
    assert [jpeg_quality(step, 1.0) for step in (0, 1, JPEG_STEPS - 1)] == [50, 51, 95]
    assert {jpeg_quality(step, 0.0) for step in range(JPEG_STEPS)} == {95}
    assert [jpeg_quality(step, 2.0) for step in (0, JPEG_STEPS - 1)] == [5, 95]


def test_a_piece_without_photometric_changes_is_the_same_cut_turn_and_background():
    # every strength takes the same draws, so strength 0 renders the clean twin of a strength-1 piece
    image = load_photo("coffee")
    twins = []
    for strength in (0.0, 1.0):
        rng = np.random.default_rng(11)
        puzzle = make_puzzle(image, 96, 3, 3, True, 0.35, rng)
        twins.append([render_piece(puzzle, r, c, 48, strength, rng) for r in range(3) for c in range(3)])
    for clean, changed in zip(*twins, strict=True):
        assert clean.rotation == changed.rotation and clean.cell == changed.cell
        np.testing.assert_array_equal(clean.image[0, 0], changed.image[0, 0])  # the background colour
    assert any((clean.image != changed.image).any() for clean, changed in zip(*twins, strict=True))


def test_required_piece_size_holds_every_piece():
    image = np.random.default_rng(0).integers(0, 256, size=(70, 90, 3)).astype(np.uint8)
    need = required_piece_size(64, 2, 3, True, 2.0)
    for seed in range(10):
        rng = np.random.default_rng(seed)
        puzzle = make_puzzle(image, 64, 2, 3, True, 0.35, rng)
        for row in range(2):
            for col in range(3):
                render_piece(puzzle, row, col, need, 2.0, rng)  # raises if a piece does not fit
    assert piece_canvas(64, 2, 3, True, 2.0) % 8 == 0 and piece_canvas(64, 2, 3, True, 2.0) >= need
    assert piece_canvas(512, 16, 16) < piece_canvas(512, 8, 8)  # the canvas follows the grid
    with pytest.raises(ValueError, match=r"does not fit piece_size=8"):
        render_piece(make_puzzle(image, 64, 2, 3, True, 0.35, np.random.default_rng(0)), 0, 0, 8, 0.0, rng)


def test_too_small_image_is_named():
    with pytest.raises(ValueError, match="tiny.png: 5x5 px is too small for a 4x4 grid"):
        make_puzzle(np.zeros((5, 5, 3), np.uint8), 64, 4, 4, True, 0.35, np.random.default_rng(0), "tiny.png")


def test_puzzles_and_pieces_are_deterministic_given_the_generator():
    image = load_photo("coffee")

    def draw(seed: int):
        rng = np.random.default_rng(seed)
        puzzle = make_puzzle(image, 96, 3, 3, True, 0.35, rng)
        return puzzle, [render_piece(puzzle, r, c, 48, 1.0, rng) for r in range(3) for c in range(3)]

    (a, pieces_a), (b, pieces_b), (c, _) = draw(5), draw(5), draw(6)
    np.testing.assert_array_equal(a.canvas, b.canvas)
    assert a.crop == b.crop and a.crop != c.crop
    for p, q in zip(pieces_a, pieces_b, strict=True):
        np.testing.assert_array_equal(p.image, q.image)
        assert p.rotation == q.rotation
