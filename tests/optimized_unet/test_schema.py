"""ABR files: a written file reads back unchanged; every malformed file is refused with the file, key and row."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest

from abr_lab.data import DataFileError
from abr_lab.optimized_unet.generator import SimulatorSpec, simulate
from abr_lab.optimized_unet.schema import ABRRecords, read_abr_file, write_abr_file


@pytest.fixture(scope="module")
def records() -> ABRRecords:
    return simulate(SimulatorSpec(num_patients=3, seed=1)).records


@pytest.fixture
def good_file(tmp_path: Path, records: ABRRecords) -> Path:
    return write_abr_file(tmp_path / "abr.h5", records, {"test": 1}, source="simulator")


def test_round_trip(good_file: Path, records: ABRRecords) -> None:
    back = read_abr_file(good_file)
    for key in ("signal", "clean", "static", "peaks", "peak_mask", "label", "threshold_db", "patient_id", "ear", "sex"):
        np.testing.assert_array_equal(getattr(back, key), getattr(records, key))
    assert (back.fs_hz, back.onset_ms) == (records.fs_hz, records.onset_ms)
    with h5py.File(good_file) as f:
        assert list(f["static"].attrs["names"]) == ["age", "intensity", "rate", "fmp"]
        assert f.attrs["source"] == "simulator" and "generator_hash" in f.attrs


def edit(path: Path, change: Callable[[h5py.File], None]) -> Path:
    with h5py.File(path, "r+") as f:
        change(f)
    return path


def replace(key: str, transform: Callable[[np.ndarray], np.ndarray]) -> Callable[[h5py.File], None]:
    def change(f: h5py.File) -> None:
        value = transform(f[key][()])
        attrs = dict(f[key].attrs)
        del f[key]
        f.create_dataset(key, data=value).attrs.update(attrs)

    return change


def set_row(row: int, column: int | None, value: float) -> Callable[[np.ndarray], np.ndarray]:
    def transform(a: np.ndarray) -> np.ndarray:
        a = a.copy()
        if column is None:
            a[row] = value
        else:
            a[row, column] = value
        return a

    return transform


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda f: f.__delitem__("peaks"), r"missing dataset\(s\) \['peaks'\]"),
        (lambda f: f["signal"].attrs.__delitem__("fs_hz"), "'signal' lacks attribute 'fs_hz'"),
        (replace("static", lambda a: a[:, :3]), r"'static' has shape \(\d+, 3\), expected \(\d+, 4\)"),
        (replace("signal", set_row(5, 7, np.nan)), "'signal' holds NaN or infinite values \\(first at row 5\\)"),
        (replace("label", set_row(4, None, 7)), "'label' row 4 is 7"),
        (replace("static", set_row(3, 1, 250.0)), r"static\[:, 1\] \(intensity\)' row 3 is 250"),
        (replace("threshold_db", set_row(2, None, np.inf)), "'threshold_db' holds NaN or infinite values"),
        (replace("ear", lambda a: np.array([b"X"] * len(a), dtype=object)), "'ear' row 0 is 'X'"),
        (lambda f: f["label"].attrs.__setitem__("names", ["a", "b"]), "'label' attribute 'names'"),
    ],
    ids=["missing-key", "missing-axis", "wrong-shape", "nan", "label-range", "level-range", "inf", "ear", "names"],
)
def test_malformed_files_are_refused(good_file: Path, change, message: str) -> None:
    edit(good_file, change)
    with pytest.raises(DataFileError, match=message) as err:
        read_abr_file(good_file)
    assert str(good_file) in str(err.value)


def test_a_present_peak_outside_the_time_axis_is_refused(good_file: Path, records: ABRRecords) -> None:
    row = int(np.flatnonzero(records.peak_mask[:, 2])[0])
    edit(good_file, replace("peaks", lambda a: (a.__setitem__((row, 2, 0), 40.0), a)[1]))
    with pytest.raises(DataFileError, match=rf"latency_ms\)' row {row}, column \(2,\) is 40"):
        read_abr_file(good_file)


def test_not_hdf5_and_missing_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.h5"
    bad.write_text("not hdf5")
    with pytest.raises(DataFileError, match="not a readable HDF5 file"):
        read_abr_file(bad)
    with pytest.raises(DataFileError, match="no such file"):
        read_abr_file(tmp_path / "absent.h5")


def test_invalid_records_never_reach_disk(tmp_path: Path, records: ABRRecords) -> None:
    target = tmp_path / "abr.h5"
    write_abr_file(target, records, {}, source="simulator")
    before = target.read_bytes()
    signal = records.signal.copy()
    signal[0, 0] = np.nan
    bad = dataclasses.replace(records, signal=signal)
    with pytest.raises(DataFileError, match="'signal' holds NaN"):
        write_abr_file(target, bad, {}, source="simulator")
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["abr.h5"]
