"""Test-split scores of the ABR baselines (gradient-boosted trees, a plain 1-D CNN) on the simulated data.

    python scripts/abr_baselines.py [hydra overrides ...] [--which gbt_static gbt cnn] [--epochs N] [--max-iter N]
                                    [--out outputs/baselines/abr_baselines.json] [--smoke]

The config is composed as `train.py` would (default data: ``data=abr``, the 2000-patient simulation, generated
once into ``data/abr/`` of the repository); overrides such as ``data.simulator.num_patients=500``,
``data.batch_size=128`` or ``data.data_dir=/elsewhere`` apply.
``gbt_static`` is the trees on the four static parameters alone (no waveform): the floor a signal model must clear.
``gbt_oracle`` (only when asked for) reads the simulator's clean waveform instead of the recording: the share of
errors left when no noise hides the response, i.e. the ambiguity of the task itself.
Every baseline trains on the train split, choose iterations / epochs on val and are scored on test with
`ABRMetrics` (see `abr_lab.optimized_unet.baselines`). Prints a compact table and writes every metric as JSON.
``--smoke`` (for tests): ``data=abr_small``, 2 CNN epochs, 20 boosting iterations.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import hydra

from abr_lab.atomic import atomic_write_text
from abr_lab.config import compose_config
from abr_lab.optimized_unet.baselines import cnn_baseline, gbt_baseline

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "outputs" / "baselines" / "abr_baselines.json"
DEFAULT_EPOCHS = 30
DEFAULT_MAX_ITER = 200
# (header, metric key, format) of the printed table
COLUMNS = (
    ("macro-F1", "class/macro_f1", "{:.3f}"),
    ("acc", "class/accuracy", "{:.3f}"),
    ("V lat R²", "peaks/latency_r2_V", "{:.3f}"),
    ("V lat MAE ms", "peaks/latency_mae_V", "{:.3f}"),
    ("V amp R²", "peaks/amplitude_r2_V", "{:.3f}"),
    ("V amp MAE µV", "peaks/amplitude_mae_V", "{:.4f}"),
    ("thr R²", "threshold/r2", "{:.3f}"),
    ("thr MAE dB", "threshold/mae", "{:.2f}"),
    ("fit s", "fit_seconds", "{:.0f}"),
)


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    names = ("gbt_static", "gbt", "cnn", "gbt_oracle")
    parser.add_argument(
        "--which",
        nargs="+",
        choices=names,
        default=list(names[:3]),
        help="gbt_static: no waveform; gbt_oracle: the clean waveform instead of the recording (not by default)",
    )
    parser.add_argument("--epochs", type=int, default=None, help=f"CNN epochs (default {DEFAULT_EPOCHS}; smoke 2)")
    parser.add_argument("--max-iter", type=int, default=None, help=f"boosting iterations (default {DEFAULT_MAX_ITER})")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--smoke", action="store_true", help="data=abr_small, 2 epochs, 20 iterations")
    parser.add_argument("--progress", action="store_true", help="show the CNN's progress bar")
    return parser.parse_known_args(argv)


def table(results: dict[str, dict[str, float]]) -> str:
    """The compact comparison table (one row per baseline; '-' where a metric is missing)."""
    widths = [max(len(header), 7) for header, _, _ in COLUMNS]
    lines = [f"{'model':<10} " + " ".join(f"{h:>{w}}" for (h, _, _), w in zip(COLUMNS, widths, strict=True))]
    for name, row in results.items():
        cells = [fmt.format(row[key]) if key in row else "-" for _, key, fmt in COLUMNS]
        lines.append(f"{name:<10} " + " ".join(f"{c:>{w}}" for c, w in zip(cells, widths, strict=True)))
    return "\n".join(lines)


def main(argv: list[str]) -> dict[str, Any]:
    args, overrides = parse_args(argv)
    unknown = [o for o in overrides if o.startswith("--")]
    if unknown:
        raise SystemExit(f"unknown option(s) {unknown}; hydra overrides look like key=value")
    data = "data=abr_small" if args.smoke else "data=abr"
    epochs = args.epochs if args.epochs is not None else (2 if args.smoke else DEFAULT_EPOCHS)
    max_iter = args.max_iter if args.max_iter is not None else (20 if args.smoke else DEFAULT_MAX_ITER)
    with tempfile.TemporaryDirectory() as run_dir:
        cfg = compose_config([data, *overrides], output_dir=run_dir, root_dir=REPO)
    dm = hydra.utils.instantiate(cfg.data, _convert_="all")
    dm.prepare_data()
    dm.setup()

    results: dict[str, dict[str, float]] = {}
    start = time.time()
    if "gbt_static" in args.which:
        results["gbt_static"] = gbt_baseline(dm, seed=args.seed, max_iter=max_iter, static_only=True)
    if "gbt" in args.which:
        results["gbt"] = gbt_baseline(dm, seed=args.seed, max_iter=max_iter)
    if "gbt_oracle" in args.which:
        results["gbt_oracle"] = gbt_baseline(dm, seed=args.seed, max_iter=max_iter, clean=True)
    if "cnn" in args.which:
        results["cnn"] = cnn_baseline(dm, epochs=epochs, seed=args.seed, progress=args.progress)
    minutes = (time.time() - start) / 60

    print(f"\nABR baselines, test split of {dm.data_path()} ({len(dm.splits['test'])} recordings, {minutes:.1f} min)")
    print(table(results))
    report = {
        "results": results,
        "data": str(dm.data_path()),
        "overrides": [data, *overrides],
        "settings": {"epochs": epochs, "max_iter": max_iter, "seed": args.seed, "smoke": args.smoke},
        "minutes": minutes,
    }
    atomic_write_text(args.out, json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")
    return report


if __name__ == "__main__":
    main(sys.argv[1:])
