"""Training entry point: `python train.py model=<family> [overrides]`, or the console script `abr-train`.

Flow: (on `resume`, reload the run's config, `abr_lab.resume`); print and save the resolved config; seed; instantiate
the DataModule, the LightningModule, callbacks, loggers and the trainer from the config; fit; test the best
checkpoint; write `metrics.json`; return the value of `optimized_metric` so Hydra sweepers can optimise it.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from lightning.pytorch.callbacks import Callback, LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.loggers import Logger
from lightning.pytorch.strategies.launchers.subprocess_script import _SubprocessScriptLauncher
from omegaconf import DictConfig

from abr_lab.checkpoint import StoreRunConfig, read_checkpoint
from abr_lab.resume import RNGState, register_resolvers, resumed_config, wants_resume
from abr_lab.run_dir import save_config, write_metrics

log = logging.getLogger(__name__)
CONFIG_DIR = str(Path(__file__).resolve().parents[1] / "conf")
register_resolvers()  # ${resume_dir:...} in conf/hydra/default.yaml


class NonFiniteObjectiveError(RuntimeError):
    """The run's objective is NaN or infinite: a sweeper that optimises it records the trial as failed."""


def in_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def check_launcher(trainer: L.Trainer) -> None:
    """Refuse Lightning's subprocess DDP launcher inside a Hydra multirun.

    That launcher starts the other ranks by re-running the command line, `-m` and all: each rank would start a sweep
    of its own. Spawned processes (`trainer=ddp_sim`, `strategy=ddp_spawn`) and processes started by SLURM or torchrun
    (`trainer=multi_node`) are safe; so is one job per node through `hydra/launcher=submitit_slurm`.
    """
    strategy = trainer.strategy
    environment = getattr(strategy, "cluster_environment", None)
    relaunches = isinstance(getattr(strategy, "launcher", None), _SubprocessScriptLauncher) and not (
        environment is not None and environment.creates_processes_externally
    )
    if in_multirun() and relaunches:
        raise ValueError(
            "trainer.strategy=ddp starts its processes by re-running the command line, which inside a Hydra multirun "
            "(-m) starts a second sweep: use trainer=ddp_sim (CPU), trainer.strategy=ddp_spawn (GPU), or run each "
            "job under SLURM/torchrun (trainer=multi_node with hydra/launcher=submitit_slurm)"
        )


def instantiate_group(group: DictConfig | None) -> list[Any]:
    """Instantiate every entry with a `_target_` of a config group such as `callbacks` or `logger`."""
    if not group:
        return []
    return [hydra.utils.instantiate(entry) for entry in group.values() if entry and "_target_" in entry]


def best_checkpoint(trainer: L.Trainer) -> str | None:
    """Path of the best checkpoint the run saved, or None (no checkpoint callback, or fast_dev_run)."""
    callback = trainer.checkpoint_callback
    if isinstance(callback, ModelCheckpoint) and callback.best_model_path:
        return callback.best_model_path
    return None


def checkpoint_facts(path: str, monitor: str) -> dict[str, Any]:
    """Epochs completed, step and best monitored score recorded in a checkpoint.

    Read from the file rather than the trainer: with spawned processes (`trainer=ddp_sim`) the launching process's
    trainer does not see the workers' epoch counter or ModelCheckpoint scores.
    """
    ckpt = read_checkpoint(path)
    states = [
        v for k, v in ckpt.get("callbacks", {}).items() if k.startswith("ModelCheckpoint") and f"'{monitor}'" in k
    ]
    score = states[0].get("best_model_score") if states else None
    return {
        "epochs": ckpt["epoch"] + 1,
        "global_step": ckpt["global_step"],
        "best_score": None if score is None else float(score),
    }


def train(cfg: DictConfig) -> dict[str, Any]:
    """Run one training + test and return the run's summary (what `metrics.json` holds)."""
    if wants_resume(cfg.get("resume"), cfg.get("ckpt_path")):
        cfg = resumed_config(cfg)
    output_dir = Path(cfg.paths.output_dir)
    save_config(cfg, output_dir)
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)
    if torch.cuda.is_available():
        torch.set_float32_matmul_precision("high")

    log.info("data: %s", cfg.data._target_)
    # _convert_="all": plain lists and dicts reach the constructors, so hyperparameters saved in checkpoints
    # are plain values that load without Hydra or OmegaConf
    datamodule: L.LightningDataModule = hydra.utils.instantiate(cfg.data, _convert_="all")
    log.info("model: %s", cfg.model._target_)
    model: L.LightningModule = hydra.utils.instantiate(cfg.model, _convert_="all")
    callbacks: list[Callback] = instantiate_group(cfg.get("callbacks"))
    if cfg.get("curriculum"):  # curriculum=none is empty
        callbacks.append(hydra.utils.instantiate(cfg.curriculum, _convert_="all"))
    callbacks += [StoreRunConfig(cfg), RNGState()]  # what evaluate.py, predict.py and a resume rely on
    loggers: list[Logger] = instantiate_group(cfg.get("logger"))
    if not loggers:  # Lightning refuses a LearningRateMonitor without a logger; with logger=none there is none
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    trainer: L.Trainer = hydra.utils.instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    check_launcher(trainer)

    trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    fit_metrics = {k: v for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
    best = best_checkpoint(trainer)
    if best is None:
        log.warning("no best checkpoint (checkpointing off or fast_dev_run): testing the final weights")
    test_results = trainer.test(model, datamodule=datamodule, ckpt_path=best)

    summary = {
        "test": test_results[0] if test_results else {},
        "best_checkpoint": best,
        "monitor": cfg.monitor.metric,
        "num_parameters": sum(p.numel() for p in model.parameters()),
        **progress_facts(trainer, cfg.monitor.metric),
        "fit": fit_metrics,
    }
    summary["optimized_metric"] = cfg.get("optimized_metric")
    summary["objective"] = objective(cfg, summary)
    write_metrics(output_dir, summary)  # rank zero only
    return summary


def progress_facts(trainer: L.Trainer, monitor: str) -> dict[str, Any]:
    """Epochs completed, global step and best monitored score of the finished fit."""
    callback = trainer.checkpoint_callback  # the first ModelCheckpoint: the one on the monitored metric
    if isinstance(callback, ModelCheckpoint) and callback.dirpath and Path(callback.dirpath, "last.ckpt").is_file():
        return checkpoint_facts(str(Path(callback.dirpath, "last.ckpt")), monitor)  # holds the final best score
    score = callback.best_model_score if isinstance(callback, ModelCheckpoint) else None
    return {"epochs": trainer.current_epoch, "global_step": trainer.global_step, "best_score": score}


def objective(cfg: DictConfig, summary: dict[str, Any]) -> float | None:
    """The value a sweep optimises: the best checkpoint's score when `optimized_metric` is the monitored metric
    (not the last epoch's), else the named test or validation metric."""
    name = cfg.get("optimized_metric")
    if not name:
        return None
    if name == summary["monitor"] and summary["best_score"] is not None:
        return float(summary["best_score"])
    for source in (summary["test"], summary["fit"]):
        if name in source:
            return float(source[name])
    log.warning("optimized_metric=%s was not logged (test metrics: %s): no objective", name, sorted(summary["test"]))
    return None


def sweep_value(value: float | None) -> float | None:
    """The value returned to Hydra. A sweeper that optimises it (Optuna: any but the basic one) gets an exception
    for NaN, infinity or no value, which it records as a failed trial and goes on (Optuna 2.x handed a NaN ends
    the whole sweep)."""
    if (value is not None and math.isfinite(value)) or not in_multirun():
        return value
    if HydraConfig.get().sweeper._target_ == "hydra._internal.core_plugins.basic_sweeper.BasicSweeper":
        return value
    raise NonFiniteObjectiveError(f"the objective is {value} (see metrics.json and the log): this trial failed")


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def main(cfg: DictConfig) -> float | None:
    return sweep_value(train(cfg)["objective"])


if __name__ == "__main__":
    main()
