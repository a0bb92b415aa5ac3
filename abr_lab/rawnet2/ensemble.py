"""Score-level fusion of trained RawNet2 detectors: one checkpoint whose network is the ensemble of several.

    python scripts/ensemble_rawnet2.py RUN1/checkpoints/epoch002.ckpt RUN2/checkpoints/epoch005.ckpt --out fused.ckpt
    python evaluate.py ckpt_path=fused.ckpt            # EER, min t-DCF, per attack: the fused detector's
    python -m abr_lab.rawnet2.deploy export fused.ckpt detector.pt

The members' weights go under ``net.members.<i>.`` of a `RawNet2Ensemble`, whose score is the mean of the members'
bona fide log-odds; the file evaluates, predicts and exports like any checkpoint of the family (not resumes).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from abr_lab.atomic import atomic_path
from abr_lab.checkpoint import CONFIG_KEY, TRAINING_STATE, check_one_network, read_sources
from abr_lab.rawnet2.network import ENSEMBLE

NET_PREFIX = "net."


def _member_model(path: str | Path, ckpt: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The (arch, arch_kwargs) a RawNet2 checkpoint was built with, read from its hyperparameters."""
    hparams = ckpt.get("hyper_parameters") or {}
    if "arch" not in hparams:
        raise ValueError(f"{path}: no 'arch' in its hyper_parameters: not a checkpoint of the RawNet2 family")
    if hparams["arch"] == ENSEMBLE:
        raise ValueError(f"{path} is already an ensemble: list its members' checkpoints instead")
    return hparams["arch"], dict(hparams.get("arch_kwargs") or {})


def ensemble_checkpoints(paths: Sequence[str | Path], out: str | Path) -> dict[str, Any]:
    """Write the checkpoint of the ensemble of `paths`' networks (same variant and shapes; >= 2 files) to `out`.

    Member i's weights are ``paths[i]``'s. Everything else (the run config and its data section, the module's
    hyperparameters but the network's, the DataModule's state) comes from the first file: put first the run whose
    data the ensemble is to be evaluated on. Files of different variants or ``arch_kwargs`` are refused naming the
    file; so are files whose weights differ in a key or a shape (`abr_lab.checkpoint.check_one_network`). Written
    atomically; the sources are recorded under ``ensemble_of``. Returns the new checkpoint.
    """
    checkpoints = read_sources(paths, out, "ensemble_checkpoints")
    arch, arch_kwargs = _member_model(paths[0], checkpoints[0])
    for path, ckpt in zip(paths[1:], checkpoints[1:], strict=True):
        other = _member_model(path, ckpt)
        if other != (arch, arch_kwargs):
            raise ValueError(
                f"{path}: network {other[0]} {other[1]} differs from {paths[0]}'s {arch} {arch_kwargs}: an "
                "ensemble's members share one variant"
            )
    check_one_network(paths, checkpoints, reference=0)
    state: dict[str, torch.Tensor] = {}
    for i, ckpt in enumerate(checkpoints):
        for key, tensor in ckpt["state_dict"].items():
            if key.startswith(NET_PREFIX):
                state[f"{NET_PREFIX}members.{i}.{key.removeprefix(NET_PREFIX)}"] = tensor
            elif i == 0:
                state[key] = tensor  # module buffers outside the network, if any
    network = {"arch": ENSEMBLE, "arch_kwargs": {"member": arch, "size": len(paths), **arch_kwargs}}
    ensemble = {key: value for key, value in checkpoints[0].items() if key not in TRAINING_STATE}
    ensemble["state_dict"] = state
    ensemble["hyper_parameters"] = {**checkpoints[0]["hyper_parameters"], **network}
    if CONFIG_KEY in ensemble:
        ensemble[CONFIG_KEY] = {**ensemble[CONFIG_KEY], "model": {**ensemble[CONFIG_KEY]["model"], **network}}
    ensemble["ensemble_of"] = [str(Path(path).resolve()) for path in paths]
    with atomic_path(out) as tmp:
        torch.save(ensemble, tmp)
    return ensemble
