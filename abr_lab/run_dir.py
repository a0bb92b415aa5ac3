"""What a run leaves in its directory besides checkpoints and logs: the resolved config and `metrics.json`.

Both are written atomically (`abr_lab.atomic`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from abr_lab.atomic import atomic_write_text


def _plain(value: Any) -> Any:
    """Tensors and numpy scalars to floats; non-finite floats to None (JSON has no NaN)."""
    if hasattr(value, "item") and getattr(value, "ndim", 0) == 0:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


@rank_zero_only
def save_config(cfg: DictConfig, output_dir: str | Path) -> str:
    """Print the resolved config and save it as `config.yaml` in the run directory; returns the YAML."""
    text = OmegaConf.to_yaml(cfg, resolve=True)
    print(text)
    atomic_write_text(Path(output_dir) / "config.yaml", text)
    return text


@rank_zero_only
def write_metrics(output_dir: str | Path, metrics: Mapping[str, Any]) -> Path:
    """Write `metrics.json` (test metrics, best checkpoint, parameter count, ...) in the run directory."""
    path = Path(output_dir) / "metrics.json"
    payload = {
        k: ({mk: _plain(mv) for mk, mv in v.items()} if isinstance(v, Mapping) else _plain(v))
        for k, v in metrics.items()
    }
    atomic_write_text(path, json.dumps(payload, indent=2, sort_keys=True) + "\n")
    return path
