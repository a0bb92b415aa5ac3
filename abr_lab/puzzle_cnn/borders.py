"""Where a piece's outline allows it to go: the border rule every jigsaw solver starts with.

A jigsaw piece's sides on the puzzle's border are straight; every other side carries a knob (a tab out or a blank
in). So a piece's outline, read off its own photo, says which of its sides are flat, and at each rotation
hypothesis that says where in the puzzle it can lie: a flat top side only against the top edge of the picture, a
knobbed top side only at least a cell below it. `allowed_places` turns that into a mask over the (rotation, y, x)
heatmap; `PuzzleNet` lowers the logits of the places it rules out by ``border_prior``.

The outline comes from `abr_lab.puzzle_cnn.network.silhouette` (the pixels off the canvas's flat background), the
cell's size from the outline's core (the piece is at puzzle scale), and the picture's edges from the puzzle's
``content`` box (where the image sits on the letterboxed canvas, known to whoever letterboxed it). A piece whose
every side reads flat (rectangular pieces, or a canvas with no background to read an outline from) rules nothing out.

When the grid (rows x cols) is known, as a puzzle's box tells its piece count, `grid_places` adds two rules: a
piece's centre sits on a cell's centre, and its outline's core has the cell's shape, so where cells are not square a
long piece lies along their long side (which rules out half the turns). When it is not, `read_grid` reads it off a
puzzle's pieces together: their cores give the cell's size to a few per cent (each piece's scale varies by +-10 %),
and, among the grids of about that cell, the one on whose cell centres the pieces' heatmaps put the most probability.

Legend: m masks · n pieces · r rotation hypotheses (4) · s piece side · h w heatmap size.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

CORE_COVERAGE = 0.5  # a row / column is in the core when its mask coverage is >= this share of the largest coverage
# A side is flat when the outline's middle lies within this share of the core's side of the core's edge. Knobs reach
# ~0.16 of the side beyond (tab) or within (blank) the edge in the generator; real pieces' knobs are larger.
FLAT_TOLERANCE = 0.08
MIDDLE = 1  # the outline's position on a side is the median over the middle 2 * MIDDLE + 1 lines
SIDES = ("top", "right", "bottom", "left")
# The known grid's rules. A centre snaps to a cell's centre when it lies within this share of the cell's side of it
# (and always at the heatmap entry nearest to it).
SNAP = 0.15
# A core or a cell is oblong when its aspect (w / h) differs from 1 by more than this; the generator's cells are
# 0.75-1.33 (picture aspects 3/4-4/3 on a square grid), and cores read off a photographed piece land within a few %.
ASPECT_TOLERANCE = 0.08
# `read_grid` weighs every grid whose cell count along an axis is within this share of the count the pieces' cores
# give; the cores' medians land within ~3 % of the cell (16 x 16 to 32 x 32 grids, a throw-away check).
GRID_SEARCH = 0.15


def _span(coverage: Tensor) -> tuple[Tensor, Tensor]:
    """(m, s) coverage -> (m,) first and (m,) last + 1 of the indices covered >= `CORE_COVERAGE` of the most."""
    kept = coverage >= CORE_COVERAGE * coverage.amax(dim=1, keepdim=True)  # (m, s); all kept when empty
    index = torch.arange(coverage.shape[1], device=coverage.device)  # (s,)
    first = torch.where(kept, index, coverage.shape[1]).amin(dim=1)  # (m,)
    last = torch.where(kept, index, -1).amax(dim=1) + 1  # (m,)
    return first, last


def core_box(masks: Tensor) -> Tensor:
    """(m, s, s) bool masks -> (m, 4) long (y0, y1, x0, x1), end-exclusive: the piece's core, the rows and columns
    covered over at least `CORE_COVERAGE` of the most covered one, so that tabs (narrow) are left out while blanks
    (notches that leave most of a row covered) are not. An empty mask gives the whole canvas."""
    masks = masks.bool()
    y0, y1 = _span(masks.sum(dim=2))  # rows' coverage
    x0, x1 = _span(masks.sum(dim=1))  # columns' coverage
    return torch.stack([y0, y1, x0, x1], dim=1)


def _first(lines: Tensor) -> Tensor:
    """(m, s, k) bool, k lines along dim 1 -> (m,) float: the median over the lines of the first True index (s when
    a line is empty)."""
    s = lines.shape[1]
    index = torch.arange(s, device=lines.device)[None, :, None]  # (1, s, 1)
    first = torch.where(lines, index, s).amin(dim=1)  # (m, k)
    return first.float().median(dim=1).values  # (m,)


def flat_sides(masks: Tensor) -> tuple[Tensor, Tensor]:
    """(m, s, s) bool outlines of upright pieces -> (m, 4) bool flat sides (`SIDES` order) and (m, 2) float the
    core's (width, height) in pixels: a side is flat when its outline, along the middle lines through the core,
    lies within `FLAT_TOLERANCE` of the core's side of the core's edge (a knob puts it further out or in)."""
    masks = masks.bool()
    m, s, _ = masks.shape
    core = core_box(masks)  # (m, 4)
    y0, y1, x0, x1 = core.unbind(dim=1)  # (m,) each
    width, height = (x1 - x0).float(), (y1 - y0).float()  # (m,)
    offsets = torch.arange(-MIDDLE, MIDDLE + 1, device=masks.device)  # (k,)
    columns = ((x0 + x1) // 2)[:, None] + offsets  # (m, k) the middle columns
    rows = ((y0 + y1) // 2)[:, None] + offsets  # (m, k) the middle rows
    columns, rows = columns.clamp(0, s - 1), rows.clamp(0, s - 1)
    vertical = masks.gather(2, columns[:, None, :].expand(m, s, -1))  # (m, s, k): the middle columns, top to bottom
    horizontal = masks.gather(1, rows[:, :, None].expand(m, -1, s)).transpose(1, 2)  # (m, s, k): rows, left to right
    top = _first(vertical)  # (m,) outline's first row
    bottom = s - _first(vertical.flip(1))  # (m,) its last row + 1
    left = _first(horizontal)
    right = s - _first(horizontal.flip(1))
    flat = torch.stack(
        [
            (top - y0).abs() <= FLAT_TOLERANCE * height,
            (right - x1).abs() <= FLAT_TOLERANCE * width,
            (bottom - y1).abs() <= FLAT_TOLERANCE * height,
            (left - x0).abs() <= FLAT_TOLERANCE * width,
        ],
        dim=1,
    )  # (m, 4)
    return flat, torch.stack([width, height], dim=1)


def allowed_places(flat: Tensor, size: Tensor, content: Tensor, shape: tuple[int, int]) -> Tensor:
    """Where each piece may lie at each rotation hypothesis.

    Args:
        flat: (n, r, 4) bool, the flat sides (`SIDES`) of each hypothesis's upright piece (`flat_sides`).
        size: (n, r, 2) its core's (width, height) as fractions of the puzzle canvas.
        content: (n, 4) the picture's box (x1, y1, x2, y2) on the canvas of each piece's puzzle, normalised.
        shape: (h, w) of the heatmap; entry (i, j) puts the piece's centre at ((j + 0.5) / w, (i + 0.5) / h).

    Returns:
        (n, r, h, w) bool: every side of the cell centred there is, if flat, within half a cell of the picture's
        edge on that side, and otherwise at least half a cell inside it. All True for a piece no place would be
        left to (every side flat: rectangular pieces, or no outline to read).
    """
    h, w = shape
    cy = ((torch.arange(h, device=flat.device, dtype=size.dtype) + 0.5) / h)[None, None, :, None]  # (1, 1, h, 1)
    cx = ((torch.arange(w, device=flat.device, dtype=size.dtype) + 0.5) / w)[None, None, None, :]  # (1, 1, 1, w)
    half_w, half_h = (size[..., 0] / 2)[..., None, None], (size[..., 1] / 2)[..., None, None]  # (n, r, 1, 1)
    edge = content[:, None, :, None, None].to(size.dtype)  # (n, 1, 4, 1, 1)
    # how far inside the picture's edge each side of the cell lies, (n, r, h, w) per side
    inside = [
        cy - half_h - edge[:, :, 1],  # top
        edge[:, :, 2] - (cx + half_w),  # right
        edge[:, :, 3] - (cy + half_h),  # bottom
        cx - half_w - edge[:, :, 0],  # left
    ]
    halves = [half_h, half_w, half_h, half_w]
    allowed = torch.ones(*flat.shape[:2], h, w, dtype=torch.bool, device=flat.device)  # (n, r, h, w)
    for side, (depth, half) in enumerate(zip(inside, halves, strict=True)):
        at_edge = depth.abs() < half  # (n, r, h, w)
        is_flat = flat[:, :, side, None, None]  # (n, r, 1, 1)
        allowed &= torch.where(is_flat, at_edge, depth >= half)
    nowhere = ~allowed.flatten(1).any(dim=1)  # (n,)
    return allowed | nowhere[:, None, None, None]


def cell_sizes(content: Tensor, grid: Tensor) -> Tensor:
    """(n, 4) picture boxes on the canvas (x1, y1, x2, y2, normalised) and (n, 2) grids (rows, cols) -> (n, 2) a
    cell's (width, height) as fractions of the canvas: the generator's grid divides the picture evenly."""
    span = content[:, 2:] - content[:, :2]  # (n, 2) (width, height)
    return span / grid.flip(1).to(span.dtype)  # (n, 2)


def nearest_cell_centre(position: Tensor, start: Tensor, step: Tensor, count: Tensor) -> Tensor:
    """Positions along one axis (normalised), broadcast against the grid's `start`, cell `step` and cell `count`
    along it -> the centre of the cell each lies in (the first or last cell beyond the picture's edges)."""
    index = ((position - start) / step).floor().clamp(min=0)
    index = torch.minimum(index, (count - 1).to(position.dtype))
    return start + (index + 0.5) * step


def on_cell_centres(length: int, start: Tensor, step: Tensor, count: Tensor) -> Tensor:
    """The `length` entries of a heatmap axis (entry i centred at (i + 0.5) / length) and grids along it (``start``,
    cell ``step`` and cell ``count``, each (g, 1)) -> (g, length) bool: the entry's centre is within `SNAP` of a
    cell's side of that cell's centre (or is the entry nearest to it)."""
    centres = (torch.arange(length, device=step.device, dtype=step.dtype) + 0.5) / length  # (length,)
    distance = (centres - nearest_cell_centre(centres, start, step, count)).abs()  # (g, length)
    return distance <= torch.clamp(SNAP * step, min=0.5 / length)


def along_cells(core_aspect: Tensor, cell_aspect: Tensor) -> Tensor:
    """Cores' and cells' aspects (w / h, broadcast together) -> bool: the core may lie in the cell, i.e. not both
    oblong (`ASPECT_TOLERANCE`) with their long sides across each other."""
    oblong = ((core_aspect - 1).abs() > ASPECT_TOLERANCE) & ((cell_aspect - 1).abs() > ASPECT_TOLERANCE)
    return ~oblong | ((core_aspect > 1) == (cell_aspect > 1))


def grid_places(size: Tensor, content: Tensor, grid: Tensor, shape: tuple[int, int]) -> Tensor:
    """Where each piece may lie at each rotation hypothesis when the grid is known.

    Args:
        size: (n, r, 2) each hypothesis's upright core (width, height) as fractions of the canvas (`flat_sides`).
        content: (n, 4) the picture's box (x1, y1, x2, y2) on the canvas of each piece's puzzle, normalised.
        grid: (n, 2) the (rows, cols) of each piece's puzzle.
        shape: (h, w) of the heatmap, as in `allowed_places`.

    Returns:
        (n, r, h, w) bool: the entry is on a cell's centre (`on_cell_centres`), and, where both the core and the
        cell are oblong (`ASPECT_TOLERANCE`), the core's long side lies along the cell's.
    """
    h, w = shape
    content = content.to(size.dtype)
    cell = cell_sizes(content, grid)  # (n, 2)
    rows = on_cell_centres(h, content[:, 1, None], cell[:, 1, None], grid[:, 0, None])  # (n, h)
    cols = on_cell_centres(w, content[:, 0, None], cell[:, 0, None], grid[:, 1, None])  # (n, w)
    snapped = rows[:, :, None] & cols[:, None, :]  # (n, h, w)
    turned_right = along_cells(size[..., 0] / size[..., 1], (cell[:, 0] / cell[:, 1])[:, None])  # (n, r)
    return snapped[:, None] & turned_right[:, :, None, None]  # (n, r, h, w)


def _counts_near(estimate: float, limit: int) -> Tensor:
    """Cell counts along an axis within `GRID_SEARCH` of `estimate` (at least 1, at most `limit`), (k,) long."""
    low = min(limit, max(1, math.floor(estimate * (1 - GRID_SEARCH))))
    high = min(limit, max(low, math.ceil(estimate * (1 + GRID_SEARCH))))
    return torch.arange(low, high + 1)


def read_grid(heatmap: Tensor, size: Tensor, content: Tensor) -> Tensor:
    """The grid (rows, cols) of one puzzle, read off its pieces together.

    Args:
        heatmap: (n, r, h, w) the pieces' joint (rotation, y, x) heatmap logits (the border rule applied).
        size: (n, r, 2) each hypothesis's upright core (width, height) as fractions of the canvas (`flat_sides`).
        content: (4,) the picture's box (x1, y1, x2, y2) on the canvas, normalised.

    Returns:
        (2,) long (rows, cols): among the grids within `GRID_SEARCH` of the cell the cores give (the median over
        the pieces of the upright core at each piece's best turn: the median, as some turns are wrong), the one on
        whose cell centres, at turns that lay the pieces along its cells (`grid_places`' rules), the pieces'
        heatmaps put the most probability (the sum over pieces of its log). The more pieces, the surer: the
        cores' median narrows with their count, and so does the evidence of where the pieces match.
    """
    n, r, h, w = heatmap.shape
    heatmap = heatmap.float()
    size, content = size.float(), content.float()
    span = content[2:] - content[:2]  # (2,) picture's (width, height)
    turn = heatmap.flatten(2).amax(dim=2).argmax(dim=1)  # (n,) each piece's best turn
    upright = size[torch.arange(n, device=size.device), turn]  # (n, 2) its core (w, h)
    cell = upright.clamp_min(1e-6).log().median(dim=0).values.exp()  # (2,) the cores' median (w, h)
    cols = _counts_near(float(span[0] / cell[0]), w).to(heatmap.device)  # (b,)
    rows = _counts_near(float(span[1] / cell[1]), h).to(heatmap.device)  # (a,)
    row_masks = on_cell_centres(h, content[1].expand(len(rows), 1), span[1] / rows[:, None], rows[:, None])  # (a, h)
    col_masks = on_cell_centres(w, content[0].expand(len(cols), 1), span[0] / cols[:, None], cols[:, None])  # (b, w)
    probs = heatmap.flatten(1).softmax(dim=1).view(n, r, h, w)  # joint softmax over (r, h, w)
    mass = torch.einsum("nryx,ay,bx->nrab", probs, row_masks.float(), col_masks.float())  # (n, r, a, b)
    cell_aspect = (span[0] / cols)[None, :] / (span[1] / rows)[:, None]  # (a, b)
    turned_right = along_cells((size[..., 0] / size[..., 1])[:, :, None, None], cell_aspect)  # (n, r, a, b)
    evidence = (mass * turned_right).sum(dim=1).clamp_min(torch.finfo(mass.dtype).tiny).log().sum(dim=0)  # (a, b)
    best = int(evidence.flatten().argmax())
    return torch.stack([rows[best // len(cols)], cols[best % len(cols)]])  # (2,)
