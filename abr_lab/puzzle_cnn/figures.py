"""TensorBoard figures of the puzzle family: what the correlation looks at, and how rotations are confused.

`correlation_figure` shows, for a few pieces, one row each: the piece as the model sees it; the puzzle with the true
box (green) and the predicted box (red, dashed); the heatmap's location marginal (its softmax summed over the four
rotation hypotheses); and each pyramid level's correlation map at the true rotation. A model that localises shows
one bright spot under the green box; a collapsed one shows the same blur for every piece.

Figures are plain `matplotlib.figure.Figure` objects (no pyplot state), for `SummaryWriter.add_figure`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from torch import Tensor

from abr_lab.puzzle_cnn.images import to_uint8

ROTATION_NAMES = ("0°", "90°", "180°", "270°")


def _draw_box(ax: Any, box: np.ndarray, size: int, colour: str, style: str, gid: str) -> None:
    x1, y1, x2, y2 = (box * size).tolist()
    ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, ec=colour, ls=style, lw=1.5, gid=gid))


def correlation_figure(out: dict[str, Any], batch: dict[str, Tensor], pieces: int = 4) -> Figure:
    """One row per piece (the first `pieces` of the batch): piece, puzzle with boxes, heatmap, level maps."""
    n = min(pieces, len(batch["piece"]))
    levels = out["correlations"]
    cols = 3 + len(levels)
    fig = Figure(figsize=(2.2 * cols, 2.2 * n))
    heat = out["heatmap"][:n].detach().float()  # (n, 4, h, w)
    location = heat.flatten(1).softmax(dim=1).view_as(heat).sum(dim=1)  # (n, h, w)
    for i in range(n):
        puzzle = to_uint8(batch["puzzle"][int(batch["puzzle_index"][i])])
        rotation = int(batch["rotation"][i])
        axes = [fig.add_subplot(n, cols, i * cols + c + 1) for c in range(cols)]
        axes[0].imshow(to_uint8(batch["piece"][i]))
        axes[0].set_title(f"piece (rot {ROTATION_NAMES[rotation]})", fontsize=8)
        axes[1].imshow(puzzle)
        _draw_box(axes[1], batch["box"][i].detach().cpu().numpy(), puzzle.shape[1], "lime", "-", "true_box")
        _draw_box(axes[1], out["box"][i].detach().float().cpu().numpy(), puzzle.shape[1], "red", "--", "pred_box")
        axes[1].set_title("puzzle: true / predicted", fontsize=8)
        axes[2].imshow(location[i].cpu().numpy(), cmap="magma")
        axes[2].set_title("heatmap (location)", fontsize=8)
        for level, corr in enumerate(levels):
            ax = axes[3 + level]
            ax.imshow(corr[i, rotation].detach().float().cpu().numpy(), cmap="viridis", vmin=-1, vmax=1)
            ax.set_title(f"level {level} correlation", fontsize=8)
        for ax in axes:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.tight_layout()
    return fig


def rotation_confusion_figure(confusion: Tensor) -> Figure:
    """A (4, 4) confusion matrix (rows true rotation, columns predicted) as an annotated image."""
    counts = confusion.detach().cpu().numpy().astype(np.int64)
    fig = Figure(figsize=(3.6, 3.2))
    ax = fig.add_subplot(1, 1, 1)
    ax.imshow(counts, cmap="Blues")
    for (row, col), value in np.ndenumerate(counts):
        ax.text(col, row, str(value), ha="center", va="center", fontsize=8)
    ax.set_xticks(range(4), ROTATION_NAMES)
    ax.set_yticks(range(4), ROTATION_NAMES)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    fig.tight_layout()
    return fig
