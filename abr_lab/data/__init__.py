"""Data plumbing shared by every family: generated HDF5 datasets, written atomically and validated on read."""

from abr_lab.data.hdf5 import (
    DataFileError,
    atomic_h5_file,
    ensure_generated,
    params_hash,
    read_arrays,
)

__all__ = ["DataFileError", "atomic_h5_file", "ensure_generated", "params_hash", "read_arrays"]
