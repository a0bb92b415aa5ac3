"""Checkpoints that carry their run: the resolved config travels inside every checkpoint, so `evaluate.py` and
`predict.py` rebuild the DataModule and the LightningModule from the file alone (no Hydra run, no config file).

    cfg = checkpoint_config("outputs/.../checkpoints/epoch004.ckpt", ["data.batch_size=64"])
    module = load_module("outputs/.../checkpoints/epoch004.ckpt", cfg)
    average_checkpoints([".../epoch009.ckpt", ".../epoch010.ckpt", ".../epoch011.ckpt"], ".../mean_009-011.ckpt")

Paths in the stored config are those of the training run (resolved, absolute): on another machine override them
(``data.data_dir=...``, ``data.root=...``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import ConfigKeyError

from abr_lab.atomic import atomic_path

CONFIG_KEY = "abr_lab_config"


class StoreRunConfig(Callback):
    """Writes the run's resolved config into every checkpoint under ``abr_lab_config``."""

    def __init__(self, cfg: DictConfig) -> None:
        self.config: dict[str, Any] = OmegaConf.to_container(cfg, resolve=True)  # type: ignore[assignment]

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        checkpoint[CONFIG_KEY] = self.config


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The checkpoint's contents on the CPU, with an error naming the file when it is missing or not a checkpoint."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ckpt_path={str(path)!r}: no such checkpoint file")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # torch raises several types for truncated or foreign files
        raise ValueError(f"ckpt_path={str(path)!r} is not a readable PyTorch checkpoint ({error})") from error
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise ValueError(f"ckpt_path={str(path)!r} is not a Lightning checkpoint (no 'state_dict')")
    return ckpt


def checkpoint_config(path: str | Path, overrides: Sequence[str] = ()) -> DictConfig:
    """The training config stored in the checkpoint, with ``key=value`` overrides applied (unknown keys refused)."""
    ckpt = read_checkpoint(path)
    if CONFIG_KEY not in ckpt:
        raise ValueError(
            f"ckpt_path={str(path)!r} carries no run config (key {CONFIG_KEY!r}): it was not written by abr_lab's "
            "train.py; rebuild the model with <ModuleClass>.load_from_checkpoint instead"
        )
    cfg = OmegaConf.create(ckpt[CONFIG_KEY])
    return apply_overrides(cfg, overrides, source=f"the config stored in {path}")


def apply_overrides(cfg: DictConfig, overrides: Sequence[str], source: str) -> DictConfig:
    """`cfg` with command-line style ``key=value`` overrides; a key that `cfg` lacks is an error naming it, unless
    the override adds it as Hydra does, ``+key=value`` (an option newer than the run, e.g. ``+model.grid=told``
    on an older checkpoint); adding a key `cfg` has is an error too."""
    OmegaConf.set_struct(cfg, True)
    for override in overrides:
        key, sep, value = override.partition("=")
        add = key.startswith("+")
        key = key.removeprefix("+")
        if not sep or not key:
            raise ValueError(f"override {override!r}: expected key=value")
        present = OmegaConf.select(cfg, key, default=_ABSENT) is not _ABSENT
        if add and present:
            raise ValueError(f"override {override!r}: {key!r} is already a key of {source}; drop the '+'")
        if not (add or present):
            raise ValueError(f"unknown option {key!r}: it is not a key of {source} (add one with '+{key}=...')")
        try:
            with open_dict(cfg):
                OmegaConf.update(cfg, key, _parse(value), merge=False)
        except ConfigKeyError as error:
            raise ValueError(f"override {override!r}: {error}") from error
    return cfg


_ABSENT = object()


def _parse(value: str) -> Any:
    """A command-line value as YAML reads it (numbers, booleans, null, lists), else the string."""
    try:
        return OmegaConf.create(f"v: {value}").v
    except Exception:
        return value


def module_class(cfg: DictConfig) -> type[L.LightningModule]:
    """The LightningModule class named by ``model._target_``."""
    return hydra.utils.get_class(cfg.model._target_)


def load_module(path: str | Path, cfg: DictConfig) -> L.LightningModule:
    """The trained LightningModule, in eval mode on the CPU, built with the (possibly overridden) ``model`` config.

    `torch.compile` is never applied here (the weights carry no compile wrapper, see `compile_network`).
    """
    hparams = {k: v for k, v in OmegaConf.to_container(cfg.model, resolve=True).items() if k != "_target_"}
    module = module_class(cfg).load_from_checkpoint(
        path, map_location="cpu", weights_only=False, **{**hparams, "compile": False}
    )
    return module.eval()


def instantiate_datamodule(cfg: DictConfig) -> L.LightningDataModule:
    """The run's DataModule from the config (plain lists and dicts reach the constructor, as in training)."""
    return hydra.utils.instantiate(cfg.data, _convert_="all")


def run_dir_of(path: str | Path) -> Path:
    """The run directory a checkpoint belongs to (the parent of its ``checkpoints/`` folder)."""
    path = Path(path).resolve()
    return path.parent.parent if path.parent.name == "checkpoints" else path.parent


# Left out of a checkpoint made from several (averaged, or an ensemble): the training state of one point of training
# (optimizer, schedulers, loops, callbacks) and an EMA callback's raw weights, which belong to none of the result.
# Without them Lightning refuses to resume from the file; evaluating, predicting and exporting need only the rest
# (weights, hyperparameters, the DataModule's state, the run config).
TRAINING_STATE = ("optimizer_states", "lr_schedulers", "loops", "callbacks", "current_model_state", "averaging_state")


def read_sources(paths: Sequence[str | Path], out: str | Path, caller: str) -> list[dict[str, Any]]:
    """The checkpoints one new checkpoint at `out` is to be made from: at least two, and `out` none of them (the
    result never replaces a source)."""
    if len(paths) < 2:
        raise ValueError(f"{caller} needs at least two checkpoints, got {len(paths)}")
    if Path(out).resolve() in {Path(path).resolve() for path in paths}:
        raise ValueError(f"{caller}: the output {out} is one of the inputs: write the result to a new file")
    return [read_checkpoint(path) for path in paths]


def check_one_network(paths: Sequence[str | Path], checkpoints: Sequence[dict[str, Any]], reference: int) -> None:
    """Refuse `checkpoints` (read from `paths`) unless their weights have the keys and shapes of those of
    ``paths[reference]``; the error names the file and the key that differ."""
    expected, expected_path = checkpoints[reference]["state_dict"], paths[reference]
    for path, ckpt in zip(paths, checkpoints, strict=True):
        state = ckpt["state_dict"]
        for key, tensor in expected.items():
            if key not in state or state[key].shape != tensor.shape:
                found = "no such key" if key not in state else f"shape {tuple(state[key].shape)}"
                raise ValueError(
                    f"{path}: state_dict key {key!r} does not match {expected_path} ({found}, "
                    f"expected {tuple(tensor.shape)}): the checkpoints are not of one network"
                )
        extra = set(state) - set(expected)
        if extra:
            raise ValueError(f"{path}: state_dict key {sorted(extra)[0]!r} is not in {expected_path}")


def average_checkpoints(paths: Sequence[str | Path], out: str | Path) -> dict[str, Any]:
    """Write the checkpoint whose weights are the mean of `paths`' weights (checkpoint averaging, SWA after the fact).

    Averaging the weights of the last epochs of one run smooths the epoch-to-epoch swings of a metric the
    validation split does not show (RawNet2 on unseen attacks). Floating-point tensors are averaged (BatchNorm
    running statistics included); integer ones (``num_batches_tracked``) come from the last file, as do the config,
    the hyperparameters and the counters. The files must come from the same network: a missing key or a shape that
    differs is an error naming the file and the key. Written atomically; returns the new checkpoint, which records
    its sources under ``averaged_from`` and can be evaluated, predicted with and exported, not resumed.
    """
    checkpoints = read_sources(paths, out, "average_checkpoints")
    check_one_network(paths, checkpoints, reference=-1)
    mean: dict[str, torch.Tensor] = {}
    for key, last in checkpoints[-1]["state_dict"].items():
        tensors = [ckpt["state_dict"][key] for ckpt in checkpoints]
        if last.is_floating_point():
            mean[key] = torch.stack([t.to(torch.float64) for t in tensors]).mean(0).to(last.dtype)
        else:
            mean[key] = last.clone()
    averaged = {key: value for key, value in checkpoints[-1].items() if key not in TRAINING_STATE}
    averaged["state_dict"] = mean
    averaged["averaged_from"] = [str(Path(path).resolve()) for path in paths]
    with atomic_path(out) as tmp:
        torch.save(averaged, tmp)
    return averaged
