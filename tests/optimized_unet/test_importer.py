"""The clinical-export importer: exports with known analytic waveforms survive the round trip into the HDF5 schema,
and every kind of bad export fails loudly with the file, column and line (or is dropped and reported)."""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import openpyxl
import pytest

from abr_lab.data import DataFileError
from abr_lab.optimized_unet.importer import import_export, import_file
from abr_lab.optimized_unet.schema import CLASS_NAMES, file_params, read_abr_file

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "import_abr.py"
EXPORT_FS, EXPORT_N = 30000.0, 467  # an Eclipse "ABR-15" export: 467 samples at 30 kHz from 0 ms
LEVELS = (80.0, 60.0, 40.0, 20.0)
PEAK_MS, WIDTH_MS = 6.0, 0.4
# (patient, ear cell, expected ear, lowest level with wave V or None, class cells per level, expected class)
EARS = [
    ("P1", "L", "L", 40.0, ["NÖROPATİ", "nöropati", "NOROPATI", "AN"], "NEUROPATHY"),
    ("P1", "right", "R", 20.0, ["auditory neuropathy", "Neuropathy", "NÖROPATİ", "an"], "NEUROPATHY"),
    (12.0, "l", "L", 60.0, ["SNİK", "snık", "SNHL", "cochlear"], "SENSORINEURAL"),
    (12.0, "R", "R", None, ["İTİK", "itik", "CHL", "Conductive"], "CONDUCTIVE"),
]
WAVE_HEADERS = ["I Latency", "I Amplitude", "III Latency", "III Amplitude", "V Latancy", "V Amplitude"]
HEADER = ["Patient_ID", "Age", "Intensity", "Stimulus Rate", "FMP", "Hear_Loss", "Ear", *WAVE_HEADERS, "Notes"]


def waveform(t_ms: np.ndarray, level: float) -> np.ndarray:
    """The analytic recording: a Gaussian bump at 6 ms whose size grows with level, on a slow 300-Hz ripple."""
    return level / 100.0 * np.exp(-0.5 * ((t_ms - PEAK_MS) / WIDTH_MS) ** 2) + 0.05 * np.sin(2 * np.pi * 0.3 * t_ms)


def export_rows(num_samples: int = EXPORT_N) -> tuple[list[str], list[list[object]]]:
    """Header and rows of a 2 patients x 2 ears x 4 levels export; line of rows[k] is k + 2."""
    t = 1000.0 * np.arange(num_samples) / EXPORT_FS
    rows = []
    for i, (pid, ear, _, lowest_v, classes, _) in enumerate(EARS):
        for level, cls in zip(LEVELS, classes, strict=True):
            waves: list[object] = ["", "", "", "", "", ""]
            if level == 80.0:
                waves[:4] = [1.6, 0.21, 3.8, 0.15]
            if lowest_v is not None and level >= lowest_v:
                waves[4:] = [PEAK_MS + (80.0 - level) / 50.0, level / 100.0]
            row = [pid, 30.0 + i, level, 11.1, 2.5 + i, cls, ear, *waves, "note"]
            rows.append(row + [float(v) for v in waveform(t, level)])
    return [*HEADER, *map(str, range(1, num_samples + 1))], rows


def write_csv(path: Path, header: list[str], rows: list[list[object]], delimiter: str = ",") -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, delimiter=delimiter)
        writer.writerow(header)
        writer.writerows([[repr(c) if isinstance(c, float) else c for c in row] for row in rows])
    return path


def write_xlsx(path: Path, header: list[object], rows: list[list[object]]) -> Path:
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "ABR"
    ws.append([int(h) if h.isdigit() else h for h in header])  # Excel holds the sample numbers as numbers
    for row in rows:
        ws.append([None if c == "" else c for c in row])
    wb.save(path)
    return path


def check_round_trip(out: Path) -> None:
    records = read_abr_file(out)
    assert len(records) == 16 and records.fs_hz == 20000.0 and records.onset_ms == 0.0
    assert records.num_samples == 300  # 15 ms at 20 kHz
    assert records.clean is None and records.sex is None
    assert list(records.patient_id) == ["P1"] * 8 + ["12"] * 8
    assert list(records.ear) == [e[2] for e in EARS for _ in LEVELS]
    assert [CLASS_NAMES[k] for k in records.label] == [e[5] for e in EARS for _ in LEVELS]
    np.testing.assert_allclose(records.static[:, 0], np.repeat([30.0, 31.0, 32.0, 33.0], 4))  # age
    np.testing.assert_allclose(records.static[:, 1], np.tile(LEVELS, 4))  # intensity
    np.testing.assert_allclose(records.static[:, 2], 11.1, rtol=1e-6)  # rate
    np.testing.assert_allclose(records.static[:, 3], np.repeat([2.5, 3.5, 4.5, 5.5], 4))  # fmp
    # waves I and III only at 80 dB; wave V down to each ear's threshold
    np.testing.assert_array_equal(records.peak_mask[:, 0], np.tile(LEVELS, 4) == 80.0)
    np.testing.assert_array_equal(records.peak_mask[:, 1], np.tile(LEVELS, 4) == 80.0)
    has_v = [e[3] is not None and level >= e[3] for e in EARS for level in LEVELS]
    np.testing.assert_array_equal(records.peak_mask[:, 2], has_v)
    np.testing.assert_allclose(records.peaks[0], [[1.6, 0.21], [3.8, 0.15], [PEAK_MS, 0.8]], rtol=1e-6)
    assert not records.peaks[~records.peak_mask].any()
    # thresholds: lowest level with wave V per ear; the ear without wave V is censored at max level + 10
    np.testing.assert_array_equal(records.threshold_db, np.repeat([40.0, 20.0, 60.0, 90.0], 4))
    # the waveform on the 20 kHz axis is the analytic function there, and its peak stays where it was
    t, fine = records.time_ms(), np.linspace(5.0, 7.0, 20001)
    expected = np.stack([waveform(t, level) for level in np.tile(LEVELS, 4)])
    np.testing.assert_allclose(records.signal, expected, atol=1e-3)
    true_peak = np.array([fine[np.argmax(waveform(fine, level))] for level in np.tile(LEVELS, 4)])
    assert np.all(np.abs(t[np.argmax(records.signal, axis=1)] - true_peak) <= 0.5 * 1000.0 / records.fs_hz)


def test_csv_round_trip(tmp_path):
    src = write_csv(tmp_path / "export.csv", *export_rows())
    report = import_file(src, tmp_path / "out" / "clinic.h5")
    check_round_trip(tmp_path / "out" / "clinic.h5")
    assert (report.rows_read, report.rows_written, report.patients, report.ears) == (16, 16, 2, 4)
    assert report.thresholds_from == "wave V" and report.censored_thresholds == 1 and not report.dropped
    assert report.ignored_columns == ["Notes"]
    assert report.class_counts == {"NORMAL": 0, "NEUROPATHY": 8, "SENSORINEURAL": 4, "TOTAL": 0, "CONDUCTIVE": 4}
    params = file_params(tmp_path / "out" / "clinic.h5")
    assert params["source_file"] == "export.csv"
    assert params["source_sha256"] == hashlib.sha256(src.read_bytes()).hexdigest()
    assert (params["export_fs_hz"], params["fs_hz"], params["duration_ms"], params["skip_invalid"]) == (
        30000.0,
        20000.0,
        15.0,
        False,
    )
    summary = report.summary()
    assert "rows read: 16" in summary and "1 of 4 ears" in summary and "Notes" in summary


def test_xlsx_round_trip(tmp_path):
    src = write_xlsx(tmp_path / "export.xlsx", *export_rows())
    import_file(src, tmp_path / "clinic.h5", sheet="ABR")
    check_round_trip(tmp_path / "clinic.h5")


def test_semicolon_csv_with_decimal_commas(tmp_path):
    header, rows = export_rows()
    rows = [[str(c).replace(".", ",") if isinstance(c, float) else c for c in row] for row in rows]
    records, _ = import_export(write_csv(tmp_path / "export.csv", header, rows, delimiter=";"))
    np.testing.assert_allclose(records.static[:, 2], 11.1, rtol=1e-6)
    assert records.threshold_db[0] == 40.0


def test_threshold_column_is_used_when_present(tmp_path):
    header, rows = export_rows()
    header = [*header[:7], "threshold_db", *header[7:]]
    rows = [[*row[:7], 35.0 + k, *row[7:]] for k, row in enumerate(rows)]
    records, report = import_export(write_csv(tmp_path / "export.csv", header, rows))
    np.testing.assert_array_equal(records.threshold_db, 35.0 + np.arange(16))
    assert report.thresholds_from == "column" and "threshold column" in report.summary()


def set_cell(rows: list[list[object]], header: list[str], k: int, column: str, value: object) -> None:
    rows[k][header.index(column)] = value


# (column, data row, new value, what the message must say)
BAD_CELLS = [
    ("Age", 3, "abc", "not a number"),
    ("Age", 5, "nan", "not a finite number"),
    ("Intensity", 2, 200.0, "outside"),
    ("Stimulus Rate", 7, 0.0, "outside"),
    ("FMP", 9, -1.0, "outside"),
    ("Hear_Loss", 4, "XYZ", "SENSORINEURAL"),
    ("V Amplitude", 1, "", "latency"),  # row 1 has a wave V latency
    ("V Latancy", 0, 16.0, "outside the time axis"),
    ("37", 6, "x", "not a number"),
    ("467", 12, "inf", "not finite"),
    ("Patient_ID", 10, " ", "empty"),
]


@pytest.mark.parametrize(("column", "k", "value", "says"), BAD_CELLS)
def test_bad_cell_names_column_and_line(tmp_path, column, k, value, says):
    header, rows = export_rows()
    set_cell(rows, header, k, column, value)
    src = write_csv(tmp_path / "export.csv", header, rows)
    with pytest.raises(DataFileError, match=f"line {k + 2}: .*'{column}'") as err:
        import_export(src)
    assert "export.csv" in str(err.value) and says in str(err.value)


def test_bad_threshold_cell(tmp_path):
    header, rows = export_rows()
    header = ["threshold", *header]
    rows = [[30.0, *row] for row in rows]
    rows[4][0] = 151.0
    with pytest.raises(DataFileError, match=r"line 6: column 'threshold': 151 is outside"):
        import_export(write_csv(tmp_path / "export.csv", header, rows))


def test_bad_cell_in_xlsx_names_the_sheet_row(tmp_path):
    header, rows = export_rows()
    set_cell(rows, header, 5, "Age", 130.0)
    with pytest.raises(DataFileError, match=r"sheet 'ABR'\): row 7: column 'Age': 130 is outside"):
        import_export(write_xlsx(tmp_path / "export.xlsx", header, rows))


def test_skip_invalid_drops_and_reports(tmp_path):
    header, rows = export_rows()
    set_cell(rows, header, 3, "Age", "abc")
    set_cell(rows, header, 8, "Hear_Loss", "unknown")
    set_cell(rows, header, 13, "Hear_Loss", "??")
    src = write_csv(tmp_path / "export.csv", header, rows)
    report = import_file(src, tmp_path / "clinic.h5", skip_invalid=True)
    assert (report.rows_read, report.rows_written) == (16, 13)
    assert report.dropped == {
        "column 'Age': not a number": [5],
        "column 'Hear_Loss': unknown class": [10, 15],
    }
    summary = report.summary()
    assert "dropped 2 rows (column 'Hear_Loss': unknown class): lines 10, 15" in summary
    records = read_abr_file(tmp_path / "clinic.h5")
    assert len(records) == 13 and file_params(tmp_path / "clinic.h5")["skip_invalid"] is True


def test_missing_required_column_lists_aliases_and_found_columns(tmp_path):
    header, rows = export_rows()
    j = header.index("FMP")
    header, rows = header[:j] + header[j + 1 :], [row[:j] + row[j + 1 :] for row in rows]
    src = write_csv(tmp_path / "export.csv", header, rows)
    for skip in (False, True):
        with pytest.raises(DataFileError, match=r"missing required column.*'fmp' \(accepted: fmp, FMP\).*'Age'"):
            import_export(src, skip_invalid=skip)


def test_no_threshold_and_no_wave_v_columns(tmp_path):
    header, rows = export_rows()
    keep = [j for j, h in enumerate(header) if not h.startswith("V ")]
    src = write_csv(tmp_path / "export.csv", [header[j] for j in keep], [[row[j] for j in keep] for row in rows])
    with pytest.raises(DataFileError, match=r"no threshold column .*threshold_db.* no wave V columns"):
        import_export(src)


def test_no_time_columns(tmp_path):
    header, rows = export_rows()
    src = write_csv(tmp_path / "export.csv", header[: len(HEADER)], [row[: len(HEADER)] for row in rows])
    with pytest.raises(DataFileError, match="no time columns"):
        import_export(src)


def test_empty_file_and_header_only(tmp_path):
    (tmp_path / "empty.csv").write_bytes(b"")
    with pytest.raises(DataFileError, match="empty.csv: empty file"):
        import_export(tmp_path / "empty.csv")
    header, _ = export_rows()
    with pytest.raises(DataFileError, match="no data rows"):
        import_export(write_csv(tmp_path / "header.csv", header, []))


def test_short_export_does_not_cover_the_window(tmp_path):
    src = write_csv(tmp_path / "export.csv", *export_rows(num_samples=200))  # 6.6 ms at 30 kHz; 15 ms requested
    with pytest.raises(DataFileError, match=r"cover 0\.000-6\.633 ms.*need 0\.000-14\.950 ms"):
        import_export(src, skip_invalid=True)


def test_failed_import_leaves_existing_output_untouched(tmp_path):
    header, rows = export_rows()
    set_cell(rows, header, 15, "Age", "old")
    out = tmp_path / "clinic.h5"
    out.write_bytes(b"sentinel: an earlier import")
    with pytest.raises(DataFileError, match="line 17"):
        import_file(write_csv(tmp_path / "export.csv", header, rows), out)
    assert out.read_bytes() == b"sentinel: an earlier import"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clinic.h5", "export.csv"]  # no temp file left behind


def load_script():
    spec = importlib.util.spec_from_file_location("import_abr", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli_end_to_end(tmp_path):
    src, out = write_csv(tmp_path / "export.csv", *export_rows()), tmp_path / "clinic.h5"
    args = [str(src), "--out", str(out), "--export-fs-hz", "30000", "--fs-hz", "20000"]
    # one real process (start-up imports the whole package, seconds); the failure path runs in-process below
    done = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "rows read: 16, written: 16, dropped: 0" in done.stdout and "NEUROPATHY 8" in done.stdout
    assert "derived from wave V" in done.stdout and f"wrote {out}" in done.stdout
    assert len(read_abr_file(out)) == 16


def test_cli_bad_file_exits_1_with_the_message(tmp_path, capsys):
    header, rows = export_rows()
    set_cell(rows, header, 2, "Hear_Loss", "XYZ")
    src, out = write_csv(tmp_path / "bad.csv", header, rows), tmp_path / "clinic.h5"
    assert load_script().main([str(src), "--out", str(out)]) == 1
    captured = capsys.readouterr()
    assert not captured.out and "Traceback" not in captured.err
    assert "bad.csv: line 4: column 'Hear_Loss': unknown class 'XYZ'" in captured.err
    assert not out.exists()


def test_a_simulated_clinic_export_trains_through_data_abr_file(tmp_path):
    """An Eclipse-like export of simulated recordings (30 kHz, 467 samples, the origin's column and Turkish class
    names) imports, then `data=abr_file data.path=...` serves it: patients, classes and peaks survive."""
    from hydra.utils import instantiate

    from abr_lab.config import compose_config
    from abr_lab.optimized_unet.generator import SimulatorSpec, simulate

    sim = simulate(SimulatorSpec(num_patients=12, seed=3, fs_hz=EXPORT_FS, duration_ms=1000 * EXPORT_N / EXPORT_FS))
    r = sim.records
    turkish = {"NORMAL": "NORMAL", "NEUROPATHY": "NÖROPATİ", "SENSORINEURAL": "SNİK", "TOTAL": "TOTAL"}
    turkish["CONDUCTIVE"] = "İTİK"
    header = ["Patient_ID", "Age", "Intensity", "Stimulus Rate", "FMP", "Hear_Loss", "Ear", "threshold"]
    header += WAVE_HEADERS + [str(k) for k in range(1, EXPORT_N + 1)]
    rows = []
    for i in range(len(r)):
        waves: list[object] = []
        for w in range(3):
            waves += [float(r.peaks[i, w, 0]), float(r.peaks[i, w, 1])] if r.peak_mask[i, w] else ["", ""]
        static = [float(v) for v in r.static[i]]
        cls = turkish[CLASS_NAMES[r.label[i]]]
        rows.append([r.patient_id[i], *static[:4], cls, r.ear[i], float(r.threshold_db[i]), *waves, *r.signal[i]])
    out = tmp_path / "data" / "clinic.h5"
    import_file(write_csv(tmp_path / "export.csv", header, rows), out)

    cfg = compose_config(["data=abr_file", f"data.path={out}", "data.batch_size=8"], root_dir=tmp_path)
    dm = instantiate(cfg.data, _convert_="all")
    dm.setup()
    imported = dm.records
    assert imported.num_samples == 300 and imported.fs_hz == 20000.0
    np.testing.assert_array_equal(imported.label, r.label)
    np.testing.assert_array_equal(imported.peak_mask, r.peak_mask)
    np.testing.assert_allclose(imported.peaks, r.peaks, atol=1e-5)
    np.testing.assert_allclose(imported.threshold_db, r.threshold_db, atol=1e-4)
    assert set(imported.patient_id) == set(r.patient_id)
    batch = next(iter(dm.train_dataloader()))
    assert "clean" not in batch and batch["signal"].shape == (8, 1, 300)
