"""The example input of Lightning's model summary: one training sample, so that the summary printed at the start of
every fit shows each layer's FLOPs and input / output sizes instead of ``Total FLOPs: 0``.

Lightning counts FLOPs (and records sizes) only by running the module's ``example_input_array`` through its
`forward` once, in eval mode without gradients, when the fit starts. Each family's LightningModule calls
`set_example_input` from its `setup`: the DataModule's first training sample, collated by its own loader into a batch
of one, in the form its `forward` takes. The count is that of one forward pass (training adds about twice that for
the backward), with the formulas of `abr_lab.flops` (FFTs and elementwise ops are not counted).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelSummary

import abr_lab.flops  # noqa: F401  registers the FLOP formulas PyTorch lacks (CPU attention, recurrent kernels)


def set_example_input(module: L.LightningModule, stage: str, forward_inputs: Callable[[Any], Any]) -> None:
    """Set `module.example_input_array` to `forward_inputs` of a one-sample training batch.

    Only for a fit with a model summary and a DataModule. Not under ``model.compile=true``: the summary's forward
    would compile a graph of its own (batch 1, eval mode, no gradients), a cold compile that the training never
    uses, and mark the batch dimension dynamic for the training graph; compiled runs print no FLOPs.
    The sample is read with the global RNG forked, so the training's random draws stay those of a run without it.
    """
    trainer = module._trainer
    if stage != "fit" or trainer is None or module.hparams.get("compile", False):
        return
    if not any(isinstance(callback, ModelSummary) for callback in trainer.callbacks):
        return
    datamodule = trainer.datamodule
    if datamodule is None:
        return
    loader = datamodule.train_dataloader()
    with torch.random.fork_rng(devices=[]):
        batch = loader.collate_fn([loader.dataset[0]])
    module.example_input_array = forward_inputs(batch)
