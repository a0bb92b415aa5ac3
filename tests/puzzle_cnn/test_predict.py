"""predict.py for the puzzle family: pieces and their puzzle image go through training's geometry (letterbox, piece
canvas at puzzle scale); the JSON holds what the module computes on those tensors, with the box mapped back to the
puzzle image's pixels; wrong inputs are named."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from abr_lab.checkpoint import checkpoint_config, load_module
from abr_lab.config import compose_config
from abr_lab.predict import predict
from abr_lab.puzzle_cnn.generator import MAX_STRENGTH, letterbox, load_photo, piece_canvas
from abr_lab.puzzle_cnn.images import to_tensor
from abr_lab.puzzle_cnn.predict import Letterbox, locate, prepare_piece
from abr_lab.train import train
from tests.conftest import TINY_PUZZLE

SIZE, CANVAS = 64, piece_canvas(64, 2, 2, True, MAX_STRENGTH)  # TINY_PUZZLE: 64-px puzzles cut 2 x 2


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("puzzle_predict")
    cfg = compose_config([*TINY_PUZZLE, "logger=none"], output_dir=root / "run", root_dir=root)
    return Path(train(cfg)["best_checkpoint"])


@pytest.fixture
def puzzle(tmp_path: Path) -> tuple[Path, np.ndarray, Path]:
    """A 128 x 96 puzzle image (letterboxed to 64 px: scale 0.5, 8 px of padding above and below) and a folder of
    two 40 x 40 pieces cut from it, the second turned 90 degrees counter-clockwise."""
    image = cv2.resize(load_photo("chelsea"), (128, 96), interpolation=cv2.INTER_AREA)
    path = tmp_path / "puzzle.png"
    cv2.imwrite(str(path), image[:, :, ::-1])
    pieces = tmp_path / "pieces"
    pieces.mkdir()
    cv2.imwrite(str(pieces / "p0.png"), np.ascontiguousarray(image[8:48, 16:56, ::-1]))
    cv2.imwrite(str(pieces / "p1.png"), np.ascontiguousarray(np.rot90(image[50:90, 70:110], 1)[:, :, ::-1]))
    return path, image, pieces


def test_the_json_holds_the_modules_boxes_and_rotations(checkpoint: Path, puzzle, tmp_path: Path) -> None:
    path, image, pieces = puzzle
    out = predict(checkpoint, pieces, puzzle=path)
    assert out == tmp_path / "pieces.predictions.json"
    report = json.loads(out.read_text())
    assert report["letterbox"] == {"width": 128, "height": 96, "size": SIZE, "scale": 0.5, "pad_x": 0, "pad_y": 8}
    assert report["piece_canvas_px"] == CANVAS
    assert [p["piece"] for p in report["pieces"]] == ["p0.png", "p1.png"]

    module = load_module(checkpoint, checkpoint_config(checkpoint))
    puzzle_tensor = to_tensor(letterbox(image, SIZE)[0])[None]  # (1, 3, S, S)
    crops = [image[8:48, 16:56], np.rot90(image[50:90, 70:110], 1)]
    piece_tensor = torch.stack([to_tensor(prepare_piece(c, 0.5, CANVAS)) for c in crops])  # (2, 3, s, s)
    with torch.inference_mode():
        expected = module.predict_step(
            {
                "piece": piece_tensor,
                "puzzle": puzzle_tensor,
                "puzzle_index": torch.zeros(2, dtype=torch.long),
                "content": torch.tensor([[0.0, 8 / SIZE, 1.0, 1 - 8 / SIZE]]),  # the image between the bands
            },
            0,
        )
    for i, piece in enumerate(report["pieces"]):
        np.testing.assert_allclose(piece["box_canvas"], expected["box"][i].numpy(), rtol=1e-6, atol=1e-7)
        assert piece["rotation_deg"] == 90 * int(expected["rotation"][i])
        probabilities = piece["rotation_probabilities"]
        assert list(probabilities) == ["0", "90", "180", "270"]
        assert sum(probabilities.values()) == pytest.approx(1.0)
        assert max(probabilities.values()) == pytest.approx(float(expected["rotation_probability"][i]), rel=1e-6)
        x1, y1, x2, y2 = np.asarray(piece["box_canvas"]) * SIZE  # canvas px -> image px: undo padding and scale
        px = np.clip([x1 / 0.5, (y1 - 8) / 0.5, x2 / 0.5, (y2 - 8) / 0.5], 0, [128, 96, 128, 96])
        np.testing.assert_allclose(piece["box_px"], px, atol=1e-3)
        np.testing.assert_allclose(piece["box"], px / [128, 96, 128, 96], atol=1e-5)


def test_a_model_told_the_grid_answers_cells_of_the_puzzles_grid(checkpoint: Path, puzzle) -> None:
    """The checkpoint's 2 x 2 grid over the letterboxed picture (y in [8, 56] of 64 px): cells 0.5 x 0.375."""
    path, _, pieces = puzzle
    report = json.loads(predict(checkpoint, pieces, puzzle=path, overrides=["model.grid=told"]).read_text())
    assert report["grid"] == {"source": "told", "rows_cols": [2, 2]}
    for piece in report["pieces"]:
        x1, y1, x2, y2 = piece["box_canvas"]
        assert x1 == pytest.approx(0.0, abs=1e-6) or x1 == pytest.approx(0.5, abs=1e-6)
        assert y1 == pytest.approx(8 / 64, abs=1e-6) or y1 == pytest.approx(8 / 64 + 0.375, abs=1e-6)
        assert (x2 - x1, y2 - y1) == pytest.approx((0.5, 0.375), abs=1e-6)


def test_a_model_reading_the_grid_off_the_pieces_reports_it_and_answers_its_cells(checkpoint: Path, puzzle) -> None:
    """Two 20 x 20-px pieces (at puzzle scale) of the 64 x 48-px picture: whatever grid is read, the JSON names it,
    every box is one of its cells, and the pieces are read together however small the batch."""
    path, _, pieces = puzzle
    report = json.loads(
        predict(checkpoint, pieces, puzzle=path, overrides=["model.grid=pieces"], batch_size=1).read_text()
    )
    rows, cols = report["grid"]["rows_cols"]
    assert report["grid"]["source"] == "pieces" and rows >= 1 and cols >= 1
    cell_w, cell_h = 1.0 / cols, (48 / 64) / rows
    for piece in report["pieces"]:
        x1, y1, x2, y2 = piece["box_canvas"]
        assert (x2 - x1, y2 - y1) == pytest.approx((cell_w, cell_h), abs=1e-6)
        assert (x1 / cell_w) == pytest.approx(round(x1 / cell_w), abs=1e-5)
        assert ((y1 - 8 / 64) / cell_h) == pytest.approx(round((y1 - 8 / 64) / cell_h), abs=1e-5)


def test_a_piece_is_scaled_and_centred_on_the_training_canvas() -> None:
    rng = np.random.default_rng(0)
    piece = rng.integers(0, 256, size=(30, 40, 3), dtype=np.uint8)
    piece[0], piece[-1], piece[:, 0], piece[:, -1] = 200, 200, 200, 200  # a plain border
    canvas = prepare_piece(piece, 0.5, 24)
    assert canvas.shape == (24, 24, 3) and canvas.dtype == np.uint8
    inner = cv2.resize(piece, (20, 15), interpolation=cv2.INTER_AREA)
    np.testing.assert_array_equal(canvas[4:19, 2:22], inner)  # (24 - 15) // 2 = 4 rows, (24 - 20) // 2 = 2 cols
    assert (canvas[:4] == 200).all() and (canvas[19:] == 200).all() and (canvas[:, :2] == 200).all()


def test_boxes_map_back_through_the_letterbox() -> None:
    placement = Letterbox(width=128, height=96, size=64, scale=0.5, pad_x=0, pad_y=8)
    content = np.array([[0.0, 8 / 64, 1.0, 56 / 64], [0.25, 0.0, 0.5, 1.0]])  # the content; one box over the padding
    np.testing.assert_allclose(placement.to_image(content), [[0, 0, 128, 96], [32, 0, 64, 96]])


def test_the_content_box_is_where_the_letterbox_put_the_image() -> None:
    image = np.full((96, 128, 3), 255, dtype=np.uint8)
    canvas, scale, pad_x, pad_y = letterbox(image, 64)
    placement = Letterbox(width=128, height=96, size=64, scale=scale, pad_x=pad_x, pad_y=pad_y)
    x1, y1, x2, y2 = (placement.content_box() * 64).round().astype(int)
    assert (canvas[y1:y2, x1:x2] == 255).all() and canvas.sum() == 255 * 3 * (y2 - y1) * (x2 - x1)


class Recorder(torch.nn.Module):
    """Stands in for the module: records the picture's box, the grid and the batch sizes it is handed and whether
    to read the grid, answers box 0 and turn 0 (and grid 5 x 6 when told to read one)."""

    def __init__(self) -> None:
        super().__init__()
        self.contents: list[torch.Tensor] = []
        self.grids: list[torch.Tensor | None] = []
        self.reads: list[bool] = []
        self.batches: list[int] = []

    def forward(
        self,
        piece: torch.Tensor,
        puzzle: torch.Tensor,
        puzzle_index: torch.Tensor,
        content: torch.Tensor,
        grid: torch.Tensor | None,
        read_grids: bool,
    ) -> dict[str, torch.Tensor]:
        self.contents.append(content)
        self.grids.append(grid)
        self.reads.append(read_grids)
        self.batches.append(len(piece))
        out = {"box": torch.zeros(len(piece), 4), "rotation_logits": torch.zeros(len(piece), 4)}
        return out | ({"grid": torch.tensor([[5, 6]])} if read_grids else {})


def test_locate_hands_the_module_where_the_picture_sits() -> None:
    """The border rule needs the picture's edges: every forward pass gets the letterbox's content box."""
    recorder, content = Recorder(), torch.tensor([0.0, 0.125, 1.0, 0.875])
    boxes, probabilities, grid = locate(
        recorder, torch.rand(3, 3, 8, 8), torch.rand(3, 16, 16), content, 2, torch.device("cpu")
    )
    assert boxes.shape == (3, 4) and probabilities.shape == (3, 4) and grid is None
    assert len(recorder.contents) == 2 and all(torch.equal(c, content[None]) for c in recorder.contents)
    assert recorder.grids == [None, None], "no grid unless the module is told it"
    *_, grid = locate(recorder, torch.rand(1, 3, 8, 8), torch.rand(3, 16, 16), content, 2, torch.device("cpu"),
                      torch.tensor([4, 3]))  # fmt: skip
    assert torch.equal(recorder.grids[-1], torch.tensor([[4, 3]])) and grid is None
    *_, grid = locate(recorder, torch.rand(3, 3, 8, 8), torch.rand(3, 16, 16), content, 2, torch.device("cpu"),
                      read_grid=True)  # fmt: skip
    assert recorder.reads[-1] and recorder.batches[-1] == 3, "read off every piece in one batch"
    assert grid == [5, 6]


def test_wrong_inputs_are_named(checkpoint: Path, puzzle, tmp_path: Path) -> None:
    path, image, pieces = puzzle
    with pytest.raises(ValueError, match="needs the puzzle image: puzzle=<image>"):
        predict(checkpoint, pieces)
    with pytest.raises(ValueError, match="puzzle='.*nothing.png': no such image file"):
        predict(checkpoint, pieces, puzzle=tmp_path / "nothing.png")
    big = tmp_path / "big.png"
    cv2.imwrite(str(big), np.ascontiguousarray(image[:, :, ::-1]))  # the whole puzzle is no piece of a 2 x 2 grid
    with pytest.raises(ValueError, match=r"big.png: the piece is 128x96 px, 64x48 px at the model's scale, larger"):
        predict(checkpoint, big, tmp_path / "out.json", puzzle=path)
    notes = tmp_path / "notes.txt"
    notes.write_text("a piece")
    with pytest.raises(ValueError, match=r"notes.txt: a .txt file; expected an image"):
        predict(checkpoint, notes, tmp_path / "out.json", puzzle=path)
    (tmp_path / "broken.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(ValueError, match="broken.png: not a readable image"):
        predict(checkpoint, tmp_path / "broken.png", tmp_path / "out.json", puzzle=path)
    (tmp_path / "nothing_here").mkdir()
    with pytest.raises(ValueError, match="nothing_here: no piece images"):
        predict(checkpoint, tmp_path / "nothing_here", tmp_path / "out.json", puzzle=path)
    with pytest.raises(ValueError, match="is the puzzle image itself"):
        predict(checkpoint, pieces, path, puzzle=path)
    assert not (tmp_path / "out.json").exists()
