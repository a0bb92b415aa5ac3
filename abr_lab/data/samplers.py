"""Samplers shared by the DataModules."""

from __future__ import annotations

import torch.distributed as dist
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import Dataset, Sampler


def evaluation_sampler(dataset: Dataset) -> Sampler | None:
    """Under data parallelism, each process's share of a validation or test split, no example repeated; None on one
    process (the DataLoader then reads the split in order), or when the split has fewer examples than processes
    (every process needs one: Lightning's padding `DistributedSampler` takes over).

    Lightning's default `DistributedSampler` pads the split with repeats up to a multiple of the process count, so
    synced metrics would count a few examples twice and differ from one process's; with this sampler they match.
    """
    if not (dist.is_available() and dist.is_initialized() and 1 < dist.get_world_size() <= len(dataset)):
        return None
    return UnrepeatedDistributedSampler(dataset, shuffle=False)
