"""Hydra callback for multiruns: `summary.csv` in the sweep directory, one row per job.

Each row has the job's folder, its status, its overrides (one column per overridden key), the objective the sweep
optimised, and the job's final figures from its `metrics.json` (best monitored score, epochs, test metrics). The file
is rewritten atomically after every job and at the end of the sweep, from what the job folders hold, so it is
complete even when jobs run on other machines (submitit) or the sweep stops half-way.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import re
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from abr_lab.atomic import atomic_write_text

log = logging.getLogger(__name__)

SUMMARY_FILE = "summary.csv"
FIGURES = ("objective", "best_score", "epochs", "global_step")


def job_dirs(sweep_dir: Path) -> list[Path]:
    """Folders under `sweep_dir` that Hydra ran a job in (they hold `.hydra/overrides.yaml`), in job order."""
    dirs = [p.parent.parent for p in sweep_dir.rglob(".hydra/overrides.yaml")]

    def order(path: Path) -> list[tuple[int, int | str]]:  # natural order: "<time>_2" before "<time>_10"
        parts = re.split(r"(\d+)", str(path.relative_to(sweep_dir)))
        return [(0, int(p)) if p.isdigit() else (1, p) for p in parts]

    return sorted(dirs, key=order)


def job_row(sweep_dir: Path, job: Path) -> dict[str, Any]:
    """One job's row: folder, status, overrides and figures."""
    overrides = OmegaConf.to_container(OmegaConf.load(job / ".hydra" / "overrides.yaml")) or []
    row: dict[str, Any] = {"job": str(job.relative_to(sweep_dir))}
    for override in overrides:
        key, _, value = override.partition("=")
        row[key.lstrip("+~")] = value
    metrics_file = job / "metrics.json"
    if not metrics_file.is_file():
        row["status"] = "no metrics.json (failed or running)"
        return row
    try:
        metrics = json.loads(metrics_file.read_text())
    except json.JSONDecodeError as error:
        row["status"] = f"unreadable metrics.json ({error})"
        return row
    row["status"] = objective_status(metrics)
    for name in FIGURES:
        row[name] = metrics.get(name)
    row.update({k: v for k, v in sorted(metrics.get("test", {}).items())})
    return row


def objective_status(metrics: dict[str, Any]) -> str:
    """``ok``, or why the job has no objective (metrics.json stores NaN and infinity as null)."""
    name = metrics.get("optimized_metric")
    if not name or metrics.get("objective") is not None:
        return "ok"
    logged = name == metrics.get("monitor") or name in metrics.get("test", {}) or name in metrics.get("fit", {})
    return "objective not finite" if logged else f"{name} not logged"


def write_summary(sweep_dir: str | Path) -> Path:
    """Collect every job folder under `sweep_dir` into `summary.csv` (atomic rewrite); returns its path."""
    sweep_dir = Path(sweep_dir)
    rows = [job_row(sweep_dir, job) for job in job_dirs(sweep_dir)]
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    # job and status first, then overrides, then figures and test metrics, as they were met
    first = ["job", "status"]
    columns = first + [c for c in columns if c not in first]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, restval="")
    writer.writeheader()
    writer.writerows(rows)
    path = sweep_dir / SUMMARY_FILE
    atomic_write_text(path, buffer.getvalue())
    return path


class SweepSummary(Callback):
    """Keeps `summary.csv` of a multirun current (`conf/hydra/default.yaml` registers it)."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        # before the sweeper starts: an Optuna study stored in the sweep folder needs the folder
        Path(config.hydra.sweep.dir).mkdir(parents=True, exist_ok=True)

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if config.hydra.mode == RunMode.MULTIRUN:
            write_summary(config.hydra.sweep.dir)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        path = write_summary(config.hydra.sweep.dir)
        log.info("sweep summary: %s", path)
