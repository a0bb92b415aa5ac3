"""Come back to a run: `python train.py resume=<run dir>` (or `resume=true`, or `ckpt_path=last`, for the latest run
of the chosen model) continues in the same run directory from `checkpoints/last.ckpt`.

- The run directory: the resolver ``${resume_dir:...}`` in `conf/hydra/default.yaml` makes Hydra's run directory the
  resumed one, and ``${resume_subdir:...}`` keeps the first invocation's `.hydra/` record (a resumed invocation writes
  its own under `.hydra/resume-<time>/`).
- The config: the run's own (its `.hydra/config.yaml`, else `config.yaml`), with this invocation's ``key=value``
  overrides on top (e.g. ``trainer.max_epochs=20``); choosing another model or data is refused.
- The state: Lightning restores weights, epoch, step, optimizer and LR scheduler; the curriculum callback its values;
  `RNGState` the random generators (python, numpy, torch, CUDA), so a deterministic run killed mid-epoch and resumed
  ends where the uninterrupted run ends.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from lightning.pytorch.callbacks import Callback
from omegaconf import DictConfig, OmegaConf, open_dict

from abr_lab.atomic import atomic_write_text
from abr_lab.checkpoint import apply_overrides

log = logging.getLogger(__name__)

LAST_CHECKPOINT = Path("checkpoints") / "last.ckpt"
# overrides that select config groups: a resumed run keeps its own choices
GROUPS = ("model", "data", "trainer", "logger", "callbacks", "curriculum", "loss", "paths", "experiment", "debug")
# overrides that choose what to resume rather than change the run
RESUME_KEYS = ("resume", "ckpt_path")


def wants_resume(resume: Any, ckpt_path: Any) -> bool:
    """True for ``resume=true``, ``resume=<run dir>`` and ``ckpt_path=last``."""
    return (resume is not None and resume is not False) or ckpt_path == "last"


def resume_dir(resume: Any, ckpt_path: Any, new_dir: str) -> str:
    """The run directory: `new_dir` for a fresh run; the named run, or for ``resume=true`` / ``ckpt_path=last`` the
    latest run beside `new_dir` (same model) that has a `checkpoints/last.ckpt`."""
    if not wants_resume(resume, ckpt_path):
        return new_dir
    if isinstance(resume, str) and resume.lower() != "true":
        run = Path(resume)
        if not (run / LAST_CHECKPOINT).is_file():
            raise FileNotFoundError(f"resume={resume!r}: no {LAST_CHECKPOINT} in that directory to resume from")
        return str(run)
    parent = Path(new_dir).parent
    runs = sorted(p for p in parent.glob("*") if (p / LAST_CHECKPOINT).is_file()) if parent.is_dir() else []
    if not runs:
        raise FileNotFoundError(
            f"resume=true: no run under {parent} has {LAST_CHECKPOINT}; name the run with resume=<run dir>"
        )
    return str(runs[-1])  # run directories are named by start time


def resume_subdir(resume: Any, ckpt_path: Any) -> str:
    """Where Hydra records this invocation inside the run directory (a resume keeps the first record)."""
    if not wants_resume(resume, ckpt_path):
        return ".hydra"
    return f".hydra/resume-{datetime.now():%Y-%m-%d_%H-%M-%S}"


def register_resolvers() -> None:
    """Make ``${resume_dir:...}`` and ``${resume_subdir:...}`` available to Hydra's run settings."""
    for name, fn in (("resume_dir", resume_dir), ("resume_subdir", resume_subdir)):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)


def resumed_config(cfg: DictConfig) -> DictConfig:
    """The config a resumed run continues with: the run's saved config plus this invocation's key=value overrides,
    with `ckpt_path` pointing at the run's `last.ckpt`."""
    run = Path(cfg.paths.output_dir)
    checkpoint = run / LAST_CHECKPOINT
    if not checkpoint.is_file():
        raise FileNotFoundError(f"resume: {checkpoint} does not exist: the run directory has nothing to resume")
    unresolved = run / ".hydra" / "config.yaml"
    saved = OmegaConf.load(unresolved if unresolved.is_file() else run / "config.yaml")
    overrides = [o for o in invocation_overrides() if o.lstrip("+").partition("=")[0] not in RESUME_KEYS]
    choices = run_choices(run)
    groups = [o for o in overrides if o.lstrip("+~").partition("=")[0] in GROUPS]
    if groups and not choices:  # a run started through the Python API (compose_config) records no choices
        log.warning("resume: %s has no .hydra/hydra.yaml to check %s against; they are ignored", run, groups)
    changed = [o for o in groups if choices and choices.get(o.lstrip("+~").partition("=")[0]) != o.partition("=")[2]]
    if changed:
        raise ValueError(
            f"resume: {changed} would change the run's config groups ({choices or 'not recorded'}); a resumed run "
            f"keeps its own (see {run / 'config.yaml'}): override single keys (trainer.max_epochs=...) or start a "
            "new run"
        )
    if any(o.startswith("~") for o in overrides):
        raise ValueError(f"resume: deleting keys ({[o for o in overrides if o.startswith('~')]}) is not supported")
    keys = [o.lstrip("+") for o in overrides if not o.startswith("hydra.") and o not in groups]
    resumed = apply_overrides(saved, keys, source=f"the resumed run's config ({run})")
    if unresolved.is_file() and keys:  # the run's record now includes them: a later resume keeps them
        atomic_write_text(unresolved, OmegaConf.to_yaml(resumed))
    with open_dict(resumed):
        resumed.paths.output_dir = str(run)  # the saved one may be unresolved or, if the run moved, stale
        resumed.ckpt_path = str(checkpoint)
        resumed.resume = None
    log.info("resuming %s from %s with overrides %s", run, checkpoint, keys)
    return resumed


def run_choices(run: Path) -> dict[str, str]:
    """The config group choices the run was started with (from its first `.hydra/hydra.yaml`; empty if absent)."""
    record = run / ".hydra" / "hydra.yaml"
    if not record.is_file():
        return {}
    choices = OmegaConf.load(record).hydra.runtime.choices
    return {k: str(v) for k, v in choices.items() if k in GROUPS}


def invocation_overrides() -> Sequence[str]:
    """This invocation's command-line overrides (none outside a Hydra run)."""
    if not HydraConfig.initialized():
        return []
    return list(HydraConfig.get().overrides.task)


def rng_states() -> dict[str, Any]:
    """The states of every random generator a training step draws from, as tensors and plain values (checkpoints
    stay loadable with ``weights_only=True``)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    states: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    """Restore what `rng_states` returned (CUDA states only where CUDA is present)."""
    random.setstate(tuple(v if not isinstance(v, list) else tuple(v) for v in states["python"]))
    numpy = states["numpy"]
    keys = numpy["keys"].numpy().astype(np.uint32)
    np.random.set_state((numpy["kind"], keys, numpy["pos"], numpy["has_gauss"], numpy["cached_gaussian"]))
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


class RNGState(Callback):
    """Saves the random generators' states in each checkpoint and restores them when training resumes.

    Restored as the checkpoint is loaded. The uninterrupted run saved at the end of an epoch, and its next draw
    is the next epoch's loader iterator (sampler order, worker seeds); the resumed run's next draw is the same
    iterator, created when fitting starts (Lightning runs the sanity check in between with the RNG isolated).
    """

    def state_dict(self) -> dict[str, Any]:
        return rng_states()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        set_rng_states(state_dict)
