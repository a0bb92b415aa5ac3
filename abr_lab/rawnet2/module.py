"""LightningModule of the anti-spoofing family: weighted cross-entropy on logits, challenge metrics, DET curves.

The score of a clip is the log-odds of bona fide (`bonafide_score`); EER, min t-DCF and AUROC are computed from the
scores of the whole split (every process's, under DDP), as the ASVspoof challenges define them
(`abr_lab.metrics.spoof`), with the EER of every attack (``val/eer_A03``); the test split adds the EER and min
t-DCF of bona fide against the attacks training never saw (``test/eer_unseen``), the figure the family's quality
bar is set on.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import lightning as L
import torch
from torch import Tensor, nn

from abr_lab.loggers import tensorboard_writers
from abr_lab.losses import margin_cross_entropy
from abr_lab.metrics.mean import SplitMean
from abr_lab.metrics.spoof import SpoofMetrics, det_figure
from abr_lab.optim import parameter_groups, warmup_cosine
from abr_lab.rawnet2 import network  # noqa: F401  (registers the variants)
from abr_lab.rawnet2.network import BONAFIDE, CLASS_NAMES, RawNet2Ensemble, bonafide_score
from abr_lab.registry import compile_network, create_model
from abr_lab.summary import set_example_input

Batch = dict[str, Tensor]
LR_PARTS = ("front", "gru", "head")
SCHEDULES = ("constant", "warmup_cosine")


def lr_part(name: str) -> str:
    """Which part of `LR_PARTS` a network parameter belongs to: the GRU, the FC head, or the front end before (in an
    ensemble, the part of its member: ``members.3.gru.weight_ih_l0`` is ``gru``)."""
    name = re.sub(r"^members\.\d+\.", "", name)
    if name.startswith("gru."):
        return "gru"
    if name.startswith(("fc1.", "fc2.")):
        return "head"
    return "front"


class RawNet2Module(L.LightningModule):
    """Trains a registered `rawnet2*` variant to tell bona fide audio (class 1) from spoofs (class 0).

    Args:
        arch: registered variant (`abr_lab.registry.list_models("rawnet2")`); ``rawnet2_ensemble`` averages the
            logits of several networks of one variant (`RawNet2Ensemble`; ``arch_kwargs``: ``member``, ``size`` and
            the member's overrides), each member trained on its own loss.
        arch_kwargs: overrides of the variant (e.g. ``{"sinc_learnable": true}``).
        lr: Adam learning rate (the reference: 1e-4, constant); the peak rate under ``warmup_cosine``.
        weight_decay: Adam's L2 penalty on the weight matrices (the reference: 1e-4; norms and biases are exempt).
        lr_multipliers: factors on `lr` per part (``front``, ``gru``, ``head``); 1 where not given.
        schedule: ``constant`` (the reference) or ``warmup_cosine``: a linear warm-up over `warmup_steps` batches,
            then a cosine decay to `min_lr_ratio` × `lr` at the last batch of training.
        warmup_steps, min_lr_ratio: of ``warmup_cosine`` (ignored by ``constant``).
        class_weights: cross-entropy weights of (spoof, bona fide); the reference's (0.1, 0.9) offsets the
            ~9 : 1 spoof : bona fide ratio of ASVspoof 2019 LA training data.
        logit_margin: the loss pushes bona fide log-odds above +margin and spoofs below −margin
            (`abr_lab.losses.margin_cross_entropy`; 0 = plain cross-entropy, the reference). With the ``one_class``
            head (``arch_kwargs.head``) and margin ``scale · 0.35`` it is OC-softmax (`model=rawnet2_ocsoftmax`).
        figure_every_n_epochs: a DET curve of the validation split goes to TensorBoard every n epochs (0 = never).
        compile: compile the network with torch.compile (`abr_lab.registry.compile_network`); checkpoints load
            into an uncompiled network.
    """

    def __init__(
        self,
        arch: str = "rawnet2",
        arch_kwargs: dict[str, Any] | None = None,
        lr: float = 1e-4,
        weight_decay: float = 1e-4,
        lr_multipliers: dict[str, float] | None = None,
        schedule: str = "constant",
        warmup_steps: int = 100,
        min_lr_ratio: float = 0.01,
        class_weights: Sequence[float] = (0.1, 0.9),
        logit_margin: float = 0.0,
        figure_every_n_epochs: int = 1,
        compile: bool = False,
    ) -> None:
        super().__init__()
        if schedule not in SCHEDULES:
            raise ValueError(f"schedule={schedule!r}: expected one of {'|'.join(SCHEDULES)}")
        if len(class_weights) != len(CLASS_NAMES) or min(class_weights) < 0 or sum(class_weights) <= 0:
            raise ValueError(f"class_weights={list(class_weights)}: need two non-negative weights (spoof, bonafide)")
        if logit_margin < 0:
            raise ValueError(f"logit_margin={logit_margin}: need >= 0")
        self.save_hyperparameters()
        self.net = create_model(arch, **(arch_kwargs or {}))
        if compile:
            compile_network(self.net)
        self.register_buffer("class_weights", torch.tensor([float(w) for w in class_weights]), persistent=False)
        self.attack_ids: tuple[str, ...] = ()
        self.unseen: tuple[int, ...] = ()  # attack indices training never saw
        self.metrics = nn.ModuleDict()
        # the class-weighted cross-entropy of a whole split: exact across batches and processes (a mean of batch
        # means is not, as each batch's weights sum differently)
        self.split_loss = nn.ModuleDict({s: SplitMean() for s in ("val", "test")})

    def setup(self, stage: str) -> None:
        """Name the attacks after the DataModule's table and build the metrics of each stage."""
        set_example_input(self, stage, lambda batch: (batch["audio"],))
        datamodule = self.trainer.datamodule if self._trainer is not None else None
        attack_ids = tuple(getattr(datamodule, "attack_ids", ())) or ("-", *(f"attack{i}" for i in range(1, 100)))
        unseen = tuple(getattr(datamodule, "unseen_attacks", ()))
        if attack_ids == self.attack_ids and len(self.metrics):
            return
        self.attack_ids = attack_ids
        self.unseen = tuple(attack_ids.index(a) for a in unseen)
        self.metrics = nn.ModuleDict(
            {
                "val": SpoofMetrics(attack_ids, per_attack=True),
                "test": SpoofMetrics(attack_ids, per_attack=True),
                "test_unseen": SpoofMetrics(attack_ids),
            }
        ).to(self.device)

    def forward(self, audio: Tensor) -> Tensor:
        """(b, t) waveforms -> (b, 2) logits."""
        return self.net(audio)

    def score(self, audio: Tensor) -> Tensor:
        """(b, t) waveforms -> (b,) bona fide log-odds."""
        return bonafide_score(self.net(audio))

    def loss(self, logits: Tensor, labels: Tensor) -> Tensor:
        """Class-weighted (margin) cross-entropy of a batch."""
        return margin_cross_entropy(logits.float(), labels, self.hparams.logit_margin, self.class_weights)

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        if isinstance(self.net, RawNet2Ensemble):
            members = self.net.member_logits(batch["audio"])  # (m, b, 2)
        else:
            members = self.net(batch["audio"])[None]  # (1, b, 2)
        # each member learns from its own loss, as if trained alone (a sum: with Adam's L2 weight decay a mean would
        # weaken each member's data gradient against its decay); the ensemble's logits only for the accuracy
        losses = torch.stack([self.loss(logits, batch["label"]) for logits in members])  # (m,)
        logits = members.mean(dim=0)  # (b, 2)
        accuracy = (logits.argmax(dim=1) == batch["label"]).float().mean()
        self.log("train/loss", losses.mean(), batch_size=len(logits))
        self.log("train/accuracy", accuracy, batch_size=len(logits))
        return losses.sum()

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        scores = self._evaluate(batch, "test")
        keep = (batch["label"] == BONAFIDE) | torch.isin(batch["attack"], batch["attack"].new_tensor(self.unseen))
        if self.unseen and keep.any():
            self.metrics["test_unseen"].update(scores[keep], batch["label"][keep], batch["attack"][keep])

    def predict_step(self, batch: Batch, batch_idx: int) -> Tensor:
        return self.score(batch["audio"])

    def configure_optimizers(self) -> torch.optim.Optimizer | dict[str, Any]:
        groups = parameter_groups(
            self.net,
            lambda name, _: lr_part(name),
            LR_PARTS,
            self.hparams.lr,
            self.hparams.weight_decay,
            self.hparams.lr_multipliers,
        )
        optimizer = torch.optim.Adam(groups, lr=self.hparams.lr)
        if self.hparams.schedule == "constant":
            return optimizer
        total = max(1, int(self.trainer.estimated_stepping_batches))
        warmup = min(self.hparams.warmup_steps, total // 2)
        scheduler = warmup_cosine(optimizer, warmup, total, self.hparams.min_lr_ratio)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_validation_epoch_end(self) -> None:
        every = self.hparams.figure_every_n_epochs
        self._log_metrics("val", figure=bool(every) and self.current_epoch % every == 0)

    def on_test_epoch_end(self) -> None:
        self._log_metrics("test", figure=True)
        if self.unseen:
            values = self.metrics["test_unseen"].compute()
            self.metrics["test_unseen"].reset()
            self.log("test/eer_unseen", values["eer"])
            self.log("test/min_tdcf_unseen", values["min_tdcf"])

    def _evaluate(self, batch: Batch, stage: str) -> Tensor:
        logits = self.net(batch["audio"])  # (b, 2)
        labels = batch["label"]
        per_example = margin_cross_entropy(logits.float(), labels, self.hparams.logit_margin, reduction="none")  # (b,)
        self.split_loss[stage].update(per_example, weight=self.class_weights[labels])
        self.log(f"{stage}/loss", self.split_loss[stage], batch_size=len(logits))
        scores = bonafide_score(logits.float())  # (b,)
        self.metrics[stage].update(scores, labels, batch["attack"], preds=logits.argmax(dim=1))
        return scores

    def _log_metrics(self, stage: str, figure: bool) -> None:
        """Log the stage's metrics; with `figure`, its DET curves (all spoofs, and each attack in test) too."""
        metric = self.metrics[stage]
        for key, value in metric.compute().items():
            self.log(f"{stage}/{key}", value, prog_bar=key == "eer")
        curves = metric.det_scores() if figure else {}  # collective: every process calls it
        metric.reset()
        writers = tensorboard_writers(self.loggers)
        if curves and writers:
            fig = det_figure(curves, title=f"{stage} DET")
            for k, writer in enumerate(writers):
                writer.add_figure(f"{stage}/det", fig, global_step=self.global_step, close=k == len(writers) - 1)
