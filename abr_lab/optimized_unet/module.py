"""LightningModule of the optimized hierarchical U-Net: multi-task training, metrics in physical units, figures.

The network works on normalised inputs and says nothing about units; this module holds the train split's target
statistics (copied from the DataModule's `Normalization` when fitting starts, then saved as buffers in every
checkpoint, so a checkpoint alone predicts in ms, µV and dB) and turns the network's outputs into

- standardised predictions for the loss (`standardise`): every regression target is z-scored per wave, so the
  configured loss weights compare like with like;
- physical predictions for metrics and users (`predict`).

The signal head learns the clean waveform where the data has one (the simulator's ``clean``: it denoises) and
the recording itself otherwise.

With `diffusion` set (`abr_lab.optimized_unet.diffusion.DiffusionConfig`), the same network also learns to generate:
each training step adds the diffusion loss (v-prediction on the clean waveform noised to a random level, the
static parameters and class dropped with probability p_uncond) to the multi-task loss, whose heads keep reading the
recordings themselves (t = 0 inputs, the analysis path). `generate_joint` then draws (class, static) from the prior
fitted on the train split, samples signals with DDIM and returns the heads' analysis of them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import lightning as L
import numpy as np
import torch
from torch import Tensor, nn

from abr_lab.curriculum import Knob
from abr_lab.layers import AttentionSkipFusion, MultiScaleAttention, TransformerBlock
from abr_lab.loggers import tensorboard_writers
from abr_lab.metrics import ABRMetrics, ReconstructionMetrics
from abr_lab.optim import parameter_groups, warmup_cosine
from abr_lab.optimized_unet import network  # noqa: F401  (registers the variants)
from abr_lab.optimized_unet.diffusion import DiffusionConfig, JointPrior, add_noise, ddim_sample, v_target
from abr_lab.optimized_unet.figures import confusion_figure
from abr_lab.optimized_unet.losses import ABRLoss
from abr_lab.optimized_unet.schema import CLASS_NAMES, WAVES, ABRRecords
from abr_lab.registry import compile_network, create_model
from abr_lab.summary import set_example_input

Batch = dict[str, Tensor]
CLASS_WEIGHTING = ("inverse", "sqrt_inverse", "none")
LR_PARTS = ("trunk", "transformer", "ssm", "heads")
ATTENTION_LAYERS = (TransformerBlock, AttentionSkipFusion, MultiScaleAttention, nn.MultiheadAttention)
# which head each loss term trains (the peak head serves presence, latency and amplitude)
HEAD_OF_TASK = {
    "signal": "signal",
    "spectral": "signal",
    "presence": "peaks",
    "latency": "peaks",
    "amplitude": "peaks",
    "class": "class",
    "threshold": "threshold",
    "diffusion": "diffusion",
}


class OptimizedUNetModule(L.LightningModule):
    """Trains a registered `optimized_unet*` variant on every ABR task at once.

    Args:
        arch: registered variant (`abr_lab.registry.list_models("optimized_unet")`).
        arch_kwargs: overrides of the variant (e.g. ``{"bottleneck": "rescnn"}``).
        signal_length: samples per recording, T; checked against the data when fitting starts (it fixes which
            levels hold attention, so it is part of the architecture).
        loss: the `loss` config group: ``weights`` per task, ``regression``, ``huber_delta``, ``focal_gamma``
            (`ABRLoss.from_config`) and ``class_weights``: ``inverse`` class frequency of the train split (every
            class counts alike: recall of the rare classes first), ``sqrt_inverse`` (its square root, normalised
            the same way: the compromise between recall and precision that macro-F1 rewards) or ``none``.
        lr: peak AdamW learning rate.
        lr_multipliers: per part of the network, a factor on `lr` (`LR_PARTS`): ``transformer`` (transformer
            blocks, attention skip fusion, multi-scale and cross-task attention), ``ssm`` (the S4D A and Δ
            parameters, which never decay, as in S4D), ``heads`` (the output heads) and ``trunk`` (everything
            else); 1 where not given.
        weight_decay: AdamW weight decay of the matrices (not of norms, biases and the S4D A and Δ).
        warmup_steps: linear warm-up in optimiser steps, then cosine decay to `min_lr_ratio` × lr.
        min_lr_ratio: floor of the cosine decay.
        figure_every_n_epochs: the confusion matrix goes to TensorBoard every n validation epochs (0 = never).
        compile: compile the network with torch.compile (`abr_lab.registry.compile_network`); checkpoints load
            into an uncompiled network.
        diffusion: None (analysis only), or the joint-generation settings (`DiffusionConfig`: weight, p_uncond,
            class_conditioning, prior_components, sample_steps, guidance_scale).
    """

    def __init__(
        self,
        arch: str = "optimized_unet",
        arch_kwargs: dict[str, Any] | None = None,
        signal_length: int = 300,
        loss: dict[str, Any] | None = None,
        lr: float = 2e-3,
        lr_multipliers: dict[str, float] | None = None,
        weight_decay: float = 0.01,
        warmup_steps: int = 200,
        min_lr_ratio: float = 0.02,
        figure_every_n_epochs: int = 5,
        compile: bool = False,
        diffusion: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.diffusion = DiffusionConfig.from_dict(diffusion)
        loss_cfg = dict(loss or {})
        self.class_weighting = loss_cfg.pop("class_weights", "sqrt_inverse")
        if self.class_weighting not in CLASS_WEIGHTING:
            raise ValueError(f"loss.class_weights={self.class_weighting!r}: choose one of {list(CLASS_WEIGHTING)}")
        self.loss_fn = ABRLoss.from_config(loss_cfg)
        # the weights training uses: the configured ones unless a curriculum sets them (`curriculum_knobs`)
        self.train_weights: dict[str, float] = dict(self.loss_fn.weights)
        if self.diffusion is not None:
            self.train_weights["diffusion"] = self.diffusion.weight
        self.task_losses: dict[str, Tensor] = {}  # the last training step's weighted task losses (`abr_lab.health`)
        generative = {}
        if self.diffusion is not None:
            generative = {"generative": True, "class_conditioning": self.diffusion.class_conditioning}
        self.net = create_model(arch, signal_length=signal_length, **(arch_kwargs or {}), **generative)
        # p(class) p(static | class) of the train split: what `generate_joint` draws parameters from
        self.prior = (
            None
            if self.diffusion is None
            else JointPrior(self.net.num_classes, components=self.diffusion.prior_components)
        )
        if compile:
            compile_network(self.net)
        w = len(WAVES)
        # train-split statistics (DataModule `Normalization`), set in `setup`, restored from checkpoints
        self.register_buffer("signal_std", torch.ones(()))
        self.register_buffer("latency_mean", torch.zeros(w))
        self.register_buffer("latency_std", torch.ones(w))
        self.register_buffer("amplitude_mean", torch.zeros(w))
        self.register_buffer("amplitude_std", torch.ones(w))
        self.register_buffer("threshold_mean", torch.zeros(()))
        self.register_buffer("threshold_std", torch.ones(()))
        self.register_buffer("time_start_ms", torch.zeros(()))  # time of the first sample
        self.register_buffer("time_span_ms", torch.full((), float(signal_length - 1)))  # first to last sample
        self.metrics = nn.ModuleDict({s: ABRMetrics() for s in ("val", "test")})
        self.signal_metrics = nn.ModuleDict({s: ReconstructionMetrics() for s in ("val", "test")})

    # ----------------------------------------------------------------------------------------------------------
    # statistics and units

    def setup(self, stage: str) -> None:
        set_example_input(self, stage, lambda batch: (batch["signal"], batch["static"]))
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        norm = getattr(datamodule, "normalization", None)
        if stage != "fit" or norm is None:
            return  # evaluation of a checkpoint uses the statistics stored in it
        dataset = datamodule.datasets["train"]
        length = dataset.signal.shape[-1]
        if length != self.hparams.signal_length:
            raise ValueError(
                f"the data has {length} samples per recording but model.signal_length={self.hparams.signal_length}: "
                f"set model.signal_length={length}"
            )
        self.set_statistics(norm, fs_hz=dataset.fs_hz, onset_ms=dataset.onset_ms)
        if self.prior is not None:
            self.prior.fit(
                dataset.static_raw.numpy(),
                dataset.label.numpy(),
                np.asarray(norm.static_mean),
                np.asarray(norm.static_std),
            )
        if self.class_weighting != "none":
            self.loss_fn.set_class_weights(class_weights(datamodule.class_weights, self.class_weighting))

    def set_statistics(self, norm: Any, fs_hz: float, onset_ms: float) -> None:
        """Copy a `Normalization` and the time axis into the buffers (what turns outputs into physical units)."""
        values = {
            "signal_std": norm.signal_std,
            "latency_mean": norm.latency_mean,
            "latency_std": norm.latency_std,
            "amplitude_mean": norm.amplitude_mean,
            "amplitude_std": norm.amplitude_std,
            "threshold_mean": norm.threshold_mean,
            "threshold_std": norm.threshold_std,
            "time_start_ms": onset_ms,
            "time_span_ms": 1000.0 * (self.hparams.signal_length - 1) / fs_hz,
        }
        for name, value in values.items():
            buffer = getattr(self, name)
            buffer.copy_(torch.as_tensor(value, dtype=buffer.dtype).reshape(buffer.shape))

    def standardise(self, out: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """The network's outputs as the loss sees them: latency, amplitude and threshold z-scored per wave (with
        their log σ moved to the same unit), signal, presence and class as they are."""
        span, signal_std = self.time_span_ms, self.signal_std
        return {
            "signal": out["signal"],
            "presence": out["presence"],
            "latency": (self.time_start_ms + out["latency"] * span - self.latency_mean) / self.latency_std,
            "latency_log_sigma": out["latency_log_sigma"] + torch.log(span / self.latency_std),
            "amplitude": (out["amplitude"] * signal_std - self.amplitude_mean) / self.amplitude_std,
            "amplitude_log_sigma": out["amplitude_log_sigma"] + torch.log(signal_std / self.amplitude_std),
            "class": out["class"],
            "threshold": out["threshold"],
            "threshold_log_sigma": out["threshold_log_sigma"],
        }

    def targets(self, batch: Batch) -> dict[str, Tensor]:
        """The batch's targets in the loss's units (see `standardise`)."""
        mask = batch["peak_mask"].bool()
        return {
            "signal": batch["clean"] if "clean" in batch else batch["signal"],
            "peak_mask": mask,
            "latency": (batch["peaks"][..., 0] - self.latency_mean) / self.latency_std,
            "amplitude": (batch["peaks"][..., 1] - self.amplitude_mean) / self.amplitude_std,
            "label": batch["label"],
            "threshold": (batch["threshold"] - self.threshold_mean) / self.threshold_std,
        }

    def predict(self, out: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Physical predictions: class index and probabilities, presence (logit > 0) and its probability, peaks
        (B, W, 2) in ms and µV with their σ, threshold and σ in dB, signal (B, T) in µV."""
        latency = self.time_start_ms + out["latency"] * self.time_span_ms  # (B, W) ms
        amplitude = out["amplitude"] * self.signal_std  # (B, W) µV
        return {
            "class_pred": out["class"].argmax(-1),
            "class_prob": out["class"].softmax(-1),
            "presence_pred": out["presence"] > 0,
            "presence_prob": out["presence"].sigmoid(),
            "peaks_pred": torch.stack([latency, amplitude], dim=-1),
            "peaks_sigma": torch.stack(
                [
                    out["latency_log_sigma"].exp() * self.time_span_ms,
                    out["amplitude_log_sigma"].exp() * self.signal_std,
                ],
                dim=-1,
            ),
            "threshold_pred": self.threshold_mean + out["threshold"] * self.threshold_std,
            "threshold_sigma": out["threshold_log_sigma"].exp() * self.threshold_std,
            "signal_pred": out["signal"].squeeze(1) * self.signal_std,
        }

    # ----------------------------------------------------------------------------------------------------------
    # steps

    def forward(self, signal: Tensor, static: Tensor) -> dict[str, Tensor]:
        return self.net(signal, static)

    def step_loss(
        self, batch: Batch, weights: Mapping[str, float] | None = None
    ) -> tuple[Tensor, dict[str, Tensor], dict[str, Tensor]]:
        """Total loss (under `weights`, else the configured ones), unweighted task losses, network outputs."""
        out = self.net(batch["signal"], batch["static"])
        total, parts = self.loss_fn(self.standardise(out), self.targets(batch), weights)
        return total, parts, out

    def diffusion_loss(self, batch: Batch, generator: torch.Generator | None = None) -> Tensor:
        """MSE of the v prediction on the clean waveform (the recording where the data has none) noised to a
        uniform random level t ∈ [0, 1]; static parameters and class dropped with probability p_uncond."""
        assert self.diffusion is not None
        x0 = batch["clean"] if "clean" in batch else batch["signal"]  # (B, 1, T) normalised
        b, device = x0.shape[0], x0.device
        t = torch.rand(b, device=device, generator=generator)  # (B,)
        noise = torch.randn(x0.shape, device=device, generator=generator)  # (B, 1, T)
        drop = torch.rand(b, device=device, generator=generator) < self.diffusion.p_uncond  # (B,)
        v = self.net.denoise(add_noise(x0, t, noise), batch["static"], t, batch["label"], drop)  # (B, 1, T)
        return (v - v_target(x0, t, noise)).square().mean()

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        total, parts, _ = self.step_loss(batch, self.train_weights)
        if self.diffusion is not None:
            parts["diffusion"] = self.diffusion_loss(batch)
            total = total + self.train_weights["diffusion"] * parts["diffusion"]
        self.task_losses = {k: self.train_weights[k] * v for k, v in parts.items() if self.train_weights[k] > 0}
        b = batch["label"].shape[0]
        self.log("train/loss", total, batch_size=b)
        self.log_dict({f"train/loss_{k}": v for k, v in parts.items()}, batch_size=b)
        return total

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def predict_step(self, batch: Batch, batch_idx: int) -> dict[str, Tensor]:
        return {**self.predict(self.net(batch["signal"], batch["static"])), "index": batch["index"]}

    def _evaluate(self, batch: Batch, stage: str) -> None:
        total, parts, out = self.step_loss(batch)
        b = batch["label"].shape[0]
        self.log(f"{stage}/loss", total, prog_bar=stage == "val", batch_size=b, sync_dist=True)
        if self.diffusion is not None:  # the same noise for a recording every epoch: comparable across epochs
            seed = torch.Generator(device=batch["signal"].device).manual_seed(int(batch["index"][0]))
            parts["diffusion"] = self.diffusion_loss(batch, generator=seed)  # not in {stage}/loss: analysis only
        self.log_dict({f"{stage}/loss_{k}": v for k, v in parts.items()}, batch_size=b, sync_dist=True)
        pred = self.predict(out)
        self.metrics[stage].update(
            class_pred=pred["class_pred"],
            label=batch["label"],
            peaks_pred=pred["peaks_pred"],
            peaks=batch["peaks"],
            peak_mask=batch["peak_mask"],
            threshold_pred=pred["threshold_pred"],
            threshold=batch["threshold"],
            presence_pred=pred["presence_pred"],
        )
        target = batch["clean"] if "clean" in batch else batch["signal"]
        response = batch["peak_mask"].bool().any(-1)  # (B,) recordings with at least one wave
        self.signal_metrics[stage].update(out["signal"].squeeze(1), target.squeeze(1), response)

    def on_validation_epoch_end(self) -> None:
        confusion = self._log_metrics("val")
        every = self.hparams.figure_every_n_epochs
        if every and not self.trainer.sanity_checking and (self.current_epoch + 1) % every == 0:
            self._log_confusion(confusion)

    def on_test_epoch_end(self) -> None:
        self._log_confusion(self._log_metrics("test"), tag="test/confusion_matrix")

    def _log_metrics(self, stage: str) -> Tensor:
        """Compute, log and reset the stage's metrics; returns the synced confusion matrix (C, C)."""
        values = self.metrics[stage].compute()
        values.update({f"signal/{k}": v for k, v in self.signal_metrics[stage].compute().items()})
        confusion = self.metrics[stage].confusion()
        for key, value in values.items():  # undefined metrics are left out; a NaN here is real (`abr_lab.health`)
            self.log(f"{stage}/{key}", value, prog_bar=key == "class/macro_f1")
        with torch.inference_mode(False):  # fresh states must not be inference tensors: fit may follow validate
            self.metrics[stage].reset()
            self.signal_metrics[stage].reset()
        return confusion

    def _log_confusion(self, confusion: Tensor, tag: str = "val/confusion_matrix") -> None:
        writers = tensorboard_writers(self.loggers)
        if not writers or not self.trainer.is_global_zero or int(confusion.sum()) == 0:
            return
        fig = confusion_figure(confusion.cpu().numpy(), CLASS_NAMES, title=f"{tag}, epoch {self.current_epoch}")
        for k, writer in enumerate(writers):
            writer.add_figure(tag, fig, global_step=self.global_step, close=k == len(writers) - 1)

    # ----------------------------------------------------------------------------------------------------------
    # optimisation

    def configure_optimizers(self) -> dict[str, Any]:
        ssm = {id(p) for m in self.net.modules() if hasattr(m, "ssm_parameters") for p in m.ssm_parameters()}
        attention = {id(p) for m in self.net.modules() if isinstance(m, ATTENTION_LAYERS) for p in m.parameters()}
        heads = {id(p) for head in self.net.heads().values() for p in head.parameters()}

        def part(name: str, param: nn.Parameter) -> str:
            if id(param) in ssm:
                return "ssm"
            if id(param) in attention:
                return "transformer"
            return "heads" if id(param) in heads else "trunk"

        groups = parameter_groups(
            self.net,
            part,
            LR_PARTS,
            self.hparams.lr,
            self.hparams.weight_decay,
            self.hparams.lr_multipliers,
            no_decay=("ssm",),
        )
        optimizer = torch.optim.AdamW(groups, lr=self.hparams.lr)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        scheduler = warmup_cosine(
            optimizer, min(self.hparams.warmup_steps, total // 2), total, self.hparams.min_lr_ratio
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # ----------------------------------------------------------------------------------------------------------
    # figures

    @torch.no_grad()
    def waterfall_predictions(self, records: ABRRecords, index: np.ndarray) -> dict[str, Any]:
        """Predictions for the recordings `index` of `records` (raw units) in `figures.waterfall`'s overlay form:
        peaks where presence is predicted, the denoised signal, and the ear's threshold (mean over its levels)."""
        norm = self.trainer.datamodule.normalization
        signal = torch.as_tensor(records.signal[index] / norm.signal_std, dtype=torch.float32, device=self.device)
        static = torch.as_tensor(norm.static(records.static[index]), dtype=torch.float32, device=self.device)
        was_training = self.training
        self.eval()
        pred = self.predict(self.net(signal.unsqueeze(1), static))
        self.train(was_training)
        return {
            "peaks": pred["peaks_pred"].cpu().numpy(),
            "peak_mask": pred["presence_pred"].cpu().numpy(),
            "threshold_db": float(pred["threshold_pred"].mean()),
            "signal": pred["signal_pred"].cpu().numpy(),
        }

    # ----------------------------------------------------------------------------------------------------------
    # joint generation

    @torch.no_grad()
    def generate_joint(
        self,
        batch_size: int,
        device: str | torch.device | None = None,
        temperature: float = 1.0,
        use_constraints: bool = True,
        *,
        steps: int | None = None,
        guidance_scale: float | None = None,
        static: Tensor | None = None,
        labels: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> dict[str, Tensor]:
        """Generate `batch_size` ABRs together with their parameters, and the heads' analysis of them.

        Args:
            batch_size: how many.
            device: where to generate (the module moves there); default where it is.
            temperature: scales the spread of the static-parameter prior (0: the mixtures' means).
            use_constraints: keep drawn parameters inside the train split's ranges (redrawn, then clipped).
            steps, guidance_scale: DDIM steps and classifier-free guidance w; default `model.diffusion`'s.
            static: (B, 4) raw parameters to condition on instead of drawing them (age, intensity, rate, Fmp).
            labels: (B,) classes to condition on (class-conditioned networks); drawn from the train split's
                frequencies when `static` is drawn too, else the null class (unconditional on class).
            generator: random numbers of the prior and the initial noise (reproducible samples).

        Returns (on the device): ``signal`` (B, T) µV, ``static`` (B, 4) raw, ``label`` (B,) the conditioning class
        (-1 where none was used), and the heads' predictions for the generated signals (`predict`): ``class_pred``,
        ``class_prob``, ``presence_pred``, ``presence_prob``, ``peaks_pred``, ``peaks_sigma``, ``threshold_pred``,
        ``threshold_sigma``.
        """
        if self.diffusion is None or self.prior is None:
            raise RuntimeError("this model was trained without generation: set model.diffusion (experiment=unet_joint)")
        if device is not None:
            self.to(device)
        device = self.device
        steps = self.diffusion.sample_steps if steps is None else steps
        guidance = self.diffusion.guidance_scale if guidance_scale is None else guidance_scale
        if static is None:
            labels, static = self.prior.sample(batch_size, labels, temperature, use_constraints, generator)
        else:
            static = torch.as_tensor(static, dtype=torch.float32, device=device).reshape(batch_size, -1)
        if labels is not None:
            labels = torch.as_tensor(labels, dtype=torch.long, device=device).reshape(batch_size)
        conditioning_labels = labels if self.net.class_conditioning else None
        static_norm = self.prior.normalise(static.to(device))  # (B, 4)
        was_training = self.training
        self.eval()

        def denoise(x_t: Tensor, t: Tensor, conditional: bool) -> Tensor:
            drop = torch.full((batch_size,), not conditional, dtype=torch.bool, device=device)
            return self.net.denoise(x_t, static_norm, t, conditioning_labels, drop)

        noise = torch.randn(batch_size, 1, self.net.signal_length, device=device, generator=generator)
        x = ddim_sample(denoise, noise, steps, guidance)  # (B, 1, T) normalised
        pred = self.predict(self.net(x, static_norm))
        self.train(was_training)
        pred.pop("signal_pred")  # the heads' denoising of an already clean signal: not an output of generation
        no_label = torch.full((batch_size,), -1, dtype=torch.long, device=device)
        return {
            "signal": x.squeeze(1) * self.signal_std,
            "static": static,
            "label": no_label if conditioning_labels is None else conditioning_labels,
            **pred,
        }

    # ----------------------------------------------------------------------------------------------------------
    # curriculum and health monitoring

    def curriculum_knobs(self) -> dict[str, Knob]:
        """``transformer_gate`` in [0, 1] and ``loss.<task>``, the weight training gives each task (>= 0)."""
        net = self.net  # the gate is read through it at each call: moving the module to a device replaces buffers
        knobs = {
            "transformer_gate": Knob(
                lambda: float(net.transformer_gate), lambda v: net.transformer_gate.fill_(v), 0.0, 1.0
            )
        }
        for task in self.train_weights:
            knobs[f"loss.{task}"] = Knob(
                lambda t=task: self.train_weights[t], lambda v, t=task: self.train_weights.update({t: v}), 0.0
            )
        return knobs

    def shared_parameters(self) -> list[nn.Parameter]:
        """The trunk every task's gradient flows through: all but the task extractors and the heads."""
        own = {id(p) for m in (self.net.extractors, *self.net.heads().values()) for p in m.parameters()}
        return [p for p in self.net.parameters() if id(p) not in own]

    def task_heads(self) -> dict[str, nn.Module]:
        """The heads of the tasks training gives a weight > 0 (a head of an unweighted task gets no gradient)."""
        active = {HEAD_OF_TASK[t] for t, w in self.train_weights.items() if w > 0}
        return {name: head for name, head in self.net.heads().items() if name in active}


def class_weights(inverse: Tensor, weighting: str) -> Tensor:
    """Loss weights per class from the data's inverse-frequency weights (mean 1 over training examples).

    ``sqrt_inverse`` takes their square root and rescales so the mean over training examples is again 1 (the
    frequencies are recovered from the inverse weights: f_c ∝ 1 / w_c); absent classes (weight 0) stay 0.
    """
    if weighting == "inverse":
        return inverse.clone()
    if weighting != "sqrt_inverse":
        raise ValueError(f"weighting={weighting!r}: choose one of {list(CLASS_WEIGHTING[:2])}")
    present = inverse > 0
    freq = torch.where(present, 1.0 / inverse.clamp_min(1e-12), torch.zeros_like(inverse))
    freq = freq / freq.sum()
    root = torch.where(present, inverse.sqrt(), torch.zeros_like(inverse))
    return root / (freq * root).sum()
