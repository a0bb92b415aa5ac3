"""Draw the waterfall of one ear of an ABR file as a PNG (how an audiologist would look at the data).

    python scripts/abr_waterfall.py [FILE.h5] --out waterfall.png [--patient ID] [--ear R] [--dpi 150]

Without FILE, the default simulated dataset (`data=abr`, generated into data/abr/ if absent) is drawn.

Without --patient / --ear, the ear with the most distinct stimulus levels is shown (`pick_series`; with only one of
them, the choice is restricted to it). The PNG is written atomically: an interrupted run never leaves a truncated
image. A bad file or an unknown patient / ear prints one line to stderr and exits with status 1.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from abr_lab.atomic import atomic_path
from abr_lab.data import DataFileError
from abr_lab.optimized_unet.figures import pick_series, waterfall
from abr_lab.optimized_unet.schema import read_abr_file


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("file", type=Path, nargs="?", help="ABR HDF5 file (default: the data=abr simulation)")
    parser.add_argument("--out", type=Path, required=True, help="PNG to write")
    parser.add_argument("--patient", default=None, help="patient_id to show (default: chosen by pick_series)")
    parser.add_argument("--ear", default=None, help="ear to show: L, R or '' (default: chosen by pick_series)")
    parser.add_argument("--dpi", type=float, default=150.0, help="resolution of the PNG (default 150)")
    return parser.parse_args(argv)


def default_file() -> Path:
    """The default simulated dataset's file, generated if absent (imports torch: only on this path)."""
    import tempfile

    from hydra.utils import instantiate

    from abr_lab.config import compose_config

    root = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory() as tmp:
        cfg = compose_config(["data=abr"], output_dir=tmp, root_dir=root)
        datamodule = instantiate(cfg.data, _convert_="all")
    datamodule.prepare_data()
    return datamodule.data_path()


def main(argv: list[str] | None = None) -> int:
    """Write the PNG and print where; returns the exit status (1 on a data or selection error)."""
    args = parse_args(argv)
    try:
        if args.dpi <= 0:
            raise ValueError(f"--dpi {args.dpi:g}: need a positive resolution")
        records = read_abr_file(args.file if args.file is not None else default_file())
        patient_id, ear = pick_series(records, args.patient, args.ear)
        fig = waterfall(records, patient_id, ear)
        with atomic_path(args.out) as tmp:
            fig.savefig(tmp, format="png", dpi=args.dpi)
    except (DataFileError, ValueError, OSError) as err:
        print(f"abr_waterfall: error: {err}", file=sys.stderr)
        return 1
    print(f"wrote {args.out} (patient {patient_id}, ear {ear or '?'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
