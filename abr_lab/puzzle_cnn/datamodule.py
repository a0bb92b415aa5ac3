"""DataModules of the puzzle family: jigsaw puzzles cut from photographs (`abr_lab.puzzle_cnn.generator`).

Splits are by source image, so no validation or test photograph is ever seen in training. A training item is a new
random crop-puzzle of a random training image with `pieces_per_puzzle` random distinct cells, drawn from a seed taken
from the torch generator (reproducible under `seed_everything`, in DataLoader workers too, new every epoch); its grid
and photometric strength are read live from shared memory, so a curriculum can change them. Validation and test
items are fixed: `puzzles_per_image` crops per image, each seeded by (seed, split, index), with all their cells, at
the configured grid and strength.

An item is ``{"puzzle": (3, S, S), "content": (4,), "grid": (2,), "piece": (n, 3, s, s), "mask": (n, 1, s, s),
"box": (n, 4), "rotation": (n,), "cell": (n, 2)}`` (``content``: where the picture sits on the letterboxed canvas,
normalised x1, y1, x2, y2; ``grid``: the puzzle's rows, cols); `collate_puzzles` stacks the puzzles, concatenates
the pieces of a batch and adds ``"puzzle_index": (N,)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from abr_lab.curriculum import Knob
from abr_lab.data.samplers import evaluation_sampler
from abr_lab.data.shared import SharedValues
from abr_lab.data.workers import check_workers, loader_workers
from abr_lab.puzzle_cnn.generator import (
    MAX_STRENGTH,
    PHOTOS,
    check_image_size,
    load_photo,
    make_puzzle,
    piece_canvas,
    render_piece,
)
from abr_lab.puzzle_cnn.images import IMAGE_SUFFIXES, read_image, to_tensor

SPLITS = ("train", "val", "test")
SPLIT_INDEX = {split: i for i, split in enumerate(SPLITS)}
DEFAULT_SPLITS = {
    "train": (
        "astronaut",
        "hubble_deep_field",
        "retina",
        "immunohistochemistry",
        "motorcycle",
        "camera",
        "coins",
        "moon",
        "grass",
        "gravel",
        "brick",
    ),
    "val": ("coffee",),
    "test": ("chelsea", "rocket"),
}
MIN_CELL_PX = 4  # finest grid a curriculum may reach: rows, cols <= puzzle_size // MIN_CELL_PX


@dataclass(frozen=True)
class PuzzleSettings:
    """How puzzles and pieces are made (the arguments of the DataModules, see `PuzzlePhotosDataModule`)."""

    puzzle_size: int = 512
    rows: int = 16
    cols: int = 16
    jigsaw: bool = True
    photometric_strength: float = 1.0
    crop_min_area: float = 0.35
    pieces_per_puzzle: int = 16
    puzzles_per_epoch: int = 256
    puzzles_per_image: int = 2
    seed: int = 42

    def __post_init__(self) -> None:
        counts = (
            "puzzle_size",
            "rows",
            "cols",
            "pieces_per_puzzle",
            "puzzles_per_epoch",
            "puzzles_per_image",
        )
        for name in counts:
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)}: need >= 1")
        finest = self.puzzle_size // MIN_CELL_PX
        if max(self.rows, self.cols) > finest:
            raise ValueError(
                f"rows={self.rows}, cols={self.cols}: at most puzzle_size // {MIN_CELL_PX} = {finest} "
                f"for puzzle_size={self.puzzle_size}"
            )
        if not 0 <= self.photometric_strength <= MAX_STRENGTH:
            raise ValueError(f"photometric_strength={self.photometric_strength}: need 0 <= it <= {MAX_STRENGTH}")
        if not 0 < self.crop_min_area <= 1:
            raise ValueError(f"crop_min_area={self.crop_min_area}: need 0 < crop_min_area <= 1")


class PuzzleDataset(Dataset):
    """Puzzles of a list of source images (arrays, or paths read when used); see the module docstring."""

    def __init__(
        self, images: Sequence[np.ndarray | Path], names: Sequence[str], split: str, settings: PuzzleSettings
    ) -> None:
        if split not in SPLITS:
            raise ValueError(f"split={split!r}: expected one of {SPLITS}")
        if len(images) != len(names) or not images:
            raise ValueError(f"{split}: need one name per image and at least one image, got {len(images)}")
        self.images, self.names, self.split, self.train = list(images), list(names), split, split == "train"
        self.cfg = settings
        self.live = SharedValues(
            rows=settings.rows, cols=settings.cols, photometric_strength=settings.photometric_strength
        )

    def __len__(self) -> int:
        return self.cfg.puzzles_per_epoch if self.train else len(self.images) * self.cfg.puzzles_per_image

    def image(self, index: int) -> np.ndarray:
        source = self.images[index]
        return read_image(source) if isinstance(source, Path) else source

    def live_settings(self) -> tuple[int, int, float]:
        """(rows, cols, photometric strength) of the next item."""
        if not self.train:
            return self.cfg.rows, self.cfg.cols, self.cfg.photometric_strength
        return int(round(self.live["rows"])), int(round(self.live["cols"])), self.live["photometric_strength"]

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        if not 0 <= index < len(self):
            raise IndexError(f"{self.split}: index {index} out of range ({len(self)} items)")
        rows, cols, strength = self.live_settings()
        if self.train:  # seeded through torch, which Lightning seeds per DataLoader worker
            rng = np.random.default_rng(int(torch.randint(0, 2**31 - 1, ())))
            image_index = int(rng.integers(len(self.images)))
        else:
            rng = np.random.default_rng([self.cfg.seed, SPLIT_INDEX[self.split], index])
            image_index = index // self.cfg.puzzles_per_image
        puzzle = make_puzzle(
            self.image(image_index),
            self.cfg.puzzle_size,
            rows,
            cols,
            self.cfg.jigsaw,
            self.cfg.crop_min_area,
            rng,
            self.names[image_index],
        )
        if self.train:
            cells = rng.choice(rows * cols, size=min(self.cfg.pieces_per_puzzle, rows * cols), replace=False)
        else:
            cells = np.arange(rows * cols)
        size = piece_canvas(self.cfg.puzzle_size, rows, cols, self.cfg.jigsaw, MAX_STRENGTH)
        pieces = [render_piece(puzzle, int(c) // cols, int(c) % cols, size, strength, rng) for c in cells]
        return {
            "puzzle": to_tensor(puzzle.canvas),  # (3, S, S)
            "content": torch.from_numpy(puzzle.grid.content_box()),  # (4,)
            "grid": torch.tensor([puzzle.grid.rows, puzzle.grid.cols], dtype=torch.int64),  # (2,)
            "piece": torch.stack([to_tensor(p.image) for p in pieces]),  # (n, 3, s, s)
            "mask": torch.from_numpy(np.stack([p.mask for p in pieces])[:, None].astype(np.float32)),  # (n, 1, s, s)
            "box": torch.from_numpy(np.stack([p.box for p in pieces])),  # (n, 4)
            "rotation": torch.tensor([p.rotation for p in pieces], dtype=torch.int64),  # (n,)
            "cell": torch.tensor([p.cell for p in pieces], dtype=torch.int64),  # (n, 2)
        }


def _same_canvas(items: Sequence[dict[str, Tensor]]) -> list[dict[str, Tensor]]:
    """Pad every item's pieces (centred, with their own background colour: the edge replicated, so `silhouette`
    still reads the outline) to the batch's largest canvas. Canvases differ only when a curriculum changed the grid
    while a worker was assembling the batch."""
    side = max(item["piece"].shape[-1] for item in items)
    padded = []
    for item in items:
        gap = side - item["piece"].shape[-1]
        if gap:
            pad = (gap // 2, gap - gap // 2, gap // 2, gap - gap // 2)
            item = {**item, "piece": F.pad(item["piece"], pad, mode="replicate"), "mask": F.pad(item["mask"], pad)}
        padded.append(item)
    return padded


def collate_puzzles(items: Sequence[dict[str, Tensor]]) -> dict[str, Tensor]:
    """Items -> the batch contract: puzzles stacked (P, ...), pieces concatenated (N, ...) with ``puzzle_index``."""
    counts = [len(item["rotation"]) for item in items]
    items = _same_canvas(items)
    batch = {key: torch.stack([item[key] for item in items]) for key in ("puzzle", "content", "grid")}
    for key in ("piece", "mask", "box", "rotation", "cell"):
        batch[key] = torch.cat([item[key] for item in items])
    batch["puzzle_index"] = torch.repeat_interleave(torch.arange(len(items)), torch.tensor(counts))
    return batch


class PuzzleDataModule(L.LightningDataModule):
    """What the family's DataModules share: settings, datasets, loaders and the curriculum knobs.

    Subclasses fill `image_names` (split -> names) and `self.sources` (split -> arrays or paths) in `setup` (or
    earlier) and call `_make_datasets`. `min_sides[split]` is the shorter side of the split's smallest image.
    """

    def __init__(self, settings: PuzzleSettings, batch_size: int, num_workers: int | str) -> None:
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size}: need >= 1")
        self.settings, self.batch_size, self.num_workers = settings, batch_size, check_workers(num_workers)
        self.image_names: dict[str, list[str]] = {}
        self.sources: dict[str, list[np.ndarray | Path]] = {}
        self.min_sides: dict[str, int] = {}
        self.datasets: dict[str, PuzzleDataset] = {}

    def _check_sources(self) -> None:
        for split in SPLITS:
            for name, source in zip(self.image_names[split], self.sources[split], strict=True):
                shape = source.shape if isinstance(source, np.ndarray) else read_image(source).shape
                check_image_size(
                    shape, self.settings.rows, self.settings.cols, str(source) if isinstance(source, Path) else name
                )
                self.min_sides[split] = min(self.min_sides.get(split, shape[0]), *shape[:2])

    def _make_datasets(self) -> None:
        for split in SPLITS:
            if split not in self.datasets:
                self.datasets[split] = PuzzleDataset(self.sources[split], self.image_names[split], split, self.settings)

    def curriculum_knobs(self) -> dict[str, Knob]:
        """``data.rows``, ``data.cols``: the training grid, from 2 up to the finest the puzzle size and the training
        images allow (a curriculum typically starts coarse and ends at the configured grid);
        ``data.photometric_strength``: from 0 up to the configured strength. Validation and test keep the config."""
        if "train" not in self.datasets:
            raise RuntimeError(f"{type(self).__name__}.curriculum_knobs: call setup('fit') first")
        live = self.datasets["train"].live
        cfg = self.settings
        finest = min(cfg.puzzle_size // MIN_CELL_PX, self.min_sides["train"] // 2)
        return {
            "data.rows": live.knob("rows", low=2, high=max(cfg.rows, finest)),
            "data.cols": live.knob("cols", low=2, high=max(cfg.cols, finest)),
            "data.photometric_strength": live.knob("photometric_strength", low=0.0, high=cfg.photometric_strength),
        }

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        if split not in self.datasets:
            raise RuntimeError(f"{type(self).__name__}: split {split!r} is not set up; call setup() first")
        return DataLoader(
            self.datasets[split],
            batch_size=self.batch_size,
            shuffle=shuffle,
            sampler=None if shuffle else evaluation_sampler(self.datasets[split]),
            num_workers=(workers := loader_workers(self.num_workers, self.trainer)),
            collate_fn=collate_puzzles,
            persistent_workers=workers > 0,
            drop_last=shuffle and len(self.datasets[split]) > self.batch_size,  # no size-1 batch for BatchNorm
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)


class PuzzlePhotosDataModule(PuzzleDataModule):
    """Puzzles of the photographs bundled with scikit-image (`generator.PHOTOS`), split by photograph.

    Args:
        train_images, val_images, test_images: names of `PHOTOS` per split; a name in two splits is an error.
        puzzle_size: side S of the letterboxed puzzle canvas, px.
        rows, cols: the grid of validation and test, and of training unless a curriculum sets it. Pieces are drawn
            at puzzle scale on a canvas that holds the grid's largest piece (`generator.piece_canvas`).
        jigsaw: pieces with knobs; False = rectangular cells.
        photometric_strength: scale of the piece's photometric changes (0 = none, 1 = default, at most 2).
        crop_min_area: smallest area fraction of a source image a puzzle crops.
        pieces_per_puzzle: pieces of a training puzzle (validation and test use every cell).
        puzzles_per_epoch: training puzzles per epoch.
        puzzles_per_image: fixed puzzles per validation and test image.
        batch_size: puzzles per batch.
        num_workers: DataLoader workers, or ``auto`` (`abr_lab.data.workers`: none on a CPU, the spare cores
            when a GPU trains: rendering on the fly keeps a GPU waiting without them).
        seed: seed of the validation and test puzzles.
    """

    def __init__(
        self,
        train_images: Sequence[str] = DEFAULT_SPLITS["train"],
        val_images: Sequence[str] = DEFAULT_SPLITS["val"],
        test_images: Sequence[str] = DEFAULT_SPLITS["test"],
        puzzle_size: int = 512,
        rows: int = 16,
        cols: int = 16,
        jigsaw: bool = True,
        photometric_strength: float = 1.0,
        crop_min_area: float = 0.35,
        pieces_per_puzzle: int = 16,
        puzzles_per_epoch: int = 256,
        puzzles_per_image: int = 2,
        batch_size: int = 2,
        num_workers: int | str = 0,
        seed: int = 42,
    ) -> None:
        settings = PuzzleSettings(
            puzzle_size=puzzle_size,
            rows=rows,
            cols=cols,
            jigsaw=jigsaw,
            photometric_strength=photometric_strength,
            crop_min_area=crop_min_area,
            pieces_per_puzzle=pieces_per_puzzle,
            puzzles_per_epoch=puzzles_per_epoch,
            puzzles_per_image=puzzles_per_image,
            seed=seed,
        )
        super().__init__(settings, batch_size, num_workers)
        self.save_hyperparameters()
        self.image_names = {"train": list(train_images), "val": list(val_images), "test": list(test_images)}
        seen: dict[str, str] = {}
        for split, names in self.image_names.items():
            if not names:
                raise ValueError(f"{split}_images is empty: every split needs at least one photo")
            for name in names:
                if name not in PHOTOS:
                    raise ValueError(f"{split}_images: unknown photo {name!r}; known: {', '.join(PHOTOS)}")
                if name in seen:
                    raise ValueError(f"photo {name!r} is in both {seen[name]}_images and {split}_images")
                seen[name] = split

    def setup(self, stage: str | None = None) -> None:
        if not self.sources:
            self.sources = {split: [load_photo(n) for n in names] for split, names in self.image_names.items()}
            self._check_sources()
        self._make_datasets()


class ImageFolderDataModule(PuzzleDataModule):
    """Puzzles of every image under a folder (recursive, `IMAGE_SUFFIXES`), split by image with a seeded shuffle.

    Images are checked once at setup and read from disk when used.

    Args:
        root: the folder.
        val_fraction, test_fraction: shares of the images for validation and test (at least one image each).
        puzzle_size, rows, cols, jigsaw, photometric_strength, crop_min_area, pieces_per_puzzle,
            puzzles_per_epoch, puzzles_per_image, batch_size, num_workers: as `PuzzlePhotosDataModule`.
        seed: seed of the split and of the validation and test puzzles.
    """

    def __init__(
        self,
        root: str,
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        puzzle_size: int = 512,
        rows: int = 16,
        cols: int = 16,
        jigsaw: bool = True,
        photometric_strength: float = 1.0,
        crop_min_area: float = 0.35,
        pieces_per_puzzle: int = 16,
        puzzles_per_epoch: int = 256,
        puzzles_per_image: int = 2,
        batch_size: int = 2,
        num_workers: int | str = 0,
        seed: int = 42,
    ) -> None:
        settings = PuzzleSettings(
            puzzle_size=puzzle_size,
            rows=rows,
            cols=cols,
            jigsaw=jigsaw,
            photometric_strength=photometric_strength,
            crop_min_area=crop_min_area,
            pieces_per_puzzle=pieces_per_puzzle,
            puzzles_per_epoch=puzzles_per_epoch,
            puzzles_per_image=puzzles_per_image,
            seed=seed,
        )
        super().__init__(settings, batch_size, num_workers)
        self.save_hyperparameters()
        if not (0 < val_fraction < 1 and 0 < test_fraction < 1 and val_fraction + test_fraction < 1):
            raise ValueError(
                f"val_fraction={val_fraction}, test_fraction={test_fraction}: need each in (0, 1) and a sum below 1"
            )
        self.root, self.val_fraction, self.test_fraction = Path(root), val_fraction, test_fraction

    def image_files(self) -> list[Path]:
        """Every image file under `root`, sorted."""
        if not self.root.is_dir():
            raise ValueError(f"{self.root}: not a folder (ImageFolderDataModule root)")
        files = sorted(p for p in self.root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if len(files) < 3:
            raise ValueError(
                f"{self.root}: {len(files)} image files ({', '.join(IMAGE_SUFFIXES)}); need at least 3 (one per split)"
            )
        return files

    def split_files(self) -> dict[str, list[Path]]:
        files = self.image_files()
        order = np.random.default_rng(self.settings.seed).permutation(len(files))
        n_val = max(1, round(self.val_fraction * len(files)))
        n_test = max(1, round(self.test_fraction * len(files)))
        if len(files) - n_val - n_test < 1:
            raise ValueError(f"{self.root}: {len(files)} images leave none for training after val and test")
        shuffled = [files[i] for i in order]
        return {
            "val": sorted(shuffled[:n_val]),
            "test": sorted(shuffled[n_val : n_val + n_test]),
            "train": sorted(shuffled[n_val + n_test :]),
        }

    def setup(self, stage: str | None = None) -> None:
        if not self.sources:
            files = self.split_files()
            self.sources = {split: list(files[split]) for split in SPLITS}
            self.image_names = {split: [str(p.relative_to(self.root)) for p in files[split]] for split in SPLITS}
            self._check_sources()  # reads every image once: an unreadable one fails here, naming it
        self._make_datasets()
