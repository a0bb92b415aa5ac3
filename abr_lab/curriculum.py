"""Curriculum: schedules that set named knobs (loss weights, the transformer gate, data difficulty) over training.

A LightningModule or LightningDataModule offers knobs through a `curriculum_knobs()` method returning
``{name: Knob}``; names are ``transformer_gate``, ``loss.<task>`` and ``data.<setting>`` by convention. The
`Curriculum` callback (the `curriculum` config group) holds one schedule per knob it drives and, before every
training epoch, sets each knob to its schedule's value at that epoch's position. Positions are epochs, or fractions
of ``trainer.max_epochs`` (epoch e starts at e / max_epochs), so one curriculum serves a 5-epoch test and a
200-epoch run. Values are logged as ``curriculum/<knob>`` and stored in checkpoints.

Schedule shapes, as in a config::

    transformer_gate: {shape: constant, value: 0.5}
    transformer_gate: {shape: linear, start: 0.15, end: 0.30, from: 0.0, to: 1.0}   # also shape: cosine
    data.noise_std:   {shape: step, at: [0.2, 0.5], values: [0.0, 0.05, 0.1]}

A ramp holds ``from`` before ``start`` and ``to`` after ``end``; a step takes ``values[i]`` from ``at[i - 1]`` on.
Knobs a curriculum does not name keep their configured values.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback

log = logging.getLogger(__name__)

UNITS = ("fraction", "epoch")
SHAPES = ("constant", "linear", "cosine", "step")


@dataclass(frozen=True)
class Knob:
    """A number a curriculum may set during training: how to read and write it and its valid range."""

    get: Callable[[], float]
    set: Callable[[float], None]
    low: float = -math.inf
    high: float = math.inf

    def check(self, name: str, value: float, where: str) -> None:
        if not (math.isfinite(value) and self.low <= value <= self.high):
            raise ValueError(f"{where}: {name} = {value!r} is outside its range [{self.low}, {self.high}]")


@dataclass(frozen=True)
class Constant:
    value: float

    def __call__(self, position: float) -> float:
        return self.value

    def values(self) -> tuple[float, ...]:
        return (self.value,)


@dataclass(frozen=True)
class Ramp:
    """From `initial` to `final` between positions `start` and `end`, linearly or along a half cosine."""

    start: float
    end: float
    initial: float
    final: float
    cosine: bool = False

    def __call__(self, position: float) -> float:
        if position <= self.start:
            return self.initial
        if position >= self.end:
            return self.final
        progress = (position - self.start) / (self.end - self.start)
        if self.cosine:
            progress = 0.5 * (1 - math.cos(math.pi * progress))
        return self.initial + (self.final - self.initial) * progress

    def values(self) -> tuple[float, ...]:
        return self.initial, self.final


@dataclass(frozen=True)
class Step:
    """`values[0]` before `at[0]`, then `values[i]` from `at[i - 1]` on (`at` increasing)."""

    at: tuple[float, ...]
    levels: tuple[float, ...]

    def __call__(self, position: float) -> float:
        return self.levels[sum(position >= a for a in self.at)]

    def values(self) -> tuple[float, ...]:
        return self.levels


Schedule = Constant | Ramp | Step
_KEYS = {
    "constant": {"shape", "value"},
    "linear": {"shape", "start", "end", "from", "to"},
    "cosine": {"shape", "start", "end", "from", "to"},
    "step": {"shape", "at", "values"},
}


def parse_schedule(name: str, cfg: Mapping[str, Any]) -> Schedule:
    """Build one knob's schedule from its config mapping; every mistake names the knob and the key."""
    where = f"curriculum.knobs.{name}"
    if not isinstance(cfg, Mapping) or "shape" not in cfg:
        raise ValueError(f"{where}: expected a mapping with a 'shape' ({', '.join(SHAPES)}), got {cfg!r}")
    shape = cfg["shape"]
    if shape not in SHAPES:
        raise ValueError(f"{where}.shape: unknown shape {shape!r}; known: {', '.join(SHAPES)}")
    keys = set(cfg)
    if keys != _KEYS[shape]:
        extra, missing = sorted(keys - _KEYS[shape]), sorted(_KEYS[shape] - keys)
        raise ValueError(f"{where}: shape {shape} takes {sorted(_KEYS[shape])}; unknown {extra}, missing {missing}")
    try:
        if shape == "constant":
            return Constant(float(cfg["value"]))
        if shape == "step":
            at, levels = tuple(float(a) for a in cfg["at"]), tuple(float(v) for v in cfg["values"])
            if len(levels) != len(at) + 1 or any(b <= a for a, b in zip(at, at[1:], strict=False)):
                raise ValueError(f"{where}: need increasing 'at' and len(values) = len(at) + 1, got {at}, {levels}")
            return Step(at, levels)
        start, end = float(cfg["start"]), float(cfg["end"])
    except (TypeError, ValueError) as err:
        if str(err).startswith(where):
            raise
        raise ValueError(f"{where}: {err}") from err
    if not 0 <= start < end:
        raise ValueError(f"{where}: need 0 <= start < end, got start={start}, end={end}")
    return Ramp(start, end, float(cfg["from"]), float(cfg["to"]), cosine=shape == "cosine")


def collect_knobs(*owners: object) -> dict[str, Knob]:
    """Every knob the given objects (a LightningModule, a DataModule) offer through `curriculum_knobs()`."""
    knobs: dict[str, Knob] = {}
    for owner in owners:
        offered = owner.curriculum_knobs() if hasattr(owner, "curriculum_knobs") else {}
        clash = sorted(set(knobs) & set(offered))
        if clash:
            raise ValueError(f"knob {clash[0]!r} is offered twice (by the module and by the data)")
        knobs.update(offered)
    return knobs


class Curriculum(Callback):
    """Sets knobs from their schedules before every training epoch (see the module docstring).

    Args:
        knobs: ``{knob name: schedule config}``.
        unit: ``fraction`` (positions are fractions of ``trainer.max_epochs``) or ``epoch``.
    """

    def __init__(self, knobs: Mapping[str, Mapping[str, Any]], unit: str = "fraction") -> None:
        if unit not in UNITS:
            raise ValueError(f"curriculum.unit: unknown unit {unit!r}; known: {', '.join(UNITS)}")
        if not knobs:
            raise ValueError("curriculum.knobs is empty: use curriculum=none for no curriculum")
        self.unit = unit
        self.schedules: dict[str, Schedule] = {name: parse_schedule(name, cfg) for name, cfg in knobs.items()}
        self.knobs: dict[str, Knob] = {}
        self.values: dict[str, float] = {}  # the values set last (restored from a checkpoint when resuming)
        self.epoch: int | None = None  # the epoch they were set for

    def position(self, trainer: L.Trainer, epoch: int) -> float:
        if self.unit == "epoch":
            return float(epoch)
        max_epochs = trainer.max_epochs
        if max_epochs is None or max_epochs < 1:
            raise ValueError(
                f"curriculum.unit=fraction needs trainer.max_epochs >= 1 (got {max_epochs}); set it or use unit=epoch"
            )
        return epoch / max_epochs

    def values_at(self, trainer: L.Trainer, epoch: int) -> dict[str, float]:
        """Every scheduled knob's value at the start of `epoch`."""
        position = self.position(trainer, epoch)
        return {name: schedule(position) for name, schedule in self.schedules.items()}

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        self.knobs = collect_knobs(pl_module, trainer.datamodule)
        unknown = sorted(set(self.schedules) - set(self.knobs))
        if unknown:
            raise ValueError(
                f"curriculum: unknown knob {unknown[0]!r} for {type(pl_module).__name__} and "
                f"{type(trainer.datamodule).__name__}; known: {', '.join(sorted(self.knobs)) or 'none'}"
            )
        for name, schedule in self.schedules.items():
            for value in schedule.values():
                self.knobs[name].check(name, value, f"curriculum.knobs.{name}")

    def apply(self, values: Mapping[str, float], epoch: int) -> None:
        for name, value in values.items():
            self.knobs[name].set(value)
        self.values, self.epoch = dict(values), epoch

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Before the sanity check. A resumed run has its checkpoint's values here (`load_state_dict`): the loops'
        # epoch counter is restored only later, in time for `on_train_start`.
        if self.epoch is not None and set(self.values) == set(self.schedules):
            self.apply(self.values, self.epoch)
        else:
            self.apply(self.values_at(trainer, trainer.current_epoch), trainer.current_epoch)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Before the first training iterator is created (its workers start prefetching at once). Lightning skips
        # `on_train_epoch_start` when it resumes in the middle of an epoch; this covers that case too.
        epoch = trainer.current_epoch
        if self.epoch is not None and self.epoch == epoch and self.values_at(trainer, epoch) != self.values:
            log.warning("curriculum: the schedule differs from the checkpoint's at epoch %d: using the new one", epoch)
        self.apply(self.values_at(trainer, epoch), epoch)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        epoch = trainer.current_epoch
        self.apply(self.values_at(trainer, epoch), epoch)
        for name, value in self.values.items():
            pl_module.log(f"curriculum/{name}", value, on_step=False, on_epoch=True)

    def state_dict(self) -> dict[str, Any]:
        return {"values": dict(self.values), "epoch": self.epoch}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.values, self.epoch = dict(state_dict.get("values", {})), state_dict.get("epoch")
