"""Jigsaw puzzles and their pieces, rendered from photographs (numpy + OpenCV; no torch).

A puzzle is a random crop of a source image (area fraction in [crop_min_area, 1], aspect ratio in [3/4, 4/3]),
letterboxed onto a square canvas (longest side to `puzzle_size`, centred, black padding) and divided into a
rows x cols grid over the content. With `jigsaw`, every interior edge carries a round knob: a disc of radius
`TAB_RADIUS` x the cell's shorter side whose centre lies `TAB_OFFSET` radii beyond the edge (it protrudes 1.6 radii,
~0.16 of the cell; its neck is 1.6 radii wide). The knob is a tab of one neighbour and the matching blank of the
other, its direction random per puzzle, so the piece masks of a puzzle partition its content exactly.

A piece is its cell expanded by the tab margin on every side, cut from the canvas at puzzle scale, scaled by a small
jitter, centred on a square canvas of a random background colour (`piece_canvas`: it holds the grid's largest
piece), changed photometrically (on the piece only) and rotated by k x 90 degrees counter-clockwise
(``np.rot90(upright, k)``). Its label is the cell's box on the canvas, normalised (x1, y1, x2, y2), tabs not
included. Every draw comes from the numpy Generator passed in, so a puzzle and its pieces are reproducible from a seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import cv2
import numpy as np

from abr_lab.puzzle_cnn.images import as_rgb, read_image

# name -> file in the skimage/data folder (bundled in the wheel: nothing is downloaded)
PHOTOS: dict[str, str] = {
    "astronaut": "astronaut.png",
    "coffee": "coffee.png",
    "chelsea": "chelsea.png",
    "rocket": "rocket.jpg",
    "hubble_deep_field": "hubble_deep_field.jpg",
    "retina": "retina.jpg",
    "immunohistochemistry": "ihc.png",
    "motorcycle": "motorcycle_left.png",
    "camera": "camera.png",  # grey from here on: repeated to three channels
    "coins": "coins.png",
    "moon": "moon.png",
    "grass": "grass.png",
    "gravel": "gravel.png",
    "brick": "brick.png",
}

TAB_RADIUS = 0.1  # knob radius / the cell's shorter side (a knob ~0.2 of the cell across)
TAB_OFFSET = 0.6  # knob centre beyond the edge, in radii
ASPECT_RANGE = (3 / 4, 4 / 3)  # crop width / height
MAX_STRENGTH = 2.0  # photometric strength above this would ask for JPEG qualities below 5
SCALE_JITTER = 0.1  # piece scale 1 +- SCALE_JITTER x strength
JPEG_STEPS = 46  # JPEG qualities 95 - 45 x strength .. 95 (half of the pieces), see `jpeg_quality`


@cache
def load_photo(name: str) -> np.ndarray:
    """A photograph of `PHOTOS` -> (h, w, 3) uint8 RGB (read-only; cached)."""
    if name not in PHOTOS:
        raise ValueError(f"unknown photo {name!r}; known: {', '.join(PHOTOS)}")
    import skimage.data

    image = as_rgb(read_image(Path(skimage.data.__file__).parent / PHOTOS[name]), name)
    image.flags.writeable = False
    return image


def check_image_size(shape: tuple[int, ...], rows: int, cols: int, name: str = "image") -> None:
    """An image must be at least 2 px per cell along its shorter side."""
    if min(shape[:2]) < 2 * max(rows, cols):
        raise ValueError(
            f"{name}: {shape[1]}x{shape[0]} px is too small for a {rows}x{cols} grid "
            f"(need a shorter side of at least {2 * max(rows, cols)} px)"
        )


def _scaled(n: int, factor: float) -> int:
    return max(1, int(round(n * factor)))


def tab_margin(shorter_cell_side: float, jigsaw: bool = True) -> int:
    """Pixels a piece's region extends beyond its cell on every side (how far a knob can reach)."""
    return math.ceil((1 + TAB_OFFSET) * TAB_RADIUS * shorter_cell_side) if jigsaw else 0


def required_piece_size(puzzle_size: int, rows: int, cols: int, jigsaw: bool, photometric_strength: float) -> int:
    """The side of the largest piece (widest cell, tabs, the largest scale jitter) any puzzle can produce."""
    longest_cell = math.ceil(puzzle_size / min(rows, cols))
    region = longest_cell + 2 * tab_margin(puzzle_size / max(rows, cols), jigsaw)
    return _scaled(region, 1 + SCALE_JITTER * photometric_strength)


def piece_canvas(puzzle_size: int, rows: int, cols: int, jigsaw: bool = True, photometric_strength: float = 1.0) -> int:
    """Side of the square canvas the pieces of a grid are drawn on: the largest piece rounded up to a multiple of 8.

    Pieces stay at puzzle scale (never shrunk to fit), so the canvas follows the grid: a finer grid gives smaller
    pieces on a smaller canvas, which keeps the pooled template mostly piece rather than background."""
    return 8 * math.ceil(required_piece_size(puzzle_size, rows, cols, jigsaw, photometric_strength) / 8)


# crop and letterbox


def random_crop(shape: tuple[int, ...], crop_min_area: float, rng: np.random.Generator) -> tuple[int, int, int, int]:
    """A crop box (x0, y0, x1, y1) in px inside an image of `shape`: area fraction in [crop_min_area, 1] and aspect
    ratio (log-uniform) in [3/4, 4/3]; where the image cannot hold that crop it shrinks, keeping its aspect."""
    height, width = shape[:2]
    area = rng.uniform(crop_min_area, 1.0) * height * width
    aspect = math.exp(rng.uniform(math.log(ASPECT_RANGE[0]), math.log(ASPECT_RANGE[1])))
    w, h = math.sqrt(area * aspect), math.sqrt(area / aspect)
    shrink = min(1.0, width / w, height / h)
    w, h = min(width, max(1, int(round(w * shrink)))), min(height, max(1, int(round(h * shrink))))
    x0, y0 = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
    return x0, y0, x0 + w, y0 + h


def content_size(height: int, width: int, size: int) -> tuple[float, int, int]:
    """(scale, new_height, new_width) of an image letterboxed to `size`."""
    scale = size / max(height, width)
    return scale, min(size, _scaled(height, scale)), min(size, _scaled(width, scale))


def letterbox(image: np.ndarray, size: int) -> tuple[np.ndarray, float, int, int]:
    """(h, w, 3) uint8 -> (canvas (size, size, 3) uint8, scale, pad_x, pad_y): the longest side to `size` (area
    interpolation when shrinking, bilinear when enlarging), centred, black padding."""
    height, width = image.shape[:2]
    scale, new_h, new_w = content_size(height, width, size)
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    resized = cv2.resize(np.ascontiguousarray(image), (new_w, new_h), interpolation=interpolation)
    pad_x, pad_y = (size - new_w) // 2, (size - new_h) // 2
    canvas = np.zeros((size, size, 3), dtype=np.uint8)
    canvas[pad_y : pad_y + new_h, pad_x : pad_x + new_w] = resized.reshape(new_h, new_w, -1)
    return canvas, scale, pad_x, pad_y


def letterbox_box(box: np.ndarray, scale: float, pad_x: int, pad_y: int, size: int) -> np.ndarray:
    """A box (x1, y1, x2, y2) in px of the source image -> the same box on the letterboxed canvas, normalised."""
    x1, y1, x2, y2 = np.asarray(box, dtype=np.float64)
    mapped = [(x1 * scale + pad_x), (y1 * scale + pad_y), (x2 * scale + pad_x), (y2 * scale + pad_y)]
    return (np.array(mapped) / size).astype(np.float32)


# grid and jigsaw masks


@dataclass(frozen=True)
class Grid:
    """Cell boundaries in canvas px: column j spans [xs[j], xs[j + 1]), row i spans [ys[i], ys[i + 1])."""

    xs: np.ndarray  # (cols + 1,) int
    ys: np.ndarray  # (rows + 1,) int
    size: int  # canvas side

    @property
    def rows(self) -> int:
        return len(self.ys) - 1

    @property
    def cols(self) -> int:
        return len(self.xs) - 1

    @property
    def tab_radius(self) -> float:
        return TAB_RADIUS * float(min(np.diff(self.xs).min(), np.diff(self.ys).min()))

    def cell_px(self, row: int, col: int) -> tuple[int, int, int, int]:
        return int(self.xs[col]), int(self.ys[row]), int(self.xs[col + 1]), int(self.ys[row + 1])

    def content_box(self) -> np.ndarray:
        """(4,) float32: the whole grid, i.e. the picture on the canvas (x1, y1, x2, y2), normalised."""
        corners = [self.xs[0], self.ys[0], self.xs[-1], self.ys[-1]]
        return (np.array(corners, dtype=np.float64) / self.size).astype(np.float32)

    def cell_box(self, row: int, col: int) -> np.ndarray:
        """(4,) float32: the cell (x1, y1, x2, y2) normalised to the canvas."""
        return (np.array(self.cell_px(row, col), dtype=np.float64) / self.size).astype(np.float32)


def make_grid(content: tuple[int, int, int, int], rows: int, cols: int, size: int) -> Grid:
    """A rows x cols grid over the content box (x0, y0, x1, y1) of a canvas of side `size`."""
    x0, y0, x1, y1 = content
    if x1 - x0 < cols or y1 - y0 < rows:
        raise ValueError(f"content {x1 - x0}x{y1 - y0} px cannot hold a {rows}x{cols} grid")
    xs = np.round(np.linspace(x0, x1, cols + 1)).astype(np.int64)
    ys = np.round(np.linspace(y0, y1, rows + 1)).astype(np.int64)
    return Grid(xs, ys, size)


@dataclass(frozen=True)
class Tabs:
    """Knob directions of the interior edges. ``across[i, j]`` is the edge between cells (i, j) and (i, j + 1):
    +1 = the knob belongs to the left cell (points right), -1 = to the right cell. ``down[i, j]`` is the edge between
    (i, j) and (i + 1, j): +1 = the knob belongs to the upper cell (points down), -1 = to the lower cell."""

    across: np.ndarray  # (rows, cols - 1) int8
    down: np.ndarray  # (rows - 1, cols) int8


def random_tabs(rows: int, cols: int, rng: np.random.Generator) -> Tabs:
    across = rng.choice(np.array([-1, 1], dtype=np.int8), size=(rows, cols - 1))
    down = rng.choice(np.array([-1, 1], dtype=np.int8), size=(rows - 1, cols))
    return Tabs(across, down)


def _knobs(grid: Grid, tabs: Tabs, row: int, col: int) -> list[tuple[float, float, bool]]:
    """(centre x, centre y, the knob is this cell's own) of every interior edge of cell (row, col)."""
    x0, y0, x1, y1 = grid.cell_px(row, col)
    mid_x, mid_y, offset = (x0 + x1) / 2, (y0 + y1) / 2, TAB_OFFSET * grid.tab_radius
    knobs = []
    if col + 1 < grid.cols:  # right edge
        t = int(tabs.across[row, col])
        knobs.append((x1 + t * offset, mid_y, t > 0))
    if col > 0:  # left edge
        t = int(tabs.across[row, col - 1])
        knobs.append((x0 + t * offset, mid_y, t < 0))
    if row + 1 < grid.rows:  # bottom edge
        t = int(tabs.down[row, col])
        knobs.append((mid_x, y1 + t * offset, t > 0))
    if row > 0:  # top edge
        t = int(tabs.down[row - 1, col])
        knobs.append((mid_x, y0 + t * offset, t < 0))
    return knobs


def piece_mask(grid: Grid, tabs: Tabs | None, row: int, col: int) -> tuple[tuple[int, int, int, int], np.ndarray]:
    """The piece of cell (row, col): its region (x0, y0, x1, y1) in canvas px (the cell plus the tab margin on every
    side; may reach past the canvas) and its mask (h, w) bool over that region. Without tabs: the cell rectangle."""
    cx0, cy0, cx1, cy1 = grid.cell_px(row, col)
    margin = tab_margin(grid.tab_radius / TAB_RADIUS, jigsaw=tabs is not None)
    region = (cx0 - margin, cy0 - margin, cx1 + margin, cy1 + margin)
    xs = np.arange(region[0], region[2])[None, :] + 0.5  # pixel centres, (1, w)
    ys = np.arange(region[1], region[3])[:, None] + 0.5  # (h, 1)
    mask = (xs > cx0) & (xs < cx1) & (ys > cy0) & (ys < cy1)
    if tabs is not None:
        radius = grid.tab_radius
        for kx, ky, own in _knobs(grid, tabs, row, col):
            disc = (xs - kx) ** 2 + (ys - ky) ** 2 < radius**2
            mask = mask | disc if own else mask & ~disc
    return region, mask


# puzzles and pieces


@dataclass(frozen=True)
class Puzzle:
    canvas: np.ndarray  # (size, size, 3) uint8, letterboxed
    grid: Grid
    tabs: Tabs | None  # None: rectangular pieces
    crop: tuple[int, int, int, int]  # (x0, y0, x1, y1) px of the source image


@dataclass(frozen=True)
class Piece:
    image: np.ndarray  # (piece_size, piece_size, 3) uint8, rotated
    mask: np.ndarray  # (piece_size, piece_size) bool, rotated
    box: np.ndarray  # (4,) float32: the cell on the canvas, normalised
    rotation: int  # k: image = np.rot90(upright, k)
    cell: tuple[int, int]  # (row, col)


def make_puzzle(
    image: np.ndarray,
    puzzle_size: int,
    rows: int,
    cols: int,
    jigsaw: bool,
    crop_min_area: float,
    rng: np.random.Generator,
    name: str = "image",
) -> Puzzle:
    """A random crop of `image`, letterboxed to `puzzle_size`, cut into a rows x cols (jigsaw) grid."""
    check_image_size(image.shape, rows, cols, name)
    x0, y0, x1, y1 = random_crop(image.shape, crop_min_area, rng)
    canvas, _, pad_x, pad_y = letterbox(image[y0:y1, x0:x1], puzzle_size)
    _, new_h, new_w = content_size(y1 - y0, x1 - x0, puzzle_size)
    grid = make_grid((pad_x, pad_y, pad_x + new_w, pad_y + new_h), rows, cols, puzzle_size)
    tabs = random_tabs(rows, cols, rng) if jigsaw else None
    return Puzzle(canvas, grid, tabs, (x0, y0, x1, y1))


def _cut(canvas: np.ndarray, region: tuple[int, int, int, int]) -> np.ndarray:
    """Canvas pixels of `region`, zero where it reaches past the canvas."""
    x0, y0, x1, y1 = region
    out = np.zeros((y1 - y0, x1 - x0, 3), dtype=np.uint8)
    size_y, size_x = canvas.shape[:2]
    sx0, sy0, sx1, sy1 = max(x0, 0), max(y0, 0), min(x1, size_x), min(y1, size_y)
    out[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = canvas[sy0:sy1, sx0:sx1]
    return out


def jpeg_quality(step: int, strength: float) -> int:
    """JPEG quality of draw `step` in [0, JPEG_STEPS): 50 + step at strength 1, 95 at strength 0, 5 + 2 step at 2.
    One draw whatever the strength (a draw whose range followed the strength would take a different number of
    values from the generator and so change every later draw: a piece rendered at strength 0 must be the same cut,
    turn and background as at strength 1, see `abr_lab.puzzle_cnn.ambiguity`)."""
    return int(round(95 - (JPEG_STEPS - 1 - step) * strength))


def photometric(image: np.ndarray, mask: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    """Brightness, contrast, hue, blur, noise and JPEG changes of the masked pixels of (h, w, 3) uint8, scaled by
    `strength` (0 = none, 1 = default). It draws the same values whatever the strength."""
    brightness = rng.uniform(-0.2, 0.2) * strength
    contrast = 1 + rng.uniform(-0.2, 0.2) * strength
    hue = rng.uniform(-0.05, 0.05) * strength * 360.0  # degrees (float HSV)
    blur = rng.uniform(0.0, 1.0) * strength if rng.random() < 0.5 else 0.0
    noise = rng.uniform(0.0, 0.03) * strength
    quality = jpeg_quality(int(rng.integers(JPEG_STEPS)), strength) if rng.random() < 0.5 else 0
    noise_rng = np.random.default_rng(int(rng.integers(2**63)))
    if strength == 0 or not mask.any():
        return image
    x = image.astype(np.float32) / 255.0
    mean = x[mask].mean(axis=0)
    x = np.clip((x - mean) * contrast + mean + brightness, 0.0, 1.0)
    hsv = cv2.cvtColor(x, cv2.COLOR_RGB2HSV)
    hsv[:, :, 0] = (hsv[:, :, 0] + hue) % 360.0
    x = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    if blur > 0:
        x = cv2.GaussianBlur(x, (0, 0), blur)
    if noise > 0:
        x = x + noise_rng.normal(0.0, noise, x.shape).astype(np.float32)
    out = np.round(np.clip(x, 0.0, 1.0) * 255.0).astype(np.uint8)
    if quality:
        _, encoded = cv2.imencode(".jpg", out[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
        out = cv2.imdecode(encoded, cv2.IMREAD_COLOR)[:, :, ::-1]
    return np.where(mask[:, :, None], out, image)


def render_piece(
    puzzle: Puzzle,
    row: int,
    col: int,
    piece_size: int,
    photometric_strength: float,
    rng: np.random.Generator,
    rotation: int | None = None,
) -> Piece:
    """Cell (row, col) of `puzzle` as a piece (see the module docstring). `rotation` forces k (it is still drawn,
    so the other draws do not change)."""
    k = int(rng.integers(4))
    k = k if rotation is None else int(rotation) % 4
    background = rng.integers(0, 256, size=3).astype(np.uint8)
    jitter = 1 + rng.uniform(-SCALE_JITTER, SCALE_JITTER) * photometric_strength
    region, mask = piece_mask(puzzle.grid, puzzle.tabs, row, col)
    image = _cut(puzzle.canvas, region)
    height, width = _scaled(mask.shape[0], jitter), _scaled(mask.shape[1], jitter)
    if (height, width) != mask.shape:
        image = cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)
        mask = cv2.resize(mask.astype(np.float32), (width, height), interpolation=cv2.INTER_LINEAR) >= 0.5
    if max(height, width) > piece_size:
        raise ValueError(f"piece of {width}x{height} px does not fit piece_size={piece_size} (see piece_canvas)")
    top, left = (piece_size - height) // 2, (piece_size - width) // 2
    piece = np.broadcast_to(background, (piece_size, piece_size, 3)).copy()
    full_mask = np.zeros((piece_size, piece_size), dtype=bool)
    full_mask[top : top + height, left : left + width] = mask
    piece[full_mask] = image[mask]
    piece = photometric(piece, full_mask, photometric_strength, rng)
    return Piece(
        image=np.ascontiguousarray(np.rot90(piece, k)),
        mask=np.ascontiguousarray(np.rot90(full_mask, k)),
        box=puzzle.grid.cell_box(row, col),
        rotation=k,
        cell=(row, col),
    )
