"""Optimized hierarchical U-Net family: multi-task learning on Auditory Brainstem Responses (ABR).

Data: `schema` (the HDF5 file format), `generator` (the physiological simulator), `importer` (clinical exports),
`datamodule` (patient-level splits, normalisation, augmentation), `figures` / `callbacks` (the waterfall plot),
`baselines` (gradient-boosted trees, a plain 1-D CNN).
Model: `network` (the U-Net and its registered variants), `losses` (the multi-task loss), `module` (the
LightningModule).

Names are imported lazily, so the command-line tools that need only numpy and h5py (the importer, the waterfall
script) start without loading torch and Lightning.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "ABRDataModule": "datamodule",
    "SimulatedABRDataModule": "datamodule",
    "SimulatorSpec": "generator",
    "simulate": "generator",
    "OptimizedHierarchicalUNet": "network",
    "OptimizedUNetModule": "module",
    "ABRRecords": "schema",
    "CLASS_NAMES": "schema",
    "read_abr_file": "schema",
    "write_abr_file": "schema",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"{__name__}.{_EXPORTS[name]}"), name)
