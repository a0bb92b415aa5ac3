"""Host syncs: the ops in a training step that make the host wait for a GPU, counted on any device.

On a GPU the host queues kernels and runs ahead (it fetches and renders the next batch while the device still
computes this one). An op whose result the host needs (`.item()`, `float(t)`, `if t:`, a boolean-mask index, `nonzero`,
`unique`, ...) stops it until every queued kernel is done, and that overlap is lost. Which ops do so does not depend on
the device, so `HostSyncCounter` counts them in a CPU run too, by the line of our code (or Lightning's) that asked:
a test can hold a training step to none, and `scripts/benchmark.py` reports them per step beside the timings.

Counted (as `torch.cuda.set_sync_debug_mode` would warn on CUDA):
- ``read``: a tensor's values read by the host (`_local_scalar_dense`: `.item()`, `float()`, `bool()`, `int()`; and
  `.tolist()` and `.cpu()`, which reach no op on a CPU tensor and are caught as methods while the counter is entered);
- ``shape``: an op whose output shape depends on the values (`nonzero`, boolean-mask indexing, `masked_select`,
  `unique`, `bincount`, `repeat_interleave` without `output_size`) or a host answer (`equal`);
- ``host_data``: a tensor made from host data (`torch.tensor`, `as_tensor`, `from_numpy`): a blocking host-to-device
  copy (a sync) when it is made on, or moved to, the GPU; on the CPU it may stay there, so it is counted apart.
Not seen: `.to("cpu")` and `.numpy()` (which needs a CPU tensor: a GPU run reaches it through a counted `.cpu()`).
Not counted: the optimiser's own reads of its step count (a host tensor on a GPU too) and data loading (workers and
`Dataset.__getitem__` run on the host before the batch moves).
"""

from __future__ import annotations

import traceback
from collections import Counter
from collections.abc import Mapping
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

aten = torch.ops.aten

READS = frozenset({aten._local_scalar_dense.default})
SHAPE_FROM_VALUES = frozenset(
    {
        aten.nonzero.default,
        aten.masked_select.default,
        aten.equal.default,
        aten._unique2.default,
        aten.unique_dim.default,
        aten.unique_consecutive.default,
        aten.bincount.default,
    }
)
HOST_DATA = frozenset({aten.lift_fresh.default})
INDEXING = frozenset({aten.index.Tensor, aten.index_put.default, aten.index_put_.default})
KINDS = ("read", "shape", "host_data")
READ_METHODS = ("tolist", "cpu")  # `torch.Tensor` methods that read values to the host without an op on a CPU tensor

# data loading (a worker or `Dataset.__getitem__`, anywhere up the stack) and the optimiser's own code (innermost):
# host tensors on any device
_DATA_LOADING = "/torch/utils/data/"
_OPTIMISER = "/torch/optim/"


def sync_kind(func: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> str | None:
    """Which of `KINDS` the op is, or None when it lets the host run ahead."""
    if func in READS:
        return "read"
    if func in SHAPE_FROM_VALUES:
        return "shape"
    if func is aten.repeat_interleave.Tensor:
        return "shape" if kwargs.get("output_size") is None else None
    if func in INDEXING:  # a boolean mask is turned into indices with `nonzero` inside the kernel
        masks = [i for i in args[1] if i is not None and i.dtype in (torch.bool, torch.uint8)]
        return "shape" if masks else None
    if func in HOST_DATA:
        return "host_data"
    return None


def caller() -> str | None:
    """`path:line function` of the innermost frame outside torch that asked for the op (paths from the package
    root); None when data loading or the optimiser asked (a training step run inside `optimizer.step(closure)` is
    ours: a frame of ours comes before the optimiser's)."""
    stack = traceback.extract_stack()
    if any(_DATA_LOADING in frame.filename.replace("\\", "/") for frame in stack):
        return None
    for frame in reversed(stack):
        path = frame.filename.replace("\\", "/")
        if _OPTIMISER in path:
            return None
        if "/torch/" in path or path.endswith("/abr_lab/host_sync.py"):
            continue
        return f"{package_path(path)}:{frame.lineno} {frame.name}"
    return None


def package_path(path: str) -> str:
    """`path` from its package's or the repository's root (`lightning/...`, `abr_lab/...`, `tests/...`), so that a
    report reads the same on every machine; unchanged when it lies in none."""
    path = path.replace("\\", "/")
    if "site-packages/" in path:
        return path[path.index("site-packages/") + len("site-packages/") :]
    for root in ("/abr_lab/", "/scripts/", "/tests/"):
        if root in path:
            return path[path.index(root) + 1 :]
    return path


class HostSyncCounter(TorchDispatchMode):
    """Counts host syncs by (kind, caller) while `active` (a mode entered once, switched on and off by callbacks
    around the steps to count). Adds Python work per op: never inside a timed run."""

    def __init__(self, active: bool = True) -> None:
        super().__init__()
        self.active = active
        self.counts: Counter[tuple[str, str]] = Counter()

    def __enter__(self) -> HostSyncCounter:
        self._methods = {name: torch.Tensor.__dict__.get(name) for name in READ_METHODS}  # None: inherited
        for name in READ_METHODS:
            setattr(torch.Tensor, name, self._counting(name, getattr(torch.Tensor, name)))
        return super().__enter__()

    def __exit__(self, *exc: object) -> None:
        for name, method in self._methods.items():
            if method is None:
                delattr(torch.Tensor, name)
            else:
                setattr(torch.Tensor, name, method)
        super().__exit__(*exc)

    def _counting(self, name: str, method: Any) -> Any:
        def counted(tensor: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
            where = caller() if self.active else None
            if where:
                self.counts["read", where] += 1
            return method(tensor, *args, **kwargs)

        counted.__name__ = name
        return counted

    def __torch_dispatch__(
        self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Mapping[str, Any] | None = None
    ) -> Any:
        kwargs = kwargs or {}
        if self.active:
            kind = sync_kind(func, args, kwargs)
            where = caller() if kind else None
            if kind and where:
                self.counts[kind, where] += 1
        return func(*args, **kwargs)

    def total(self, kind: str | None = None) -> int:
        """Syncs counted so far, of one kind or of all."""
        return sum(n for (k, _), n in self.counts.items() if kind is None or k == kind)

    def per_step(self, steps: int) -> dict[str, Any]:
        """Per-step figures for a report: each kind, and each caller (`kind caller`) with its syncs per step."""
        report: dict[str, Any] = {kind: self.total(kind) / steps for kind in KINDS}
        report["where"] = {f"{kind} {where}": n / steps for (kind, where), n in self.counts.most_common()}
        return report
