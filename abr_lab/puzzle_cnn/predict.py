"""Placing pieces with a trained PuzzleNet: piece images and their puzzle's image -> a box and a rotation per piece.

``python predict.py ckpt_path=... input=<piece image or folder of pieces> puzzle=<puzzle image>``

Both images go through the geometry of training (`generator`): the puzzle is letterboxed to ``data.puzzle_size``
(`generator.letterbox`: longest side to S, centred, black padding); a piece, cut from the puzzle image at that
image's resolution, is scaled by the same factor (pieces are drawn at puzzle scale) and centred on the square canvas
training drew pieces on (`generator.piece_canvas` of the configured grid), the rest of the canvas filled with the
piece image's median border colour (training pieces sit on a plain background). A piece larger than that canvas
comes from a coarser grid than the model knows, and is refused. A model with ``model.grid=told`` is told the
puzzle's grid: ``data.rows`` x ``data.cols`` (the checkpoint's unless overridden, e.g. ``data.rows=20 data.cols=15``);
with ``model.grid=pieces`` it reads the grid off the pieces given, all in one batch (the more pieces of the puzzle,
the surer), and the JSON's ``grid`` says what it read.

The JSON holds the puzzle's size and letterbox, its grid (``source`` and the ``rows_cols`` used), and per piece:

- ``box``: (x1, y1, x2, y2) of the piece's cell, normalised to the puzzle image (x / width, y / height);
- ``box_px``: the same in the puzzle image's pixels;
- ``box_canvas``: the network's own output, normalised to the letterboxed S x S canvas;
- ``rotation_deg``: 0, 90, 180 or 270: the piece as given is the upright piece turned this many degrees
  counter-clockwise (``np.rot90(upright, k)``, k = rotation_deg / 90); turn it as far clockwise to place it;
- ``rotation_probabilities``: the probability of each of the four rotations.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import Tensor

from abr_lab.atomic import atomic_write_text
from abr_lab.predict import Option, Trained, batches
from abr_lab.puzzle_cnn.generator import MAX_STRENGTH, content_size, letterbox, piece_canvas
from abr_lab.puzzle_cnn.images import IMAGE_SUFFIXES, read_image, to_tensor
from abr_lab.puzzle_cnn.network import ROTATIONS

SUFFIX = ".json"
BATCH_SIZE = 32  # pieces per forward pass (the puzzle is encoded again with each batch)
OPTIONS: dict[str, Option] = {
    "puzzle": Option(Path, "the puzzle image the pieces were cut from (required)"),
}
ROTATION_CONVENTION = "rotation_deg: the piece as given is the upright piece turned this many degrees counter-clockwise"


@dataclass(frozen=True)
class Letterbox:
    """How a puzzle image of `width` x `height` px sits on the S x S canvas: scaled by `scale`, shifted by the
    padding (`pad_x`, `pad_y`)."""

    width: int
    height: int
    size: int
    scale: float
    pad_x: int
    pad_y: int

    def content_box(self) -> np.ndarray:
        """(4,) float32: where the image sits on the canvas (x1, y1, x2, y2), normalised (what the network's border
        rule calls the picture's edges)."""
        _, new_h, new_w = content_size(self.height, self.width, self.size)
        corners = [self.pad_x, self.pad_y, self.pad_x + new_w, self.pad_y + new_h]
        return (np.array(corners, dtype=np.float64) / self.size).astype(np.float32)

    def to_image(self, box_canvas: np.ndarray) -> np.ndarray:
        """(n, 4) boxes normalised to the canvas -> (n, 4) in the image's pixels, clipped to the image."""
        px = np.asarray(box_canvas, dtype=np.float64) * self.size  # (n, 4) canvas px
        x = np.clip((px[:, 0::2] - self.pad_x) / self.scale, 0.0, self.width)  # (n, 2): x1, x2
        y = np.clip((px[:, 1::2] - self.pad_y) / self.scale, 0.0, self.height)  # (n, 2): y1, y2
        return np.stack([x[:, 0], y[:, 0], x[:, 1], y[:, 1]], axis=1)


# ------------------------------------------------------------------------------------------------------ reading


def image_files(path: Path, exclude: Path | None = None) -> list[Path]:
    """One image file, or every image file under a folder (recursive, sorted), less `exclude` (the puzzle)."""
    if path.is_file():
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            raise ValueError(
                f"{path}: a {path.suffix or 'suffix-less'} file; expected an image ({', '.join(IMAGE_SUFFIXES)})"
            )
        return [path]
    skip = exclude.resolve() if exclude is not None else None
    files = sorted(
        p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and p.resolve() != skip
    )
    if not files:
        raise ValueError(f"{path}: no piece images ({', '.join(IMAGE_SUFFIXES)}) in the folder")
    return files


def prepare_puzzle(path: Path, size: int) -> tuple[Tensor, Letterbox]:
    """The puzzle image letterboxed as in training: (3, S, S) normalised, and where the image sits on the canvas."""
    if not path.is_file():
        raise ValueError(f"puzzle={str(path)!r}: no such image file")
    image = read_image(path)  # (h, w, 3) uint8
    canvas, scale, pad_x, pad_y = letterbox(image, size)
    return to_tensor(canvas), Letterbox(image.shape[1], image.shape[0], size, scale, pad_x, pad_y)


def prepare_piece(image: np.ndarray, scale: float, canvas: int, name: str = "piece") -> np.ndarray:
    """A piece image at the puzzle image's resolution -> (canvas, canvas, 3) uint8 at the model's scale, centred,
    on its median border colour.

    Raises:
        ValueError: the scaled piece does not fit the canvas.
    """
    height, width = image.shape[:2]
    new_h, new_w = max(1, round(height * scale)), max(1, round(width * scale))
    if max(new_h, new_w) > canvas:
        raise ValueError(
            f"{name}: the piece is {width}x{height} px, {new_w}x{new_h} px at the model's scale, larger than the "
            f"{canvas}-px canvas the model's pieces were drawn on: it comes from a coarser grid than the model was "
            "trained on (data.rows, data.cols), or is not at the puzzle image's resolution"
        )
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    resized = cv2.resize(np.ascontiguousarray(image), (new_w, new_h), interpolation=interpolation)
    border = np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]])  # (2 w + 2 h, 3)
    out = np.empty((canvas, canvas, 3), dtype=np.uint8)
    out[:] = np.median(border, axis=0).round().astype(np.uint8)
    top, left = (canvas - new_h) // 2, (canvas - new_w) // 2
    out[top : top + new_h, left : left + new_w] = resized.reshape(new_h, new_w, 3)
    return out


# ---------------------------------------------------------------------------------------------------- inference


def locate(
    module: torch.nn.Module,
    pieces: Tensor,
    puzzle: Tensor,
    content: Tensor,
    batch_size: int,
    device: torch.device,
    grid: Tensor | None = None,
    read_grid: bool = False,
) -> tuple[np.ndarray, np.ndarray, list[int] | None]:
    """(n, 3, s, s) pieces of one (3, S, S) puzzle whose picture sits at (4,) `content` on its canvas, and its (2,)
    grid (rows, cols) when the module is told it, or `read_grid` to read it off the pieces (all in one batch: it
    is read from them together) -> boxes (n, 4) normalised to the canvas, rotation probabilities (n, 4) and the
    grid used (rows, cols; None without one), from the module's forward (what its `predict_step` reads)."""
    puzzle = puzzle[None].to(device)  # (1, 3, S, S)
    content = content[None].to(device)  # (1, 4)
    grid = None if grid is None else grid[None].to(device)  # (1, 2)
    boxes, probabilities, used = [], [], None
    with torch.inference_mode():
        for rows in batches(len(pieces), len(pieces) if read_grid else batch_size):
            piece = pieces[rows].to(device)  # (b, 3, s, s)
            index = torch.zeros(len(piece), dtype=torch.long, device=device)  # (b,)
            out = module(piece, puzzle, index, content, grid, read_grid)
            boxes.append(out["box"].float().cpu())  # (b, 4)
            probabilities.append(out["rotation_logits"].float().softmax(dim=1).cpu())  # (b, 4)
            used = out["grid"][0].tolist() if "grid" in out else None
    return torch.cat(boxes).numpy(), torch.cat(probabilities).numpy(), used


def run(
    trained: Trained,
    input: Path,
    out: Path,
    *,
    batch_size: int,
    device: torch.device,
    puzzle: Path | None = None,
) -> Path:
    """`abr_lab.predict`'s entry: prepare the puzzle and its pieces as in training, locate them, write the JSON."""
    if puzzle is None:
        raise ValueError("the puzzle family needs the puzzle image: puzzle=<image> (input= is the piece or pieces)")
    if Path(out).resolve() == Path(puzzle).resolve():
        raise ValueError(f"out={str(out)!r} is the puzzle image itself: choose another output file")
    data = trained.cfg.data
    size = int(data.puzzle_size)
    canvas = piece_canvas(size, int(data.rows), int(data.cols), bool(data.jigsaw), MAX_STRENGTH)
    puzzle_tensor, placement = prepare_puzzle(Path(puzzle), size)
    files = image_files(input, exclude=Path(puzzle))
    pieces = torch.stack([to_tensor(prepare_piece(read_image(f), placement.scale, canvas, str(f))) for f in files])
    content = torch.from_numpy(placement.content_box())  # (4,)
    source = trained.module.grid
    grid = torch.tensor([int(data.rows), int(data.cols)]) if source == "told" else None
    boxes, probabilities, used = locate(
        trained.module, pieces, puzzle_tensor, content, batch_size, device, grid, source == "pieces"
    )
    boxes_px = placement.to_image(boxes)
    normalised = boxes_px / np.array([placement.width, placement.height] * 2, dtype=np.float64)
    root = input if input.is_dir() else input.parent
    report = {
        "checkpoint": str(trained.ckpt_path),
        "puzzle": str(puzzle),
        "letterbox": asdict(placement),
        "piece_canvas_px": canvas,
        "rotation_convention": ROTATION_CONVENTION,
        "grid": {"source": source, "rows_cols": used},
        "pieces": [
            {
                "piece": f.relative_to(root).as_posix(),
                "box": [round(float(v), 6) for v in normalised[i]],
                "box_px": [round(float(v), 3) for v in boxes_px[i]],
                "box_canvas": [float(v) for v in boxes[i]],
                "rotation_deg": 90 * int(probabilities[i].argmax()),
                "rotation_probabilities": {str(90 * k): float(probabilities[i, k]) for k in range(ROTATIONS)},
            }
            for i, f in enumerate(files)
        ],
    }
    atomic_write_text(out, json.dumps(report, indent=2) + "\n")
    return Path(out)
