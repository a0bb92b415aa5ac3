"""Average the weights of several checkpoints of one run into a new checkpoint (checkpoint averaging / SWA).

    python scripts/average_checkpoints.py <run>/checkpoints/epoch009.ckpt <run>/checkpoints/epoch010.ckpt \
        <run>/checkpoints/epoch011.ckpt --out <run>/checkpoints/mean_009-011.ckpt
    python evaluate.py ckpt_path=<run>/checkpoints/mean_009-011.ckpt [split=val ...]

Keep every epoch's checkpoint while training (`callbacks.model_checkpoint.save_top_k=-1`), then choose how many of
the last to average on the validation split, never on the test split. The result (`abr_lab.checkpoint.
average_checkpoints`) evaluates, predicts and exports like any checkpoint of the run; it cannot be resumed.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from abr_lab.checkpoint import average_checkpoints


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoints", nargs="+", type=Path, help="checkpoints of one network, two or more")
    parser.add_argument("--out", type=Path, required=True, help="the averaged checkpoint to write")
    args = parser.parse_args(argv)
    average_checkpoints(args.checkpoints, args.out)  # refuses an --out that is one of the inputs
    print(f"{args.out}: the mean of {len(args.checkpoints)} checkpoints")


if __name__ == "__main__":
    main()
