"""PuzzleCNN family: where a jigsaw piece sits in the puzzle and how it is rotated.

`network` (PuzzleNet: timm backbone + FPN + multi-level normalised cross-correlation, registered as ``puzzle_cnn``
and ``puzzle_cnn_tiny``), `module` (PuzzleModule: losses, metrics, figures), `datamodule` (puzzles cut from the
photographs bundled with scikit-image, or from a folder of images), `generator` (puzzles and pieces), `baselines`
(OpenCV template matching), `images` (reading and tensor conversion), `figures` (TensorBoard figures).
"""

from abr_lab.puzzle_cnn.datamodule import ImageFolderDataModule, PuzzleDataModule, PuzzlePhotosDataModule
from abr_lab.puzzle_cnn.module import PuzzleModule
from abr_lab.puzzle_cnn.network import PuzzleNet

__all__ = ["ImageFolderDataModule", "PuzzleDataModule", "PuzzleModule", "PuzzleNet", "PuzzlePhotosDataModule"]
