"""The ABR data schema: one HDF5 file per dataset, one row per recording, written by the simulator or the importer.

Every reader and writer of ABR files goes through `ABRRecords`: `write_records` / `write_abr_file` store it,
`read_abr_file` loads and validates it. Validation errors are `DataFileError`s that name the file, the key and the
first offending row, so a bad export is fixed at its source rather than discovered as a NaN loss.

Datasets (N recordings, T samples):

==============  ==========  =======  ==========================================================================
key             shape       dtype    meaning
==============  ==========  =======  ==========================================================================
signal          (N, T)      float32  averaged recording in µV; attributes ``fs_hz`` and ``onset_ms`` (time of
                                     sample 0 after the click)
static          (N, 4)      float32  raw age (years), intensity (dB nHL), stimulus rate (/s), Fmp; attributes
                                     ``names`` and ``units``
peaks           (N, 3, 2)   float32  waves I, III, V × (latency ms, amplitude µV); 0 where the wave is absent
peak_mask       (N, 3)      bool     which of waves I, III, V are present
label           (N,)        int64    0 NORMAL, 1 NEUROPATHY, 2 SENSORINEURAL, 3 TOTAL, 4 CONDUCTIVE (``names``)
threshold_db    (N,)        float32  the ear's hearing threshold, dB nHL
patient_id      (N,)        string   patient identifier (the unit of train/val/test splits)
ear             (N,)        string   ``L``, ``R`` or empty (unknown)
clean           (N, T)      float32  optional (simulated data): the noise-free waveform
sex             (N,)        string   optional: ``F``, ``M`` or empty
==============  ==========  =======  ==========================================================================

File attributes: ``schema_version``, ``source`` (``simulator`` or ``importer``), ``generator_params`` (JSON) and
``generator_hash``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from abr_lab.data import DataFileError, atomic_h5_file, params_hash
from abr_lab.data.hdf5 import HASH_ATTR, PARAMS_ATTR

SCHEMA_VERSION = 1
CLASS_NAMES: tuple[str, ...] = ("NORMAL", "NEUROPATHY", "SENSORINEURAL", "TOTAL", "CONDUCTIVE")
STATIC_NAMES: tuple[str, ...] = ("age", "intensity", "rate", "fmp")
STATIC_UNITS: tuple[str, ...] = ("years", "dB nHL", "1/s", "F ratio")
WAVES: tuple[str, ...] = ("I", "III", "V")
PEAK_FIELDS: tuple[str, ...] = ("latency_ms", "amplitude_uv")
EARS: tuple[str, ...] = ("L", "R", "")
SEXES: tuple[str, ...] = ("F", "M", "")
REQUIRED_KEYS: tuple[str, ...] = (
    "signal",
    "static",
    "peaks",
    "peak_mask",
    "label",
    "threshold_db",
    "patient_id",
    "ear",
)
OPTIONAL_KEYS: tuple[str, ...] = ("clean", "sex")
STRING_KEYS: tuple[str, ...] = ("patient_id", "ear", "sex")

# Plausible ranges (inclusive) of the raw static parameters and the threshold; outside them a row is an error.
STATIC_RANGES: dict[str, tuple[float, float]] = {
    "age": (0.0, 120.0),
    "intensity": (-20.0, 140.0),
    "rate": (1.0, 200.0),
    "fmp": (0.0, 1.0e6),
}
THRESHOLD_RANGE: tuple[float, float] = (-20.0, 150.0)


@dataclass(frozen=True)
class ABRRecords:
    """All recordings of one dataset, in raw physical units (see the module docstring for each field)."""

    signal: np.ndarray
    static: np.ndarray
    peaks: np.ndarray
    peak_mask: np.ndarray
    label: np.ndarray
    threshold_db: np.ndarray
    patient_id: np.ndarray
    ear: np.ndarray
    fs_hz: float
    onset_ms: float = 0.0
    clean: np.ndarray | None = None
    sex: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.signal.shape[0])

    @property
    def num_samples(self) -> int:
        return int(self.signal.shape[1])

    def time_ms(self) -> np.ndarray:
        """Time of each sample after the click, ms, shape (T,)."""
        return self.onset_ms + 1000.0 * np.arange(self.num_samples) / self.fs_hz

    def subset(self, index: np.ndarray) -> ABRRecords:
        """The recordings at `index` (an integer or boolean array)."""
        arrays = {f.name: getattr(self, f.name) for f in fields(self) if isinstance(getattr(self, f.name), np.ndarray)}
        return replace(self, **{k: v[index] for k, v in arrays.items()})

    def validate(self, source: str | Path) -> None:
        """Raise `DataFileError` naming `source`, the key and the first offending row if anything is malformed."""
        n = self.signal.shape[0] if self.signal.ndim >= 1 else 0
        if self.signal.ndim != 2 or n == 0 or self.signal.shape[1] < 2:
            raise DataFileError(f"{source}: 'signal' has shape {self.signal.shape}, expected (N, T) with N, T >= 1, 2")
        t = self.signal.shape[1]
        if not (np.isfinite(self.fs_hz) and self.fs_hz > 0 and np.isfinite(self.onset_ms)):
            raise DataFileError(f"{source}: 'signal' attributes fs_hz={self.fs_hz}, onset_ms={self.onset_ms} invalid")
        shapes = {
            "static": (n, len(STATIC_NAMES)),
            "peaks": (n, len(WAVES), len(PEAK_FIELDS)),
            "peak_mask": (n, len(WAVES)),
            "label": (n,),
            "threshold_db": (n,),
            "patient_id": (n,),
            "ear": (n,),
            "clean": (n, t),
            "sex": (n,),
        }
        for key, shape in shapes.items():
            value = getattr(self, key)
            if value is not None and value.shape != shape:
                raise DataFileError(f"{source}: '{key}' has shape {value.shape}, expected {shape}")
        for key in ("signal", "clean", "static", "threshold_db"):
            _check_finite(source, key, getattr(self, key))
        _check_finite(source, "peaks", np.where(self.peak_mask[..., None], self.peaks, 0.0))
        if self.peak_mask.dtype != np.bool_:
            raise DataFileError(f"{source}: 'peak_mask' has dtype {self.peak_mask.dtype}, expected bool")
        if not np.issubdtype(self.label.dtype, np.integer):
            raise DataFileError(f"{source}: 'label' has dtype {self.label.dtype}, expected integers")
        _check_range(source, "label", self.label, 0, len(CLASS_NAMES) - 1, f"a class index 0..{len(CLASS_NAMES) - 1}")
        for j, name in enumerate(STATIC_NAMES):
            lo, hi = STATIC_RANGES[name]
            _check_range(source, f"static[:, {j}] ({name})", self.static[:, j], lo, hi, f"within [{lo}, {hi}]")
        _check_range(source, "threshold_db", self.threshold_db, *THRESHOLD_RANGE, f"within {list(THRESHOLD_RANGE)}")
        end_ms = self.onset_ms + 1000.0 * t / self.fs_hz
        latency = np.where(self.peak_mask, self.peaks[..., 0], self.onset_ms)
        _check_range(source, "peaks[..., 0] (latency_ms)", latency, self.onset_ms, end_ms, "inside the time axis")
        for key, allowed in (("ear", EARS), ("sex", SEXES)):
            value = getattr(self, key)
            if value is not None:
                bad = np.flatnonzero(~np.isin(value, allowed))
                if bad.size:
                    raise DataFileError(
                        f"{source}: '{key}' row {bad[0]} is {value[bad[0]]!r}, expected one of {list(allowed)}"
                    )
        empty = np.flatnonzero(self.patient_id == "")
        if empty.size:
            raise DataFileError(f"{source}: 'patient_id' row {empty[0]} is empty")


def _check_finite(source: str | Path, key: str, value: np.ndarray | None) -> None:
    if value is None:
        return
    bad = ~np.isfinite(value)
    if bad.any():
        row = int(np.flatnonzero(bad.reshape(len(value), -1).any(axis=1))[0])
        raise DataFileError(f"{source}: '{key}' holds NaN or infinite values (first at row {row})")


def _check_range(source: str | Path, key: str, value: np.ndarray, lo: float, hi: float, expected: str) -> None:
    bad = (value < lo) | (value > hi)
    if bad.any():
        first = tuple(int(i[0]) for i in np.nonzero(bad))
        where = f"row {first[0]}" + (f", column {first[1:]}" if len(first) > 1 else "")
        raise DataFileError(f"{source}: '{key}' {where} is {value[first]}, expected {expected}")


def write_records(f: h5py.File, records: ABRRecords, source: str) -> None:
    """Write `records` into an open HDF5 file (validated first, so a bad record never reaches disk)."""
    records.validate(f"{f.filename} ({source})")
    t = records.num_samples
    chunks = (min(len(records), 256), t)
    sig = f.create_dataset("signal", data=records.signal.astype(np.float32), chunks=chunks)
    sig.attrs["fs_hz"], sig.attrs["onset_ms"], sig.attrs["units"] = float(records.fs_hz), float(records.onset_ms), "uV"
    static = f.create_dataset("static", data=records.static.astype(np.float32))
    static.attrs["names"], static.attrs["units"] = list(STATIC_NAMES), list(STATIC_UNITS)
    peaks = f.create_dataset("peaks", data=records.peaks.astype(np.float32))
    peaks.attrs["waves"], peaks.attrs["fields"] = list(WAVES), list(PEAK_FIELDS)
    f.create_dataset("peak_mask", data=records.peak_mask.astype(bool)).attrs["waves"] = list(WAVES)
    f.create_dataset("label", data=records.label.astype(np.int64)).attrs["names"] = list(CLASS_NAMES)
    f.create_dataset("threshold_db", data=records.threshold_db.astype(np.float32)).attrs["units"] = "dB nHL"
    for key in STRING_KEYS:
        value = getattr(records, key)
        if value is not None:
            f.create_dataset(key, data=value.astype(object), dtype=h5py.string_dtype())
    if records.clean is not None:
        clean = f.create_dataset("clean", data=records.clean.astype(np.float32), chunks=chunks)
        clean.attrs["units"] = "uV"
    f.attrs["schema_version"] = SCHEMA_VERSION
    f.attrs["source"] = source


def write_abr_file(path: str | Path, records: ABRRecords, params: dict[str, Any], source: str) -> Path:
    """Write `records` to `path` atomically, with `params` and their hash as file attributes."""
    path = Path(path)
    records.validate(path)  # before anything is written; errors name the final path, not the temporary one
    with atomic_h5_file(path) as f:
        f.attrs[PARAMS_ATTR] = json.dumps(params, sort_keys=True, default=str)
        f.attrs[HASH_ATTR] = params_hash(params)
        write_records(f, records, source)
    return path


def read_abr_file(path: str | Path) -> ABRRecords:
    """Load and validate an ABR file; any problem raises `DataFileError` naming the file, key and row."""
    path = Path(path)
    if not path.exists():
        raise DataFileError(f"{path}: no such file")
    try:
        f = h5py.File(path, "r")
    except OSError as err:
        raise DataFileError(f"{path}: not a readable HDF5 file ({err})") from err
    with f:
        missing = [key for key in REQUIRED_KEYS if key not in f]
        if missing:
            raise DataFileError(f"{path}: missing dataset(s) {missing} (has: {sorted(f.keys())})")
        version = f.attrs.get("schema_version")
        if version is None or int(version) > SCHEMA_VERSION:
            raise DataFileError(f"{path}: attribute 'schema_version' is {version}, this code reads <= {SCHEMA_VERSION}")
        sig = f["signal"]
        for attr in ("fs_hz", "onset_ms"):
            if attr not in sig.attrs:
                raise DataFileError(f"{path}: dataset 'signal' lacks attribute '{attr}' (the time axis)")
        _check_names(path, f, "static", "names", STATIC_NAMES)
        _check_names(path, f, "label", "names", CLASS_NAMES)
        _check_names(path, f, "peaks", "waves", WAVES)
        arrays: dict[str, Any] = {}
        for key in (*REQUIRED_KEYS, *OPTIONAL_KEYS):
            if key not in f:
                continue
            try:
                value = f[key][()]
            except (OSError, KeyError, TypeError) as err:
                raise DataFileError(f"{path}: dataset '{key}' cannot be read ({err})") from err
            if key in STRING_KEYS:
                value = np.array([v.decode() if isinstance(v, bytes) else str(v) for v in value], dtype=object)
            arrays[key] = value
        records = ABRRecords(**arrays, fs_hz=float(sig.attrs["fs_hz"]), onset_ms=float(sig.attrs["onset_ms"]))
    records.validate(path)
    return records


def _check_names(path: Path, f: h5py.File, key: str, attr: str, expected: tuple[str, ...]) -> None:
    found = f[key].attrs.get(attr)
    found = None if found is None else [v.decode() if isinstance(v, bytes) else str(v) for v in found]
    if found != list(expected):
        raise DataFileError(f"{path}: dataset '{key}' attribute '{attr}' is {found}, expected {list(expected)}")


def file_params(path: str | Path) -> dict[str, Any]:
    """The generator or importer parameters stored in an ABR file."""
    with h5py.File(path, "r") as f:
        return json.loads(f.attrs.get(PARAMS_ATTR, "{}"))
