"""Import a clinical ABR export (CSV or Excel, one row per recording) into the HDF5 schema.

    python scripts/import_abr.py export.csv --out data/clinic.h5 [--export-fs-hz 30000] [--export-onset-ms 0]
        [--fs-hz 20000] [--duration-ms 15] [--onset-ms 0] [--skip-invalid] [--sheet NAME]

The export's sample rate and onset are explicit (an Eclipse "ABR-15" export is 467 samples at 30 kHz from 0 ms):
a guessed time axis can cut off wave V without any error. Prints what was read, written and dropped; a bad export
exits with status 1 and a message naming the file, column and line. See `abr_lab.optimized_unet.importer`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from abr_lab.data import DataFileError
from abr_lab.optimized_unet.importer import import_file


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("export", type=Path, help="the clinical export (.csv or .xlsx)")
    parser.add_argument("--out", type=Path, required=True, help="the HDF5 file to write (replaced atomically)")
    parser.add_argument("--export-fs-hz", type=float, default=30000.0, help="sample rate of the export's time columns")
    parser.add_argument("--export-onset-ms", type=float, default=0.0, help="time of the export's first sample, ms")
    parser.add_argument("--fs-hz", type=float, default=20000.0, help="target sample rate")
    parser.add_argument("--duration-ms", type=float, default=15.0, help="target window length, ms")
    parser.add_argument("--onset-ms", type=float, default=0.0, help="time of the target's first sample, ms")
    parser.add_argument("--skip-invalid", action="store_true", help="drop (and report) invalid rows instead of failing")
    parser.add_argument("--sheet", default=None, help="Excel sheet name (default: the active sheet)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        report = import_file(
            args.export,
            args.out,
            export_fs_hz=args.export_fs_hz,
            export_onset_ms=args.export_onset_ms,
            fs_hz=args.fs_hz,
            duration_ms=args.duration_ms,
            onset_ms=args.onset_ms,
            skip_invalid=args.skip_invalid,
            sheet=args.sheet,
        )
    except DataFileError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except ValueError as err:  # inconsistent options (non-positive rates, a window of < 2 samples)
        parser.error(str(err))
    print(report.summary())
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
