"""Compose the training config outside a Hydra run (tests, scripts, notebooks) with the same groups and overrides."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from abr_lab.train import CONFIG_DIR


def compose_config(
    overrides: Sequence[str] = (), output_dir: str | Path | None = None, root_dir: str | Path | None = None
) -> DictConfig:
    """The config `python train.py <overrides>` would get, with `paths.*` made concrete.

    Args:
        overrides: command-line style overrides (``model=lstm_extractor``, ``trainer.max_epochs=2``).
        output_dir: the run directory (default: a folder under ``outputs/`` as a real run would not know it).
        root_dir: replaces the working directory as the root of ``data/``, ``outputs/`` and ``multirun/``.
    """
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name="train", overrides=list(overrides), return_hydra_config=True)
    root = Path(root_dir or Path.cwd()).resolve()
    with open_dict(cfg):
        cfg.paths.root_dir = str(root)
        cfg.paths.output_dir = str(Path(output_dir or root / "outputs" / "composed").resolve())
        cfg.hydra.runtime.output_dir = cfg.paths.output_dir
    HydraConfig.instance().set_config(cfg)  # `${hydra:...}` interpolations resolve as in a real run
    with open_dict(cfg):
        del cfg.hydra  # a real run's config has no `hydra` node either
    return cfg
