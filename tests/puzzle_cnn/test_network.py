"""PuzzleNet: the output contract for every variant, gradients, the correlation's peak and rotation hypotheses, the
read-out, a peaked heatmap at init, and backbone weights from a local file."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import timm
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import Tensor

from abr_lab.benchmarking import GraphCounter
from abr_lab.puzzle_cnn.network import (
    PuzzleNet,
    centre_on_puzzle,
    correlate,
    erode,
    fft_length,
    gaussian_blur,
    luminance,
    make_templates,
    normalized_cross_correlation,
    peak_window,
    puzzle_groups,
    read_out,
    rotation_hypotheses,
    silhouette,
    silhouette_correlation,
    snap_to_grid,
    template_rows,
    template_side,
    uniform_pieces,
)
from abr_lab.registry import create_model, list_models


def batch(pieces: int = 3, puzzles: int = 2, piece_size: int = 32, puzzle_size: int = 64) -> tuple[torch.Tensor, ...]:
    torch.manual_seed(0)
    piece = torch.randn(pieces, 3, piece_size, piece_size)
    puzzle = torch.randn(puzzles, 3, puzzle_size, puzzle_size)
    return piece, puzzle, torch.arange(pieces) % puzzles


def test_variants_are_registered() -> None:
    assert {"puzzle_cnn", "puzzle_cnn_tiny"} <= set(list_models("puzzle_cnn"))


@pytest.mark.parametrize("name", list_models("puzzle_cnn"))
def test_every_variant_follows_the_output_contract(name: str) -> None:
    net = create_model(name)
    piece, puzzle, index = batch()
    out = net(piece, puzzle, index)
    box, logits, heatmap, correlations = out["box"], out["rotation_logits"], out["heatmap"], out["correlations"]
    assert box.shape == (3, 4) and logits.shape == (3, 4)
    assert heatmap.shape == (3, 4, 64 // net.strides[0], 64 // net.strides[0])
    assert [tuple(c.shape) for c in correlations] == [(3, 4, 64 // s, 64 // s) for s in net.strides]
    for tensor in (box, logits, heatmap, *correlations):
        assert torch.isfinite(tensor).all()
    assert (box >= 0).all() and (box <= 1).all() and (box[:, :2] <= box[:, 2:]).all()
    assert all(c.abs().max() <= 1 + 1e-5 for c in correlations)


def test_every_parameter_gets_a_gradient() -> None:
    torch.manual_seed(0)  # the tiny size MLP (16 units) can start with every unit dead for 3 pieces: fix the draw
    net = create_model("puzzle_cnn_tiny")
    # zero-initialised tensors (the refinement's last conv, timm's last BN scale of each residual block) zero the
    # gradient of what feeds them at step 0: perturb them, so that a zero gradient below means a broken path
    with torch.no_grad():
        for param in net.parameters():
            if not param.any():
                param.normal_(std=0.01)
    piece, puzzle, index = batch()
    out = net(piece, puzzle, index)
    target = torch.tensor([[0.1, 0.2, 0.3, 0.4], [0.5, 0.5, 0.7, 0.6], [0.0, 0.6, 0.2, 0.9]])
    loss = F.l1_loss(out["box"], target) + F.cross_entropy(out["rotation_logits"], torch.tensor([0, 1, 3]))
    loss.backward()
    for name, param in net.named_parameters():
        assert param.grad is not None, name
        assert torch.isfinite(param.grad).all(), name
        assert param.grad.abs().sum() > 0, name


def test_rotation_hypothesis_r_undoes_a_rotation_by_r() -> None:
    upright = torch.randn(1, 3, 8, 8)
    for k in range(4):
        hypotheses = rotation_hypotheses(torch.rot90(upright, k, dims=(-2, -1)))  # (4, 3, 8, 8)
        torch.testing.assert_close(hypotheses[k], upright[0])


def test_correlation_peaks_at_the_cut_location_and_rotation() -> None:
    torch.manual_seed(1)
    puzzle_map = torch.randn(2, 8, 12, 10)  # (p, c, H, W)
    k = 3
    cases = [(0, 4, 5, 0), (1, 2, 7, 1), (0, 9, 1, 2), (1, 6, 3, 3), (1, 10, 8, 1)]  # (puzzle, y, x, rotation)
    templates, index = [], []
    for p, y, x, rotation in cases:
        window = puzzle_map[p, :, y - 1 : y + 2, x - 1 : x + 2]  # (c, k, k) centred on (y, x)
        feature = torch.rot90(window, rotation, dims=(-2, -1))  # the piece, turned
        templates.append(torch.stack([torch.rot90(feature, -r, dims=(-2, -1)) for r in range(4)]))  # (r, c, k, k)
        index.append(p)
    corr = normalized_cross_correlation(puzzle_map, torch.stack(templates), torch.tensor(index), zero_mean=False)
    assert corr.shape == (5, 4, 12, 10) and corr.abs().max() <= 1 + 1e-5
    for i, (_, y, x, rotation) in enumerate(cases):
        flat = int(corr[i].flatten().argmax())
        assert (flat // 120, flat // 10 % 12, flat % 10) == (rotation, y, x)
        assert float(corr[i, rotation, y, x]) == pytest.approx(1.0, abs=1e-5)
    # against a naive cosine of every window (zero-padded), piece by piece
    padded = F.pad(puzzle_map, (1, 1, 1, 1))
    windows = F.unfold(padded, k).view(2, 8 * k * k, 12, 10)  # (p, c k k, H, W)
    for i, p in enumerate(index):
        naive = F.cosine_similarity(
            templates[i].flatten(1)[:, :, None, None], windows[p][None], dim=1, eps=1e-12
        )  # (r, H, W)
        torch.testing.assert_close(corr[i], naive, atol=1e-5, rtol=1e-4)


def test_zero_mean_correlation_is_pearson_per_window_and_ignores_brightness_and_contrast() -> None:
    torch.manual_seed(2)
    puzzle_map, k = torch.randn(2, 3, 9, 11), 3
    templates, index = torch.randn(3, 4, 3, k, k), torch.tensor([0, 1, 1])
    corr = normalized_cross_correlation(puzzle_map, templates, index)  # (n, r, H, W)
    assert corr.abs().max() <= 1 + 1e-5
    centred_map = puzzle_map - puzzle_map.mean(dim=(2, 3), keepdim=True)  # borders padded with the puzzle's mean
    windows = F.unfold(F.pad(centred_map, (1, 1, 1, 1)), k).view(2, 3, k * k, 9, 11)  # (p, c, k k, H, W)
    windows = (windows - windows.mean(dim=2, keepdim=True)).flatten(1, 2)  # each channel less its window mean
    for i, p in enumerate(index.tolist()):
        centred = templates[i] - templates[i].mean(dim=(-2, -1), keepdim=True)  # (r, c, k, k)
        naive = F.cosine_similarity(centred.flatten(1)[:, :, None, None], windows[p][None], dim=1, eps=1e-12)
        torch.testing.assert_close(corr[i], naive, atol=1e-5, rtol=1e-4)
    # a piece photographed brighter (per-channel offset) and with more contrast (a positive factor) scores the same
    changed = 1.7 * templates + torch.tensor([0.3, -0.2, 0.5])[:, None, None]
    torch.testing.assert_close(normalized_cross_correlation(puzzle_map, changed, index), corr, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("kind", ["zncc", "centred", "cosine"])
def test_correlation_under_bf16_autocast_is_the_float32_correlation(kind: str) -> None:
    """trainer=gpu trains in bf16-mixed: the correlation leaves autocast and runs in float32 (a window's energy is a
    difference of sums of squares that bf16 cancels to noise, and CUDA autocast mixed bf16 and float32 results in
    one tensor: 'Index put requires the source and destination dtypes match')."""
    torch.manual_seed(3)
    puzzle_map, templates, index = torch.randn(2, 8, 12, 12) + 3.0, torch.randn(3, 4, 8, 5, 5), torch.tensor([0, 1, 1])
    reference = correlate(kind, puzzle_map, templates, index)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        mixed = correlate(kind, puzzle_map.bfloat16(), templates.bfloat16(), index)
    assert mixed.dtype == torch.float32
    # the inputs' bf16 rounding only, not bf16 arithmetic
    rounded = correlate(kind, puzzle_map.bfloat16().float(), templates.bfloat16().float(), index)
    torch.testing.assert_close(mixed, rounded)
    assert (mixed - reference).abs().max() < 0.02


def test_without_refinement_the_heatmap_is_the_scaled_sum_of_the_level_maps() -> None:
    net = create_model("puzzle_cnn_tiny", refine_channels=0)
    assert net.fusion.refine is None
    with torch.no_grad():
        out = net(*batch())
    scales = net.fusion.log_scale.exp()
    size = out["heatmap"].shape[-2:]
    expected = sum(
        F.interpolate(corr * scale, size=size, mode="bilinear", align_corners=False)
        for corr, scale in zip(out["correlations"], scales, strict=True)
    )
    torch.testing.assert_close(out["heatmap"], expected)
    with pytest.raises(ValueError, match="refine_channels"):
        create_model("puzzle_cnn_tiny", refine_channels=-1)


def test_flat_windows_and_templates_score_zero_not_float32_noise() -> None:
    # a black letterbox beside bright texture: the window variance sum x^2 - (sum x)^2 / k^2 cancels in float32, and
    # without a floor the correlation came out at ~70 there (loss spikes of several hundred in training)
    torch.manual_seed(4)
    puzzle_map = torch.full((1, 3, 40, 40), -2.1)  # (p, c, H, W): flat, far from 0
    puzzle_map[..., 20:] = 2.0 + torch.randn(1, 3, 40, 20)  # textured half
    templates = torch.randn(2, 4, 3, 11, 11)
    templates[1] = -2.1  # a flat template too
    corr = normalized_cross_correlation(puzzle_map, templates, torch.zeros(2, dtype=torch.long))
    assert corr.abs().max() <= 1 + 1e-5
    assert corr[0, :, 5:35, 5:15].abs().max() < 1e-3  # windows inside the flat part (not touching the padding)
    assert corr[1].abs().max() < 1e-3


@pytest.mark.parametrize("pixel_match", ["silhouette", "crop"])
def test_the_pixel_level_finds_an_exact_piece_before_any_training(pixel_match: str) -> None:
    # template matching inside the network: an untrained net localises and turns a piece cut from a textured puzzle
    torch.manual_seed(3)
    puzzle = F.interpolate(torch.randn(1, 3, 16, 16), size=64, mode="bilinear", align_corners=False)  # (1, 3, 64, 64)
    padded = F.pad(puzzle, (8, 8, 8, 8))
    cells = [(1, 2, 1), (3, 0, 3), (2, 2, 2)]  # (row, col, turns) on a 4 x 4 grid of 16 px cells
    pieces = [
        torch.rot90(padded[0, :, 16 * row : 16 * row + 32, 16 * col : 16 * col + 32], turns, dims=(-2, -1))
        for row, col, turns in cells
    ]  # the cell and 8 px around it, turned: (3, 32, 32) each
    net = create_model("puzzle_cnn_tiny", pixel_match=pixel_match).eval()
    with torch.no_grad():
        out = net(torch.stack(pieces), puzzle, torch.zeros(3, dtype=torch.long))
    centre = (out["box"][:, :2] + out["box"][:, 2:]) / 2  # (n, 2) x, y
    expected = torch.tensor([[(col + 0.5) / 4, (row + 0.5) / 4] for row, col, _ in cells])
    assert (centre - expected).abs().max() < 0.5 / 4  # inside the right cell
    assert out["rotation_logits"].argmax(dim=1).tolist() == [turns for _, _, turns in cells]


def jigsaw_piece(puzzle: Tensor, top: int, left: int, side: int, turns: int, background: float) -> Tensor:
    """A (3, side, side) canvas: the puzzle's pixels under an irregular outline (a square with a tab and a notch) at
    (top, left), on a flat background, turned `turns` quarter turns."""
    canvas = torch.full((3, side, side), background)
    yy, xx = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
    body = (yy >= 4) & (yy < side - 4) & (xx >= 4) & (xx < side - 4)
    tab = (yy - side // 2) ** 2 + (xx - 2) ** 2 <= 9  # a knob out of the left side
    notch = (yy - 5) ** 2 + (xx - side // 2) ** 2 <= 9  # a blank into the top side
    mask = (body | tab) & ~notch
    window = puzzle[:, top : top + side, left : left + side]
    canvas[:, mask] = window[:, mask]
    return torch.rot90(canvas, turns, dims=(-2, -1))


def test_silhouette_reads_the_outline_off_the_flat_background() -> None:
    torch.manual_seed(5)
    puzzle = torch.randn(3, 40, 40)
    piece = jigsaw_piece(puzzle, 10, 12, 20, turns=1, background=0.7)
    mask = silhouette(piece[None])  # (1, 1, s, s)
    assert mask.shape == (1, 1, 20, 20) and mask[0, 0, 0, 0] == 0 and mask[0, 0, 10, 10] == 1
    expected = (piece != 0.7).any(dim=0).float()  # every pixel off the background colour
    torch.testing.assert_close(mask[0, 0], expected)
    flat = torch.full((1, 3, 8, 8), 0.3)  # nothing to read: the whole canvas counts
    assert silhouette(flat).eq(1).all()


def test_silhouette_correlation_is_pearson_over_the_mask_in_every_window() -> None:
    torch.manual_seed(6)
    p, c, height, width, k = 2, 3, 13, 11, 5
    puzzle = torch.randn(p, c, height, width) + 2.0  # far from 0, as images are
    templates, masks = torch.randn(3, 2, c, k, k), (torch.rand(3, 2, 1, k, k) > 0.3).float()
    index = torch.tensor([0, 1, 1])
    corr = silhouette_correlation(puzzle, templates, masks, index)  # (n, r, H, W)
    assert corr.shape == (3, 2, height, width) and corr.abs().max() <= 1
    centred = puzzle - puzzle.mean(dim=(-2, -1), keepdim=True)  # padding = the puzzle's mean colour
    windows = F.unfold(F.pad(centred, (k // 2,) * 4), k).view(p, c, k * k, height, width)  # (p, c, k k, H, W)
    for i, q in enumerate(index.tolist()):
        for r in range(2):
            w = masks[i, r, 0].flatten()[None, :, None, None]  # (1, k k, 1, 1)
            t = templates[i, r].flatten(1)[:, :, None, None]  # (c, k k, 1, 1)
            t = t - (t * w).sum(dim=1, keepdim=True) / w.sum()  # zero mean under the mask
            x = windows[q] - (windows[q] * w).sum(dim=1, keepdim=True) / w.sum()
            pearson = (w * t * x).sum((0, 1)) / ((w * x**2).sum((0, 1)) * (w * t**2).sum()).sqrt()
            torch.testing.assert_close(corr[i, r], pearson, atol=1e-4, rtol=1e-4)
    # what lies outside the mask takes no part; brightness and contrast per channel change nothing
    changed = torch.where(masks.bool(), 1.5 * templates + torch.tensor([0.4, -0.3, 0.1])[:, None, None], 9.0)
    torch.testing.assert_close(silhouette_correlation(puzzle, changed, masks, index), corr, atol=1e-4, rtol=1e-4)


def test_silhouette_level_places_and_turns_a_jigsaw_piece_at_full_resolution() -> None:
    torch.manual_seed(7)
    puzzle = F.interpolate(torch.randn(1, 3, 24, 24), size=96, mode="bilinear", align_corners=False)  # (1, 3, S, S)
    spots = [(10, 50, 0), (40, 8, 1), (60, 60, 3)]  # (top, left, turns) of 24-px canvases
    pieces = torch.stack([jigsaw_piece(puzzle[0], top, left, 24, turns, 0.5) for top, left, turns in spots])
    net = create_model("puzzle_cnn_tiny")  # pixel_stride 2: the map is 48 x 48
    corr = net.silhouette_level(pieces, puzzle, torch.zeros(3, dtype=torch.long))  # (n, r, 48, 48)
    assert corr.shape == (3, 4, 48, 48)
    for i, (top, left, turns) in enumerate(spots):
        r, y, x = torch.unravel_index(corr[i].argmax(), corr[i].shape)
        assert int(r) == turns and corr[i].max() > 0.99  # an exact match under the outline
        assert (int(y), int(x)) == ((top + 12) // 2, (left + 12) // 2)  # the canvas centre's cell at stride 2


def test_erode_takes_a_rim_of_the_given_width_off_the_mask() -> None:
    mask = torch.zeros(1, 1, 9, 9)
    mask[..., 1:8, 1:8] = 1.0  # a 7 x 7 square
    assert erode(mask, 0) is mask
    assert erode(mask, 1).sum() == 25 and erode(mask, 1)[0, 0, 2:7, 2:7].eq(1).all()  # 5 x 5 left
    assert erode(mask, 3).sum() == 1 and erode(mask, 3)[0, 0, 4, 4] == 1
    whole = torch.ones(1, 1, 6, 6)  # a flat canvas's mask: the canvas's edge is no rim
    assert erode(whole, 2).eq(1).all()
    with pytest.raises(ValueError, match="pixels"):
        erode(mask, -1)


def test_gaussian_blur_is_a_normalised_gaussian_that_keeps_flat_images_and_the_dtype_floor() -> None:
    impulse = torch.zeros(1, 2, 15, 15)
    impulse[:, :, 7, 7] = 1.0
    blurred = gaussian_blur(impulse, 1.0)
    assert blurred.shape == impulse.shape and blurred.dtype == torch.float32
    torch.testing.assert_close(blurred.sum(dim=(-2, -1)), torch.ones(1, 2))  # mass kept away from the edges
    taps = torch.exp(-(torch.arange(-3, 4.0) ** 2) / 2)
    expected = torch.outer(taps, taps) / taps.sum() ** 2  # the 3-sigma truncated Gaussian, normalised
    torch.testing.assert_close(blurred[0, 0, 4:11, 4:11], expected)
    flat = torch.full((1, 3, 6, 6), 0.3)
    torch.testing.assert_close(gaussian_blur(flat, 2.0), flat)  # replicated edges: a flat image stays flat
    assert gaussian_blur(impulse, 0.0) is impulse
    assert gaussian_blur(impulse.bfloat16(), 1.0).dtype == torch.float32
    with pytest.raises(ValueError, match="sigma"):
        gaussian_blur(impulse, -1.0)


def level_peak(net: torch.nn.Module, piece: Tensor, puzzle: Tensor) -> tuple[float, tuple[int, int, int]]:
    """The silhouette level's best score for one (3, s, s) piece on one (3, S, S) puzzle and its (r, y, x)."""
    corr = net.silhouette_level(piece[None], puzzle[None], torch.zeros(1, dtype=torch.long))[0]  # (r, h, w)
    return corr.max().item(), tuple(int(i) for i in torch.unravel_index(corr.argmax(), corr.shape))


def test_luminance_matching_ignores_a_hue_change_that_moves_the_rgb_match() -> None:
    # turning every colour about the grey axis (a pure hue change) keeps each pixel's channel mean
    torch.manual_seed(8)
    puzzle = F.interpolate(torch.randn(1, 3, 24, 24), size=96, mode="bilinear", align_corners=False)[0]
    piece = jigsaw_piece(puzzle, 30, 40, 24, turns=2, background=0.5)
    mask = silhouette(piece[None])[0]  # (1, s, s)
    axis = torch.ones(3) / 3**0.5
    cross = torch.tensor([[0.0, -axis[2], axis[1]], [axis[2], 0.0, -axis[0]], [-axis[1], axis[0], 0.0]])
    angle = math.radians(60)
    turn = torch.eye(3) + math.sin(angle) * cross + (1 - math.cos(angle)) * cross @ cross  # Rodrigues
    recoloured = torch.where(mask.bool(), torch.einsum("ij,jhw->ihw", turn, piece), piece)
    torch.testing.assert_close(luminance(recoloured), luminance(piece))
    grey = create_model("puzzle_cnn_tiny", pixel_blur=0.0)  # an exact piece: no blur, so an exact match
    rgb = create_model("puzzle_cnn_tiny", pixel_colour="rgb", pixel_blur=0.0)
    expected = (2, (30 + 12) // 2, (40 + 12) // 2)  # (turns, canvas centre at stride 2)
    score, where = level_peak(grey, recoloured, puzzle)
    assert score > 0.99 and where == expected
    assert level_peak(rgb, piece, puzzle)[0] > 0.99  # the untouched piece matches in colour too
    assert level_peak(rgb, recoloured, puzzle)[0] < 0.9  # the hue change costs the rgb match


def test_the_eroded_silhouette_ignores_background_bled_into_the_piece_rim() -> None:
    # blur on a photographed piece mixes its outermost pixels with the canvas colour, which the puzzle never shows
    torch.manual_seed(9)
    puzzle = F.interpolate(torch.randn(1, 3, 24, 24), size=96, mode="bilinear", align_corners=False)[0]
    piece = jigsaw_piece(puzzle, 50, 20, 24, turns=1, background=3.0)
    mask = silhouette(piece[None])[0]  # (1, s, s)
    rim = (mask - erode(mask[None], 1)[0]).bool()  # (1, s, s)
    bled = torch.where(rim, (piece + 3.0) / 2, piece)  # the rim half background
    kept, dropped = (
        create_model("puzzle_cnn_tiny", pixel_erode=0, pixel_blur=0.0),
        create_model("puzzle_cnn_tiny", pixel_blur=0.0),
    )
    assert level_peak(dropped, bled, puzzle)[0] > 0.99  # pixel_erode=1: the rim is left out, the rest is exact
    assert level_peak(kept, bled, puzzle)[0] < 0.95


def test_read_out_centres_on_the_peak_and_swaps_the_size_with_odd_rotations() -> None:
    heatmap = torch.zeros(2, 4, 4, 8)
    heatmap[0, 0, 1, 5] = 50.0  # upright, row 1, col 5
    heatmap[1, 3, 2, 0] = 50.0  # turned three times, row 2, col 0
    size = torch.tensor([[0.2, 0.1], [0.1, 0.2]])  # (w, h) in the piece's own frame
    box, logits, _ = read_out(heatmap, size)
    assert logits.argmax(dim=1).tolist() == [0, 3]
    expected = torch.tensor([[5.5 / 8 - 0.1, 1.5 / 4 - 0.05, 5.5 / 8 + 0.1, 1.5 / 4 + 0.05],
                             [0.0, 2.5 / 4 - 0.05, 0.5 / 8 + 0.1, 2.5 / 4 + 0.05]])  # fmt: skip
    torch.testing.assert_close(box, expected, atol=1e-4, rtol=0)  # the second one clamped at x = 0


def test_snap_to_grid_boxes_the_nearest_cell() -> None:
    """A 2 x 4 grid over a picture at y in [0.125, 0.875]: cells 0.25 x 0.375."""
    content, grid = torch.tensor([[0.0, 0.125, 1.0, 0.875]]).expand(2, 4), torch.tensor([[2, 4]]).expand(2, 2)
    box = torch.tensor([[0.55, 0.5, 0.75, 0.6], [-0.1, 0.8, 0.1, 1.0]], requires_grad=True)  # centres inside, off
    snapped = snap_to_grid(box, content, grid)
    expected = torch.tensor([[0.5, 0.5, 0.75, 0.875], [0.0, 0.5, 0.25, 0.875]])  # cells (1, 2) and (1, 0)
    torch.testing.assert_close(snapped, expected, atol=1e-6, rtol=0)
    assert not snapped.requires_grad  # the losses train the read-out's own box, not the cell


def test_rotation_at_peak_is_the_turn_of_the_match_the_box_comes_from() -> None:
    heatmap = torch.zeros(1, 4, 16, 16)
    heatmap[0, 1, 3, 4] = 12.0  # one sharp match, turned once
    heatmap[0, 2, 8:, 8:] = 8.0  # a wide plateau of another turn elsewhere: 64 cells, more mass in all
    _, marginal, peak = read_out(heatmap, torch.tensor([[0.1, 0.1]]), radius=1)
    assert marginal.argmax(dim=1).item() == 2 and peak.argmax(dim=1).item() == 1
    assert torch.isfinite(peak).all()  # every turn has cells in the window
    _, marginal, everywhere = read_out(heatmap, torch.tensor([[0.1, 0.1]]), radius=None)
    torch.testing.assert_close(everywhere, marginal)  # no window: the marginal


def test_the_network_answers_by_its_rotation_readout_and_trains_the_marginal() -> None:
    piece, puzzle, index = batch(pieces=4)
    outputs = {}
    for readout in ("peak", "marginal"):
        torch.manual_seed(0)
        net = create_model("puzzle_cnn_tiny", rotation_readout=readout).eval()
        with torch.no_grad():
            outputs[readout] = net(piece, puzzle, index)
    peak, marginal = outputs["peak"], outputs["marginal"]
    torch.testing.assert_close(peak["rotation_marginal_logits"], marginal["rotation_marginal_logits"])
    torch.testing.assert_close(marginal["rotation_logits"], marginal["rotation_marginal_logits"])
    torch.testing.assert_close(peak["box"], marginal["box"])  # the box does not depend on the readout
    _, _, at_peak = read_out(peak["heatmap"], torch.full((4, 2), 0.5), radius=2)
    torch.testing.assert_close(peak["rotation_logits"], at_peak)


@pytest.mark.parametrize(
    ("kwargs", "scales"),
    [({}, [30.0, 0.1, 0.1, 0.1]), ({"pixel_stride": None, "init_scale": 10.0}, [10.0, 10.0, 10.0])],
    ids=["pixel level", "feature levels only"],
)
def test_heatmap_is_peaked_at_init(kwargs: dict, scales: list[float]) -> None:
    net = create_model("puzzle_cnn_tiny", **kwargs)
    torch.testing.assert_close(net.fusion.log_scale.detach(), torch.tensor(scales).log())
    piece, puzzle, index = batch(pieces=4)
    with torch.no_grad():
        heatmap = net(piece, puzzle, index)["heatmap"]
    cells = heatmap[0].numel()
    top = heatmap.flatten(1).softmax(dim=1).amax(dim=1)  # (n,)
    assert (top > 3.0 / cells).all(), top * cells


def _perturbed_tiny_net(seed: int) -> PuzzleNet:
    torch.manual_seed(seed)
    net = create_model("puzzle_cnn_tiny")
    with torch.no_grad():
        for tensor in net.backbone.state_dict().values():
            if tensor.is_floating_point():
                tensor.add_(0.1 * torch.rand_like(tensor))  # weights and BN statistics no init reproduces
    return net.eval()


def test_pretrained_path_loads_the_backbone_from_a_checkpoint(tmp_path: Path) -> None:
    source = _perturbed_tiny_net(seed=0)
    path = tmp_path / "puzzle.ckpt"  # as a Lightning checkpoint of a PuzzleModule, trained from Hydra, stores it
    state = {f"net.{k}": v for k, v in source.state_dict().items()}
    torch.save({"state_dict": state, "hyper_parameters": {"arch_kwargs": OmegaConf.create({"x": 1})}}, path)
    torch.manual_seed(0)  # the same heads as `source`, a fresh backbone, then the file's
    loaded = create_model("puzzle_cnn_tiny", pretrained_path=str(path)).eval()
    torch.manual_seed(0)
    fresh = create_model("puzzle_cnn_tiny").eval()
    piece, puzzle, index = batch()
    with torch.no_grad():
        expected, got, other = source(piece, puzzle, index), loaded(piece, puzzle, index), fresh(piece, puzzle, index)
    for key in ("box", "rotation_logits", "heatmap"):
        torch.testing.assert_close(got[key], expected[key])
    assert not torch.allclose(other["heatmap"], expected["heatmap"])


def test_pretrained_path_takes_a_timm_state_dict_and_ignores_its_classifier(tmp_path: Path) -> None:
    classifier = timm.create_model("test_resnet", pretrained=False)
    path = tmp_path / "test_resnet.pth"
    torch.save(classifier.state_dict(), path)
    net = create_model("puzzle_cnn_tiny", pretrained_path=str(path))
    weights = classifier.state_dict()
    for key, value in net.backbone.state_dict().items():
        torch.testing.assert_close(value, weights[key])


def test_pretrained_path_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nowhere.pth"):
        create_model("puzzle_cnn_tiny", pretrained_path=str(tmp_path / "nowhere.pth"))
    state = timm.create_model("test_resnet", pretrained=False).state_dict()
    del state["conv1.0.weight"]
    path = tmp_path / "partial.pth"
    torch.save(state, path)
    with pytest.raises(ValueError, match=r"partial\.pth.*conv1\.0\.weight"):
        create_model("puzzle_cnn_tiny", pretrained_path=str(path))
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=r"garbage\.pth"):
        create_model("puzzle_cnn_tiny", pretrained_path=str(garbage))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"backbone": "no_such_net"}, "backbone"),
        ({"template_fraction": 0.0}, "template_fraction"),
        ({"template_fraction": 1.5}, "template_fraction"),
        ({"out_indices": ()}, "out_indices"),
        ({"correlation": "pearson"}, "correlation"),
        ({"pixel_stride": 0}, "pixel_stride"),
        ({"pixel_match": "masked"}, "pixel_match"),
        ({"pixel_erode": -1}, "pixel_erode"),
        ({"pixel_colour": "hsv"}, "pixel_colour"),
        ({"pixel_blur": -0.5}, "pixel_blur"),
        ({"rotation_readout": "argmax"}, "rotation_readout"),
        ({"border_prior": -1.0}, "border_prior"),
        ({"grid_prior": -1.0}, "grid_prior"),
    ],
)
def test_invalid_arguments_raise_early(overrides: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        create_model("puzzle_cnn_tiny", **overrides)


def test_input_errors_name_the_shape() -> None:
    net = create_model("puzzle_cnn_tiny")
    piece, puzzle, index = batch()
    with pytest.raises(ValueError, match="puzzle_index"):
        net(piece, puzzle, index[:2])
    with pytest.raises(ValueError, match="square pieces"):
        net(piece[..., :30], puzzle, index)
    with pytest.raises(ValueError, match="content"):
        net(piece, puzzle, index, torch.zeros(3, 4))
    with pytest.raises(ValueError, match="grid"):
        net(piece, puzzle, index, None, torch.tensor([[4, 4]]))


def test_templates_are_the_odd_centre_of_the_piece_map() -> None:
    assert template_side(7, 0.6) == (4, 5)  # 4.2 -> 4 cells, pooled to the odd 5
    assert template_side(12, 0.6) == (7, 7)
    assert template_side(2, 0.6) == (1, 1)
    assert template_side(4, 1.0) == (4, 3)  # no room for 5
    piece_map = torch.arange(49.0).view(1, 1, 7, 7)
    centre = make_templates(torch.arange(81.0).view(1, 1, 9, 9), 0.34)  # crop 3 of 9: the centre 3 x 3, unpooled
    assert torch.equal(centre, torch.arange(81.0).view(9, 9)[3:6, 3:6][None, None])
    assert make_templates(piece_map, 0.6).shape == (1, 1, 5, 5)


def test_peak_window_reads_the_peak_not_the_mean_of_two_modes() -> None:
    location = torch.zeros(1, 1, 9)
    location[0, 0, 1], location[0, 0, 7] = 0.6, 0.4  # two modes on one row
    whole = (peak_window(location, None)[0, 0] * (torch.arange(9) + 0.5) / 9).sum()
    near = (peak_window(location, 2)[0, 0] * (torch.arange(9) + 0.5) / 9).sum()
    assert whole == pytest.approx((0.6 * 1.5 + 0.4 * 7.5) / 9)  # between the modes
    assert near == pytest.approx(1.5 / 9)  # on the stronger one
    with pytest.raises(ValueError, match="readout_radius"):
        create_model("puzzle_cnn_tiny", readout_radius=-1)


def test_centred_correlation_ignores_a_feature_offset_shared_by_piece_and_puzzle() -> None:
    torch.manual_seed(0)
    puzzle_map, templates, index = torch.randn(2, 8, 10, 10), torch.randn(3, 4, 8, 3, 3), torch.tensor([0, 1, 1])
    offset = 5 * torch.randn(1, 8, 1, 1)  # what plain cosine similarity would be dominated by
    plain = normalized_cross_correlation(*centre_on_puzzle(puzzle_map, templates, index), index)
    shifted = normalized_cross_correlation(
        *centre_on_puzzle(puzzle_map + offset, templates + offset[:, None], index), index
    )
    torch.testing.assert_close(shifted, plain, atol=1e-5, rtol=1e-4)
    out = create_model("puzzle_cnn_tiny", correlation="centred")(*batch())
    assert torch.isfinite(out["heatmap"]).all()


def test_puzzle_groups_slice_consecutive_pieces_and_index_the_rest():
    groups = puzzle_groups(torch.tensor([2, 2, 0, 3, 0]))  # puzzle 1 has no piece here
    assert [q for q, _ in groups] == [0, 2, 3]
    (_, scattered), (_, first), (_, last) = groups
    assert scattered.tolist() == [2, 4] and first == slice(0, 2) and last == slice(3, 4)
    assert template_rows(first, 4, 3) == [slice(0, 3), slice(3, 6), slice(6, 8)]  # 2 pieces x 4 rotations
    assert [part.tolist() for part in template_rows(scattered, 2, 3)] == [[4, 5, 8], [9]]


def test_correlations_of_shuffled_pieces_are_the_same_maps_shuffled():
    """Pieces grouped by slices (collated batches) or by indices (any order) are matched against the same puzzle."""
    torch.manual_seed(0)
    index = torch.tensor([0, 0, 0, 1, 1])
    order = torch.tensor([3, 0, 4, 2, 1])  # the puzzles' pieces interleaved
    maps, templates = torch.randn(2, 3, 9, 10), torch.randn(5, 4, 3, 3, 3)
    ncc = normalized_cross_correlation(maps, templates, index)
    assert torch.allclose(normalized_cross_correlation(maps, templates[order], index[order]), ncc[order], atol=1e-6)
    puzzle, pieces = torch.rand(2, 3, 16, 15), torch.rand(5, 4, 3, 5, 5)
    masks = (torch.rand(5, 4, 1, 5, 5) > 0.3).float()
    pixel = silhouette_correlation(puzzle, pieces, masks, index, chunk=3)
    shuffled = silhouette_correlation(puzzle, pieces[order], masks[order], index[order], chunk=3)
    assert torch.allclose(shuffled, pixel[order], atol=1e-5)


def test_uniform_pieces_recognises_collated_batches_only():
    assert uniform_pieces(puzzle_groups(torch.tensor([0, 0, 1, 1, 2, 2])), 6, 3) == 2
    assert uniform_pieces(puzzle_groups(torch.tensor([0, 0, 0, 1])), 4, 2) is None  # unequal counts
    assert uniform_pieces(puzzle_groups(torch.tensor([0, 1, 0, 1])), 4, 2) is None  # interleaved: not slices
    assert uniform_pieces(puzzle_groups(torch.tensor([0, 0, 2, 2])), 4, 3) is None  # puzzle 1 has no piece
    assert uniform_pieces(puzzle_groups(torch.tensor([1, 1, 0, 0])), 4, 2) is None  # not in puzzle order


@pytest.mark.parametrize("zero_mean", [True, False])
def test_one_grouped_convolution_over_all_puzzles_is_the_per_puzzle_correlation(zero_mean: bool) -> None:
    """A collated batch (m pieces per puzzle, in puzzle order) runs every puzzle in one grouped convolution: the
    same maps and gradients as one convolution per puzzle (forced here by handing the groups as index tensors)."""
    torch.manual_seed(0)
    index = torch.tensor([0, 0, 0, 1, 1, 1])
    maps = torch.randn(2, 3, 9, 10, requires_grad=True)
    templates = torch.randn(6, 4, 3, 3, 3, requires_grad=True)
    looped_groups = [
        (q, rows if isinstance(rows, Tensor) else torch.arange(rows.start, rows.stop))
        for q, rows in puzzle_groups(index)
    ]
    grouped = normalized_cross_correlation(maps, templates, index, zero_mean)
    looped = normalized_cross_correlation(maps, templates, index, zero_mean, groups=looped_groups)
    torch.testing.assert_close(grouped, looped, atol=1e-6, rtol=1e-5)
    weights = torch.randn_like(grouped)
    grads = [torch.autograd.grad((out * weights).sum(), (maps, templates)) for out in (grouped, looped)]
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_compiled_network_does_not_grow_with_the_puzzles_in_a_batch() -> None:
    """Under `torch.compile` the network traces into the same graphs at 2 puzzles as at 6: the correlations run
    over all puzzles at once, the pixel level's per-chunk loop is left to eager, so a GPU-sized batch compiles as
    fast as a small one."""
    net = create_model("puzzle_cnn_tiny").eval()
    ops = []
    for puzzles in (2, 6):
        piece, puzzle, _ = batch(pieces=2 * puzzles, puzzles=puzzles)
        index = torch.arange(puzzles).repeat_interleave(2)  # collated: 2 pieces per puzzle, in puzzle order
        counter = GraphCounter()
        torch._dynamo.reset()
        with torch.no_grad():
            torch.compile(net, backend=counter)(piece, puzzle, index)
        ops.append(counter.ops)
    torch._dynamo.reset()
    assert ops[0] == ops[1] > 0, ops


def test_fft_length_is_scipys_next_fast_len_for_real_transforms():
    from scipy.fft import next_fast_len

    assert [fft_length(n) for n in range(1, 3000)] == [next_fast_len(n, real=True) for n in range(1, 3000)]
