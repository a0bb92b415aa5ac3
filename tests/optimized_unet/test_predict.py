"""predict.py for the ABR U-Net: recordings in the HDF5 schema or a clinical CSV export -> one CSV row per
recording holding `OptimizedUNetModule.predict` of the batch training's dataset builds (checkpointed
normalisation); a file on another time axis, of another type, with a missing column or a NaN is refused by name."""

from __future__ import annotations

import csv
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from abr_lab.checkpoint import checkpoint_config, load_module, read_checkpoint
from abr_lab.config import compose_config
from abr_lab.data import DataFileError
from abr_lab.optimized_unet.datamodule import Normalization
from abr_lab.optimized_unet.predict import HEADER
from abr_lab.optimized_unet.schema import CLASS_NAMES, STATIC_NAMES, WAVES, ABRRecords, read_abr_file, write_abr_file
from abr_lab.predict import predict
from abr_lab.train import train
from tests.conftest import TINY_UNET_CHECKPOINT

N = 6  # recordings predicted


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ABRRecords]:
    """The checkpoint and the first `N` recordings of the simulated file it was trained on."""
    root = tmp_path_factory.mktemp("unet_predict")
    summary = train(compose_config(TINY_UNET_CHECKPOINT, output_dir=root / "run", root_dir=root))
    (data_file,) = (root / "data" / "abr").glob("*.h5")
    return Path(summary["best_checkpoint"]), read_abr_file(data_file).subset(np.arange(N))


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames or ()) == HEADER
        return list(reader)


def module_predictions(ckpt: Path, records: ABRRecords) -> dict[str, np.ndarray]:
    """What the module predicts for `records`, with the inputs normalised by hand from the checkpoint's statistics."""
    module = load_module(ckpt, checkpoint_config(ckpt))
    stored = read_checkpoint(ckpt)["SimulatedABRDataModule"]["normalization"]
    norm = Normalization(**{k: tuple(v) if isinstance(v, list | tuple) else v for k, v in stored.items()})
    signal = torch.from_numpy(records.signal / norm.signal_std).float()[:, None]  # (N, 1, T)
    static = torch.from_numpy(norm.static(records.static)).float()  # (N, 4)
    with torch.inference_mode():
        return {k: v.numpy() for k, v in module.predict(module(signal, static)).items()}


def column(rows: list[dict[str, str]], key: str) -> np.ndarray:
    return np.array([float(r[key]) for r in rows])


def test_hdf5_rows_hold_the_modules_predictions(trained, tmp_path: Path) -> None:
    ckpt, records = trained
    src = write_abr_file(tmp_path / "clinic.h5", records, {}, source="simulator")
    out = predict(ckpt, src, batch_size=4)  # two batches
    assert out == tmp_path / "clinic.predictions.csv"
    rows = read_rows(out)
    assert [int(r["row"]) for r in rows] == list(range(N))
    assert [r["patient_id"] for r in rows] == list(records.patient_id)
    np.testing.assert_allclose(column(rows, "intensity"), records.static[:, STATIC_NAMES.index("intensity")])
    pred = module_predictions(ckpt, records)
    assert [r["class_pred"] for r in rows] == [CLASS_NAMES[k] for k in pred["class_pred"]]
    close = {"rtol": 1e-5, "atol": 1e-6}
    for k, name in enumerate(CLASS_NAMES):
        np.testing.assert_allclose(column(rows, f"class_prob_{name}"), pred["class_prob"][:, k], **close)
    np.testing.assert_allclose(column(rows, "threshold_db"), pred["threshold_pred"], **close)
    np.testing.assert_allclose(column(rows, "threshold_sigma_db"), pred["threshold_sigma"], **close)
    for w, wave in enumerate(WAVES):
        np.testing.assert_allclose(column(rows, f"presence_prob_{wave}"), pred["presence_prob"][:, w], **close)
        np.testing.assert_allclose(column(rows, f"latency_ms_{wave}"), pred["peaks_pred"][:, w, 0], **close)
        np.testing.assert_allclose(column(rows, f"amplitude_uv_{wave}"), pred["peaks_pred"][:, w, 1], **close)
        np.testing.assert_allclose(column(rows, f"latency_sigma_ms_{wave}"), pred["peaks_sigma"][:, w, 0], **close)


def write_export(path: Path, records: ABRRecords, drop: str | None = None) -> Path:
    """`records` as a clinical export in the importer's format, at the records' own sample rate."""
    header = ["patient_id", "ear", *STATIC_NAMES, "class", "threshold"]
    header += [str(i + 1) for i in range(records.num_samples)]
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([h for h in header if h != drop])
        for i in range(len(records)):
            cells = [records.patient_id[i], records.ear[i], *(f"{v:.9g}" for v in records.static[i])]
            cells += [CLASS_NAMES[records.label[i]], f"{records.threshold_db[i]:.9g}"]
            cells += [f"{v:.9g}" for v in records.signal[i]]
            writer.writerow([c for h, c in zip(header, cells, strict=True) if h != drop])
    return path


def test_a_csv_export_gives_the_predictions_of_the_same_recordings(trained, tmp_path: Path) -> None:
    ckpt, records = trained
    from_h5 = read_rows(predict(ckpt, write_abr_file(tmp_path / "a.h5", records, {}, source="simulator")))
    export = write_export(tmp_path / "export.csv", records)
    from_csv = read_rows(predict(ckpt, export, export_fs_hz=str(records.fs_hz)))  # a string, as from the CLI
    assert [r["ear"] for r in from_csv] == list(records.ear)
    assert [r["class_pred"] for r in from_csv] == [r["class_pred"] for r in from_h5]
    for key in HEADER[7:]:
        if key != "class_pred":
            np.testing.assert_allclose(column(from_csv, key), column(from_h5, key), rtol=1e-4, atol=1e-5, err_msg=key)


def test_wrong_inputs_are_named(trained, tmp_path: Path) -> None:
    ckpt, records = trained
    short = ABRRecords(**{**records.__dict__, "signal": records.signal[:, :200], "clean": None})
    write_abr_file(tmp_path / "short.h5", short, {}, source="importer")
    with pytest.raises(DataFileError, match=r"short.h5: recordings of 200 samples .* trained on 300 samples"):
        predict(ckpt, tmp_path / "short.h5")
    with pytest.raises(DataFileError, match=r"export.csv: the export does not cover the target time axis"):
        predict(ckpt, write_export(tmp_path / "export.csv", records))  # the importer's default rate, 30 kHz
    with pytest.raises(DataFileError, match=r"no_fmp.csv: missing required column\(s\) 'fmp'"):
        predict(ckpt, write_export(tmp_path / "no_fmp.csv", records, drop="fmp"), export_fs_hz=20000)
    np.save(tmp_path / "signals.npy", records.signal)
    with pytest.raises(DataFileError, match=r"signals.npy: unsupported file type '.npy'"):
        predict(ckpt, tmp_path / "signals.npy")
    nan_file = write_abr_file(tmp_path / "nan.h5", records, {}, source="simulator")
    with h5py.File(nan_file, "r+") as f:
        f["signal"][2, 10] = np.nan
    with pytest.raises(DataFileError, match=r"nan.h5: 'signal' holds NaN or infinite values \(first at row 2\)"):
        predict(ckpt, nan_file)
    with pytest.raises(ValueError, match=r"export_fs_hz='fast'"):
        predict(ckpt, tmp_path / "export.csv", export_fs_hz="fast")
    assert not list(tmp_path.glob("*.predictions.csv"))
