"""How many pieces of a split have a look-alike, and how close it comes: a measure of the data, not of a model.

A piece is a noisy copy of its cell: the photometric changes (brightness, contrast, hue, blur, noise, JPEG, scale)
move it away from the puzzle's pixels there. Where the photo is flat (sky, fur, a blurred background) another place
of the puzzle, or the same place at another turn, can resemble the piece's *clean* pixels more closely than the
photographed piece resembles them. `look_alikes` measures that with the similarity PuzzleNet's pixel level uses
(masked zero-mean NCC in luminance over the piece's silhouette less a 1-pixel rim, `silhouette_maps`):

- own: the photographed piece at its true turn against the (lightly blurred) puzzle, best where the cell's box
  would score IoU >= 0.5 (what a right answer is);
- place rival: the clean piece (same cut, turn and background, no photometric change or scale jitter) at any turn,
  best where the box would score IoU < 0.5;
- turn rival: the clean piece at a wrong turn, best where the box would score IoU >= 0.5.

A piece has a look-alike place (turn) when its rival scores at least its own score: the photo changes moved the
piece further from its cell than that rival is from it. This is no hard limit (the changed piece is not equally far
from everything; on validation the pixel level still places 81 % of such pieces), but the margin own - rival says
how deep the confusion goes, and a split's share and margins say how hard its photographs are, whatever the model.
It also reports the pixel level on its own (the joint argmax of the photographed piece's map): placed at IoU >= 0.5,
and turned right, so its misses can be split by look-alike; and how far down its list of candidate places the right
one is (`first_right_peak`): the most a second stage that re-ranks the pixel level's best K places could place.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, fields
from typing import Any

import torch
from torch import Tensor

from abr_lab.losses import box_iou
from abr_lab.puzzle_cnn.network import PIXEL_BLUR, PIXEL_ERODE, near_peak, silhouette_maps

RIGHT_IOU = 0.5  # a box at IoU >= this with the cell is a right place (the metric's acc@0.5)
CHUNK = 32  # pieces per correlation batch: 4 full-resolution maps each
MARGIN_QUANTILES = (10, 25, 50)  # percentiles of own - place rival reported (how deep the look-alikes go)
CANDIDATES = 32  # peaks of the pixel level's map searched for a right place (`first_right_peak`)
TOP_K = (4, 8, CANDIDATES)  # shares reported of pieces whose right place is among the best K peaks


@dataclass
class LookAlikes:
    """Per piece, (n,) each: scores in [-1, 1] and bool outcomes (see the module docstring)."""

    own: Tensor
    place_rival: Tensor
    turn_rival: Tensor
    turned: Tensor  # the pixel level's argmax is at the true turn (wherever it is)
    rank: Tensor  # long: the first right place's rank among the map's peaks (`first_right_peak`)

    @property
    def placed(self) -> Tensor:
        """The pixel level's argmax (its first peak) is at a right place."""
        return self.rank == 1

    @property
    def look_alike_place(self) -> Tensor:
        return self.place_rival >= self.own

    @property
    def look_alike_turn(self) -> Tensor:
        return self.turn_rival >= self.own

    @classmethod
    def cat(cls, parts: Iterable[LookAlikes]) -> LookAlikes:
        parts = list(parts)
        return cls(**{f.name: torch.cat([getattr(p, f.name) for p in parts]) for f in fields(cls)})


def right_places(box: Tensor, size: int, piece_side: int) -> Tensor:
    """(n, 4) normalised cell boxes -> (n, size, size) bool: the entries of a `silhouette_correlation` map (pieces
    on canvases of side `piece_side`) where a box of the cell's size, centred on the window the entry compares, has
    IoU >= `RIGHT_IOU` with the cell. Entry j aligns the canvas's pixel s // 2 with the puzzle's pixel j, so the
    canvas's centre s / 2 falls on the puzzle's coordinate j (even s) or j + 0.5 (odd s)."""
    centres = (torch.arange(size, dtype=box.dtype) + 0.5 * (piece_side % 2)) / size  # (size,)
    half = (box[:, 2:] - box[:, :2]) / 2  # (n, 2) half width, half height
    cx = centres[None, None, :].expand(len(box), size, size)  # (n, size, size): x of column j
    cy = centres[None, :, None].expand(len(box), size, size)  # (n, size, size): y of row i
    hw, hh = half[:, 0, None, None], half[:, 1, None, None]  # (n, 1, 1)
    candidates = torch.stack([cx - hw, cy - hh, cx + hw, cy + hh], dim=-1)  # (n, size, size, 4)
    return box_iou(candidates, box[:, None, None, :].expand_as(candidates)) >= RIGHT_IOU


def first_right_peak(location: Tensor, right: Tensor, radius: Tensor, count: int = CANDIDATES) -> Tensor:
    """(n, S, S) place scores, (n, S, S) bool right places, (n,) radii in px -> (n,) long: the 1-based rank of the
    first right place among each map's `count` best peaks, every next peak the best place more than `radius` rows
    or columns from all earlier ones (a candidate per distinct place, not the shoulders of one peak); `count` + 1
    when none of them is right."""
    location = location.clone()
    rank = torch.full((len(location),), count + 1, dtype=torch.long)
    for k in range(1, count + 1):
        peak = location.flatten(1).argmax(dim=1)  # (n,)
        score = location.flatten(1).gather(1, peak[:, None]).squeeze(1)  # (n,)
        hit = right.flatten(1).gather(1, peak[:, None]).squeeze(1) & (score > float("-inf"))  # (n,)
        rank = torch.where(hit & (rank > count), k, rank)
        location = location.masked_fill(near_peak(location, radius), float("-inf"))
    return rank


def look_alikes(
    clean: dict[str, Tensor], changed: dict[str, Tensor], erode_pixels: int = PIXEL_ERODE, blur: float = PIXEL_BLUR
) -> LookAlikes:
    """The same batch (the contract of `collate_puzzles`) rendered without and with the photometric changes ->
    `LookAlikes` of its pieces. `erode_pixels` and `blur` are the pixel level's (`PuzzleNet`'s defaults);
    it matches in luminance, as `PuzzleNet`'s default ``pixel_colour`` does."""
    for key in ("puzzle", "box", "rotation", "puzzle_index"):
        if not torch.equal(clean[key], changed[key]):
            raise ValueError(f"clean and changed batches differ in {key!r}: they must be one batch rendered twice")
    size = clean["puzzle"].shape[-1]
    parts = []
    for part in torch.arange(len(clean["rotation"])).split(CHUNK):
        index, turn = clean["puzzle_index"][part], clean["rotation"][part]  # (m,), (m,)
        right = right_places(clean["box"][part].float(), size, clean["piece"].shape[-1])  # (m, S, S)
        true_turn = torch.nn.functional.one_hot(turn, 4).bool()[:, :, None, None]  # (m, r, 1, 1)
        # (m, r, S, S) each: the photographed piece against the blurred puzzle, its clean twin against the puzzle
        own_map = silhouette_maps(changed["piece"][part], changed["puzzle"], index, erode_pixels, blur=blur)
        clean_map = silhouette_maps(clean["piece"][part], clean["puzzle"], index, erode_pixels, blur=0.0)
        lowest = torch.tensor(-2.0)
        own = torch.where(true_turn & right[:, None], own_map, lowest).flatten(1).amax(dim=1)  # (m,)
        place_rival = torch.where(~right[:, None], clean_map, lowest).flatten(1).amax(dim=1)  # (m,)
        turn_rival = torch.where(~true_turn & right[:, None], clean_map, lowest).flatten(1).amax(dim=1)  # (m,)
        best_turn = own_map.flatten(1).argmax(dim=1) // (size * size)  # (m,): the joint argmax's turn
        radius = (clean["box"][part, 2:] - clean["box"][part, :2]).amin(dim=1) * size / 2  # (m,) half a cell, px
        rank = first_right_peak(own_map.amax(dim=1), right, radius.floor().long())  # (m,)
        parts.append(LookAlikes(own, place_rival, turn_rival, best_turn == turn, rank))
    return LookAlikes.cat(parts)


def summarise(found: LookAlikes) -> dict[str, Any]:
    """Shares of pieces with a look-alike place / turn, the pixel level's hits among those with and without, the
    shares whose right place is among its best K peaks, and percentiles of the margin own - place rival (below 0: a
    look-alike place)."""

    def share(flags: Tensor, among: Tensor | None = None) -> float:
        flags = flags if among is None else flags[among]
        return float(flags.float().mean()) if flags.numel() else float("nan")

    place, turn = found.look_alike_place, found.look_alike_turn
    margin = found.own - found.place_rival  # (n,) < 0: a look-alike place
    either = place | turn
    return {
        "pieces": len(found.own),
        "look_alike_place": share(place),
        "look_alike_turn": share(turn),
        "look_alike_either": share(either),
        "pixel_placed": share(found.placed),
        "pixel_turned": share(found.turned),
        "pixel_placed_without_look_alike_place": share(found.placed, ~place),
        "pixel_placed_with_look_alike_place": share(found.placed, place),
        "pixel_turned_without_look_alike": share(found.turned, ~either),
        "pixel_turned_with_look_alike": share(found.turned, either),
        **{f"pixel_right_place_in_top{k}": share(found.rank <= k) for k in TOP_K},
        "median_own": float(found.own.median()),
        **{f"place_margin_q{q:02d}": float(margin.quantile(q / 100)) for q in MARGIN_QUANTILES},
    }
