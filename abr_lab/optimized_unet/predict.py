"""Predictions of a trained ABR U-Net on recordings: an HDF5 file (`schema`) or a clinical export (`importer`) ->
a CSV with one row per recording.

Inputs go through the code paths of training: an ``.h5`` file is read and validated by `schema.read_abr_file`; a
CSV or Excel export is converted by `importer.import_export` onto the model's time axis (its sample rate and onset
are the export's, ``export_fs_hz=`` and ``export_onset_ms=``, the importer's defaults otherwise); then the batches
are built by `datamodule.ABRDataset` with the train-split normalisation stored in the checkpoint, and the network's
outputs turned into physical units by `OptimizedUNetModule.predict`. An HDF5 file must already be on the model's
time axis (samples, sample rate, onset); an export is resampled onto it.

Both formats carry the schema's target fields (class, threshold: the importer requires its class column and a
threshold or wave V columns): the predictions never read them.

Columns: ``row`` (the recording's index in the file: for an export, its data row counting from 0, blank lines not
counted), ``patient_id``, ``ear``, the raw static parameters (``age``, ``intensity``, ``rate``, ``fmp``), then the
predictions: ``class_pred`` (a class name) and ``class_prob_<CLASS>`` per class, ``threshold_db`` and
``threshold_sigma_db``, and per wave (I, III, V) ``presence_prob_<w>``, ``latency_ms_<w>``,
``latency_sigma_ms_<w>``, ``amplitude_uv_<w>`` and ``amplitude_sigma_uv_<w>``. The model predicts a latency and an
amplitude for every wave; they describe a peak where its presence probability is above 0.5.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from abr_lab.checkpoint import instantiate_datamodule, read_checkpoint
from abr_lab.data import DataFileError
from abr_lab.optimized_unet.datamodule import ABRDataset, Normalization
from abr_lab.optimized_unet.importer import CSV_SUFFIXES, EXCEL_SUFFIXES, import_export
from abr_lab.optimized_unet.module import OptimizedUNetModule
from abr_lab.optimized_unet.schema import CLASS_NAMES, STATIC_NAMES, WAVES, ABRRecords, read_abr_file
from abr_lab.predict import Option, Trained, number, write_csv

SUFFIX = ".csv"
BATCH_SIZE = 256
HDF5_SUFFIXES = (".h5", ".hdf5")
OPTIONS: dict[str, Option] = {
    "export_fs_hz": Option(float, "CSV/Excel input: the export's sample rate, Hz (default 30000, the importer's)"),
    "export_onset_ms": Option(float, "CSV/Excel input: time of the export's first sample after the click, ms (0)"),
    "sheet": Option(str, "Excel input: the sheet to read (default: the active one)"),
}
PREDICTION_COLUMNS: tuple[str, ...] = (
    "class_pred",
    *(f"class_prob_{name}" for name in CLASS_NAMES),
    "threshold_db",
    "threshold_sigma_db",
    *(
        f"{field}_{w}"
        for w in WAVES
        for field in ("presence_prob", "latency_ms", "latency_sigma_ms", "amplitude_uv", "amplitude_sigma_uv")
    ),
)
HEADER: tuple[str, ...] = ("row", "patient_id", "ear", *STATIC_NAMES, *PREDICTION_COLUMNS)


# ------------------------------------------------------------------------------------------------------ reading


def model_axis(module: OptimizedUNetModule) -> tuple[float, float, int]:
    """(fs_hz, onset_ms, samples) of the recordings the model was trained on, from its checkpointed buffers (the
    rate is rounded to 0.01 Hz: the buffers are float32)."""
    length = int(module.hparams.signal_length)
    fs_hz = round(1000.0 * (length - 1) / float(module.time_span_ms), 2)
    return fs_hz, round(float(module.time_start_ms), 6), length


def read_recordings(
    path: Path,
    axis: tuple[float, float, int],
    export_fs_hz: float = 30000.0,
    export_onset_ms: float = 0.0,
    sheet: str | None = None,
) -> ABRRecords:
    """The recordings of an HDF5 file or a clinical export, on the model's time axis `axis` (fs_hz, onset_ms, T).

    Raises:
        DataFileError: naming the file and what is wrong (type, missing key or column, bad value, time axis).
    """
    fs_hz, onset_ms, length = axis
    suffix = path.suffix.lower()
    if suffix in HDF5_SUFFIXES:
        records = read_abr_file(path)
        check_axis(path, records, axis)
        return records
    if suffix in CSV_SUFFIXES + EXCEL_SUFFIXES:
        records, _ = import_export(
            path,
            export_fs_hz=export_fs_hz,
            export_onset_ms=export_onset_ms,
            fs_hz=fs_hz,
            duration_ms=1000.0 * length / fs_hz,
            onset_ms=onset_ms,
            sheet=sheet,
        )
        check_axis(path, records, axis)  # the importer rounds the duration to samples: make sure it landed
        return records
    raise DataFileError(
        f"{path}: unsupported file type {path.suffix or '(none)'!r}; expected an ABR HDF5 file "
        f"({', '.join(HDF5_SUFFIXES)}) or a clinical export ({', '.join(CSV_SUFFIXES + EXCEL_SUFFIXES)})"
    )


def check_axis(path: Path, records: ABRRecords, axis: tuple[float, float, int]) -> None:
    """Refuse recordings on another time axis than the model's: the network's levels and the latency units are
    tied to it."""
    fs_hz, onset_ms, length = axis
    same = (
        records.num_samples == length
        and math.isclose(records.fs_hz, fs_hz, rel_tol=1e-4)
        and abs(records.onset_ms - onset_ms) < 1e-3
    )
    if not same:
        raise DataFileError(
            f"{path}: recordings of {records.num_samples} samples at {records.fs_hz:g} Hz from {records.onset_ms:g} "
            f"ms, but the model was trained on {length} samples at {fs_hz:g} Hz from {onset_ms:g} ms: re-import the "
            f"export onto that axis (scripts/import_abr.py with --fs-hz {fs_hz:g} --duration-ms "
            f"{1000.0 * length / fs_hz:g} --onset-ms {onset_ms:g})"
        )


def checkpoint_normalization(trained: Trained) -> Normalization:
    """The train split's normalisation, from the DataModule state Lightning stored in the checkpoint (restored
    through the DataModule's own `load_state_dict`, as a resumed or evaluated run does)."""
    datamodule = instantiate_datamodule(trained.cfg)
    state = read_checkpoint(trained.ckpt_path).get(type(datamodule).__qualname__)
    if not state:
        raise ValueError(
            f"ckpt_path={str(trained.ckpt_path)!r} holds no {type(datamodule).__qualname__} state: the "
            "normalisation of the training data is unknown"
        )
    datamodule.load_state_dict(state)
    return datamodule.normalization


# ---------------------------------------------------------------------------------------------------- inference


def predict_records(
    module: OptimizedUNetModule,
    records: ABRRecords,
    norm: Normalization,
    batch_size: int,
    device: torch.device,
) -> dict[str, np.ndarray]:
    """`OptimizedUNetModule.predict_step` over every recording, in file order: each output (N, ...) as numpy."""
    dataset = ABRDataset(records, np.arange(len(records)), norm)  # no augmentation: what validation sees
    outputs: list[dict[str, torch.Tensor]] = []
    with torch.inference_mode():
        for i, batch in enumerate(DataLoader(dataset, batch_size=batch_size, shuffle=False)):
            batch = {k: v.to(device) for k, v in batch.items()}
            outputs.append({k: v.cpu() for k, v in module.predict_step(batch, i).items()})
    return {key: torch.cat([o[key] for o in outputs]).numpy() for key in outputs[0]}


def prediction_rows(records: ABRRecords, pred: dict[str, np.ndarray]) -> list[list[str]]:
    """One CSV row per recording (see `HEADER`)."""
    rows = []
    for i, index in enumerate(pred["index"].astype(np.int64)):
        waves = []
        for w in range(len(WAVES)):
            latency, amplitude = pred["peaks_pred"][i, w]
            latency_sigma, amplitude_sigma = pred["peaks_sigma"][i, w]
            waves += [pred["presence_prob"][i, w], latency, latency_sigma, amplitude, amplitude_sigma]
        rows.append(
            [
                str(index),
                str(records.patient_id[index]),
                str(records.ear[index]),
                *(number(v) for v in records.static[index]),
                CLASS_NAMES[int(pred["class_pred"][i])],
                *(number(p) for p in pred["class_prob"][i]),
                number(pred["threshold_pred"][i]),
                number(pred["threshold_sigma"][i]),
                *(number(v) for v in waves),
            ]
        )
    return rows


def run(
    trained: Trained,
    input: Path,
    out: Path,
    *,
    batch_size: int,
    device: torch.device,
    export_fs_hz: float = 30000.0,
    export_onset_ms: float = 0.0,
    sheet: str | None = None,
) -> Path:
    """`abr_lab.predict`'s entry: read the recordings on the model's axis, predict, write the CSV."""
    module = trained.module
    records = read_recordings(input, model_axis(module), export_fs_hz, export_onset_ms, sheet)
    pred = predict_records(module, records, checkpoint_normalization(trained), batch_size, device)
    return write_csv(out, HEADER, prediction_rows(records, pred))
