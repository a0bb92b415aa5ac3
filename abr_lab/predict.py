"""Predictions of a trained model on your own files: `python predict.py ckpt_path=<checkpoint> input=<file|folder>
[out=<file>] [key=value ...]`, or the console script `abr-predict`.

The model and its data rules are rebuilt from the checkpoint alone (`abr_lab.checkpoint`). The family is the
subpackage of the checkpoint's LightningModule (``model._target_``); that subpackage's ``predict`` module reads and
validates the input, runs the model in batches under `torch.inference_mode` and writes the output atomically:

- ``optimized_unet``: an ABR HDF5 file (`schema`) or a clinical CSV / Excel export (`importer`) -> CSV, one row per
  recording: class and its probabilities, threshold, presence, latency and amplitude of waves I, III and V;
- ``rawnet2``: a folder of WAV / FLAC files (or one file) -> CSV, one row per file: bona fide score and probability;
- ``puzzle_cnn``: a piece image or a folder of pieces, plus ``puzzle=<image>`` -> JSON: each piece's box
  (normalised and in the puzzle image's pixels) and rotation;
- ``lstm_extractor``: a CSV with one numeric (or a ``mixture``) column, or a 1-D .npy -> CSV: time, the mixture and
  the extracted signal of each frequency.

Arguments without a dot are predict's own: `COMMON_OPTIONS` and the family's ``OPTIONS``; any other is refused with
the list of those accepted. Dotted ones (``data.rows=4``) override the config stored in the checkpoint, where the
families read their data rules (clip length, puzzle size and grid); ``model.*`` ones reach the module's
hyperparameters (the weights are always the checkpoint's). By default the output goes beside the input as
``<input stem>.predictions.<csv|json>``; it never replaces the input.

A family's ``predict`` module provides ``OPTIONS`` (name -> `Option`), ``SUFFIX`` (the output's file suffix),
``BATCH_SIZE`` (its default) and ``run(trained, input, out, *, batch_size, device, **options) -> Path``.
"""

from __future__ import annotations

import csv
import importlib
import io
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import lightning as L
import torch
from omegaconf import DictConfig

from abr_lab.atomic import atomic_write_text
from abr_lab.checkpoint import checkpoint_config, load_module, module_class
from abr_lab.data import DataFileError

FAMILIES: tuple[str, ...] = ("optimized_unet", "rawnet2", "puzzle_cnn", "lstm_extractor")
COMMON_OPTIONS: dict[str, str] = {
    "ckpt_path": "the checkpoint (required)",
    "input": "the file or folder to predict on (required)",
    "out": "the output file (default: <input stem>.predictions.<csv|json> beside the input)",
    "batch_size": "examples per forward pass (default: the family's)",
    "device": "cpu (default), cuda or cuda:<index>",
}
USAGE = (
    "usage: python predict.py ckpt_path=<checkpoint> input=<file|folder> [out=<file>] [batch_size=<n>] "
    "[device=cpu|cuda] [<family option>=<value> ...] [<config.key>=<value> ...]"
)


@dataclass(frozen=True)
class Option:
    """A family's own ``key=value`` argument: `parse` turns the command line's string (or a Python value given to
    `predict`) into what the family's ``run`` receives; `help` is one line for the usage message."""

    parse: Callable[[Any], Any]
    help: str


@dataclass(frozen=True)
class Trained:
    """A checkpoint rebuilt for prediction: its path, its config (overrides applied), its LightningModule (eval
    mode, on the requested device)."""

    ckpt_path: Path
    cfg: DictConfig
    module: L.LightningModule


# ------------------------------------------------------------------------------------------------ shared helpers


def write_csv(path: Path, header: Sequence[str], rows: Iterable[Sequence[object]]) -> Path:
    """Write a CSV (header, then rows) to `path` atomically: a failure never leaves a partial file."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())
    return path


def number(value: float, digits: int = 7) -> str:
    """A float as CSV text with `digits` significant digits (7: all a float32 holds)."""
    return format(float(value), f".{digits}g")


def batches(n: int, size: int) -> Iterator[slice]:
    """Slices of ``range(n)`` of at most `size` items."""
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


def resolve_device(device: str | torch.device) -> torch.device:
    """The torch device named by `device`; a CUDA device on a machine without one is an error, not a fallback."""
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"device={device!r}: not a device (use cpu, cuda or cuda:<index>)") from err
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r}: CUDA is not available on this machine (use device=cpu)")
    if resolved.type not in ("cpu", "cuda"):
        raise ValueError(f"device={device!r}: use cpu, cuda or cuda:<index>")
    return resolved


# ---------------------------------------------------------------------------------------------------- dispatch


def family_of(cfg: DictConfig) -> tuple[str, ModuleType]:
    """The family's name and its ``predict`` module, from the subpackage of the config's ``model._target_``."""
    cls = module_class(cfg)
    parts = cls.__module__.split(".")
    family = parts[1] if len(parts) > 1 and parts[0] == "abr_lab" else cls.__module__
    if family not in FAMILIES:
        raise ValueError(
            f"model._target_={cfg.model._target_!r}: no predictor for this model (families: {', '.join(FAMILIES)})"
        )
    return family, importlib.import_module(f"abr_lab.{family}.predict")


def accepted_options(family: ModuleType) -> dict[str, str]:
    """Every plain option a family accepts, with its help line."""
    return {**COMMON_OPTIONS, **{name: option.help for name, option in family.OPTIONS.items()}}


def parse_options(family_name: str, family: ModuleType, options: dict[str, Any]) -> dict[str, Any]:
    """The family's options parsed by their `Option`; an unknown one is an error listing those accepted."""
    unknown = sorted(set(options) - set(family.OPTIONS))
    if unknown:
        listed = ", ".join(accepted_options(family))
        raise ValueError(
            f"unknown option {unknown[0]!r} for the {family_name} family; accepted: {listed} "
            "(a dotted key such as data.batch_size=8 overrides the checkpoint's config)"
        )
    parsed = {}
    for name, value in options.items():
        try:
            parsed[name] = family.OPTIONS[name].parse(value)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{name}={value!r}: {err}") from err
    return parsed


def output_path(input: Path, out: str | Path | None, suffix: str) -> Path:
    """Where the predictions go: `out`, or ``<input stem>.predictions<suffix>`` beside the input; never the input."""
    input = input.resolve()
    stem = input.stem if input.is_file() else input.name
    path = Path(out) if out is not None else input.with_name(f"{stem}.predictions{suffix}")
    if path.resolve() == input:
        raise ValueError(f"out={str(path)!r} is the input itself: choose another output file")
    if path.is_dir():
        raise ValueError(f"out={str(path)!r} is a folder: give a file name (e.g. {path / ('predictions' + suffix)})")
    return path


def parse_count(name: str, value: Any, default: int | None = None) -> int:
    """`value` (an int or its text) as a whole number >= 1 (a batch size, a count); `default` when None. Errors
    name the argument: ``name=value``."""
    if value is None and default is not None:
        return default
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name}={value!r}: need a whole number >= 1")
    return value


def predict(
    ckpt_path: str | Path,
    input: str | Path,
    out: str | Path | None = None,
    *,
    overrides: Sequence[str] = (),
    batch_size: int | str | None = None,
    device: str | torch.device = "cpu",
    **options: Any,
) -> Path:
    """Run the checkpoint's model on `input` and write its predictions; returns the output file.

    Args:
        ckpt_path: a checkpoint written by train.py (it carries its config).
        input: the file or folder to predict on (what each family accepts: see the module docstring).
        out: the output file; default ``<input stem>.predictions.<csv|json>`` beside the input.
        overrides: ``key=value`` overrides of the stored config (``data.rows=4``).
        batch_size: examples per forward pass; default the family's ``BATCH_SIZE``.
        device: ``cpu``, ``cuda`` or ``cuda:<index>``.
        **options: the family's own options (``puzzle=``, ``freq=``, ``export_fs_hz=``, ...).

    Raises:
        ValueError: an unknown option or override, a bad value, an input in the wrong format (the family's
            errors name the file and what is wrong; the U-Net's are `DataFileError`).
        FileNotFoundError: the checkpoint or the input does not exist.
    """
    cfg = checkpoint_config(ckpt_path, overrides)
    family_name, family = family_of(cfg)
    parsed = parse_options(family_name, family, options)
    size = parse_count("batch_size", batch_size, family.BATCH_SIZE)
    input = Path(input)
    if not input.exists():
        raise FileNotFoundError(f"input={str(input)!r}: no such file or folder")
    out_path = output_path(input, out, family.SUFFIX)
    resolved = resolve_device(device)
    module = load_module(ckpt_path, cfg).to(resolved)
    trained = Trained(Path(ckpt_path), cfg, module)
    return family.run(trained, input, out_path, batch_size=size, device=resolved, **parsed)


# ------------------------------------------------------------------------------------------------ command line


def parse_arguments(argv: Sequence[str]) -> tuple[dict[str, str], list[str]]:
    """Split ``key=value`` arguments into predict's own (no dot in the key) and config overrides (dotted)."""
    own: dict[str, str] = {}
    overrides: list[str] = []
    for arg in argv:
        key, sep, value = arg.partition("=")
        if not sep or not key:
            raise SystemExit(f"argument {arg!r}: expected key=value\n{USAGE}")
        if "." in key:
            overrides.append(arg)
        elif key in own:
            raise SystemExit(f"argument {key!r} is given twice\n{USAGE}")
        elif key == "overrides":
            raise SystemExit(f"overrides: give each config override as a dotted key=value (data.rows=4)\n{USAGE}")
        else:
            own[key] = value
    missing = [key for key in ("ckpt_path", "input") if key not in own]
    if missing:
        raise SystemExit(f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} required\n{USAGE}")
    return own, overrides


def help_text() -> str:
    """The usage line, the common options and every family's own."""
    lines = [USAGE, "", "options:"]
    lines += [f"  {name:16s} {text}" for name, text in COMMON_OPTIONS.items()]
    for family in FAMILIES:
        module = importlib.import_module(f"abr_lab.{family}.predict")
        lines.append(f"{family} (output {module.SUFFIX}):")
        lines += [f"  {name:16s} {option.help}" for name, option in module.OPTIONS.items()] or ["  (no own options)"]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if any(arg in ("-h", "--help", "help") for arg in args):
        print(help_text())
        return
    own, overrides = parse_arguments(args)
    try:
        out = predict(own.pop("ckpt_path"), own.pop("input"), overrides=overrides, **own)
    except (ValueError, FileNotFoundError, DataFileError) as err:
        raise SystemExit(f"predict.py: error: {err}") from err
    print(f"predictions written to {out}")


if __name__ == "__main__":
    main()
