"""Generated HDF5 datasets: parameter hashing, atomic writes, validated reads.

A generator's parameters are stored as file attributes together with their hash. A file is regenerated only when
it does not exist; an existing file whose hash, keys or shapes do not match is never overwritten: the user gets an
error that names the file and the key, because that file may hold data someone cares about.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from abr_lab.atomic import atomic_path

PARAMS_ATTR = "generator_params"
HASH_ATTR = "generator_hash"


class DataFileError(RuntimeError):
    """A data file is unreadable, incomplete, or was made with other parameters."""


def params_hash(params: Mapping[str, Any]) -> str:
    """Stable short hash of JSON-serialisable generator parameters (key order does not matter)."""
    blob = json.dumps(params, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


@contextmanager
def atomic_h5_file(path: str | Path) -> Iterator[h5py.File]:
    """An HDF5 file open for writing that appears under `path` only if the block succeeds."""
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        yield f


def read_arrays(path: str | Path, keys: Sequence[str]) -> dict[str, np.ndarray]:
    """Read whole datasets `keys` from `path`, raising `DataFileError` naming the file and key on any problem."""
    path = Path(path)
    try:
        f = h5py.File(path, "r")
    except OSError as err:
        raise DataFileError(f"{path}: not a readable HDF5 file ({err})") from err
    out = {}
    with f:
        for key in keys:
            if key not in f:
                raise DataFileError(f"{path}: missing dataset '{key}' (has: {sorted(f.keys())})")
            try:
                out[key] = f[key][()]
            except (OSError, KeyError) as err:
                raise DataFileError(f"{path}: dataset '{key}' cannot be read ({err})") from err
    return out


def ensure_generated(
    path: str | Path,
    params: Mapping[str, Any],
    write: Callable[[h5py.File], None],
    keys: Sequence[str],
) -> Path:
    """Make sure `path` holds the dataset that `params` describe, generating it atomically if it is absent.

    Args:
        path: final file location.
        params: JSON-serialisable generator parameters; stored with their hash.
        write: fills an open (temporary) HDF5 file with the datasets.
        keys: datasets the file must contain; checked after writing and on every later use.

    Raises:
        DataFileError: the file exists but is unreadable, lacks a key, or was generated with other parameters.
    """
    path = Path(path)
    expected = params_hash(params)
    if not path.exists():
        with atomic_h5_file(path) as f:
            f.attrs[PARAMS_ATTR] = json.dumps(params, sort_keys=True, default=str)
            f.attrs[HASH_ATTR] = expected
            write(f)
            missing = [k for k in keys if k not in f]
            if missing:
                raise DataFileError(f"{path}: generator did not write {missing}")
    _check(path, expected, keys)
    return path


def _check(path: Path, expected_hash: str, keys: Sequence[str]) -> None:
    try:
        f = h5py.File(path, "r")
    except OSError as err:
        raise DataFileError(
            f"{path}: not a readable HDF5 file ({err}); move or delete it to regenerate the dataset"
        ) from err
    with f:
        found = f.attrs.get(HASH_ATTR)
        if found is None:
            raise DataFileError(f"{path}: missing attribute '{HASH_ATTR}': not written by this generator")
        if found != expected_hash:
            raise DataFileError(
                f"{path}: attribute '{HASH_ATTR}' is {found}, expected {expected_hash}: "
                "the file was generated with other parameters"
            )
        for key in keys:
            if key not in f:
                raise DataFileError(f"{path}: missing dataset '{key}' (incomplete file; move or delete it)")
