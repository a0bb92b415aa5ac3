"""LightningModule of the puzzle family: where a jigsaw piece sits in the puzzle (its box) and how it is turned.

Loss (weights in `loss_weights`, each a curriculum knob ``loss.<term>``):
- ``ciou``: Complete-IoU of the predicted box (`abr_lab.losses.ciou_loss`; keeps a gradient on disjoint boxes,
  where GIoU's vanishes). The box terms train the read-out's own box (``read_box``), also when a grid (told or read
  off the pieces) makes the answer a cell: the size head trains either way, so any checkpoint reads with any `grid`;
- ``l1``: smooth L1 on the four box coordinates;
- ``rotation``: cross-entropy of the rotation logits;
- ``heatmap``: cross-entropy of the joint (rotation, location) heatmap against the true rotation and the cell of
  the finest pyramid level holding the box centre. It is the dense signal that teaches the correlation where to
  peak; the box terms alone act only through the soft-argmax.

Metrics (`abr_lab.metrics.PuzzleMetrics`): mean IoU, accuracy at IoU >= 0.5, centre error in piece widths, rotation
accuracy and confusion matrix, and the spread of the predicted centres over the spread of the true ones (the
collapse detector: ~1 when the model localises, ~0 when it predicts one box for every piece); with ``grid:
pieces``, also ``grid_read``, the share of puzzles whose grid was read right. The correlation maps
of a few validation pieces go to TensorBoard as a figure (what the model looks at).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from abr_lab.curriculum import Knob
from abr_lab.loggers import tensorboard_writers
from abr_lab.losses import ciou_loss
from abr_lab.metrics.mean import SplitMean
from abr_lab.metrics.puzzle import PuzzleMetrics
from abr_lab.optim import parameter_groups, warmup_cosine
from abr_lab.puzzle_cnn import network  # noqa: F401  (registers the variants)
from abr_lab.puzzle_cnn.figures import correlation_figure, rotation_confusion_figure
from abr_lab.registry import compile_network, create_model
from abr_lab.summary import set_example_input

Batch = dict[str, Tensor]
LOSS_TERMS = ("ciou", "l1", "rotation", "heatmap")
GRID_SOURCES = ("none", "pieces", "told")  # what the network knows of a puzzle's grid (`PuzzleModule`'s grid)
LR_PARTS = ("backbone", "fpn", "head")


def lr_part(name: str) -> str:
    """Which of `LR_PARTS` a network parameter belongs to."""
    if name.startswith("backbone."):
        return "backbone"
    if name.startswith("fpn."):
        return "fpn"
    return "head"


def heatmap_target(box: Tensor, rotation: Tensor, height: int, width: int) -> Tensor:
    """(n, 4) boxes and (n,) rotations -> (n,) index into the flattened (4, height, width) heatmap."""
    cx, cy = (box[:, 0] + box[:, 2]) / 2, (box[:, 1] + box[:, 3]) / 2
    col = (cx * width).long().clamp(0, width - 1)
    row = (cy * height).long().clamp(0, height - 1)
    return (rotation * height + row) * width + col


class PuzzleModule(L.LightningModule):
    """Trains a registered `puzzle_cnn*` variant on batches of puzzles and their pieces.

    Args:
        arch: registered variant (`abr_lab.registry.list_models("puzzle_cnn")`).
        arch_kwargs: overrides of the variant (e.g. ``{backbone: resnet34, pretrained_path: /path/r34.pth}``).
        lr: AdamW peak learning rate (linear warm-up over `warmup_steps` batches, cosine decay to
            `min_lr_ratio` × lr at the last batch).
        weight_decay: AdamW decoupled weight decay on weight matrices (norms and biases are exempt).
        lr_multipliers: factors on `lr` per part (``backbone``, ``fpn``, ``head``); 1 where not given.
        loss_weights: weight of each loss term (``ciou``, ``l1``, ``rotation``, ``heatmap``).
        figure_every_n_epochs: correlation maps of the first validation batch to TensorBoard every n epochs (0 =
            never).
        compile: compile the network with torch.compile (`abr_lab.registry.compile_network`); checkpoints load
            into an uncompiled network.
        figure_pieces: how many pieces that figure shows.
        grid: what the network knows of each puzzle's grid (rows x cols): ``none``, nothing (each piece from its
            own and its puzzle's image alone); ``pieces``, read off the outlines and matches of the puzzle's pieces
            in the batch together (`borders.read_grid`: a solver has every piece of its puzzle; validation and test
            batches hold whole puzzles); ``told``, told it (batch ``grid``), as a puzzle's box tells its piece
            count. With a grid, the network places pieces on cell centres, turns oblong pieces along oblong cells
            and boxes a piece as its cell (`PuzzleNet`'s ``grid_prior``).
    """

    def __init__(
        self,
        arch: str = "puzzle_cnn",
        arch_kwargs: dict[str, Any] | None = None,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        lr_multipliers: dict[str, float] | None = None,
        warmup_steps: int = 100,
        min_lr_ratio: float = 0.02,
        loss_weights: Mapping[str, float] | None = None,
        figure_every_n_epochs: int = 1,
        compile: bool = False,
        figure_pieces: int = 4,
        grid: str = "none",
    ) -> None:
        super().__init__()
        weights = {term: 1.0 for term in LOSS_TERMS}
        unknown = sorted(set(loss_weights or {}) - set(LOSS_TERMS))
        if unknown:
            raise ValueError(f"loss_weights: unknown term {unknown[0]!r}; known: {', '.join(LOSS_TERMS)}")
        weights.update({k: float(v) for k, v in (loss_weights or {}).items()})
        if any(not (w >= 0) for w in weights.values()):
            raise ValueError(f"loss_weights must be >= 0, got {weights}")
        if figure_every_n_epochs < 0 or figure_pieces < 1:
            raise ValueError("figure_every_n_epochs must be >= 0 and figure_pieces >= 1")
        if grid not in GRID_SOURCES:
            raise ValueError(f"grid: unknown {grid!r}; choose one of {', '.join(GRID_SOURCES)}")
        self.save_hyperparameters()
        self.net = create_model(arch, **(arch_kwargs or {}))
        if compile:
            compile_network(self.net)
        self.loss_weights = weights
        self.grid = grid
        self.metrics = nn.ModuleDict({"val": PuzzleMetrics(), "test": PuzzleMetrics()})
        # validation and test losses as sums and counts: exact across processes (a mean of per-process means is not)
        names = ["loss", *(f"loss_{term}" for term in LOSS_TERMS)]
        self.split_losses = nn.ModuleDict(
            {s: nn.ModuleDict({name: SplitMean() for name in names}) for s in ("val", "test")}
        )
        self.grid_read = nn.ModuleDict({s: SplitMean() for s in ("val", "test")})

    def forward(
        self,
        piece: Tensor,
        puzzle: Tensor,
        puzzle_index: Tensor,
        content: Tensor | None = None,
        grid: Tensor | None = None,
        read_grids: bool = False,
    ) -> dict[str, Any]:
        """(n, 3, s, s) pieces, (p, 3, S, S) puzzles, (n,) puzzle of each piece, (p, 4) where each picture sits on
        its canvas (None = the whole canvas) and (p, 2) each puzzle's grid (rows, cols; None = unknown, read off
        the pieces when `read_grids`) -> the network's output dict."""
        return self.net(piece, puzzle, puzzle_index, content, grid, read_grids)

    def setup(self, stage: str) -> None:
        set_example_input(self, stage, self.forward_inputs)

    def forward_inputs(self, batch: Batch) -> tuple[Any, ...]:
        """`forward`'s arguments for a batch (the contract of `collate_puzzles`; ``content`` optional, ``grid``
        read only when `grid` is ``told``)."""
        grid = None
        if self.grid == "told":
            if "grid" not in batch:
                raise KeyError("grid=told: the batch has no 'grid' (rows, cols per puzzle) to tell the network")
            grid = batch["grid"]
        return batch["piece"], batch["puzzle"], batch["puzzle_index"], batch.get("content"), grid, self.grid == "pieces"

    def run_batch(self, batch: Batch) -> dict[str, Any]:
        """The network's output dict on a batch."""
        return self(*self.forward_inputs(batch))

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        return self._shared_step(batch, "train")

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self._shared_step(batch, "val", figure=batch_idx == 0 and self._figure_due())

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        self._shared_step(batch, "test")

    def predict_step(self, batch: Batch, batch_idx: int) -> dict[str, Tensor]:
        out = self.run_batch(batch)
        probs = out["rotation_logits"].float().softmax(dim=1)  # (n, 4)
        return {"box": out["box"], "rotation": probs.argmax(dim=1), "rotation_probability": probs.amax(dim=1)}

    def configure_optimizers(self) -> dict[str, Any]:
        groups = parameter_groups(
            self.net,
            lambda name, _: lr_part(name),
            LR_PARTS,
            self.hparams.lr,
            self.hparams.weight_decay,
            self.hparams.lr_multipliers,
        )
        optimizer = torch.optim.AdamW(groups, lr=self.hparams.lr)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        warmup = min(self.hparams.warmup_steps, total // 2)
        scheduler = warmup_cosine(optimizer, warmup, total, self.hparams.min_lr_ratio)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def curriculum_knobs(self) -> dict[str, Knob]:
        """``loss.<term>`` for every loss term."""
        return {f"loss.{term}": self._weight_knob(term) for term in LOSS_TERMS}

    def on_validation_epoch_end(self) -> None:
        self._log_metrics("val")

    def on_test_epoch_end(self) -> None:
        confusion = self.metrics["test"].confusion()
        self._log_metrics("test")
        for writer in tensorboard_writers(self.loggers):
            writer.add_figure("test/rotation_confusion", rotation_confusion_figure(confusion), self.global_step)

    # ------------------------------------------------------------------ internals

    def losses(self, out: dict[str, Any], batch: Batch) -> dict[str, Tensor]:
        """Every loss term (unweighted) of one batch."""
        box, target = out["read_box"].float(), batch["box"]  # the read-out's box, before a known grid's cell
        heatmap = out["heatmap"].float()  # (n, 4, h, w)
        n, _, height, width = heatmap.shape
        return {
            "ciou": ciou_loss(box, target),
            "l1": F.smooth_l1_loss(box, target, beta=0.05),
            "rotation": F.cross_entropy(out["rotation_marginal_logits"].float(), batch["rotation"]),
            "heatmap": F.cross_entropy(
                heatmap.reshape(n, -1), heatmap_target(target, batch["rotation"], height, width)
            ),
        }

    def _shared_step(self, batch: Batch, stage: str, figure: bool = False) -> Tensor:
        out = self.run_batch(batch)
        terms = self.losses(out, batch)
        loss = sum(self.loss_weights[k] * v for k, v in terms.items())
        n = len(batch["piece"])
        named = {"loss": loss, **{f"loss_{key}": value for key, value in terms.items()}}
        if stage == "train":
            self.log("train/loss", loss, batch_size=n)
            self.log_dict({f"train/loss_{key}": value for key, value in terms.items()}, batch_size=n)
            return loss
        for key, value in named.items():  # every term is a mean over the batch's pieces
            self.split_losses[stage][key].update(value.detach(), weight=n)
            self.log(f"{stage}/{key}", self.split_losses[stage][key], batch_size=n)
        if self.grid == "pieces" and "grid" in batch:
            right = (out["grid"] == batch["grid"]).all(dim=1).float()  # (p,)
            self.grid_read[stage].update(right)
            self.log(f"{stage}/grid_read", self.grid_read[stage], batch_size=len(right))
        rotation = out["rotation_logits"].argmax(dim=1)
        self.metrics[stage].update(out["box"].float(), batch["box"], rotation, batch["rotation"])
        if figure:
            self._log_correlations(out, batch)
        return loss

    def _log_metrics(self, stage: str) -> None:
        metric = self.metrics[stage]
        for key, value in metric.compute().items():
            self.log(f"{stage}/{key}", value, prog_bar=key in ("acc_iou50", "rotation_accuracy"))
        metric.reset()

    def _figure_due(self) -> bool:
        every = self.hparams.figure_every_n_epochs
        return bool(every) and self.current_epoch % every == 0 and not self.trainer.sanity_checking

    def _log_correlations(self, out: dict[str, Any], batch: Batch) -> None:
        writers = tensorboard_writers(self.loggers)
        if not writers or self.global_rank != 0:
            return
        fig = correlation_figure(out, batch, self.hparams.figure_pieces)
        for k, writer in enumerate(writers):
            writer.add_figure("val/correlation", fig, global_step=self.global_step, close=k == len(writers) - 1)

    def _weight_knob(self, term: str) -> Knob:
        def set_weight(value: float) -> None:
            self.loss_weights[term] = float(value)

        return Knob(lambda: self.loss_weights[term], set_weight, low=0.0)
