"""DataLoader workers: a count, or ``auto`` (none on a CPU, the machine's spare cores when a GPU trains).

On a CPU the training process renders a batch as fast as a worker would, and a worker would take a core from the
model's step: 0. On a GPU a step takes milliseconds, and one process rendering puzzles or cutting clips keeps the
device waiting (the H100 benchmark: data / model 1.1 to 1.3 with no worker): ``auto`` then gives each training
process its share of the cores it may run on, less its own, at most `MAX_AUTO_WORKERS`.
"""

from __future__ import annotations

import os

import lightning as L
from lightning.pytorch.accelerators import CPUAccelerator

AUTO = "auto"
MAX_AUTO_WORKERS = 8  # past this, more workers add start-up time and memory, not throughput, for these datasets


def check_workers(num_workers: int | str) -> int | str:
    """`num_workers` as given when it is a count >= 0 or ``auto``; a clear error naming the option otherwise."""
    if num_workers == AUTO or (isinstance(num_workers, int) and not isinstance(num_workers, bool) and num_workers >= 0):
        return num_workers
    raise ValueError(f"num_workers={num_workers!r}: expected a count >= 0 or '{AUTO}'")


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity where the platform has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def loader_workers(num_workers: int | str, trainer: L.Trainer | None) -> int:
    """The worker count for a DataLoader: `num_workers` when it is a count; for ``auto``, 0 without a trainer or on
    a CPU, else the usable cores over the trainer's devices on this machine, less one, within [0, 8]."""
    if check_workers(num_workers) != AUTO:
        return int(num_workers)
    if trainer is None or isinstance(trainer.accelerator, CPUAccelerator):
        return 0
    share = usable_cores() // max(1, trainer.num_devices)
    return max(0, min(MAX_AUTO_WORKERS, share - 1))
