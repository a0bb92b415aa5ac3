"""Generated-file plumbing: hashes, atomic writes, validated reads."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from abr_lab.data import DataFileError, atomic_h5_file, ensure_generated, params_hash, read_arrays


def test_params_hash_ignores_key_order_and_sees_values():
    assert params_hash({"a": 1, "b": [1, 2]}) == params_hash({"b": [1, 2], "a": 1})
    assert params_hash({"a": 1}) != params_hash({"a": 2})


def test_failed_write_leaves_nothing_behind(tmp_path):
    path = tmp_path / "x.h5"
    with pytest.raises(RuntimeError, match="boom"), atomic_h5_file(path) as f:
        f["a"] = np.zeros(3)
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_failed_write_keeps_the_previous_file(tmp_path):
    path = tmp_path / "x.h5"
    with atomic_h5_file(path) as f:
        f["a"] = np.ones(2)
    with pytest.raises(RuntimeError), atomic_h5_file(path) as f:
        f["a"] = np.zeros(5)
        raise RuntimeError
    np.testing.assert_array_equal(read_arrays(path, ["a"])["a"], np.ones(2))


def test_read_arrays_names_file_and_key(tmp_path):
    path = tmp_path / "x.h5"
    with h5py.File(path, "w") as f:
        f["a"] = np.arange(3)
    with pytest.raises(DataFileError, match=r"x\.h5: missing dataset 'b'"):
        read_arrays(path, ["a", "b"])
    bad = tmp_path / "bad.h5"
    bad.write_text("garbage")
    with pytest.raises(DataFileError, match=r"bad\.h5: not a readable HDF5 file"):
        read_arrays(bad, ["a"])


def test_ensure_generated_refuses_a_file_from_other_parameters(tmp_path):
    path = tmp_path / "d.h5"

    def write(f: h5py.File) -> None:
        f["a"] = np.zeros(2)

    ensure_generated(path, {"n": 1}, write, ["a"])
    with pytest.raises(DataFileError, match="generated with other parameters"):
        ensure_generated(path, {"n": 2}, write, ["a"])


def test_ensure_generated_checks_the_generator_wrote_every_key(tmp_path):
    with pytest.raises(DataFileError, match=r"did not write \['b'\]"):
        ensure_generated(tmp_path / "d.h5", {}, lambda f: f.create_dataset("a", data=[1]), ["a", "b"])
    assert not (tmp_path / "d.h5").exists()
