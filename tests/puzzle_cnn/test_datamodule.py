"""DataModules of the puzzle family: the batch contract, splits by source image, fixed val/test puzzles, fresh
training puzzles, the curriculum knobs, and the image-folder DataModule on tiny folders (grey images, bad files)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from abr_lab.puzzle_cnn.datamodule import (
    DEFAULT_SPLITS,
    ImageFolderDataModule,
    PuzzlePhotosDataModule,
    collate_puzzles,
)

TINY = dict(puzzle_size=96, rows=4, cols=4, pieces_per_puzzle=5, puzzles_per_epoch=4, batch_size=2)


def photos(**overrides) -> PuzzlePhotosDataModule:
    dm = PuzzlePhotosDataModule(**{**TINY, "puzzles_per_image": 1, **overrides})
    dm.setup("fit")
    return dm


@pytest.fixture(scope="module")
def dm() -> PuzzlePhotosDataModule:
    return photos()


def check_contract(batch: dict[str, torch.Tensor], puzzles: int, pieces: int, size: int = 96, piece: int = 40):
    assert set(batch) == {"puzzle", "content", "grid", "piece", "mask", "puzzle_index", "box", "rotation", "cell"}
    shapes = {
        "puzzle": (puzzles, 3, size, size),
        "content": (puzzles, 4),
        "grid": (puzzles, 2),
        "piece": (pieces, 3, piece, piece),
        "mask": (pieces, 1, piece, piece),
        "puzzle_index": (pieces,),
        "box": (pieces, 4),
        "rotation": (pieces,),
        "cell": (pieces, 2),
    }
    for key, shape in shapes.items():
        assert batch[key].shape == shape, key
        expected = torch.float32 if key in ("puzzle", "content", "piece", "mask", "box") else torch.int64
        assert batch[key].dtype == expected, key
    assert set(batch["mask"].unique().tolist()) <= {0.0, 1.0}
    assert batch["rotation"].min() >= 0 and batch["rotation"].max() <= 3
    box = batch["box"]
    assert (box >= 0).all() and (box <= 1).all() and (box[:, 2:] > box[:, :2]).all()
    assert (batch["puzzle_index"].diff() >= 0).all() and batch["puzzle_index"].max() == puzzles - 1
    content = batch["content"][batch["puzzle_index"]]  # (pieces, 4): every cell inside its puzzle's picture
    assert (box[:, :2] >= content[:, :2] - 1e-6).all() and (box[:, 2:] <= content[:, 2:] + 1e-6).all()
    # the grid divides the picture evenly: every cell has the picture's size over (cols, rows), to a pixel
    cell = (content[:, 2:] - content[:, :2]) / batch["grid"][batch["puzzle_index"]].flip(1)  # (pieces, 2)
    torch.testing.assert_close(box[:, 2:] - box[:, :2], cell, atol=1.5 / size, rtol=0)


def test_val_and_train_batches_follow_the_contract(dm):
    val = next(iter(dm.val_dataloader()))
    check_contract(val, puzzles=1, pieces=16)  # val: one photo, one puzzle, every cell
    cells = {tuple(c) for c in val["cell"].tolist()}
    assert cells == {(r, c) for r in range(4) for c in range(4)}
    train = next(iter(dm.train_dataloader()))
    check_contract(train, puzzles=2, pieces=10)
    assert (train["puzzle_index"] == torch.tensor([0] * 5 + [1] * 5)).all()
    check_contract(next(iter(dm.predict_dataloader())), puzzles=2, pieces=32)  # predict = test: chelsea, rocket


def test_collate_offsets_the_puzzle_index(dm):
    items = [dm.datasets["test"][0], dm.datasets["test"][1]]
    batch = collate_puzzles(items)
    assert torch.equal(batch["piece"][16:], items[1]["piece"]) and (batch["puzzle_index"][16:] == 1).all()


def test_collate_pads_smaller_canvases_with_their_own_background():
    # a curriculum can change the grid while a batch is assembled: canvases of two sizes in one batch
    small = photos(rows=8, cols=8).datasets["test"][0]
    large = photos().datasets["test"][0]
    batch = collate_puzzles([large, small])
    side, own = large["piece"].shape[-1], small["piece"].shape[-1]
    assert batch["piece"].shape[-1] == side > own
    padded = batch["piece"][len(large["rotation"]) :]  # the small canvases, padded
    gap = (side - own) // 2
    for piece, original in zip(padded, small["piece"], strict=True):
        assert torch.equal(piece[:, gap : gap + own, gap : gap + own], original)
        assert (piece[:, 0, 0] == original[:, 0, 0]).all()  # the pad is the background, so the outline stays
        assert batch["mask"][len(large["rotation"]) :, :, 0, 0].eq(0).all()


def test_splits_are_by_source_image(dm):
    names = dm.image_names
    assert names == {split: list(v) for split, v in DEFAULT_SPLITS.items()}
    assert not set(names["train"]) & set(names["val"]) and not set(names["train"]) & set(names["test"])
    assert not set(names["val"]) & set(names["test"])
    with pytest.raises(ValueError, match="'coffee' is in both train_images and val_images"):
        PuzzlePhotosDataModule(train_images=["astronaut", "coffee"], val_images=["coffee"], test_images=["rocket"])
    with pytest.raises(ValueError, match="unknown photo 'lena'"):
        PuzzlePhotosDataModule(test_images=["lena"])


def test_val_batches_are_fixed_by_the_seed(dm):
    first, again = next(iter(dm.val_dataloader())), next(iter(photos().val_dataloader()))
    for key in first:
        assert torch.equal(first[key], again[key]), key
    other = next(iter(photos(seed=7).val_dataloader()))
    assert not torch.equal(first["puzzle"], other["puzzle"])


def test_training_puzzles_are_new_every_draw_and_follow_the_torch_seed(dm):
    dataset = dm.datasets["train"]
    torch.manual_seed(0)
    a, b = dataset[0], dataset[0]
    assert not torch.equal(a["puzzle"], b["puzzle"])
    torch.manual_seed(0)
    assert torch.equal(dataset[0]["puzzle"], a["puzzle"])


def test_curriculum_knobs_change_the_training_grid_only():
    dm = photos(pieces_per_puzzle=100)
    knobs = dm.curriculum_knobs()
    assert set(knobs) == {"data.rows", "data.cols", "data.photometric_strength"}
    assert knobs["data.rows"].low == 2 and knobs["data.rows"].high == 24  # finest: 96 // 4
    assert knobs["data.photometric_strength"].high == 1.0
    knobs["data.rows"].set(5)
    knobs["data.cols"].set(6)
    item = dm.datasets["train"][0]
    assert len(item["cell"]) == 30 and item["cell"][:, 0].max() == 4 and item["cell"][:, 1].max() == 5
    assert len(dm.datasets["val"][0]["cell"]) == 16  # val keeps the configured 4 x 4


def test_settings_are_validated():
    with pytest.raises(ValueError, match="rows=40, cols=4: at most puzzle_size // 4 = 24"):
        photos(rows=40)
    with pytest.raises(ValueError, match="photometric_strength"):
        PuzzlePhotosDataModule(photometric_strength=3.0)
    with pytest.raises(ValueError, match="batch_size=0"):
        PuzzlePhotosDataModule(batch_size=0)


def write_images(folder, count: int, size=(40, 50)) -> None:
    rng = np.random.default_rng(0)
    for i in range(count):
        cv2.imwrite(str(folder / f"image_{i}.png"), rng.integers(0, 256, size=(*size, 3), dtype=np.uint8))


def test_image_folder_splits_by_image_and_reads_grey_as_rgb(tmp_path):
    write_images(tmp_path, 4)
    (tmp_path / "sub").mkdir()
    cv2.imwrite(str(tmp_path / "sub" / "grey.jpg"), np.full((45, 60), 128, dtype=np.uint8))
    (tmp_path / "notes.txt").write_text("not an image")
    dm = ImageFolderDataModule(root=str(tmp_path), val_fraction=0.2, test_fraction=0.2, **TINY)
    dm.setup("fit")
    names = [n for split in ("train", "val", "test") for n in dm.image_names[split]]
    assert sorted(names) == ["image_0.png", "image_1.png", "image_2.png", "image_3.png", "sub/grey.jpg"]
    assert all(dm.image_names[split] for split in ("train", "val", "test"))
    split = next(s for s in ("train", "val", "test") if "sub/grey.jpg" in dm.image_names[s])
    grey = dm.datasets[split].image(dm.image_names[split].index("sub/grey.jpg"))
    assert grey.shape == (45, 60, 3) and (grey == 128).all()
    check_contract(next(iter(dm.val_dataloader())), puzzles=2, pieces=32)  # 1 image x 4 puzzles, batches of 2


def test_image_folder_errors_name_the_folder_or_file(tmp_path):
    with pytest.raises(ValueError, match="missing: not a folder"):
        ImageFolderDataModule(root=str(tmp_path / "missing"), **TINY).setup()
    with pytest.raises(ValueError, match="0 image files"):
        ImageFolderDataModule(root=str(tmp_path), **TINY).setup()
    write_images(tmp_path, 2)
    with pytest.raises(ValueError, match="2 image files.*at least 3"):
        ImageFolderDataModule(root=str(tmp_path), **TINY).setup()
    (tmp_path / "broken.png").write_bytes(b"not a png at all")
    with pytest.raises(ValueError, match="broken.png: not a readable image"):
        ImageFolderDataModule(root=str(tmp_path), **TINY).setup()
    (tmp_path / "broken.png").unlink()
    cv2.imwrite(str(tmp_path / "small.png"), np.zeros((6, 20, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match="small.png: 20x6 px is too small for a 4x4 grid"):
        ImageFolderDataModule(root=str(tmp_path), **TINY).setup()
