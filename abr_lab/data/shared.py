"""Named values the training process sets and DataLoader workers read: how a curriculum reaches the data.

A dataset is copied into each DataLoader worker (forked or pickled), and persistent workers keep their copy for the
whole run, so a plain attribute changed in the main process never reaches them. `SharedValues` keeps its numbers in
a shared-memory tensor instead: every copy of the dataset, in every worker, reads the value set last.
"""

from __future__ import annotations

import math

import torch

from abr_lab.curriculum import Knob


class SharedValues:
    """A fixed set of named floats in shared memory.

    >>> live = SharedValues(noise_std=0.1)
    >>> live["noise_std"] = 0.3   # in the main process, e.g. at the start of an epoch
    >>> live["noise_std"]         # in any worker holding a copy
    0.3
    """

    def __init__(self, **values: float) -> None:
        self.names: tuple[str, ...] = tuple(values)
        self._values = torch.tensor([float(v) for v in values.values()], dtype=torch.float64).share_memory_()

    def _index(self, name: str) -> int:
        try:
            return self.names.index(name)
        except ValueError:
            raise KeyError(f"no shared value {name!r}; known: {', '.join(self.names)}") from None

    def __getitem__(self, name: str) -> float:
        return float(self._values[self._index(name)])

    def __setitem__(self, name: str, value: float) -> None:
        if not math.isfinite(value):
            raise ValueError(f"shared value {name!r} must be finite, got {value}")
        self._values[self._index(name)] = float(value)

    def knob(self, name: str, low: float = -math.inf, high: float = math.inf) -> Knob:
        """A curriculum knob that reads and sets `name` (every worker's copy sees what it sets)."""
        self._index(name)  # fails now, naming the known values, rather than at the first epoch
        return Knob(lambda: self[name], lambda value: self.__setitem__(name, value), low, high)

    def as_dict(self) -> dict[str, float]:
        return {name: float(v) for name, v in zip(self.names, self._values.tolist(), strict=True)}

    def __repr__(self) -> str:
        return f"SharedValues({', '.join(f'{k}={v:g}' for k, v in self.as_dict().items())})"
