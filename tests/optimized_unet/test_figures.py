"""The ABR waterfall figure, its TensorBoard callback and its script, on a hand-built dataset with known answers."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from matplotlib.figure import Figure
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch.utils.data import DataLoader, TensorDataset

from abr_lab.optimized_unet.callbacks import WaterfallLogger
from abr_lab.optimized_unet.figures import default_title, pick_series, series_index, waterfall
from abr_lab.optimized_unet.schema import ABRRecords, write_abr_file

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "abr_waterfall.py"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
FS_HZ, NUM_SAMPLES, ONSET_MS = 20_000.0, 240, 0.5
LATENCY_MS = (1.6, 3.7, 5.6)  # waves I, III, V at the top level; each shifts 0.04 ms later per dB below 90
# (patient, ear, levels in file order, label, threshold dB nHL). P1 R has a replicate at 60 dB and is shuffled;
# P2 R has the most rows (7) but only 4 distinct levels, so counting rows instead of levels would pick it.
SERIES = (
    ("P1", "L", (40, 80, 60), 0, 45.0),
    ("P1", "R", (20, 80, 40, 60, 60, 10), 0, 30.0),
    ("P2", "L", (80, 60, 40, 20, 0), 2, 50.0),
    ("P2", "R", (70, 70, 70, 50, 30, 30, 90), 2, 95.0),
)


def make_records(seed: int = 0) -> ABRRecords:
    """Gaussian bumps at known latencies: wave V above threshold, waves I and III 30 dB above it; plus noise."""
    rng = np.random.default_rng(seed)
    t = ONSET_MS + 1000.0 * np.arange(NUM_SAMPLES) / FS_HZ
    rows: list[dict[str, Any]] = []
    for patient, ear, levels, label, threshold in SERIES:
        for level in levels:
            clean, peaks, mask = np.zeros(NUM_SAMPLES), np.zeros((3, 2)), np.zeros(3, dtype=bool)
            for wave, latency0 in enumerate(LATENCY_MS):
                if level <= threshold or (wave < 2 and level < threshold + 30):
                    continue
                latency = latency0 + 0.04 * (90 - level)
                amplitude = 0.1 + 0.005 * (level - threshold)
                clean += amplitude * np.exp(-((t - latency) ** 2) / (2 * 0.15**2))
                peaks[wave], mask[wave] = (latency, amplitude), True
            signal = clean + 0.03 * rng.standard_normal(NUM_SAMPLES)
            row = dict(signal=signal, clean=clean, peaks=peaks, mask=mask, label=label, threshold=threshold)
            rows.append(row | dict(static=(45.0, level, 21.1, 2.5), patient=patient, ear=ear))
    records = ABRRecords(
        signal=np.array([r["signal"] for r in rows], dtype=np.float32),
        static=np.array([r["static"] for r in rows], dtype=np.float32),
        peaks=np.array([r["peaks"] for r in rows], dtype=np.float32),
        peak_mask=np.array([r["mask"] for r in rows]),
        label=np.array([r["label"] for r in rows], dtype=np.int64),
        threshold_db=np.array([r["threshold"] for r in rows], dtype=np.float32),
        patient_id=np.array([r["patient"] for r in rows], dtype=object),
        ear=np.array([r["ear"] for r in rows], dtype=object),
        fs_hz=FS_HZ,
        onset_ms=ONSET_MS,
        clean=np.array([r["clean"] for r in rows], dtype=np.float32),
    )
    records.validate("test records")
    return records


@pytest.fixture(scope="module")
def records() -> ABRRecords:
    return make_records()


def by_gid(fig: Figure, gid: str) -> list[Any]:
    ax = fig.axes[0]
    return [a for a in (*ax.lines, *ax.texts) if a.get_gid() == gid]


def tick_y(fig: Figure) -> dict[str, float]:
    """Level label -> y offset of its trace."""
    ax = fig.axes[0]
    return {label.get_text(): y for label, y in zip(ax.get_yticklabels(), ax.get_yticks(), strict=True)}


# ---------------------------------------------------------------------------------------------------- selection


def test_series_index_sorts_by_level_descending_keeping_file_order(records):
    index = series_index(records, "P1", "R")
    np.testing.assert_array_equal(index, [4, 6, 7, 5, 3, 8])  # 80, 60, 60 (file order), 40, 20, 10
    np.testing.assert_array_equal(records.static[index, 1], [80, 60, 60, 40, 20, 10])


def test_series_index_names_a_missing_series(records):
    with pytest.raises(ValueError, match=r"'P9'.*'L'"):
        series_index(records, "P9", "L")
    with pytest.raises(ValueError, match=r"'P1'.*''"):
        series_index(records, "P1", "")


def test_pick_series_counts_distinct_levels_and_breaks_ties_by_first_occurrence(records):
    assert pick_series(records) == ("P1", "R")  # 5 levels; P2 L also 5 but later; P2 R 7 rows but 4 levels
    reversed_records = records.subset(np.arange(len(records))[::-1])
    assert pick_series(reversed_records) == ("P2", "L")  # now first of the two 5-level ears
    assert pick_series(records, patient_id="P2") == ("P2", "L")
    assert pick_series(records, ear="L") == ("P2", "L")
    with pytest.raises(ValueError, match="'P9'"):
        pick_series(records, patient_id="P9")


# ------------------------------------------------------------------------------------------------------ figure


def test_waterfall_draws_every_trace_level_peak_and_the_threshold(records):
    index = series_index(records, "P1", "R")
    fig = waterfall(records, "P1", "R")
    assert isinstance(fig, Figure)
    signals, cleans = by_gid(fig, "signal"), by_gid(fig, "clean")
    assert len(signals) == len(cleans) == len(index) == 6
    assert signals[0].get_xdata()[0] == pytest.approx(ONSET_MS)  # the record's own time axis
    assert signals[0].get_xdata()[-1] == pytest.approx(ONSET_MS + 1000.0 * (NUM_SAMPLES - 1) / FS_HZ)

    y = tick_y(fig)
    assert set(y) == {"80", "60", "40", "20", "10"}
    assert y["80"] > y["60"] > y["40"] > y["20"] > y["10"]  # highest level at the top, constant spacing
    assert np.diff(sorted(y.values())) == pytest.approx([y["80"] - y["60"]] * 4)
    offsets = [line.get_ydata() - records.signal[i] for line, i in zip(signals, index, strict=True)]
    assert offsets[1] == pytest.approx(offsets[2], abs=1e-5)  # the 60-dB replicates overlaid at one offset
    assert offsets[1][0] == pytest.approx(y["60"], abs=1e-5)

    (threshold,) = by_gid(fig, "threshold")
    assert threshold.get_ydata()[0] == pytest.approx((y["40"] + y["20"]) / 2)  # 30 dB: halfway between 40 and 20
    assert [t.get_text() for t in by_gid(fig, "threshold_label")] == ["threshold 30 dB nHL"]
    assert len(by_gid(fig, "scale_bar")) == 1 and by_gid(fig, "scale_label")[0].get_text().endswith("µV")

    (peaks,) = by_gid(fig, "peaks")
    assert len(peaks.get_xdata()) == records.peak_mask[index].sum() == 10  # 80: I III V, 60 (x2): I III V, 40: V
    labels = sorted(t.get_text() for t in by_gid(fig, "peak_label"))
    assert labels == ["I", "I", "III", "III", "V", "V", "V"]  # one numeral per level and wave
    assert not by_gid(fig, "pred_peaks") and not by_gid(fig, "pred_threshold") and not by_gid(fig, "pred_signal")
    assert fig.axes[0].get_title() == "patient P1, ear R, class NORMAL, age 45 y, rate 21.1/s"
    assert default_title(records, "P2", "L") == "patient P2, ear L, class SENSORINEURAL, age 45 y, rate 21.1/s"


def test_waterfall_places_a_threshold_outside_the_tested_range_beyond_the_end_traces(records):
    fig = waterfall(records, "P2", "R", title="custom")
    y = tick_y(fig)
    assert by_gid(fig, "threshold")[0].get_ydata()[0] > y["90"]  # 95 dB: above the top trace
    assert fig.axes[0].get_title() == "custom"
    assert not by_gid(fig, "peaks")  # no wave anywhere below threshold: no marker line at all
    low = replace(records, threshold_db=np.full(len(records), -10.0, dtype=np.float32))
    fig = waterfall(low, "P2", "L")
    assert by_gid(fig, "threshold")[0].get_ydata()[0] < tick_y(fig)["0"]  # below the bottom trace
    assert by_gid(fig, "threshold_label")[0].get_text() == "threshold -10 dB nHL"


def test_waterfall_without_clean_draws_only_the_recordings(records):
    fig = waterfall(replace(records, clean=None), "P1", "L")
    assert len(by_gid(fig, "signal")) == 3 and not by_gid(fig, "clean")


def test_predictions_overlay_peaks_threshold_and_signal(records):
    index = series_index(records, "P1", "R")
    predictions = {
        "peaks": torch.as_tensor(records.peaks[index] + np.array([0.1, 0.0])),  # tensors are accepted
        "peak_mask": records.peak_mask[index],
        "threshold_db": torch.tensor(35.0),
        "signal": records.clean[index],
    }
    fig = waterfall(records, "P1", "R", predictions=predictions)
    assert [t.get_text() for t in by_gid(fig, "pred_threshold_label")] == ["predicted threshold 35 dB nHL"]
    assert len(by_gid(fig, "pred_threshold")) == 1 and len(by_gid(fig, "threshold")) == 1
    (pred_peaks,) = by_gid(fig, "pred_peaks")
    assert len(pred_peaks.get_xdata()) == 10 and pred_peaks.get_markerfacecolor() == "none"  # hollow
    assert len(by_gid(fig, "pred_signal")) == 6
    only_threshold = waterfall(records, "P1", "R", predictions={"threshold_db": 25.0})
    assert len(by_gid(only_threshold, "pred_threshold")) == 1 and not by_gid(only_threshold, "pred_peaks")


def test_predictions_of_the_wrong_shape_or_key_are_refused(records):
    with pytest.raises(ValueError, match=r"predictions\['peaks'\] has shape"):
        waterfall(records, "P1", "R", predictions={"peaks": np.zeros((5, 3, 2))})
    with pytest.raises(ValueError, match="unknown key"):
        waterfall(records, "P1", "R", predictions={"threshold": 30.0})
    with pytest.raises(ValueError, match="spacing"):
        waterfall(records, "P1", "R", spacing=-1.0)


# ---------------------------------------------------------------------------------------------------- callback


class StubData(L.LightningDataModule):
    """Two batches of noise to fit on, and the ABR records of a split (what the ABR DataModule provides)."""

    def __init__(self, records: ABRRecords | None) -> None:
        super().__init__()
        self.records, self.calls = records, 0
        self.data = TensorDataset(torch.randn(4, 2), torch.randn(4, 1))

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.data, batch_size=2)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.data, batch_size=2)


class RecordsData(StubData):
    def split_records(self, split: str) -> ABRRecords:
        assert split == "val"
        self.calls += 1
        return self.records


class TinyModule(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Linear(2, 1)

    def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
        return torch.nn.functional.mse_loss(self.net(batch[0]), batch[1])

    def validation_step(self, batch: list[torch.Tensor], batch_idx: int) -> None:
        pass

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.01)


class PredictingModule(TinyModule):
    def waterfall_predictions(self, records: ABRRecords, index: np.ndarray) -> dict[str, Any]:
        return {"threshold_db": 40.0, "signal": torch.as_tensor(records.clean[index])}


def fit(tmp_path: Path, module: L.LightningModule, data: L.LightningDataModule, logger: Any, **kwargs: Any) -> None:
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=2,
        limit_train_batches=1,
        limit_val_batches=1,
        num_sanity_val_steps=1,  # the sanity check must not log
        log_every_n_steps=1,
        logger=logger,
        callbacks=[WaterfallLogger(**kwargs)],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(module, datamodule=data)


def image_steps(log_dir: str, tag: str) -> list[int]:
    events = EventAccumulator(log_dir, size_guidance={"images": 0})
    events.Reload()
    assert tag in events.Tags()["images"], events.Tags()["images"]
    return [image.step for image in events.Images(tag)]


def test_callback_logs_the_data_then_the_predictions_to_tensorboard(tmp_path, records):
    logger = TensorBoardLogger(tmp_path, name="tb")
    data = RecordsData(records)
    fit(tmp_path, PredictingModule(), data, logger, every_n_epochs=2, tag="wf")
    assert image_steps(logger.log_dir, "val/wf") == [0, 2]  # fit start; after epoch 1 (2 epochs × 1 batch)
    assert data.calls == 1  # the records are read once


def test_callback_logs_every_validation_epoch_but_not_the_sanity_check(tmp_path, records):
    logger = TensorBoardLogger(tmp_path, name="tb")
    fit(tmp_path, PredictingModule(), RecordsData(records), logger, patient_id="P2", ear="R")
    assert image_steps(logger.log_dir, "val/waterfall") == [0, 1, 2]


def test_callback_without_predictions_logs_only_the_data(tmp_path, records):
    logger = TensorBoardLogger(tmp_path, name="tb")
    fit(tmp_path, TinyModule(), RecordsData(records), logger, patient_id="P2", ear="R")
    assert image_steps(logger.log_dir, "val/waterfall") == [0]


def test_callback_skips_other_loggers_without_touching_the_data(tmp_path):
    fit(tmp_path, PredictingModule(), StubData(None), CSVLogger(tmp_path))  # no split_records: never asked
    fit(tmp_path, PredictingModule(), StubData(None), False)


@pytest.mark.parametrize(("kwargs", "name"), [({"split": "dev"}, "split"), ({"every_n_epochs": 0}, "every_n_epochs")])
def test_callback_validates_its_arguments(kwargs, name):
    with pytest.raises(ValueError, match=name):
        WaterfallLogger(**kwargs)


# ------------------------------------------------------------------------------------------------------ script


def test_script_writes_a_png_of_the_default_series(tmp_path, records):
    path = write_abr_file(tmp_path / "abr.h5", records, params={"test": True}, source="simulator")
    out = tmp_path / "figs" / "waterfall.png"
    result = subprocess.run(
        [sys.executable, str(SCRIPT), str(path), "--out", str(out), "--dpi", "60"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert out.read_bytes()[:8] == PNG_SIGNATURE
    assert str(out) in result.stdout and "patient P1, ear R" in result.stdout
    assert sorted(p.name for p in out.parent.iterdir()) == ["waterfall.png"]  # no temporary left behind


def load_script() -> Any:
    """The script as a module, to call `main` in-process (a subprocess pays the package imports again)."""
    spec = importlib.util.spec_from_file_location("abr_waterfall", SCRIPT)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return script


def test_script_reports_a_missing_file_or_an_unknown_patient_without_a_traceback(tmp_path, records, capsys):
    script, out = load_script(), tmp_path / "waterfall.png"
    assert script.main([str(tmp_path / "missing.h5"), "--out", str(out)]) == 1  # returns: no exception escapes
    err = capsys.readouterr().err
    assert "missing.h5" in err and "no such file" in err and not out.exists()
    path = write_abr_file(tmp_path / "abr.h5", records, params={}, source="simulator")
    assert script.main([str(path), "--out", str(out), "--patient", "P9"]) == 1
    assert "'P9'" in capsys.readouterr().err and not out.exists()
    assert script.main([str(path), "--out", str(out), "--patient", "P2", "--ear", "R"]) == 0
    assert "patient P2, ear R" in capsys.readouterr().out and out.read_bytes()[:8] == PNG_SIGNATURE
