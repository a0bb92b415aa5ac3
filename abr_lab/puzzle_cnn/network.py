"""PuzzleNet: where a jigsaw piece sits in its puzzle and how it is turned, by correlating features.

A timm backbone (`features_only`) and one `FeaturePyramid` (Lin et al. 2017) shared by piece and puzzle give maps of
one width at every stride. The piece is run at its four rotation hypotheses (hypothesis r undoes a rotation by r:
``rot90(piece, -r)``). At each pyramid level the centre of its map (`template_fraction` of the canvas: the cell, less
the tabs and background around it) is a k x k template; pieces are at puzzle scale, so it covers as many pixels as a
k x k window of the puzzle's map, and it is matched against every such window of its own puzzle by zero-mean
normalised cross-correlation (`correlate`; 'same' padding, so the map peaks at the piece's centre). A parameter-free
pixel level is template matching inside the network, which localises most pieces before any training: by default
the whole piece under its silhouette (its pixels off the canvas's flat background, less a `pixel_erode`-pixel rim
that blur and JPEG mix with that background) against the puzzle's pixels at full resolution (lightly blurred), in
luminance (a hue change moves colour, not brightness), by masked zero-mean NCC computed with FFTs
(`silhouette_correlation`), max-pooled to `pixel_stride`; or (``pixel_match: crop``) the images average-pooled by
`pixel_stride` and matched like a level.
The level maps, each times a learnable scale, are upsampled to the finest level and summed, and a small residual
conv stack (zero-initialised, so it starts as the identity; off by default, see `PuzzleNet`) may refine them into
joint (rotation, y, x) heatmap logits. The border rule (`abr_lab.puzzle_cnn.borders`) then lowers the logits of the
(rotation, place) pairs the piece's outline rules out: a flat side away from the picture's edge, a knobbed one on it;
when `forward` is told the puzzles' grid, or reads it off each puzzle's pieces in the batch (`borders.read_grid`),
also the places off every cell's centre and the turns that lay an oblong piece across oblong cells
(`borders.grid_places`), and the box is then the cell nearest the read-out's centre (`snap_to_grid`). Read-out
keeps location all the way (no global pooling):

- rotation_logits = logsumexp of the heatmap over (y, x): the rotation marginal of the joint softmax;
- centre = soft-argmax, the expected cell centre under the location marginal, within `readout_radius` cells of its
  peak;
- size = an MLP on the coarsest map of the piece as given, pooled to 2 x 2: (w, h) in the piece's own frame as a
  fraction of the piece canvas (the piece is at puzzle scale, so that canvas bounds it), swapped by the rotation
  probabilities;
- box = centre +- size / 2, clamped to [0, 1].

The correlation scales are learnt. The pixel level's starts at 30, so the softmax over locations is peaked from the
first step (the origin project divided its correlations by sqrt(C) = 16 and left a near-flat softmax, ~0.06, from
which nothing could be learnt); the feature levels' start at 0.1, since random features carry no information yet.

Legend: n pieces · p puzzles · r rotation hypotheses (4) · c channels · k template side · l pyramid level ·
s piece side · S puzzle side · h w heatmap (finest level) size · h_l w_l level l's size.
"""

from __future__ import annotations

import math
import pickle
from collections.abc import Mapping, Sequence
from pathlib import Path

import timm
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from abr_lab.layers.fpn import FeaturePyramid
from abr_lab.puzzle_cnn.borders import (
    allowed_places,
    cell_sizes,
    flat_sides,
    grid_places,
    nearest_cell_centre,
    read_grid,
)
from abr_lab.registry import register_variant

FAMILY = "puzzle_cnn"
ROTATIONS = 4
CORRELATIONS = ("zncc", "centred", "cosine")
MIN_VARIANCE = 1e-4  # per element: below it a window or template counts as flat in `normalized_cross_correlation`
PIXEL_MATCHES = ("silhouette", "crop")
PIXEL_COLOURS = ("luminance", "rgb")
ROTATION_READOUTS = ("marginal", "peak")
BORDER_PRIOR = 20.0  # default logit penalty of the places the border rule rules out (`PuzzleNet`'s border_prior)
GRID_PRIOR = 20.0  # default logit penalty of the places a known grid rules out (`PuzzleNet`'s grid_prior)
SILHOUETTE_TOLERANCE = 1e-4  # a canvas pixel this close to the corner colour (normalised units) is background
PIXEL_ERODE = 1  # default rim (px) the silhouette level leaves out of the piece's mask (`erode`)
PIXEL_BLUR = 0.5  # default Gaussian sigma (px) of the puzzle at the silhouette level (`gaussian_blur`)
FFT_CHUNK = 32  # templates per FFT batch in `silhouette_correlation` (~20 MB each at 512 px)


def rotation_hypotheses(piece: Tensor) -> Tensor:
    """(n, c, s, s) pieces -> (n r, c, s, s): row ``4 i + r`` is piece i with a rotation by r undone."""
    return torch.stack([torch.rot90(piece, -r, dims=(-2, -1)) for r in range(ROTATIONS)], dim=1).flatten(0, 1)


Rows = slice | Tensor  # rows of one puzzle's pieces: a slice when consecutive (as batches are collated), else indices
Groups = list[tuple[int, Rows]]  # (puzzle, rows of its pieces) per puzzle: `puzzle_groups`


def puzzle_groups(puzzle_index: Tensor) -> Groups:
    """(puzzle, rows of its pieces) for every puzzle in the (n,) `puzzle_index`, in puzzle order. The index is read to
    the host once (the grouping decides which convolutions run: on a GPU one sync, and under `torch.compile` one graph
    break, however many puzzles); consecutive pieces come back as slices, which need nothing more from the device.
    `PuzzleNet.forward` groups once and hands the groups to every correlation; called alone, each groups itself."""
    rows: dict[int, list[int]] = {}
    for i, q in enumerate(puzzle_index.tolist()):
        rows.setdefault(q, []).append(i)
    groups: Groups = []
    for q in sorted(rows):
        mine = rows[q]
        consecutive = mine[-1] - mine[0] + 1 == len(mine)
        groups.append((q, slice(mine[0], mine[-1] + 1) if consecutive else puzzle_index.new_tensor(mine)))
    return groups


def uniform_pieces(groups: Groups, pieces: int, puzzles: int) -> int | None:
    """m when the `pieces` rows are m consecutive pieces of puzzle 0, then m of puzzle 1, ..., of every one of the
    `puzzles` (how `collate_puzzles` lays out training and evaluation batches); None otherwise. Such a batch's
    correlations run as one grouped convolution over all puzzles, whose cost in ops (and in a compiled graph's size)
    does not grow with the puzzles."""
    m = pieces // puzzles if puzzles else 0
    if m == 0 or m * puzzles != pieces or len(groups) != puzzles:
        return None
    for q, (puzzle, rows) in enumerate(groups):
        if puzzle != q or not isinstance(rows, slice) or (rows.start, rows.stop) != (q * m, (q + 1) * m):
            return None
    return m


def fft_length(n: int) -> int:
    """The smallest 2^a 3^b 5^c >= n: a real FFT of that length is fast (scipy's `next_fast_len(n, real=True)`,
    written out in plain Python so that `torch.compile` traces through it rather than breaking the graph)."""
    best = 1 << max(0, n - 1).bit_length()  # the power of two
    five = 1
    while five < best:
        odd = five  # 3^b 5^c
        while odd < best:
            candidate = odd
            while candidate < n:
                candidate *= 2
            best = min(best, candidate)
            odd *= 3
        five *= 5
    return best


def template_rows(rows: Rows, r: int, chunk: int) -> list[Rows]:
    """The rows of (n r, ...) flattened templates that belong to the pieces `rows` of (n, ...), `r` per piece, in
    parts of at most `chunk`."""
    if isinstance(rows, slice):
        start, stop = rows.start * r, rows.stop * r
        return [slice(a, min(a + chunk, stop)) for a in range(start, stop, chunk)]
    flat = (rows[:, None] * r + torch.arange(r, device=rows.device)).flatten()  # (m r,)
    return list(flat.split(chunk))


def normalized_cross_correlation(
    puzzle_map: Tensor, templates: Tensor, puzzle_index: Tensor, zero_mean: bool = True, groups: Groups | None = None
) -> Tensor:
    """Normalised cross-correlation of each template with every k x k window of its piece's puzzle map ('same'
    padding).

    Args:
        puzzle_map: (p, c, H, W) puzzle features.
        templates: (n, r, c, k, k) templates of every piece and hypothesis, k odd.
        puzzle_index: (n,) the puzzle row of each piece.
        zero_mean: subtract the template's and the window's own mean per channel first (zero-mean NCC, OpenCV's
            TM_CCOEFF_NORMED): a brightness or contrast change of the piece does not change the score, and a
            direction every feature shares does not count as a match. False = plain cosine similarity.
        groups: `puzzle_groups(puzzle_index)` when the caller has it (None: grouped here).

    Returns:
        (n, r, H, W) in [-1, 1]; (i, j) compares the template with the window centred on cell (i, j). Border
        windows are padded with zeros (with the puzzle's mean when `zero_mean`). A puzzle's map is never copied per
        piece: a batch of m pieces per puzzle in puzzle order (`uniform_pieces`, as collated) is one grouped
        convolution over all puzzles, any other one convolution per puzzle.
    """
    n, r, c, k, _ = templates.shape
    p, height, width = puzzle_map.shape[0], *puzzle_map.shape[-2:]
    floor = MIN_VARIANCE * c * k * k  # a flat window or template (a black letterbox, a clear sky) scores ~0, not noise
    ones = puzzle_map.new_ones(1, 1, k, k)
    if zero_mean:
        # sum over the window of (x - window mean)^2 = sum x^2 - (sum x)^2 / k^2, per channel, then over channels.
        # The template is centred, so its dot product with the window's mean is 0 and the map can be used as it is;
        # the map less its global mean (which changes no window's deviations) keeps that difference from cancelling
        # catastrophically in float32 where the map is far from 0 and nearly flat.
        templates = templates - templates.mean(dim=(-2, -1), keepdim=True)  # (n, r, c, k, k)
        puzzle_map = puzzle_map - puzzle_map.mean(dim=(-2, -1), keepdim=True)  # (p, c, H, W)
        flat = puzzle_map.reshape(p * c, 1, height, width)
        window_sum = F.conv2d(flat, ones, padding=k // 2).view(p, c, height, width)  # (p, c, H, W)
        window_sq = F.conv2d(flat.pow(2), ones, padding=k // 2).view(p, c, height, width)  # (p, c, H, W)
        energy = (window_sq - window_sum.pow(2) / (k * k)).sum(dim=1, keepdim=True)  # (p, 1, H, W)
    else:
        energy = F.conv2d(puzzle_map.pow(2).sum(dim=1, keepdim=True), ones, padding=k // 2)  # (p, 1, H, W)
    window_norm = energy.clamp_min(floor).sqrt()  # (p, 1, H, W)
    template_norm = templates.pow(2).flatten(2).sum(dim=2).clamp_min(floor).sqrt()  # (n, r)
    groups = puzzle_groups(puzzle_index) if groups is None else groups
    m = uniform_pieces(groups, n, p)
    if m is not None:  # m pieces per puzzle in puzzle order: every puzzle at once, puzzle q's map with its templates
        weight = templates.reshape(n * r, c, k, k)  # (p m r, c, k, k)
        dot = F.conv2d(
            puzzle_map.reshape(1, p * c, height, width), weight, padding=k // 2, groups=p
        )  # (1, p m r, H, W)
        norm = window_norm[:, None] * template_norm.view(p, m, r, 1, 1)  # (p, m, r, H, W)
        return (dot.view(p, m, r, height, width) / norm).view(n, r, height, width)
    out = puzzle_map.new_zeros(n, r, height, width)
    for q, rows in groups:  # the pieces of puzzle q
        weight = templates[rows].reshape(-1, c, k, k)  # (m r, c, k, k)
        dot = F.conv2d(puzzle_map[q : q + 1], weight, padding=k // 2).view(-1, r, height, width)  # (m, r, H, W)
        out[rows] = dot / (window_norm[q] * template_norm[rows][:, :, None, None])
    return out  # (n, r, H, W)


def centre_on_puzzle(puzzle_map: Tensor, templates: Tensor, puzzle_index: Tensor) -> tuple[Tensor, Tensor]:
    """Subtract each puzzle's mean feature, (p, c, 1, 1), from its (p, c, H, W) map and from the (n, r, c, k, k)
    templates of its pieces (the global form of zero-mean NCC, kept as the ``centred`` correlation)."""
    mean = puzzle_map.mean(dim=(2, 3), keepdim=True)  # (p, c, 1, 1)
    return puzzle_map - mean, templates - mean[puzzle_index][:, None]  # (p, c, H, W), (n, r, c, k, k)


def correlate(
    kind: str, puzzle_map: Tensor, templates: Tensor, puzzle_index: Tensor, groups: Groups | None = None
) -> Tensor:
    """One level's (n, r, H, W) correlation map by `kind`: ``zncc`` (zero-mean NCC), ``centred`` (cosine after
    `centre_on_puzzle`) or ``cosine`` (`groups` as in `normalized_cross_correlation`). A 1 x 1 template has no
    spatial mean to subtract (zero-mean NCC would be 0 everywhere), so ``zncc`` falls back to ``centred`` there (the
    coarsest level of small pieces)."""
    if kind == "zncc" and templates.shape[-1] == 1:
        kind = "centred"
    # in at least float32 whatever the autocast dtype: a window's energy is a difference of sums of squares, which
    # bf16's 8-bit mantissa cancels to noise (and CUDA autocast runs the sums in float32, the convolutions in bf16)
    dtype = torch.promote_types(puzzle_map.dtype, torch.float32)
    with torch.autocast(device_type=puzzle_map.device.type, enabled=False):
        puzzle_map, templates = puzzle_map.to(dtype), templates.to(dtype)
        if kind == "centred":
            puzzle_map, templates = centre_on_puzzle(puzzle_map, templates, puzzle_index)
        return normalized_cross_correlation(puzzle_map, templates, puzzle_index, kind == "zncc", groups)


def template_side(map_side: int, fraction: float) -> tuple[int, int]:
    """(crop, k): the central crop of a piece map of side `map_side` covering `fraction` of it, and the odd template
    side k it is pooled to (the crop's side, or one more when that is even and fits)."""
    crop = max(1, min(map_side, round(fraction * map_side)))
    if crop % 2:
        return crop, crop
    return crop, crop + 1 if crop + 1 <= map_side else crop - 1


def make_templates(piece_map: Tensor, fraction: float) -> Tensor:
    """(m, c, h, w) piece maps -> (m, c, k, k) templates: the central crop holding the piece, at the puzzle's scale."""
    side = min(piece_map.shape[-2:])
    crop, k = template_side(side, fraction)
    top, left = (piece_map.shape[-2] - crop) // 2, (piece_map.shape[-1] - crop) // 2
    centre = piece_map[..., top : top + crop, left : left + crop]  # (m, c, crop, crop)
    return centre if crop == k else F.adaptive_avg_pool2d(centre, k)  # (m, c, k, k)


def silhouette(canvas: Tensor) -> Tensor:
    """(m, 3, s, s) piece canvases -> (m, 1, s, s) float mask of the piece: the pixels whose colour differs from the
    canvas's top-left corner. The generator lays every piece on one flat background colour (and `collate_puzzles`
    pads with it), so this is the piece's outline, tabs included; a canvas with no flat background is all piece."""
    background = canvas[:, :, :1, :1]  # (m, 3, 1, 1)
    mask = (canvas - background).abs().amax(dim=1, keepdim=True) > SILHOUETTE_TOLERANCE  # (m, 1, s, s)
    empty = ~mask.flatten(1).any(dim=1)  # a flat canvas: no outline to read
    return (mask | empty[:, None, None, None]).to(canvas.dtype)


def erode(mask: Tensor, pixels: int) -> Tensor:
    """(m, 1, s, s) masks in [0, 1] -> the same less a rim `pixels` wide (the minimum over each (2 pixels + 1)^2
    square; beyond the canvas's edge counts as inside): the piece's outermost pixels, which blur and JPEG on the
    photographed piece mix with its background. A flat canvas's all-piece mask (`silhouette`) stays whole."""
    if pixels < 0:
        raise ValueError(f"pixels must be >= 0, got {pixels}")
    return mask if pixels == 0 else -F.max_pool2d(-mask, 2 * pixels + 1, stride=1, padding=pixels)


def luminance(images: Tensor) -> Tensor:
    """(…, 3, h, w) -> (…, 1, h, w): the channels' mean. A hue change (white balance, the generator's hue jitter)
    moves colour between channels and leaves this nearly alone; on validation it lifted the untrained pixel level
    from 93.2 % to 93.8 % of pieces placed and from 95.1 % to 96.1 % turned (with a 1-pixel `erode`)."""
    return images.mean(dim=-3, keepdim=True)


def gaussian_blur(images: Tensor, sigma: float) -> Tensor:
    """(m, c, h, w) -> the same blurred by a Gaussian of `sigma` pixels (separable, truncated at 3 sigma, edges
    replicated), in float32 or wider whatever the autocast; sigma 0 returns the input."""
    if sigma < 0:
        raise ValueError(f"sigma must be >= 0, got {sigma}")
    if sigma == 0:
        return images
    radius = max(1, math.ceil(3 * sigma))
    dtype = torch.promote_types(images.dtype, torch.float32)
    taps = torch.arange(-radius, radius + 1, device=images.device, dtype=dtype)
    kernel = torch.exp(-(taps**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()  # (2 radius + 1,)
    c = images.shape[1]
    with torch.autocast(device_type=images.device.type, enabled=False):
        x = F.pad(images.to(dtype), (radius, radius, 0, 0), mode="replicate")  # (m, c, h, w + 2 radius)
        x = F.conv2d(x, kernel.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)  # (m, c, h, w): along rows
        x = F.pad(x, (0, 0, radius, radius), mode="replicate")  # (m, c, h + 2 radius, w)
        return F.conv2d(x, kernel.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)  # (m, c, h, w): along columns


def silhouette_correlation(
    puzzle: Tensor,
    templates: Tensor,
    masks: Tensor,
    puzzle_index: Tensor,
    chunk: int = FFT_CHUNK,
    groups: Groups | None = None,
) -> Tensor:
    """Zero-mean NCC of each template with every window of its puzzle, over the template's mask only (OpenCV's
    masked TM_CCOEFF_NORMED): the whole piece, tabs included, takes part and its background takes none.

    Args:
        puzzle: (p, c, H, W) images.
        templates: (n, r, c, k, k) piece canvases at each rotation hypothesis.
        masks: (n, r, 1, k, k) their silhouettes in [0, 1] (`silhouette`).
        puzzle_index: (n,) the puzzle of each piece.
        chunk: templates per FFT batch (memory).
        groups: `puzzle_groups(puzzle_index)` when the caller has it (None: grouped here).

    Returns:
        (n, r, H, W) in [-1, 1]; (i, j) compares the template with the window centred on pixel (i, j), zero-padded
        outside the puzzle (the puzzle's mean colour, as in `normalized_cross_correlation`). Computed by FFT, in
        float32 or wider, with no gradient: the inputs are images, nothing here is learnt.
    """
    n, r, c, k, _ = templates.shape
    height, width = puzzle.shape[-2:]
    size = (fft_length(height + k - 1), fft_length(width + k - 1))  # linear, not circular
    shift = k // 2  # the puzzle sits this far into its padded frame: entry (i, j) is then the window centred there
    dtype = torch.promote_types(puzzle.dtype, torch.float32)
    out = puzzle.new_zeros(n * r, height, width, dtype=dtype)
    with torch.no_grad(), torch.autocast(device_type=puzzle.device.type, enabled=False):
        x = puzzle.to(dtype)
        x = x - x.mean(dim=(-2, -1), keepdim=True)  # (p, c, H, W): see `normalized_cross_correlation`
        pad = (shift, size[1] - width - shift, shift, size[0] - height - shift)
        x_f = torch.fft.rfft2(F.pad(x, pad))  # (p, c, a, b // 2 + 1)
        x2_f = torch.fft.rfft2(F.pad(x.pow(2).sum(dim=1, keepdim=True), pad))  # (p, 1, a, b // 2 + 1): sum_c x_c^2
        weights = masks.to(dtype).flatten(0, 1)  # (n r, 1, k, k)
        total = weights.sum(dim=(-2, -1)).clamp_min(1.0)  # (n r, 1): pixels under the mask
        flat = templates.to(dtype).flatten(0, 1)  # (n r, c, k, k)
        deviation = flat - (weights * flat).sum(dim=(-2, -1), keepdim=True) / total[..., None, None]  # mean under w
        centred = deviation * weights  # (n r, c, k, k): zero outside the mask
        template_energy = (deviation.pow(2) * weights).sum(dim=(1, 2, 3))  # (n r,): sum of w (t - mean)^2
        floor = MIN_VARIANCE * c * total  # (n r, 1): a flat window or template scores ~0

        def correlation(spectrum: Tensor) -> Tensor:  # (m, …, a, b // 2 + 1) -> (m, …, H, W), in the pixel domain
            return torch.fft.irfft2(spectrum, s=size)[..., :height, :width]

        for q, rows in puzzle_groups(puzzle_index) if groups is None else groups:
            for part in template_rows(rows, r, chunk):  # (m,) or a slice of the (n r) templates
                t_f = torch.fft.rfft2(centred[part], s=size).conj()  # (m, c, a, b // 2 + 1)
                w_f = torch.fft.rfft2(weights[part], s=size).conj()  # (m, 1, a, b // 2 + 1)
                dot = correlation((x_f[q] * t_f).sum(dim=1))  # (m, H, W): channels summed before the inverse FFT
                s1 = correlation(x_f[q] * w_f)  # (m, c, H, W): sum of w x per channel
                s2 = correlation((x2_f[q] * w_f).squeeze(1))  # (m, H, W): sum of w x^2 over channels
                energy = s2 - s1.pow(2).sum(dim=1) / total[part, :, None]  # (m, H, W): sum of w (x - window mean)^2
                norm = energy.clamp_min(floor[part, :, None]) * template_energy[part, None, None].clamp_min(
                    floor[part, :, None]
                )
                out[part] = (dot / norm.sqrt()).clamp(-1.0, 1.0)
    return out.view(n, r, height, width)  # (n, r, H, W)


def silhouette_maps(
    piece: Tensor,
    puzzle: Tensor,
    puzzle_index: Tensor,
    erode_pixels: int = PIXEL_ERODE,
    colour: str = "luminance",
    blur: float = PIXEL_BLUR,
    groups: Groups | None = None,
) -> Tensor:
    """(n, 3, s, s) pieces, (p, 3, S, S) puzzles -> (n, r, S, S): each piece at each rotation hypothesis against
    its puzzle by `silhouette_correlation` (`groups` as there), under its silhouette less an `erode_pixels` rim, in
    `colour` (``luminance`` or ``rgb``), the puzzle blurred by `blur` px (never sharper than the photographed
    piece)."""
    hypotheses = rotation_hypotheses(piece).unflatten(0, (piece.shape[0], ROTATIONS))  # (n, r, 3, s, s)
    masks = erode(silhouette(hypotheses.flatten(0, 1)), erode_pixels)  # (n r, 1, s, s)
    masks = masks.unflatten(0, hypotheses.shape[:2])  # (n, r, 1, s, s)
    if colour == "luminance":
        hypotheses, puzzle = luminance(hypotheses), luminance(puzzle)  # (n, r, 1, s, s), (p, 1, S, S)
    puzzle = gaussian_blur(puzzle, blur)  # (p, c, S, S)
    return silhouette_correlation(puzzle, hypotheses, masks, puzzle_index, groups=groups)  # (n, r, S, S)


def cell_centres(size: int, like: Tensor) -> Tensor:
    """(size,) normalised centres (i + 0.5) / size of the cells along one axis."""
    return (torch.arange(size, device=like.device, dtype=like.dtype) + 0.5) / size


def near_peak(location: Tensor, radius: int | Tensor) -> Tensor:
    """(n, h, w) location scores -> (n, h, w) bool: the (2 radius + 1)^2 cells around each map's peak (`radius` one
    for every map, or (n,) one per map)."""
    n, h, w = location.shape
    if isinstance(radius, Tensor):
        radius = radius.view(n, 1, 1)
    peak = location.flatten(1).argmax(dim=1)  # (n,)
    rows = torch.arange(h, device=location.device)[None, :, None]  # (1, h, 1)
    cols = torch.arange(w, device=location.device)[None, None, :]  # (1, 1, w)
    return ((rows - (peak // w)[:, None, None]).abs() <= radius) & ((cols - (peak % w)[:, None, None]).abs() <= radius)


def peak_window(location: Tensor, radius: int | None) -> Tensor:
    """(n, h, w) location probabilities -> the same renormalised to the (2 radius + 1)^2 cells around each map's
    peak (all cells when `radius` is None). A soft-argmax over the whole map returns the mean of every mode, pulled
    towards the puzzle's centre whenever the heatmap is unsure; around the peak it returns where the peak is."""
    if radius is None:
        return location
    windowed = location * near_peak(location, radius)  # (n, h, w)
    return windowed / windowed.sum(dim=(1, 2), keepdim=True).clamp_min(torch.finfo(location.dtype).tiny)


def read_out(heatmap: Tensor, size: Tensor, radius: int | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Joint heatmap logits (n, r, h, w) and (n, 2) piece-frame size (w, h) -> (n, 4) box and two (n, r) rotation
    logits: the heatmap's log-sum-exp over every cell (the rotation marginal of the joint softmax: what the loss
    trains) and over the `radius` window of the location peak only (the turn of the match the box is read from,
    which a wide plateau of a wrong turn elsewhere cannot outweigh; the marginal again when `radius` is None). The
    centre is the soft-argmax of the location marginal within that window (`peak_window`)."""
    n, r, h, w = heatmap.shape
    heatmap = heatmap.float()
    probs = heatmap.flatten(1).softmax(dim=1).view(n, r, h, w)  # joint softmax over (r, h, w)
    location = probs.sum(dim=1)  # (n, h, w)
    windowed = peak_window(location, radius)  # (n, h, w)
    cx = (windowed.sum(dim=1) * cell_centres(w, heatmap)).sum(dim=1)  # (n,) soft-argmax
    cy = (windowed.sum(dim=2) * cell_centres(h, heatmap)).sum(dim=1)  # (n,)
    marginal_logits = heatmap.flatten(2).logsumexp(dim=2)  # (n, r)
    peak_logits = marginal_logits
    if radius is not None:
        near = near_peak(location, radius)[:, None]  # (n, 1, h, w)
        peak_logits = heatmap.masked_fill(~near, float("-inf")).flatten(2).logsumexp(dim=2)  # (n, r)
    rotation = probs.sum(dim=(2, 3))  # (n, r) = softmax(marginal_logits)
    p_even, p_odd = rotation[:, 0::2].sum(dim=1), rotation[:, 1::2].sum(dim=1)  # (n,): odd turns swap w and h
    size = size.float()
    width = p_even * size[:, 0] + p_odd * size[:, 1]  # (n,) in the puzzle's frame
    height = p_even * size[:, 1] + p_odd * size[:, 0]  # (n,)
    box = torch.stack([cx - width / 2, cy - height / 2, cx + width / 2, cy + height / 2], dim=1)  # (n, 4)
    return box.clamp(0, 1), marginal_logits, peak_logits


def snap_to_grid(box: Tensor, content: Tensor, grid: Tensor) -> Tensor:
    """(n, 4) boxes, (n, 4) their pictures' boxes on the canvas and (n, 2) known grids (rows, cols) -> (n, 4) the
    cell whose centre is nearest each box's centre: with the grid known, a piece's box is a cell. No gradient: the
    box losses train the read-out's own box (the network's ``read_box``), whose size a cell would leave untrained."""
    cell = cell_sizes(content.to(box.dtype), grid)  # (n, 2) (w, h)
    centre = (box[:, :2] + box[:, 2:]) / 2  # (n, 2) (x, y)
    target = nearest_cell_centre(centre, content[:, :2].to(box.dtype), cell, grid.flip(1))  # (n, 2)
    return torch.cat([target - cell / 2, target + cell / 2], dim=1).detach()  # (n, 4)


def _canonical(key: str) -> str:
    """timm's `features_only` wrappers flatten module paths ('stem.0' -> 'stem_0'): compare keys with '_' as '.'."""
    return key.replace("_", ".")


def _read_state_dict(path: Path) -> dict[str, Tensor]:
    """The tensors of a state dict file, or of its ``state_dict`` entry; errors name the file."""
    if not path.is_file():
        raise FileNotFoundError(f"pretrained_path: no such file {str(path)!r}")
    try:
        try:
            loaded = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError:
            # a Lightning checkpoint of a Hydra run pickles OmegaConf hyperparameters, which the weights-only
            # unpickler refuses; the file is one the user named in the config, trusted as the config itself
            loaded = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:
        raise ValueError(f"pretrained_path {str(path)!r}: not a loadable state dict ({err})") from err
    state = loaded.get("state_dict", loaded) if isinstance(loaded, Mapping) else None
    if not isinstance(state, Mapping):
        raise ValueError(f"pretrained_path {str(path)!r}: expected a state dict, got {type(loaded).__name__}")
    return {k: v for k, v in state.items() if isinstance(v, Tensor)}


def load_backbone_weights(backbone: nn.Module, path: str | Path) -> None:
    """Load `backbone`'s weights from the local file `path`; nothing is ever downloaded.

    The file holds a state dict (timm or torchvision, classifier keys are ignored) or a checkpoint with a
    ``state_dict`` entry (e.g. a Lightning checkpoint of a PuzzleModule); a common key prefix (``module.``,
    ``backbone.``, ``net.backbone.``) is found and stripped.

    Raises:
        FileNotFoundError: `path` is not a file.
        ValueError: the file is unreadable, or misses (or mis-shapes) weights of the backbone; the message names the
            file and a few keys.
    """
    path = Path(path)
    source = {_canonical(k): v for k, v in _read_state_dict(path).items()}
    own = {_canonical(k): k for k in backbone.state_dict()}
    anchor = next(iter(own))
    prefixes = sorted({"", *(k[: -len(anchor)] for k in source if k.endswith("." + anchor))})
    prefix = max(prefixes, key=lambda p: sum(p + k in source for k in own))
    missing = [key for canon, key in own.items() if prefix + canon not in source and "num_batches" not in key]
    if missing:
        raise ValueError(
            f"pretrained_path {str(path)!r}: {len(missing)} of {len(own)} backbone weights missing, e.g. {missing[:4]}"
        )
    own_state = backbone.state_dict()
    weights = {key: source[prefix + canon] for canon, key in own.items() if prefix + canon in source}
    wrong = [
        f"{k}: {tuple(v.shape)} != {tuple(own_state[k].shape)}"
        for k, v in weights.items()
        if v.shape != own_state[k].shape
    ]
    if wrong:
        raise ValueError(f"pretrained_path {str(path)!r}: weights of the wrong shape, e.g. {wrong[:3]}")
    backbone.load_state_dict(weights, strict=False)


class CorrelationFusion(nn.Module):
    """Level correlation maps -> joint heatmap logits: the sum of exp(log_scale_l) x map_l (log_scale_l learnt from
    log init_scales[l]; bilinear to the finest level), plus, when `refine_channels` > 0, a residual conv refinement
    of the stacked scaled maps whose last conv starts at zero.

    The refinement runs at the size of level `refine_level` and is upsampled: at the pixel level's stride (2) it
    would cost more than the rest of the network, and the sum already carries the finest level's precision.
    """

    def __init__(self, init_scales: Sequence[float], refine_channels: int, refine_level: int = 0) -> None:
        super().__init__()
        levels = len(init_scales)
        if not 0 <= refine_level < levels:
            raise ValueError(f"refine_level must be in [0, {levels}), got {refine_level}")
        self.refine_level = refine_level
        self.log_scale = nn.Parameter(torch.tensor([math.log(scale) for scale in init_scales]))
        self.refine: nn.Sequential | None = None
        if refine_channels > 0:
            self.refine = nn.Sequential(
                nn.Conv2d(ROTATIONS * levels, refine_channels, kernel_size=3, padding=1),
                nn.ReLU(inplace=True),
                nn.Conv2d(refine_channels, ROTATIONS, kernel_size=3, padding=1),
            )
            nn.init.zeros_(self.refine[-1].weight)
            nn.init.zeros_(self.refine[-1].bias)

    def forward(self, correlations: Sequence[Tensor]) -> Tensor:
        """[(n, r, h_l, w_l)] fine -> coarse -> (n, r, h, w) logits at the finest level's size."""
        scaled = [corr * scale for corr, scale in zip(correlations, self.log_scale.exp(), strict=True)]
        heatmap = torch.stack([resize(m, correlations[0]) for m in scaled]).sum(dim=0)  # (n, r, h, w)
        if self.refine is None:
            return heatmap
        refine_size = correlations[self.refine_level]
        correction = self.refine(torch.cat([resize(m, refine_size) for m in scaled], dim=1))  # (n, r, h_k, w_k)
        return heatmap + resize(correction, correlations[0])  # (n, r, h, w)


def resize(maps: Tensor, like: Tensor) -> Tensor:
    """(n, r, h, w) maps bilinearly resized to the spatial size of `like` (returned as they are when equal)."""
    size = like.shape[-2:]
    return maps if maps.shape[-2:] == size else F.interpolate(maps, size=size, mode="bilinear", align_corners=False)


class PuzzleNet(nn.Module):
    """Piece-in-puzzle localisation and rotation by multi-level normalised cross-correlation (see the module doc).

    Args:
        backbone: timm model name, built with ``features_only`` and random weights.
        out_indices: the backbone stages fed to the pyramid (finest first); the first sets the heatmap's stride.
        fpn_channels: width of the pyramid (and so of every template).
        template_fraction: share of the piece canvas (centred) a template covers; the canvas holds the cell plus the
            tabs, the scale jitter and some background (~0.6 of it is the cell).
        refine_channels: width of the heatmap's residual refinement (`CorrelationFusion`); 0 = none. Off by default:
            with 32 channels, the CPU recipe's validation accuracy at IoU 0.5 fell to 0.66 / 0.65 / 0.62 in its first
            3 epochs against 0.73 without (it learns to spread the heatmap, which lowers the heatmap loss and moves
            peaks). `puzzle_cnn_tiny` keeps one (8).
        size_hidden: hidden width of the size MLP.
        init_scale: initial factor on every feature level's correlation (learnt, as its log). Small by default:
            random features carry no information yet, and the pixel level makes the softmax peaked; without a pixel
            level use ~10, or the softmax over locations starts flat.
        pixel_init_scale: initial factor on the pixel level's correlation (learnt, as its log).
        correlation: how a template is compared with a window (`correlate`): ``zncc`` (zero-mean NCC, each
            template and window less its own mean per channel), ``centred`` (cosine after subtracting the puzzle's
            mean feature) or ``cosine``. Plain cosine is dominated by the direction every feature shares, and its
            maps show the puzzle more than the piece.
        pixel_stride: add a parameter-free finest level matched on the colour images themselves (template
            matching inside the network, so the heatmap is informative from the first step and the learnt levels
            refine it), its map at this stride (which sets the heatmap's); None = feature levels only.
        pixel_match: how that level matches. ``silhouette``: the whole piece canvas under its silhouette (the
            pixels off the canvas's flat background colour, `silhouette`) by masked zero-mean NCC at full
            resolution (`silhouette_correlation`, by FFT), max-pooled to `pixel_stride`: on validation, untrained,
            94.7 % of pieces at IoU >= 0.5 (85.5 % with the whole silhouette in colour, unblurred) against 71 % for
            ``crop``. ``crop``: the images average-pooled by
            `pixel_stride` and matched like a feature level (the central `template_fraction` crop, `correlate`).
        pixel_erode: the ``silhouette`` level leaves out a rim this many pixels wide (`erode`): blur and JPEG on
            the photographed piece mix its outermost pixels with the canvas's background, which the puzzle never
            shows. 0 = the whole silhouette (the network before 2026-12-06).
        pixel_colour: what the ``silhouette`` level matches: ``luminance`` (`luminance`, the channels' mean: a hue
            change moves colour, not brightness) or ``rgb`` (the three channels, the network before 2026-12-06).
            Scored on validation with the untrained network's pixel level alone (its joint argmax; 512 pieces):
            ``rgb`` with no rim 87.3 % placed / 90.0 % turned, a 1-pixel rim 93.2 % / 95.1 %, and luminance
            93.8 % / 96.1 %; a 2-pixel rim 92.4 % / 94.7 % (``rgb``).
        pixel_blur: the ``silhouette`` level matches the piece against the puzzle blurred by a Gaussian of this
            many pixels (`gaussian_blur`): a photographed piece is never sharper than the puzzle's image (the
            generator blurs half the pieces by up to 1 px and JPEG-compresses half). With the 1-pixel rim and
            luminance: 0.5 took validation from 93.8 % / 96.1 % to 95.1 % / 96.9 %; blurring piece and puzzle
            alike 94.7 % / 96.3 %; the best of three puzzle blurs (0, 0.7, 1.2) 95.1 % / 96.9 % at 3 x the cost.
            0 = none (the network before 2026-12-06).
        readout_radius: the box centre is the soft-argmax within this many heatmap cells of the peak (None = the
            whole map).
        rotation_readout: the rotation the network answers (``rotation_logits``): ``peak``, the heatmap's
            log-sum-exp over the `readout_radius` window of the location peak, or ``marginal``, over the whole map
            (`read_out`). The loss always trains the marginal (``rotation_marginal_logits``). On validation, with
            the same checkpoint, ``peak`` turned 90.6 % of the pieces right against 82.2 % for ``marginal``.
        border_prior: the border rule (`abr_lab.puzzle_cnn.borders`): heatmap logits of the (rotation, place)
            pairs the piece's outline rules out (a flat side away from the picture's edge, a knobbed side against
            it) are lowered by this much; 0 = off (the network before 2026-12-07). The default is several times
            the gap between a piece's own place and its look-alikes (pixel scale ~30-46 x correlation gaps of
            ~0.05-0.3), so a ruled-out place wins only where the map has nothing better.
        grid_prior: when `forward` is given or reads the puzzles' grid (rows x cols), the logits of the (rotation,
            place) pairs it rules out (`abr_lab.puzzle_cnn.borders.grid_places`: a centre off every cell's centre,
            an oblong piece across oblong cells) are lowered by this much; 0 = only the box's size comes from the
            grid.
        pretrained_path: local file with backbone weights (`load_backbone_weights`); None = random init.
    """

    def __init__(
        self,
        backbone: str = "resnet18",
        out_indices: Sequence[int] = (2, 3, 4),
        fpn_channels: int = 128,
        template_fraction: float = 0.35,
        refine_channels: int = 0,
        size_hidden: int = 128,
        init_scale: float = 0.1,
        pixel_init_scale: float = 30.0,
        correlation: str = "zncc",
        pixel_stride: int | None = 2,
        pixel_match: str = "silhouette",
        pixel_erode: int = PIXEL_ERODE,
        pixel_colour: str = "luminance",
        pixel_blur: float = PIXEL_BLUR,
        readout_radius: int | None = 2,
        rotation_readout: str = "peak",
        border_prior: float = BORDER_PRIOR,
        grid_prior: float = GRID_PRIOR,
        pretrained_path: str | None = None,
    ) -> None:
        super().__init__()
        if not timm.is_model(backbone):
            raise ValueError(f"backbone: unknown timm model {backbone!r} (see timm.list_models())")
        if len(out_indices) < 1:
            raise ValueError("out_indices: need at least one backbone stage")
        if not 0 < template_fraction <= 1:
            raise ValueError(f"template_fraction must be in (0, 1], got {template_fraction}")
        if fpn_channels < 1 or refine_channels < 0 or size_hidden < 1 or not min(init_scale, pixel_init_scale) > 0:
            raise ValueError(
                "fpn_channels, size_hidden must be >= 1, refine_channels >= 0 and init_scale, pixel_init_scale > 0"
            )
        if correlation not in CORRELATIONS:
            raise ValueError(f"correlation: unknown {correlation!r}; known: {', '.join(CORRELATIONS)}")
        if pixel_stride is not None and pixel_stride < 1:
            raise ValueError(f"pixel_stride must be >= 1 or None, got {pixel_stride}")
        if pixel_match not in PIXEL_MATCHES:
            raise ValueError(f"pixel_match: unknown {pixel_match!r}; known: {', '.join(PIXEL_MATCHES)}")
        if pixel_erode < 0:
            raise ValueError(f"pixel_erode must be >= 0, got {pixel_erode}")
        if pixel_blur < 0:
            raise ValueError(f"pixel_blur must be >= 0, got {pixel_blur}")
        if pixel_colour not in PIXEL_COLOURS:
            raise ValueError(f"pixel_colour: unknown {pixel_colour!r}; known: {', '.join(PIXEL_COLOURS)}")
        if readout_radius is not None and readout_radius < 0:
            raise ValueError(f"readout_radius must be >= 0 or None, got {readout_radius}")
        if rotation_readout not in ROTATION_READOUTS:
            raise ValueError(f"rotation_readout: unknown {rotation_readout!r}; known: {', '.join(ROTATION_READOUTS)}")
        if not border_prior >= 0 or not grid_prior >= 0:
            raise ValueError(f"border_prior and grid_prior must be >= 0, got {border_prior} and {grid_prior}")
        self.template_fraction = template_fraction
        self.readout_radius = readout_radius
        self.rotation_readout = rotation_readout
        self.correlation = correlation
        self.pixel_stride = pixel_stride
        self.pixel_match = pixel_match
        self.pixel_erode = pixel_erode
        self.pixel_colour = pixel_colour
        self.pixel_blur = pixel_blur
        self.border_prior = border_prior
        self.grid_prior = grid_prior
        # encoder
        self.backbone = timm.create_model(
            backbone, pretrained=False, features_only=True, out_indices=tuple(int(i) for i in out_indices)
        )
        feature_strides = tuple(self.backbone.feature_info.reduction())
        self.strides = feature_strides if pixel_stride is None else (pixel_stride, *feature_strides)  # fine -> coarse
        if pretrained_path is not None:
            load_backbone_weights(self.backbone, pretrained_path)
        self.fpn = FeaturePyramid(self.backbone.feature_info.channels(), fpn_channels)
        # heads
        scales = [init_scale] * len(feature_strides)
        if pixel_stride is None:
            self.fusion = CorrelationFusion(scales, refine_channels)
        else:  # the refinement at the finest feature level (`CorrelationFusion`)
            self.fusion = CorrelationFusion([pixel_init_scale, *scales], refine_channels, refine_level=1)
        self.size_head = nn.Sequential(
            nn.AdaptiveAvgPool2d(2),
            nn.Flatten(),
            nn.Linear(fpn_channels * 4, size_hidden),
            nn.ReLU(inplace=True),
            nn.Linear(size_hidden, 2),
        )

    def forward_features(self, piece: Tensor, puzzle: Tensor) -> tuple[list[Tensor], list[Tensor], Tensor]:
        """(n, 3, s, s) pieces, (p, 3, S, S) puzzles -> levels fine -> coarse (the ``crop`` pixel level first, when
        on): the puzzles' maps [(p, c_l, H_l, W_l)], the pieces' templates [(n, r, c_l, k_l, k_l)] (hypothesis r
        undoes a rotation by r) and the coarsest map of the piece as given, (n, c, h_L, w_L)."""
        n = piece.shape[0]
        hypotheses = rotation_hypotheses(piece)  # (n r, 3, s, s)
        puzzle_maps = self.fpn(self.backbone(puzzle))  # [(p, c, H_l, W_l)]
        piece_maps = self.fpn(self.backbone(hypotheses))  # [(n r, c, h_l, w_l)]
        if self.pixel_stride is not None and self.pixel_match == "crop":
            puzzle_maps.insert(0, F.avg_pool2d(puzzle, self.pixel_stride))  # (p, 3, S / stride, S / stride)
            piece_maps.insert(0, F.avg_pool2d(hypotheses, self.pixel_stride))  # (n r, 3, s / stride, s / stride)
        templates = [
            make_templates(m, self.template_fraction).unflatten(0, (n, ROTATIONS)) for m in piece_maps
        ]  # [(n, r, c_l, k_l, k_l)]
        return puzzle_maps, templates, piece_maps[-1].unflatten(0, (n, ROTATIONS))[:, 0]

    @torch.compiler.disable
    def silhouette_level(
        self, piece: Tensor, puzzle: Tensor, puzzle_index: Tensor, groups: Groups | None = None
    ) -> Tensor:
        """The ``silhouette`` pixel level: (n, 3, s, s) pieces, (p, 3, S, S) puzzles -> (n, r, S / stride,
        S / stride), the best full-resolution match within each stride x stride cell (a correlation peak is a
        pixel wide: pooling the images first, as ``crop`` does, blurs it away).

        Runs eagerly under `torch.compile` (`torch.compiler.disable`, one graph break): it learns nothing, its FFTs
        are library calls that compiling cannot speed up, and traced, `silhouette_correlation`'s loop over template
        chunks would grow the compiled graph with the batch (about 70 ops per puzzle, against ~800 ops for the whole
        network at 2 puzzles)."""
        corr = silhouette_maps(
            piece, puzzle, puzzle_index, self.pixel_erode, self.pixel_colour, self.pixel_blur, groups
        )  # (n, r, S, S)
        stride = self.pixel_stride or 1
        return F.max_pool2d(corr, stride) if stride > 1 else corr  # (n, r, S / stride, S / stride)

    def fuse(
        self,
        puzzle_maps: Sequence[Tensor],
        templates: Sequence[Tensor],
        puzzle_index: Tensor,
        pixel_map: Tensor | None = None,
        groups: Groups | None = None,
    ) -> tuple[Tensor, list[Tensor]]:
        """Outputs of `forward_features`, (n,) puzzle of each piece and the ``silhouette`` pixel level's (n, r, h, w)
        map when on -> the (n, r, h, w) joint heatmap logits, before any rule, and every level's correlation map
        [(n, r, H_l, W_l)] fine -> coarse."""
        correlations = [
            correlate(self.correlation, pm, t, puzzle_index, groups)
            for pm, t in zip(puzzle_maps, templates, strict=True)
        ]  # [(n, r, H_l, W_l)] fine -> coarse
        if pixel_map is not None:
            correlations.insert(0, pixel_map.to(correlations[0].dtype))
        return self.fusion(correlations), correlations  # (n, r, h, w)

    def outlines(self, piece: Tensor, puzzle: Tensor) -> tuple[Tensor, Tensor]:
        """(n, 3, s, s) pieces and (p, 3, S, S) puzzles -> what each rotation hypothesis's upright outline says:
        (n, r, 4) its flat sides (`borders.SIDES`) and (n, r, 2) its core's (width, height) as fractions of the
        puzzle canvas (`borders.flat_sides`)."""
        n = piece.shape[0]
        masks = silhouette(rotation_hypotheses(piece))[:, 0] > 0.5  # (n r, s, s)
        flat, size = flat_sides(masks)  # (n r, 4), (n r, 2) px
        fraction = torch.stack([size[:, 0] / puzzle.shape[-1], size[:, 1] / puzzle.shape[-2]], dim=1)  # (n r, 2)
        return flat.view(n, ROTATIONS, 4), fraction.view(n, ROTATIONS, 2)

    def grids_from_pieces(
        self, heatmap: Tensor, size: Tensor, content: Tensor, puzzle_index: Tensor, groups: Groups | None = None
    ) -> Tensor:
        """(n, r, h, w) heatmap logits, (n, r, 2) cores (`outlines`), (p, 4) pictures' boxes and (n,) puzzle of each
        piece -> (p, 2) long (rows, cols) of each puzzle, read off its pieces in the batch (`borders.read_grid`);
        (1, 1) for a puzzle without pieces. No gradient: a count is not differentiable."""
        grids = torch.ones(content.shape[0], 2, dtype=torch.long, device=heatmap.device)  # (p, 2)
        heatmap = heatmap.detach()
        for p, rows in puzzle_groups(puzzle_index) if groups is None else groups:
            grids[p] = read_grid(heatmap[rows], size[rows], content[p])
        return grids

    def forward(
        self,
        piece: Tensor,
        puzzle: Tensor,
        puzzle_index: Tensor,
        content: Tensor | None = None,
        grid: Tensor | None = None,
        read_grids: bool = False,
    ) -> dict[str, Tensor | list[Tensor]]:
        """(n, 3, s, s) pieces, (p, 3, S, S) puzzles, (n,) puzzle row of each piece, (p, 4) where each puzzle's
        picture sits on its canvas (normalised x1, y1, x2, y2; None = the whole canvas) and (p, 2) each puzzle's
        grid (rows, cols; None = unknown, and then read off each puzzle's pieces in the batch when `read_grids`)
        -> dict with "box" (n, 4) (the answer: with a grid, the cell nearest the read-out's), "read_box" (n, 4)
        (the read-out's own box, what the box losses train), "rotation_logits" (n, 4) (the answer, by
        `rotation_readout`), "rotation_marginal_logits" (n, 4) (what the loss trains), "heatmap" (n, 4, h, w),
        "correlations" [(n, 4, H_l, W_l)] and, with a grid told or read, "grid" (p, 2)."""
        if piece.ndim != 4 or piece.shape[-1] != piece.shape[-2] or puzzle.ndim != 4:
            shapes = f"{tuple(piece.shape)} and {tuple(puzzle.shape)}"
            raise ValueError(f"expected square pieces (n, 3, s, s) and puzzles (p, 3, S, S), got {shapes}")
        if puzzle_index.shape != piece.shape[:1]:
            raise ValueError(f"puzzle_index: expected shape ({piece.shape[0]},), got {tuple(puzzle_index.shape)}")
        if content is not None and content.shape != (puzzle.shape[0], 4):
            raise ValueError(f"content: expected shape ({puzzle.shape[0]}, 4), got {tuple(content.shape)}")
        if grid is not None and grid.shape != (puzzle.shape[0], 2):
            raise ValueError(f"grid: expected shape ({puzzle.shape[0]}, 2) (rows, cols), got {tuple(grid.shape)}")
        if grid is not None and read_grids:
            raise ValueError("read_grids: the grid is told (grid is given); read it or be told it, not both")
        groups = puzzle_groups(puzzle_index)  # the one read of the index to the host
        puzzle_maps, templates, piece_map = self.forward_features(piece, puzzle)
        size_scale = min(1.0, piece.shape[-1] / max(puzzle.shape[-2:]))
        pixel_map = None
        if self.pixel_stride is not None and self.pixel_match == "silhouette":
            pixel_map = self.silhouette_level(piece, puzzle, puzzle_index, groups)  # (n, r, S / stride, S / stride)
        heatmap, correlations = self.fuse(puzzle_maps, templates, puzzle_index, pixel_map, groups)  # (n, r, h, w)
        shape = tuple(heatmap.shape[-2:])
        if content is None:
            content = torch.cat(
                [puzzle.new_zeros(puzzle.shape[0], 2), puzzle.new_ones(puzzle.shape[0], 2)], 1
            )  # (p, 4)
        piece_content = content[puzzle_index]  # (n, 4)
        gridded = self.grid_prior > 0 and (grid is not None or read_grids)  # the grid's rule is on
        if self.border_prior > 0 or read_grids or gridded:
            flat, core = self.outlines(piece, puzzle)  # (n, r, 4), (n, r, 2)
        if self.border_prior > 0:
            ruled_out = ~allowed_places(flat, core, piece_content, shape)  # (n, r, h, w)
            heatmap = heatmap - self.border_prior * ruled_out.to(heatmap.dtype)
        if read_grids:
            grid = self.grids_from_pieces(heatmap, core, content, puzzle_index, groups)  # (p, 2)
        if gridded:
            off_grid = ~grid_places(core, piece_content, grid[puzzle_index], shape)  # (n, r, h, w)
            heatmap = heatmap - self.grid_prior * off_grid.to(heatmap.dtype)
        size = torch.sigmoid(self.size_head(piece_map)) * size_scale  # (n, 2) (w, h), piece's frame
        read_box, marginal_logits, peak_logits = read_out(heatmap, size, self.readout_radius)  # (n, 4), (n, r), (n, r)
        box = read_box if grid is None else snap_to_grid(read_box, piece_content, grid[puzzle_index])  # (n, 4)
        out: dict[str, Tensor | list[Tensor]] = {
            "box": box,
            "read_box": read_box,
            "rotation_logits": peak_logits if self.rotation_readout == "peak" else marginal_logits,
            "rotation_marginal_logits": marginal_logits,
            "heatmap": heatmap,
            "correlations": correlations,
        }
        if grid is not None:
            out["grid"] = grid
        return out


register_variant("puzzle_cnn", PuzzleNet, FAMILY, backbone="resnet18", out_indices=(2, 3, 4), fpn_channels=128)
# timm's 0.37 M-parameter test ResNet and a 16-wide pyramid: a 64 x 64 puzzle in milliseconds, for tests and smoke runs
register_variant(
    "puzzle_cnn_tiny",
    PuzzleNet,
    FAMILY,
    backbone="test_resnet",
    out_indices=(2, 3, 4),
    fpn_channels=16,
    refine_channels=8,
    size_hidden=16,
)
