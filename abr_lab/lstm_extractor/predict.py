"""Extraction with a trained LSTM extractor: one mixture signal -> the sinusoid of each requested frequency.

Input: a CSV with one numeric column (a header is optional) or with a column named ``mixture`` among others (e.g.
``time,mixture``), or a ``.npy`` file holding a 1-D array. The samples are taken at the model's sampling rate
(``model.fs``: the time column of a CSV is not read). Every value must be a finite number.

Output: a CSV with ``time_s``, ``mixture`` and ``extracted_<f>hz`` for each requested frequency (``freq=``; default
every frequency of the model). Each frequency is extracted in one pass over the whole signal from zero state, as
validation and test evaluate: the first second or so (``model.settle_s``) is where a causal extractor is still
finding the amplitude and phase.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import ListConfig
from torch import nn

from abr_lab.predict import Option, Trained, batches, number, write_csv

SUFFIX = ".csv"
BATCH_SIZE = 8  # frequencies per forward pass
CSV_SUFFIXES = (".csv", ".txt")
MIXTURE_COLUMN = "mixture"


def parse_freqs(value: Any) -> list[float]:
    """``3``, ``"3"``, ``"[1, 3]"``, ``"1,3"`` or a list -> frequencies in Hz."""
    if isinstance(value, str):
        items: Sequence[Any] = [v for v in value.strip().strip("[]").split(",") if v.strip()]
    elif isinstance(value, (list, tuple, ListConfig)):
        items = list(value)
    else:
        items = [value]
    try:
        freqs = [float(v) for v in items]
    except (TypeError, ValueError) as err:
        raise ValueError("expected a frequency in Hz or a list of them ([1,3])") from err
    if not freqs:
        raise ValueError("no frequency given")
    return freqs


OPTIONS: dict[str, Option] = {
    "freq": Option(parse_freqs, "frequency in Hz to extract, or a list [1,3] (default: every frequency of the model)"),
}


# ------------------------------------------------------------------------------------------------------ reading


def read_mixture(path: str | Path) -> np.ndarray:
    """The mixture signal of a CSV or .npy file, (t,) float64, validated (see the module docstring).

    Raises:
        ValueError: naming the file and what is wrong (type, columns, a non-number or non-finite value, shape).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if path.is_dir():
        raise ValueError(f"{path}: a folder; expected a CSV ({', '.join(CSV_SUFFIXES)}) or .npy file")
    if suffix == ".npy":
        signal = _read_npy(path)
    elif suffix in CSV_SUFFIXES:
        signal = _read_csv(path)
    else:
        raise ValueError(
            f"{path}: unsupported file type {path.suffix or '(none)'!r}; expected a CSV ({', '.join(CSV_SUFFIXES)}) "
            f"with one numeric column or a {MIXTURE_COLUMN!r} column, or a .npy file holding a 1-D array"
        )
    if signal.size < 2:
        raise ValueError(f"{path}: {signal.size} sample(s); need at least 2")
    return signal


def _read_npy(path: Path) -> np.ndarray:
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: not a readable .npy array ({err})") from err
    if not isinstance(array, np.ndarray) or array.ndim != 1:
        raise ValueError(f"{path}: holds an array of shape {np.shape(array)}; expected a 1-D array (samples,)")
    if not (np.issubdtype(array.dtype, np.number) and not np.issubdtype(array.dtype, np.complexfloating)):
        raise ValueError(f"{path}: holds {array.dtype} values; expected real numbers")
    bad = np.flatnonzero(~np.isfinite(array))
    if bad.size:
        raise ValueError(f"{path}: sample {bad[0]} is {array[bad[0]]}; every sample must be a finite number")
    return array.astype(np.float64)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _read_csv(path: Path) -> np.ndarray:
    """One column of a CSV: the only one, or the one headed ``mixture``; line numbers in errors count the header."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            lines = [(n, row) for n, row in enumerate(csv.reader(f), start=1) if any(c.strip() for c in row)]
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise ValueError(f"{path}: not a readable CSV file ({err})") from err
    if not lines:
        raise ValueError(f"{path}: the file is empty")
    first = [c.strip() for c in lines[0][1]]
    has_header = not all(_is_number(c) for c in first)
    names = first if has_header else [f"column {j + 1}" for j in range(len(first))]
    if len(names) == 1:
        column = 0
    elif has_header and MIXTURE_COLUMN in [n.lower() for n in names]:
        column = [n.lower() for n in names].index(MIXTURE_COLUMN)
    else:
        raise ValueError(
            f"{path}: {len(names)} columns ({', '.join(names)}); give one numeric column, or name the signal's "
            f"column {MIXTURE_COLUMN!r}"
        )
    values = []
    for n, row in lines[1:] if has_header else lines:
        cell = row[column].strip() if column < len(row) else ""
        try:
            value = float(cell)
        except ValueError:
            raise ValueError(f"{path}: line {n}, column {names[column]!r}: {cell!r} is not a number") from None
        if not math.isfinite(value):
            raise ValueError(f"{path}: line {n}, column {names[column]!r}: {cell!r} is not a finite number")
        values.append(value)
    return np.asarray(values, dtype=np.float64)


# ---------------------------------------------------------------------------------------------------- inference


def frequency_indices(model_freqs: Sequence[float], wanted: Sequence[float] | None) -> list[int]:
    """Indices into the model's frequencies of the wanted ones (all when None); another frequency is an error."""
    if wanted is None:
        return list(range(len(model_freqs)))
    indices = []
    for f in wanted:
        match = [k for k, g in enumerate(model_freqs) if math.isclose(f, g, rel_tol=1e-9, abs_tol=1e-9)]
        if not match:
            known = ", ".join(f"{g:g}" for g in model_freqs)
            raise ValueError(f"freq={f:g}: the model extracts only {known} Hz")
        indices.append(match[0])
    return indices


def extract(
    module: nn.Module, mixture: np.ndarray, indices: Sequence[int], batch_size: int, device: torch.device
) -> np.ndarray:
    """(t,) mixture -> (len(indices), t): the module's `predict_step` (one pass from zero state) per frequency."""
    num_freqs = len(module.hparams.freqs)
    x = torch.as_tensor(mixture, dtype=torch.float32, device=device)  # (t,)
    one_hot = torch.eye(num_freqs, device=device)  # (k, k)
    outputs = []
    with torch.inference_mode():
        for rows in batches(len(indices), batch_size):
            chosen = list(indices[rows])
            batch = {"mixture": x.expand(len(chosen), -1), "condition": one_hot[chosen]}  # (b, t), (b, k)
            outputs.append(module.predict_step(batch, 0).float().cpu().numpy())  # (b, t)
    return np.concatenate(outputs)


def run(
    trained: Trained,
    input: Path,
    out: Path,
    *,
    batch_size: int,
    device: torch.device,
    freq: Sequence[float] | None = None,
) -> Path:
    """`abr_lab.predict`'s entry: read and check the mixture, extract the requested frequencies, write the CSV."""
    module = trained.module
    freqs, fs = [float(f) for f in module.hparams.freqs], float(module.hparams.fs)
    indices = frequency_indices(freqs, freq)
    mixture = read_mixture(input)
    extracted = extract(module, mixture, indices, batch_size, device)  # (k, t)
    header = ["time_s", MIXTURE_COLUMN, *(f"extracted_{freqs[k]:g}hz" for k in indices)]
    rows = (
        [number(i / fs, 10), number(mixture[i], 8), *(number(v) for v in extracted[:, i])] for i in range(mixture.size)
    )
    return write_csv(out, header, rows)
