"""Training-health monitor: alerts for the failures that ruin a run quietly, and the measurements behind them.

The origin project collapsed to one class while its report said "performance is excellent": nothing watched. The
`HealthMonitor` callback (in `callbacks=default`) watches every family and raises an alert when

- ``nonfinite``: the training loss or a logged metric is NaN or infinite (names the metric, epoch and step);
- ``negative_r2``: a validation metric named ``*r2*`` stays below 0 for `patience` epochs after warm-up;
- ``class_collapse``: one class takes more than `collapse_share` of the validation predictions
  (``*/pred_share_<class>`` metrics); ``zero_recall``: a class's recall (``*/recall_<class>``) stays at 0;
- ``attention_collapse`` / ``attention_uniform``: an attention layer's normalised entropy (`EntropyProbe`) is
  below `entropy_low` (every query on one key) or stays above `entropy_high` (it never learned to choose);
- ``task_dominance``: one task holds more than `dominance_share` of the weighted loss or of the gradient norm on
  the shared parameters for `patience` epochs;
- ``dead_head``: a task head's parameters get no gradient at all.

Checks on validation metrics, attention and dominance start after `warmup_epochs` and need `patience` epochs in a
row; ``nonfinite`` and ``dead_head`` fire at once. Each alert goes to the console log, to TensorBoard (text
``health/alerts`` and the count ``health/alerts``) and to ``alerts.jsonl`` in `dirpath`, one JSON object per line.
Kinds listed in `stop_on` also stop training (``trainer.should_stop``; the run still tests its best checkpoint). Under
DDP every process stops when one does (the decision is reduced across processes where the checks run), so no process
is left waiting in a collective for one that has stopped.

What a LightningModule may offer (each optional; without it the matching check is skipped):

- ``task_losses``: a dict {task: weighted loss, graph attached} set by `training_step` (dominance);
- ``shared_parameters()``: the parameters every task's gradient flows through (gradient shares);
- ``task_heads()``: {name: head module} of the tasks being trained now (dead heads).

Measured scalars: ``health/loss_share/<task>`` (of the summed magnitudes |weight · loss|: a Gaussian NLL term
may be negative), ``health/grad_share/<task>`` and
``health/attention_entropy/<layer>``, every epoch. Gradient shares need one extra backward pass per task: they
run every `interval` training steps, as does the dead-head check.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from torch import Tensor, nn

from abr_lab.layers import EntropyProbe
from abr_lab.loggers import tensorboard_writers

log = logging.getLogger(__name__)

ALERTS = (
    "nonfinite",
    "negative_r2",
    "class_collapse",
    "zero_recall",
    "attention_collapse",
    "attention_uniform",
    "task_dominance",
    "dead_head",
)
R2 = re.compile(r"(^|[/_])r2($|[/_])")


@dataclass(frozen=True)
class Alert:
    kind: str
    subject: str  # the metric, class, layer, task or head concerned
    epoch: int
    step: int
    value: float | None
    message: str


class HealthMonitor(Callback):
    """Watches a training run and raises `Alert`s (see the module docstring).

    Args:
        dirpath: folder of ``alerts.jsonl`` (null: the trainer's ``default_root_dir``).
        stop_on: alert kinds that stop training; the others only warn.
        interval: training steps between gradient probes (per-task gradient norms, dead heads); 0 turns them off.
        warmup_epochs: epochs before the metric, attention and dominance checks start.
        patience: epochs in a row a metric, attention or dominance condition must hold.
        collapse_share: largest healthy share of validation predictions for one class.
        entropy_low: attention entropy (normalised, 0..1) below which attention has collapsed.
        entropy_high: attention entropy above which it is still uniform.
        dominance_share: largest healthy share of one task in the weighted loss or the shared gradient norm.
    """

    def __init__(
        self,
        dirpath: str | None = None,
        stop_on: Sequence[str] = ("nonfinite",),
        interval: int = 100,
        warmup_epochs: int = 1,
        patience: int = 2,
        collapse_share: float = 0.9,
        entropy_low: float = 0.05,
        entropy_high: float = 0.99,
        dominance_share: float = 0.9,
    ) -> None:
        unknown = sorted(set(stop_on) - set(ALERTS))
        if unknown:
            raise ValueError(f"health.stop_on: unknown alert {unknown[0]!r}; known: {', '.join(ALERTS)}")
        if interval < 0 or warmup_epochs < 0 or patience < 1:
            raise ValueError(
                f"health: need interval >= 0, warmup_epochs >= 0, patience >= 1 (got {interval}, "
                f"{warmup_epochs}, {patience})"
            )
        for name, value in (("collapse_share", collapse_share), ("dominance_share", dominance_share)):
            if not 0 < value <= 1:
                raise ValueError(f"health.{name} must be in (0, 1], got {value}")
        if not 0 <= entropy_low < entropy_high <= 1:
            raise ValueError(f"health: need 0 <= entropy_low < entropy_high <= 1, got {entropy_low}, {entropy_high}")
        self.dirpath = None if dirpath is None else Path(dirpath)
        self.stop_on = frozenset(stop_on)
        self.interval, self.warmup_epochs, self.patience = interval, warmup_epochs, patience
        self.collapse_share, self.dominance_share = collapse_share, dominance_share
        self.entropy_low, self.entropy_high = entropy_low, entropy_high
        self.alerts: list[Alert] = []  # raised in this process (every rank checks; rank 0 writes)
        self.streaks: dict[str, int] = {}  # "<kind>:<subject>" -> epochs in a row the condition held
        self._stop = False  # an alert of a `stop_on` kind was raised in this process
        self._reset_epoch()

    def _reset_epoch(self) -> None:
        self._bad_loss: Tensor | None = None  # (2,) on the loss's device: [any non-finite, first bad step]
        self._batch_step = 0  # global step when the current batch started (the step loggers show for it)
        self._loss_sums: dict[str, Tensor] = {}
        self._loss_steps = 0
        self._grad_shares: dict[str, list[float]] = {}
        self._entropy: dict[str, float] = {}
        self._reported: set[tuple[str, str, int]] = set()

    # ----------------------------------------------------------------------------------------------------------
    # alerts

    def alert(self, trainer: L.Trainer, kind: str, subject: str, value: float | None, message: str) -> None:
        """Record an alert (at most one per kind, subject and epoch) and send it to the log, TensorBoard and file."""
        key = (kind, subject, trainer.current_epoch)
        if key in self._reported:
            return
        self._reported.add(key)
        alert = Alert(kind, subject, trainer.current_epoch, trainer.global_step, value, message)
        self.alerts.append(alert)
        if kind in self.stop_on:
            self._stop = True  # applied at the next `_apply_stop`, where every process decides together
        if not trainer.is_global_zero:
            return
        text = f"[health:{kind}] epoch {alert.epoch}, step {alert.step}: {message}"
        log.warning(text + (" (stopping)" if kind in self.stop_on else ""))
        for writer in tensorboard_writers(trainer.loggers):
            writer.add_text("health/alerts", text, global_step=trainer.global_step)
        path = (self.dirpath or Path(trainer.default_root_dir)) / "alerts.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a") as f:  # append-only: earlier alerts are never rewritten
            value_field = None if value is None or not math.isfinite(value) else value
            f.write(json.dumps({**asdict(alert), "value": value_field}) + "\n")

    def _streak(self, kind: str, subject: str, holds: bool) -> int:
        key = f"{kind}:{subject}"
        self.streaks[key] = self.streaks.get(key, 0) + 1 if holds else 0
        return self.streaks[key]

    def _check(self, trainer: L.Trainer, kind: str, subject: str, holds: bool, value: float, message: str) -> None:
        """Alert when a condition has held `patience` epochs in a row, counting only after warm-up."""
        if trainer.current_epoch < self.warmup_epochs:
            return
        if self._streak(kind, subject, holds) >= self.patience:
            self.alert(trainer, kind, subject, value, f"{message} for {self.streaks[f'{kind}:{subject}']} epochs")

    # ----------------------------------------------------------------------------------------------------------
    # training steps: non-finite loss, loss shares, gradient probes

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._batch_step = trainer.global_step

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if isinstance(loss, Tensor):  # flags on the device, read every `interval` steps: no sync per step
            bad = ~torch.isfinite(loss.detach()).all()
            step = torch.full((), float(self._batch_step), device=loss.device)  # a fill, not a host copy
            if self._bad_loss is None:
                self._bad_loss = torch.stack([bad.float(), torch.where(bad, step, -1.0)])
            else:
                first = torch.where(self._bad_loss[0] > 0, self._bad_loss[1], torch.where(bad, step, -1.0))
                self._bad_loss = torch.stack([torch.maximum(self._bad_loss[0], bad.float()), first])
        task_losses = getattr(pl_module, "task_losses", None) or {}
        if len(task_losses) > 1:
            for task, value in task_losses.items():
                # magnitudes: a Gaussian NLL term goes negative once its σ is small
                self._loss_sums[task] = self._loss_sums.get(task, 0.0) + value.detach().float().abs()
            self._loss_steps += 1
        checkpoint = bool(self.interval) and (batch_idx + 1) % self.interval == 0
        if checkpoint:
            self._check_loss(trainer)
        self._apply_stop(trainer, collective=checkpoint)

    def _check_loss(self, trainer: L.Trainer) -> None:
        """Alert if a training loss since the last check was not finite, in this process or (DDP) any other."""
        flags = self._bad_loss  # (2,): [any non-finite, first step with one], or None before the first step
        if trainer.world_size > 1:  # a collective: every process calls this at the same step
            local = flags if flags is not None else torch.tensor([0.0, -1.0], device=trainer.strategy.root_device)
            gathered = trainer.strategy.all_gather(local).reshape(-1, 2)  # (processes, 2)
            bad = gathered[gathered[:, 0] > 0]  # (processes that saw one, 2)
            flags = bad[bad[:, 1].argmin()] if len(bad) else None
        if flags is not None:
            bad, first = (float(x) for x in flags.tolist())
            if bad:
                message = f"train/loss is not finite (first at step {first:.0f})"
                self.alert(trainer, "nonfinite", "train/loss", math.nan, message)

    def _apply_stop(self, trainer: L.Trainer, collective: bool = True) -> None:
        """Set `trainer.should_stop` once a stopping alert was raised. Under DDP only where every process calls this
        (`collective`), with the decision reduced across processes, so that all stop after the same step."""
        stop = self._stop
        if trainer.world_size > 1:
            if not collective:
                return
            stop = trainer.strategy.reduce_boolean_decision(stop, all=False)
        if stop:
            self._stop = True
            trainer.should_stop = True

    def _probe_step(self, trainer: L.Trainer) -> bool:
        return bool(self.interval) and trainer.training and trainer.global_step % self.interval == 0

    def on_before_backward(self, trainer: L.Trainer, pl_module: L.LightningModule, loss: Tensor) -> None:
        task_losses = getattr(pl_module, "task_losses", None) or {}
        shared = getattr(pl_module, "shared_parameters", None)
        if len(task_losses) < 2 or shared is None or not self._probe_step(trainer):
            return
        norms = task_gradient_norms(task_losses, [p for p in shared() if p.requires_grad])
        total = sum(norms.values())
        if total > 0 and math.isfinite(total):
            for task, norm in norms.items():
                self._grad_shares.setdefault(task, []).append(norm / total)

    def on_after_backward(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        heads = getattr(pl_module, "task_heads", None)
        if heads is None or not self._probe_step(trainer):
            return
        for name, head in heads().items():
            if not receives_gradient(head.parameters()):
                self.alert(trainer, "dead_head", name, 0.0, f"head '{name}' gets no gradient")

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._check_loss(trainer)
        self._check_metrics(trainer, prefix="train/")
        self._apply_stop(trainer)
        scalars: dict[str, float] = {}
        if self._loss_steps:
            means = {task: float(total) / self._loss_steps for task, total in self._loss_sums.items()}
            total = sum(means.values())
            if total > 0 and math.isfinite(total):
                scalars.update({f"health/loss_share/{t}": m / total for t, m in means.items()})
        for task, shares in self._grad_shares.items():
            scalars[f"health/grad_share/{task}"] = sum(shares) / len(shares)
        for name, share in scalars.items():  # health/<loss_share|grad_share>/<task>: a streak per task and kind
            _, kind, task = name.split("/", 2)
            message = f"task '{task}' holds {share:.0%} of the {kind.replace('_', ' ')} (> {self.dominance_share:.0%})"
            self._check(trainer, "task_dominance", f"{kind}/{task}", share > self.dominance_share, share, message)
        scalars["health/alerts"] = float(sum(a.epoch == trainer.current_epoch for a in self.alerts))
        _log_scalars(trainer, scalars)
        self._reset_epoch()

    # ----------------------------------------------------------------------------------------------------------
    # validation: metrics and attention

    def on_validation_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        if batch_idx == 0 and not trainer.sanity_checking:
            for _, probe in _probes(pl_module):
                probe.probe, probe.entropy = True, None

    def on_validation_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if batch_idx != 0 or trainer.sanity_checking:
            return
        for name, probe in _probes(pl_module):
            entropy = float(probe.entropy) if probe.probe and probe.entropy is not None else math.nan
            if not math.isnan(entropy):  # NaN: the layer was gated off (`gated_entropy`)
                self._entropy[name] = entropy
            probe.probe, probe.entropy = False, None

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        self._check_metrics(trainer, prefix="val/")
        metrics = _metrics(trainer, "val/")
        for name, value in metrics.items():
            if R2.search(name.rsplit("/", 1)[-1]) and math.isfinite(value):
                self._check(trainer, "negative_r2", name, value < 0, value, f"{name} = {value:.3f} < 0")
        classifiers: dict[str, dict[str, float]] = {}  # "<stage>/<task>" -> {class: share of the predictions}
        for name, value in metrics.items():
            if "/pred_share_" in name:
                prefix, cls = name.split("/pred_share_", 1)
                classifiers.setdefault(prefix, {})[cls] = value
        for prefix, shares in classifiers.items():
            cls, share = max(shares.items(), key=lambda kv: kv[1])
            message = f"class '{cls}' takes {share:.0%} of {prefix}'s predictions (> {self.collapse_share:.0%})"
            self._check(trainer, "class_collapse", prefix, share > self.collapse_share, share, message)
        for name, value in metrics.items():
            if "/recall_" in name and math.isfinite(value):
                self._check(trainer, "zero_recall", name, value == 0, value, f"{name} is 0")
        for layer, entropy in self._entropy.items():
            self._check(
                trainer,
                "attention_collapse",
                layer,
                entropy < self.entropy_low,
                entropy,
                f"attention {layer} has collapsed (entropy {entropy:.3f} < {self.entropy_low})",
            )
            self._check(
                trainer,
                "attention_uniform",
                layer,
                entropy > self.entropy_high,
                entropy,
                f"attention {layer} is still uniform (entropy {entropy:.3f} > {self.entropy_high})",
            )
        _log_scalars(trainer, {f"health/attention_entropy/{k}": v for k, v in self._entropy.items()})
        self._entropy = {}
        self._apply_stop(trainer)

    def _check_metrics(self, trainer: L.Trainer, prefix: str) -> None:
        for name, value in _metrics(trainer, prefix).items():
            if not math.isfinite(value):
                self.alert(trainer, "nonfinite", name, value, f"{name} = {value} at epoch {trainer.current_epoch}")

    # ----------------------------------------------------------------------------------------------------------
    # checkpointing: streaks continue after a resume

    def state_dict(self) -> dict[str, Any]:
        return {"streaks": dict(self.streaks)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.streaks = dict(state_dict.get("streaks", {}))


def task_gradient_norms(task_losses: dict[str, Tensor], params: Sequence[nn.Parameter]) -> dict[str, float]:
    """L2 norm of each task loss's gradient on `params` (the graph is kept for the real backward)."""
    norms = {}
    for task, loss in task_losses.items():
        if not loss.requires_grad or not params:
            norms[task] = 0.0
            continue
        grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
        squares = [g.float().pow(2).sum() for g in grads if g is not None]
        norms[task] = float(torch.stack(squares).sum().sqrt()) if squares else 0.0
    return norms


def receives_gradient(params: Iterable[nn.Parameter]) -> bool:
    """Whether any of `params` has a non-zero gradient after a backward pass."""
    return any(p.grad is not None and bool(p.grad.detach().abs().sum() > 0) for p in params)


def _probes(module: nn.Module) -> list[tuple[str, EntropyProbe]]:
    return [(name, m) for name, m in module.named_modules() if isinstance(m, EntropyProbe)]


def _metrics(trainer: L.Trainer, prefix: str) -> dict[str, float]:
    out = {}
    for name, value in trainer.callback_metrics.items():
        if name.startswith(prefix) and (not isinstance(value, Tensor) or value.numel() == 1):
            out[name] = float(value)
    return out


def _log_scalars(trainer: L.Trainer, scalars: dict[str, float]) -> None:
    if scalars:
        for logger in trainer.loggers:
            logger.log_metrics(scalars, step=trainer.global_step)
