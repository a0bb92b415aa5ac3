"""Model registry: every network variant is data (a class plus keyword arguments) registered under a name.

A LightningModule receives `arch` (a registered name) and `arch_kwargs` (overrides) and builds its network with
`create_model`, so a checkpoint's hyperparameters are plain values and `load_from_checkpoint` needs no Hydra.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import nn


@dataclass(frozen=True)
class Variant:
    name: str
    cls: type[nn.Module]
    kwargs: dict[str, Any] = field(default_factory=dict)
    family: str = ""


_REGISTRY: dict[str, Variant] = {}


def register_variant(name: str, cls: type[nn.Module], family: str, **kwargs: Any) -> None:
    """Register `cls(**kwargs)` under `name`. Names are unique across families."""
    if name in _REGISTRY:
        raise ValueError(f"model variant {name!r} is already registered")
    _REGISTRY[name] = Variant(name, cls, dict(kwargs), family)


def list_models(family: str | None = None) -> list[str]:
    """Registered variant names, optionally only those of one family."""
    return sorted(n for n, v in _REGISTRY.items() if family is None or v.family == family)


def create_model(name: str, **overrides: Any) -> nn.Module:
    """Build the variant `name`, with `overrides` replacing its registered keyword arguments."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown model variant {name!r}; registered: {list_models()}")
    variant = _REGISTRY[name]
    return variant.cls(**{**variant.kwargs, **overrides})


def compile_network(net: nn.Module) -> nn.Module:
    """Compile `net` in place with `torch.compile` (``model.compile=true``).

    `nn.Module.compile` wraps the module's call, not the module: its `state_dict` keeps its own key names (no
    ``_orig_mod.`` prefix), so checkpoints load into an uncompiled network.
    """
    net.compile()
    return net
