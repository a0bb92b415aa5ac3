"""What a run leaves in its directory besides checkpoints and logs: the resolved config and `metrics.json`.

Files are written to a temporary name and renamed, so a crash never leaves a half-written file.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write `text` to `path` through a temporary file in the same folder and an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, default_file_mode())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def default_file_mode() -> int:
    """0o666 minus the process umask: what `open(path, "w")` would have given (mkstemp gives 0o600)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


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
