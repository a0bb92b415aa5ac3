"""Fuse several trained RawNet2 detectors into one checkpoint: the mean of their bona fide log-odds.

    python scripts/ensemble_rawnet2.py RUN_A/checkpoints/epoch002.ckpt RUN_B/checkpoints/epoch005.ckpt \
        --out outputs/fused.ckpt
    python evaluate.py ckpt_path=outputs/fused.ckpt [split=val 'data.val_attacks=[A08]' ...]

The members must be of one variant (e.g. four seeds of `model=rawnet2_logband`), each chosen on its validation
split, never on the test split. The config, data and DataModule state come from the first file. The result
(`abr_lab.rawnet2.ensemble.ensemble_checkpoints`) evaluates, predicts and exports like any checkpoint of the family;
it cannot be resumed.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from abr_lab.rawnet2.ensemble import ensemble_checkpoints


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoints", nargs="+", type=Path, help="RawNet2 checkpoints of one variant, two or more")
    parser.add_argument("--out", type=Path, required=True, help="the ensemble's checkpoint to write")
    args = parser.parse_args(argv)
    ensemble_checkpoints(args.checkpoints, args.out)  # refuses an --out that is one of the inputs
    print(f"{args.out}: the ensemble of {len(args.checkpoints)} checkpoints")


if __name__ == "__main__":
    main()
