"""Clinical ABR exports (CSV or Excel, one row per recording) converted into the HDF5 schema of `schema.py`.

The origin data is an Interacoustics Eclipse export from a Turkish clinic: one row per averaged recording with the
patient, age, stimulus intensity and rate, Fmp, the hearing-loss class (often in Turkish), optionally the ear, the
threshold and the latency / amplitude of waves I, III and V, followed by one column per waveform sample whose
header is the sample number (``1`` .. ``467`` for a 15.5-ms "ABR-15" export at 30 kHz).

Why the details below matter:

* The export's sample rate and onset are explicit arguments, never guessed from the column count: a guessed time
  axis that cuts off wave V silently ruins every model trained on the file. If the export does not cover the
  requested target window the import fails and says which range it covers and which the axis needs.
* Every bad cell is an error naming the file, the column and the line (header = line 1; Excel: the sheet row),
  so an export is fixed at its source. With ``skip_invalid`` bad rows are dropped instead, and the report lists
  every reason with its count and line numbers: nothing is dropped silently.
* Waveforms are resampled with an anti-aliasing polyphase filter (`scipy.signal.resample_poly`, linear phase, so
  peak latencies are preserved) and then interpolated with a cubic spline at the exact target sample times.
* Without a threshold column the threshold of each (patient, ear) is derived from wave V: the lowest intensity at
  which wave V was marked; if it never was, the highest tested level + 10 dB (a censored "no response" value).

Entry points: `import_export` (file -> `ABRRecords` + `ImportReport`), `import_file` (also writes the HDF5 file
atomically through `write_abr_file`), `read_table` (the raw header and rows); ``scripts/import_abr.py`` is the CLI.
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
import re
import unicodedata
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np

from abr_lab.data import DataFileError
from abr_lab.optimized_unet.schema import (
    CLASS_NAMES,
    STATIC_NAMES,
    STATIC_RANGES,
    STATIC_UNITS,
    THRESHOLD_RANGE,
    WAVES,
    ABRRecords,
    write_abr_file,
)

IMPORTER_VERSION = 1
CSV_SUFFIXES: tuple[str, ...] = (".csv", ".txt")
EXCEL_SUFFIXES: tuple[str, ...] = (".xlsx", ".xlsm")
CENSOR_MARGIN_DB = 10.0  # a threshold never reached within the tested levels is set to the highest level + this
MAX_LINES_SHOWN = 5  # line numbers listed per drop reason in the summary

# Canonical column -> accepted headers, as written in the Eclipse exports and in our own tables. Headers are matched
# after `_header_key` (accents removed, case folded, runs of spaces / underscores / hyphens equal).
REQUIRED_COLUMNS: dict[str, tuple[str, ...]] = {
    "patient_id": ("patient_id", "Patient_ID", "patient"),
    "age": ("age", "Age"),
    "intensity": ("intensity", "Intensity", "level"),
    "rate": ("rate", "stimulus_rate", "Stimulus Rate"),
    "fmp": ("fmp", "FMP"),
    "class": ("class", "hearing_loss", "Hear_Loss"),
}
OPTIONAL_COLUMNS: dict[str, tuple[str, ...]] = {
    "ear": ("ear", "Ear"),
    "threshold": ("threshold", "threshold_db"),
    **{f"latency_{w}": (f"latency_{w}", f"{w} Latency", f"{w} Latancy") for w in WAVES},
    **{f"amplitude_{w}": (f"amplitude_{w}", f"{w} Amplitude") for w in WAVES},
}
COLUMN_ALIASES: dict[str, tuple[str, ...]] = {**REQUIRED_COLUMNS, **OPTIONAL_COLUMNS}

# Class names (and the Turkish / clinical aliases seen in exports) -> index into CLASS_NAMES.
CLASS_ALIASES: dict[str, tuple[str, ...]] = {
    "NORMAL": ("NORMAL",),
    "NEUROPATHY": ("NEUROPATHY", "NÖROPATİ", "NOROPATI", "AN", "auditory neuropathy"),
    "SENSORINEURAL": ("SENSORINEURAL", "SNİK", "SNIK", "SNHL", "cochlear"),
    "TOTAL": ("TOTAL", "profound"),
    "CONDUCTIVE": ("CONDUCTIVE", "İTİK", "ITIK", "CHL"),
}
# Ear values; "sol" / "sağ" are the Turkish left / right.
EAR_ALIASES: dict[str, str] = {"l": "L", "left": "L", "sol": "L", "r": "R", "right": "R", "sag": "R", "": ""}


def _fold(text: str) -> str:
    """Caseless, accent-free form of `text` (Turkish-safe: "NÖROPATİ", "nöropati", "NOROPATI" fold alike).

    Python's ``"İ".lower()`` is "i̇" (i + combining dot) and ``"ı".upper()`` is "I", so case mapping alone does not
    identify Turkish spellings; NFKD + dropping combining marks + casefold + dotless ı -> i does.
    """
    decomposed = unicodedata.normalize("NFKD", text)
    stripped = "".join(c for c in decomposed if not unicodedata.combining(c))
    folded = unicodedata.normalize("NFKD", stripped.casefold())
    folded = "".join(c for c in folded if not unicodedata.combining(c)).replace("ı", "i")
    return " ".join(folded.split())


def _header_key(header: str) -> str:
    """Matching key of a column header: folded, with runs of spaces, underscores and hyphens as one '_'."""
    return re.sub(r"[\s_\-]+", "_", _fold(header)).strip("_")


_COLUMN_KEYS: dict[str, str] = {_header_key(a): name for name, aliases in COLUMN_ALIASES.items() for a in aliases}
_CLASS_KEYS: dict[str, int] = {
    _fold(alias): CLASS_NAMES.index(name) for name, aliases in CLASS_ALIASES.items() for alias in aliases
}


@dataclass(frozen=True)
class Table:
    """The raw cells of an export: the header, the data rows and where each row is in the file.

    `lines[i]` is the 1-based line (CSV, header = line 1) or sheet row (Excel) of `rows[i]`; `where` names the
    file (and sheet) for messages; `unit` is "line" or "row". Blank rows are not in `rows`; `blank_rows` counts them.
    """

    header: list[str]
    rows: list[list[object]]
    lines: list[int]
    where: str
    unit: str
    blank_rows: int = 0
    decimal_comma: bool = False  # ';'- or tab-separated CSV: "1,5" is the number 1.5
    note: str = ""  # how the file was read (format, encoding, delimiter), for the summary


@dataclass
class ImportReport:
    """What an import read, wrote and dropped, and how thresholds were obtained (see `summary`)."""

    source: str
    sha256: str = ""  # of the source file's bytes, as read
    rows_read: int = 0
    rows_written: int = 0
    patients: int = 0
    class_counts: dict[str, int] = field(default_factory=dict)
    dropped: dict[str, list[int]] = field(default_factory=dict)  # reason -> line (or sheet row) numbers
    thresholds_from: str = ""  # "column" or "wave V"
    censored_thresholds: int = 0  # (patient, ear) groups without wave V at any level: threshold = max + 10 dB
    ears: int = 0  # (patient, ear) groups
    ignored_columns: list[str] = field(default_factory=list)
    blank_rows: int = 0
    unit: str = "line"
    read_as: str = ""
    axis: str = ""

    @property
    def rows_dropped(self) -> int:
        return sum(len(lines) for lines in self.dropped.values())

    def summary(self) -> str:
        """A human-readable multi-line summary (what the CLI prints)."""
        out = [f"{self.source}: {self.read_as}" if self.read_as else self.source]
        out.append(f"  rows read: {self.rows_read}, written: {self.rows_written}, dropped: {self.rows_dropped}")
        if self.blank_rows:
            out.append(f"  blank rows skipped: {self.blank_rows}")
        out.append(f"  patients: {self.patients}, ears: {self.ears}")
        out.append("  classes: " + ", ".join(f"{name} {self.class_counts.get(name, 0)}" for name in CLASS_NAMES))
        if self.axis:
            out.append(f"  waveforms: {self.axis}")
        if self.thresholds_from == "column":
            out.append("  thresholds: from the threshold column")
        elif self.thresholds_from:
            out.append(
                f"  thresholds: derived from wave V (lowest intensity with wave V per patient and ear); "
                f"{self.censored_thresholds} of {self.ears} ears never showed wave V and were set to their highest "
                f"tested level + {CENSOR_MARGIN_DB:g} dB (censored)"
            )
        if self.ignored_columns:
            out.append(f"  ignored columns: {', '.join(self.ignored_columns)}")
        for reason, lines in self.dropped.items():
            shown = ", ".join(map(str, lines[:MAX_LINES_SHOWN])) + (", ..." if len(lines) > MAX_LINES_SHOWN else "")
            plural = "s" if len(lines) > 1 else ""
            out.append(f"  dropped {len(lines)} row{plural} ({reason}): {self.unit}{plural} {shown}")
        return "\n".join(out)


class _RowError(Exception):
    """One bad cell: `reason` groups drops in the report, `detail` is the full message."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason, self.detail = reason, detail


# ---------------------------------------------------------------------------------------------------------- reading


def read_table(path: str | Path, sheet: str | None = None) -> Table:
    """Read the header and data rows of a CSV (`csv` module) or Excel (`openpyxl`, read-only) export.

    Raises:
        DataFileError: unsupported suffix, unreadable file, unknown sheet, or no header.
    """
    path = Path(path)
    return _read_table(path, _read_bytes(path), sheet)


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as err:
        raise DataFileError(f"{path}: cannot read the export ({err.strerror or err})") from err


def _read_table(path: Path, data: bytes, sheet: str | None) -> Table:
    suffix = path.suffix.lower()
    if suffix in CSV_SUFFIXES:
        if sheet is not None:
            raise DataFileError(f"{path}: a sheet ({sheet!r}) was given, but a CSV file has no sheets")
        table = _read_csv(path, data)
    elif suffix in EXCEL_SUFFIXES:
        table = _read_excel(path, data, sheet)
    else:
        raise DataFileError(
            f"{path}: unsupported file type {path.suffix!r}; expected CSV ({', '.join(CSV_SUFFIXES)}) or Excel "
            f"({', '.join(EXCEL_SUFFIXES)}; re-save .xls files as .xlsx)"
        )
    if not any(table.header):
        raise DataFileError(f"{table.where}: empty file (no header row)")
    return table


def _read_csv(path: Path, data: bytes) -> Table:
    try:
        text, encoding = data.decode("utf-8-sig"), "UTF-8"
    except UnicodeDecodeError:
        # Turkish Windows exports (Excel "CSV") are cp1254, which decodes any byte: fall back and say so.
        text, encoding = data.decode("cp1254"), "cp1254 (not UTF-8)"
    first_line = text.split("\n", 1)[0]
    delimiter = max((",", ";", "\t"), key=first_line.count)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    header: list[str] = []
    rows: list[list[object]] = []
    lines: list[int] = []
    blank = 0
    try:
        start = 1
        for i, record in enumerate(reader):
            if i == 0:
                header = [_header_text(cell) for cell in record]
            elif any(cell.strip() for cell in record):
                rows.append(list(record))
                lines.append(start)
            else:
                blank += 1
            start = reader.line_num + 1
    except csv.Error as err:
        raise DataFileError(f"{path}: line {reader.line_num}: malformed CSV ({err})") from err
    shown = {",": "comma", ";": "semicolon", "\t": "tab"}[delimiter]
    return Table(
        header,
        rows,
        lines,
        where=str(path),
        unit="line",
        blank_rows=blank,
        decimal_comma=delimiter != ",",
        note=f"CSV, {encoding}, {shown}-separated",
    )


def _read_excel(path: Path, data: bytes, sheet: str | None) -> Table:
    import zipfile

    import openpyxl
    from openpyxl.utils.exceptions import InvalidFileException

    try:
        wb = openpyxl.load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    except (InvalidFileException, zipfile.BadZipFile, KeyError, OSError, ValueError) as err:
        raise DataFileError(f"{path}: not a readable Excel workbook ({type(err).__name__}: {err})") from err
    try:
        if sheet is None:
            ws = wb.active if wb.active is not None else wb.worksheets[0]
        elif sheet in wb.sheetnames:
            ws = wb[sheet]
        else:
            raise DataFileError(f"{path}: no sheet {sheet!r} (sheets: {wb.sheetnames})")
        where = f"{path} (sheet {ws.title!r})"
        ws.reset_dimensions()  # exports from other software often store wrong dimensions: read what is there
        header: list[str] = []
        rows: list[list[object]] = []
        lines: list[int] = []
        blank = 0
        for number, record in enumerate(ws.iter_rows(min_row=1, values_only=True), start=1):
            if number == 1:
                header = [_header_text(cell) for cell in record]
            elif any(not _is_empty(cell) for cell in record):
                rows.append(list(record))
                lines.append(number)
            else:
                blank += 1
    finally:
        wb.close()
    return Table(header, rows, lines, where=where, unit="row", blank_rows=blank, note=f"Excel, sheet {ws.title!r}")


def _header_text(cell: object) -> str:
    if isinstance(cell, float) and cell.is_integer():
        return str(int(cell))  # Excel stores the sample-number headers 1, 2, ... as floats
    return "" if cell is None else str(cell).strip()


def _is_empty(cell: object) -> bool:
    return cell is None or (isinstance(cell, str) and not cell.strip())


# ---------------------------------------------------------------------------------------------------------- columns


@dataclass(frozen=True)
class _Columns:
    index: dict[str, int]  # canonical name -> column index
    time: list[int]  # column indices of the waveform samples, in sample order
    ignored: list[str]


def _resolve_columns(table: Table) -> _Columns:
    where, header = table.where, table.header
    index: dict[str, int] = {}
    numbered: dict[int, int] = {}
    ignored: list[str] = []
    for j, name in enumerate(header):
        canonical = _COLUMN_KEYS.get(_header_key(name)) if name else None
        if canonical is not None:
            if canonical in index:
                raise DataFileError(
                    f"{where}: columns {header[index[canonical]]!r} and {name!r} both give {canonical!r}; keep one"
                )
            index[canonical] = j
        elif re.fullmatch(r"\d+", name):
            if int(name) in numbered:
                raise DataFileError(
                    f"{where}: time column {name!r} appears twice (columns {numbered[int(name)] + 1} and {j + 1})"
                )
            numbered[int(name)] = j
        elif name:
            ignored.append(name)
        elif any(j < len(row) and not _is_empty(row[j]) for row in table.rows):
            ignored.append(f"(unnamed column {j + 1})")
    named = [h for h in header if h and not re.fullmatch(r"\d+", h)]
    found = f"columns found: {named}" + (
        f" and {len(numbered)} time columns {min(numbered)}..{max(numbered)}" if numbered else ""
    )
    missing = [name for name in REQUIRED_COLUMNS if name not in index]
    if missing:
        wanted = "; ".join(f"{name!r} (accepted: {', '.join(REQUIRED_COLUMNS[name])})" for name in missing)
        raise DataFileError(f"{where}: missing required column(s) {wanted}; {found}")
    for w in WAVES:
        lat, amp = f"latency_{w}", f"amplitude_{w}"
        for have, lack in ((lat, amp), (amp, lat)):
            if have in index and lack not in index:
                raise DataFileError(
                    f"{where}: column {header[index[have]]!r} has no partner: missing column {lack!r} "
                    f"(accepted: {', '.join(OPTIONAL_COLUMNS[lack])}); {found}"
                )
    if "threshold" not in index and "latency_V" not in index:
        raise DataFileError(
            f"{where}: no threshold column (accepted: {', '.join(OPTIONAL_COLUMNS['threshold'])}) and no wave V "
            f"columns to derive it from (accepted: {', '.join(OPTIONAL_COLUMNS['latency_V'])} and "
            f"{', '.join(OPTIONAL_COLUMNS['amplitude_V'])}); {found}"
        )
    if not numbered:
        raise DataFileError(
            f"{where}: no time columns (waveform samples: columns whose header is an integer, e.g. 1 .. 467); {found}"
        )
    order = sorted(numbered)
    gaps = [n for n in range(order[0], order[-1] + 1) if n not in numbered]
    if gaps:
        raise DataFileError(
            f"{where}: time columns {order[0]} .. {order[-1]} are not consecutive (missing {gaps[:10]}); the samples "
            f"must be evenly spaced"
        )
    return _Columns(index, [numbered[n] for n in order], ignored)


# ------------------------------------------------------------------------------------------------------------- cells


def _number(cell: object, decimal_comma: bool) -> float | None:
    """The finite-or-not float in `cell`, None when empty; raises ValueError when it is not a number."""
    if _is_empty(cell):
        return None
    if isinstance(cell, bool):
        raise ValueError
    if isinstance(cell, (int, float)):
        return float(cell)
    if not isinstance(cell, str):
        raise ValueError  # dates, times, formulas' error objects
    text = cell.strip()
    if decimal_comma and re.fullmatch(r"[+-]?\d*,\d+([eE][+-]?\d+)?", text):
        text = text.replace(",", ".")
    if "_" in text:
        raise ValueError  # float() accepts "1_000"; an export never means that
    return float(text)


@dataclass
class _RowReader:
    """Parses the cells of one row into typed values, raising `_RowError` at the first bad cell."""

    table: Table
    columns: _Columns
    axis_ms: tuple[float, float]

    def cell(self, row: list[object], name: str) -> object:
        j = self.columns.index[name]
        return row[j] if j < len(row) else None

    def header(self, name: str) -> str:
        return self.table.header[self.columns.index[name]]

    def number(self, row: list[object], name: str, *, required: bool = True) -> float | None:
        cell, col = self.cell(row, name), self.header(name)
        try:
            value = _number(cell, self.table.decimal_comma)
        except ValueError:
            raise _RowError(f"column {col!r}: not a number", f"column {col!r}: {cell!r} is not a number") from None
        if value is None:
            if required:
                raise _RowError(f"column {col!r}: empty", f"column {col!r}: the cell is empty")
            return None
        if not math.isfinite(value):
            raise _RowError(f"column {col!r}: NaN or infinite", f"column {col!r}: {cell!r} is not a finite number")
        return value

    def in_range(self, row: list[object], name: str, lo: float, hi: float, unit: str) -> float:
        value = self.number(row, name)
        assert value is not None
        if not lo <= value <= hi:
            col = self.header(name)
            raise _RowError(
                f"column {col!r}: outside [{lo:g}, {hi:g}] {unit}",
                f"column {col!r}: {value:g} is outside the plausible range [{lo:g}, {hi:g}] {unit}",
            )
        return value

    def parse(self, row: list[object]) -> dict[str, object]:
        width = len(self.table.header)
        extra = [c for c in row[width:] if not _is_empty(c)]
        if extra:
            raise _RowError(
                "more cells than header columns",
                f"{len(row)} cells but the header has {width} columns (a decimal comma in a comma-separated file?)",
            )
        out: dict[str, object] = {"patient_id": self.patient_id(row), "label": self.label(row)}
        out["static"] = [
            self.in_range(row, name, *STATIC_RANGES[name], unit)
            for name, unit in zip(STATIC_NAMES, STATIC_UNITS, strict=True)
        ]
        out["ear"] = self.ear(row) if "ear" in self.columns.index else ""
        if "threshold" in self.columns.index:
            out["threshold"] = self.in_range(row, "threshold", *THRESHOLD_RANGE, "dB nHL")
        peaks, mask = np.zeros((len(WAVES), 2)), np.zeros(len(WAVES), dtype=bool)
        for k, w in enumerate(WAVES):
            if f"latency_{w}" not in self.columns.index:
                continue
            lat = self.number(row, f"latency_{w}", required=False)
            amp = self.number(row, f"amplitude_{w}", required=False)
            if (lat is None) != (amp is None):
                have, lack = ("latency", "amplitude") if amp is None else ("amplitude", "latency")
                col = self.header(f"{lack}_{w}")
                raise _RowError(
                    f"column {col!r}: wave {w} {have} without {lack}",
                    f"column {col!r}: wave {w} has a {have} but the {lack} cell is empty",
                )
            if lat is not None and amp is not None:
                lo, hi = self.axis_ms
                if not lo <= lat <= hi:
                    col = self.header(f"latency_{w}")
                    raise _RowError(
                        f"column {col!r}: latency outside the time axis",
                        f"column {col!r}: wave {w} latency {lat:g} ms is outside the time axis [{lo:g}, {hi:g}] ms",
                    )
                peaks[k], mask[k] = (lat, amp), True
        out["peaks"], out["mask"] = peaks, mask
        out["signal"] = self.signal(row)
        return out

    def patient_id(self, row: list[object]) -> str:
        cell = self.cell(row, "patient_id")
        if isinstance(cell, float) and cell.is_integer():
            cell = int(cell)  # Excel stores numeric ids as floats: 12.0 -> "12"
        text = "" if cell is None else str(cell).strip()
        if re.fullmatch(r"\d+\.0+", text):
            text = text.split(".")[0]  # the same float id written to CSV ("12.0"); "012" keeps its zero
        if not text:
            col = self.header("patient_id")
            raise _RowError(f"column {col!r}: empty", f"column {col!r}: the patient id is empty")
        return text

    def label(self, row: list[object]) -> int:
        cell, col = self.cell(row, "class"), self.header("class")
        text = "" if cell is None else str(cell)
        label = _CLASS_KEYS.get(_fold(text))
        if label is None:
            accepted = "; ".join(f"{name}: {', '.join(aliases)}" for name, aliases in CLASS_ALIASES.items())
            raise _RowError(
                f"column {col!r}: unknown class",
                f"column {col!r}: unknown class {text.strip()!r} (accepted, any case: {accepted})",
            )
        return label

    def ear(self, row: list[object]) -> str:
        cell, col = self.cell(row, "ear"), self.header("ear")
        text = "" if cell is None else str(cell)
        ear = EAR_ALIASES.get(_fold(text))
        if ear is None:
            raise _RowError(
                f"column {col!r}: unknown ear",
                f"column {col!r}: unknown ear {text.strip()!r} (accepted: L, R, left, right, sol, sağ or empty)",
            )
        return ear

    def signal(self, row: list[object]) -> list[float]:
        values = []
        for j in self.columns.time:
            cell, col = (row[j] if j < len(row) else None), self.table.header[j]
            try:
                value = _number(cell, self.table.decimal_comma)
            except ValueError:
                raise _RowError(
                    "time columns: not a number", f"time column {col!r}: {cell!r} is not a number"
                ) from None
            if value is None:
                raise _RowError("time columns: empty cell", f"time column {col!r}: the cell is empty")
            if not math.isfinite(value):
                raise _RowError("time columns: NaN or infinite", f"time column {col!r}: {cell!r} is not finite")
            values.append(value)
        return values


# -------------------------------------------------------------------------------------------------------- resampling


def resample_waveforms(
    x: np.ndarray, export_fs_hz: float, export_onset_ms: float, fs_hz: float, onset_ms: float, num_samples: int
) -> np.ndarray:
    """Resample rows of `x` (sampled at `export_fs_hz` from `export_onset_ms`) onto the target time axis.

    A polyphase FIR (`scipy.signal.resample_poly`, Kaiser window, linear phase with its delay removed) changes the
    rate by the rational ratio fs_hz / export_fs_hz, low-passing below the lower Nyquist frequency when
    downsampling; a cubic spline then evaluates the result at the exact target times (onsets need not align).
    The caller checks that the export covers the target window.
    """
    from scipy.interpolate import CubicSpline
    from scipy.signal import resample_poly

    ratio = _ratio(fs_hz, export_fs_hz)
    mid = resample_poly(x, ratio.numerator, ratio.denominator, axis=1, padtype="line")
    mid_fs = export_fs_hz * ratio.numerator / ratio.denominator
    mid_t = export_onset_ms + 1000.0 * np.arange(mid.shape[1]) / mid_fs
    t = onset_ms + 1000.0 * np.arange(num_samples) / fs_hz
    spline = CubicSpline(mid_t, mid, axis=1)
    return spline(np.clip(t, mid_t[0], mid_t[-1]))


def _ratio(fs_hz: float, export_fs_hz: float) -> Fraction:
    exact = Fraction(str(fs_hz)) / Fraction(str(export_fs_hz))
    return exact if max(exact.numerator, exact.denominator) <= 1000 else exact.limit_denominator(1000)


def _check_coverage(table: Table, num_export: int, params: dict[str, float], num_samples: int) -> str:
    """Raise unless the export's samples span the target window; return a description of both axes."""
    efs, eon, fs, on = params["export_fs_hz"], params["export_onset_ms"], params["fs_hz"], params["onset_ms"]
    have = (eon, eon + 1000.0 * (num_export - 1) / efs)
    need = (on, on + 1000.0 * (num_samples - 1) / fs)
    desc = (
        f"{num_export} samples at {efs:g} Hz from {eon:g} ms (covers {have[0]:.3f}-{have[1]:.3f} ms) -> "
        f"{num_samples} samples at {fs:g} Hz from {on:g} ms (needs {need[0]:.3f}-{need[1]:.3f} ms)"
    )
    tol = 1e-6
    if num_export < 2 or need[0] < have[0] - tol or need[1] > have[1] + tol:
        raise DataFileError(
            f"{table.where}: the export does not cover the target time axis: its {num_export} time columns at "
            f"{efs:g} Hz from {eon:g} ms cover {have[0]:.3f}-{have[1]:.3f} ms, but {num_samples} samples at {fs:g} Hz "
            f"from {on:g} ms need {need[0]:.3f}-{need[1]:.3f} ms. Check the export's sample rate and onset "
            f"(--export-fs-hz, --export-onset-ms) or request a shorter window (--duration-ms)"
        )
    return desc


# ------------------------------------------------------------------------------------------------------------ import


def import_export(
    path: str | Path,
    *,
    export_fs_hz: float = 30000.0,
    export_onset_ms: float = 0.0,
    fs_hz: float = 20000.0,
    duration_ms: float = 15.0,
    onset_ms: float = 0.0,
    skip_invalid: bool = False,
    sheet: str | None = None,
) -> tuple[ABRRecords, ImportReport]:
    """Convert a clinical export into validated `ABRRecords` on the target axis, and report what happened.

    Args:
        path: the ``.csv`` or ``.xlsx`` export.
        export_fs_hz, export_onset_ms: the export's sample rate and the time of its first sample after the click.
        fs_hz, duration_ms, onset_ms: the target axis: round(duration_ms * fs_hz / 1000) samples from onset_ms.
        skip_invalid: drop rows with a bad cell (reported per reason) instead of raising.
        sheet: Excel sheet name (default: the active sheet).

    Raises:
        DataFileError: naming the file, column and line of the first problem; missing columns and an export that
            does not cover the target window are errors even with `skip_invalid`.
        ValueError: non-positive or non-finite rates / durations.
    """
    path = Path(path)
    for name, value in (("export_fs_hz", export_fs_hz), ("fs_hz", fs_hz), ("duration_ms", duration_ms)):
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be a positive number, got {value}")
    for name, value in (("export_onset_ms", export_onset_ms), ("onset_ms", onset_ms)):
        if not math.isfinite(value):
            raise ValueError(f"{name} must be finite, got {value}")
    num_samples = round(duration_ms * fs_hz / 1000.0)
    if num_samples < 2:
        raise ValueError(f"duration_ms={duration_ms} at fs_hz={fs_hz} gives {num_samples} samples; need at least 2")
    axis = {"export_fs_hz": export_fs_hz, "export_onset_ms": export_onset_ms, "fs_hz": fs_hz, "onset_ms": onset_ms}

    data = _read_bytes(path)
    table = _read_table(path, data, sheet)
    columns = _resolve_columns(table)
    axis_desc = _check_coverage(table, len(columns.time), axis, num_samples)
    report = ImportReport(
        source=str(path),
        sha256=hashlib.sha256(data).hexdigest(),
        rows_read=len(table.rows),
        ignored_columns=columns.ignored,
        blank_rows=table.blank_rows,
        unit=table.unit,
        read_as=table.note,
        axis=axis_desc,
    )
    if not table.rows:
        raise DataFileError(f"{table.where}: no data rows (only a header)")

    reader = _RowReader(table, columns, (onset_ms, onset_ms + 1000.0 * num_samples / fs_hz))
    parsed: list[dict[str, object]] = []
    lines: list[int] = []
    dropped: dict[str, list[int]] = defaultdict(list)
    for row, line in zip(table.rows, table.lines, strict=True):
        try:
            parsed.append(reader.parse(row))
            lines.append(line)
        except _RowError as err:
            if not skip_invalid:
                raise DataFileError(f"{table.where}: {table.unit} {line}: {err.detail}") from None
            dropped[err.reason].append(line)
    report.dropped = dict(dropped)
    if not parsed:
        raise DataFileError(f"{table.where}: no valid rows left after dropping invalid ones\n{report.summary()}")

    patient_id = np.array([p["patient_id"] for p in parsed], dtype=object)
    ear = np.array([p["ear"] for p in parsed], dtype=object)
    static = np.array([p["static"] for p in parsed], dtype=np.float64)
    peaks = np.stack([p["peaks"] for p in parsed])
    mask = np.stack([p["mask"] for p in parsed])
    if "threshold" in columns.index:
        threshold = np.array([p["threshold"] for p in parsed], dtype=np.float64)
        report.thresholds_from = "column"
        report.ears = len(set(zip(patient_id, ear, strict=True)))
    else:
        threshold, report.ears, report.censored_thresholds = derive_thresholds(
            patient_id, ear, static[:, STATIC_NAMES.index("intensity")], mask[:, WAVES.index("V")]
        )
        report.thresholds_from = "wave V"

    waveforms = np.array([p["signal"] for p in parsed], dtype=np.float64)
    signal = resample_waveforms(waveforms, export_fs_hz, export_onset_ms, fs_hz, onset_ms, num_samples)
    label = np.array([p["label"] for p in parsed], dtype=np.int64)
    records = ABRRecords(
        signal=signal.astype(np.float32),
        static=static.astype(np.float32),
        peaks=peaks.astype(np.float32),
        peak_mask=mask.astype(bool),
        label=label,
        threshold_db=threshold.astype(np.float32),
        patient_id=patient_id,
        ear=ear,
        fs_hz=float(fs_hz),
        onset_ms=float(onset_ms),
    )
    records.validate(table.where)
    report.rows_written = len(records)
    report.patients = len(set(patient_id))
    counts = Counter(int(v) for v in label)
    report.class_counts = {name: counts.get(k, 0) for k, name in enumerate(CLASS_NAMES)}
    return records, report


def derive_thresholds(
    patient_id: np.ndarray, ear: np.ndarray, intensity: np.ndarray, wave_v: np.ndarray
) -> tuple[np.ndarray, int, int]:
    """Per-row threshold of its (patient, ear): the lowest intensity with wave V present.

    An ear whose wave V is absent at every tested level gets its highest level + `CENSOR_MARGIN_DB` (censored: the
    true threshold is above every level tried). Rows with an unknown ear ("") of a patient form one group.

    Returns:
        (threshold per row, number of (patient, ear) groups, number of censored groups)
    """
    groups: dict[tuple[str, str], list[int]] = defaultdict(list)
    for i, key in enumerate(zip(patient_id, ear, strict=True)):
        groups[key].append(i)
    threshold = np.empty(len(patient_id), dtype=np.float64)
    censored = 0
    for rows in groups.values():
        idx = np.array(rows)
        present = idx[wave_v[idx]]
        if present.size:
            threshold[idx] = intensity[present].min()
        else:
            threshold[idx] = intensity[idx].max() + CENSOR_MARGIN_DB
            censored += 1
    return threshold, len(groups), censored


def import_file(
    src: str | Path,
    out: str | Path,
    *,
    export_fs_hz: float = 30000.0,
    export_onset_ms: float = 0.0,
    fs_hz: float = 20000.0,
    duration_ms: float = 15.0,
    onset_ms: float = 0.0,
    skip_invalid: bool = False,
    sheet: str | None = None,
) -> ImportReport:
    """Import `src` (see `import_export`) and write it to `out` with `write_abr_file` (atomic: a failed import
    never leaves a file under `out` and never damages the one already there)."""
    src, out = Path(src), Path(out)
    if out.exists() and src.exists() and out.resolve() == src.resolve():
        raise DataFileError(f"{out}: the output would overwrite the export itself")
    options = {
        "export_fs_hz": float(export_fs_hz),
        "export_onset_ms": float(export_onset_ms),
        "fs_hz": float(fs_hz),
        "duration_ms": float(duration_ms),
        "onset_ms": float(onset_ms),
        "skip_invalid": bool(skip_invalid),
    }
    records, report = import_export(src, sheet=sheet, **options)
    params = {
        "importer_version": IMPORTER_VERSION,
        "source_file": src.name,
        "source_sha256": report.sha256,
        "sheet": sheet,
        **options,
    }
    write_abr_file(out, records, params, source="importer")
    return report
