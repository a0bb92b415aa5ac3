"""Test-split (or val-split) scores of the classic jigsaw baseline, OpenCV template matching, on the puzzle data.

    python scripts/puzzle_baselines.py [hydra overrides ...] [--split val|test] [--limit N]
                                       [--scales 0.9 1.0 1.1] [--method ccoeff_normed|ccorr_normed]
                                       [--untrained] [--look-alikes]
                                       [--out outputs/baselines/puzzle_baselines.json]

The config is composed as ``train.py model=puzzle_cnn <overrides>`` would (default data: ``data=puzzle_photos``, the
scikit-image photographs); overrides such as ``data.rows=4``, ``data.jigsaw=false``,
``data.photometric_strength=0`` or ``data=image_folder data.root=/photos`` apply. The split's puzzles are those
the DataModule gives PuzzleCNN, batch by batch. `TemplateMatcher` (see `abr_lab.puzzle_cnn.baselines`) places and
turns every piece (or the first ``--limit``); scored with `PuzzleMetrics`: mean IoU, share with IoU >= 0.5, centre
error in cell widths, rotation accuracy and its confusion matrix, spread ratio, and the seconds per piece. Prints a
table and writes the figures as JSON.

``--untrained`` also scores the configured PuzzleCNN before any training (seed 0; the model's own validation or test
loop on every piece of the split, ``--limit`` not applied): what its parameter-free pixel level and random features
give on their own, the starting point of a training run.

``--look-alikes`` also measures the split itself (`abr_lab.puzzle_cnn.ambiguity`): the share of pieces for which
another place, or another turn, resembles the piece's clean pixels at least as closely as the photographed piece
does (the split rendered a second time with ``data.photometric_strength=0``), and the pixel level's hits among the
pieces with and without such a look-alike, with percentiles of how far the rival beats the piece's own score: how
hard the split's photographs are, whatever the model; and the share of pieces whose right place is among the pixel
level's best 4 / 8 / 32 distinct candidate places (what re-ranking them could at most place).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import hydra
import lightning as L
from omegaconf import OmegaConf

from abr_lab.atomic import atomic_write_text
from abr_lab.config import compose_config
from abr_lab.puzzle_cnn.ambiguity import LookAlikes, look_alikes, summarise
from abr_lab.puzzle_cnn.baselines import METHODS, TemplateMatcher, evaluate_template_matching

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "outputs" / "baselines" / "puzzle_baselines.json"
STAGES = {"val": "validate", "test": "test"}  # --split -> the Lightning stage set up
# (header, key, format) of the printed table
COLUMNS = (
    ("IoU", "iou", "{:.3f}"),
    ("acc@0.5", "acc_iou50", "{:.3f}"),
    ("centre err", "centre_error", "{:.3f}"),
    ("rot acc", "rotation_accuracy", "{:.3f}"),
    ("spread", "spread_ratio", "{:.3f}"),
    ("pieces", "pieces", "{:d}"),
    ("s/piece", "seconds_per_piece", "{:.3f}"),
)
SCORES = ("iou", "acc_iou50", "centre_error", "rotation_accuracy", "spread_ratio")  # what both methods report


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--split", choices=tuple(STAGES), default="test", help="the split scored")
    parser.add_argument("--limit", type=int, default=None, help="score only the first N pieces (default: all)")
    parser.add_argument("--scales", type=float, nargs="+", default=[0.9, 1.0, 1.1], help="template scales tried")
    parser.add_argument("--method", choices=tuple(METHODS), default="ccoeff_normed", help="OpenCV correlation")
    parser.add_argument("--untrained", action="store_true", help="also score the untrained PuzzleCNN (seed 0)")
    parser.add_argument("--look-alikes", action="store_true", help="also count pieces with a look-alike place/turn")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    return parser.parse_known_args(argv)


def table(name: str, figures: dict[str, Any]) -> str:
    """The metrics row, then the rotation confusion matrix (rows true rotation k, columns predicted)."""
    widths = [max(len(header), 7) for header, _, _ in COLUMNS]
    lines = [f"{'model':<22} " + " ".join(f"{h:>{w}}" for (h, _, _), w in zip(COLUMNS, widths, strict=True))]
    cells = [fmt.format(figures[key]) for _, key, fmt in COLUMNS]
    lines.append(f"{name:<22} " + " ".join(f"{c:>{w}}" for c, w in zip(cells, widths, strict=True)))
    lines += [
        "",
        "rotation confusion (rows true k, columns predicted k):",
        "      " + "".join(f"{k:>7}" for k in range(4)),
    ]
    lines += [f"k={k:<4}" + "".join(f"{n:>7d}" for n in row) for k, row in enumerate(figures["confusion"])]
    return "\n".join(lines)


def untrained_figures(cfg: Any, dm: L.LightningDataModule, split: str) -> dict[str, float]:
    """The configured PuzzleCNN's metrics on `split` before any training, through its own evaluation loop (and the
    share of puzzles whose grid it read right, with ``model.grid=pieces``)."""
    L.seed_everything(0, workers=True)
    model = hydra.utils.instantiate(cfg.model, _convert_="all")
    trainer = L.Trainer(
        accelerator="cpu", devices=1, logger=False, enable_checkpointing=False, enable_progress_bar=False
    )
    run = trainer.validate if split == "val" else trainer.test
    metrics = run(model, datamodule=dm, verbose=False)[0]
    keys = [*SCORES, "grid_read"] if f"{split}/grid_read" in metrics else SCORES  # grid_read: model.grid=pieces
    return {key: metrics[f"{split}/{key}"] for key in keys}


def split_loader(cfg: Any, split: str) -> tuple[L.LightningDataModule, Any]:
    """The configured DataModule, set up for `split`, and that split's loader."""
    dm = hydra.utils.instantiate(cfg.data, _convert_="all")
    dm.prepare_data()
    dm.setup(STAGES[split])
    return dm, dm.val_dataloader() if split == "val" else dm.test_dataloader()


def look_alike_figures(cfg: Any, loader: Any, split: str) -> dict[str, Any]:
    """`summarise` of every piece of the split, against the same split rendered without photometric changes."""
    clean_cfg = OmegaConf.merge(cfg, {"data": {"photometric_strength": 0.0}})
    _, clean_loader = split_loader(clean_cfg, split)
    found = LookAlikes.cat(look_alikes(c, b) for c, b in zip(clean_loader, loader, strict=True))
    return summarise(found)


def main(argv: list[str]) -> dict[str, Any]:
    args, overrides = parse_args(argv)
    unknown = [o for o in overrides if o.startswith("--")]
    if unknown:
        raise SystemExit(f"unknown option(s) {unknown}; hydra overrides look like key=value")
    matcher = TemplateMatcher(scales=args.scales, method=args.method)
    with tempfile.TemporaryDirectory() as run_dir:
        cfg = compose_config(["model=puzzle_cnn", *overrides], output_dir=run_dir, root_dir=REPO)
    dm, loader = split_loader(cfg, args.split)

    figures = evaluate_template_matching(loader, matcher, limit=args.limit)
    name = f"template_{args.method}"
    print(f"\nTemplate matching ({args.method}, scales {args.scales}), {args.split} split, {figures['pieces']} pieces")
    print(table(name, figures))
    results = {name: figures}
    if args.untrained:
        results["puzzle_cnn_untrained"] = untrained_figures(cfg, dm, args.split)
        print(
            "\nPuzzleCNN, untrained (seed 0): "
            + ", ".join(f"{k} {v:.3f}" for k, v in results["puzzle_cnn_untrained"].items())
        )
    if args.look_alikes:
        results["look_alikes"] = look_alike_figures(cfg, loader, args.split)
        print(f"\nLook-alikes ({args.split} split, {results['look_alikes']['pieces']} pieces):")
        print("\n".join(f"  {k:<40} {v:>8.3f}" for k, v in results["look_alikes"].items() if k != "pieces"))
    report = {
        "results": results,
        "split": args.split,
        "overrides": ["model=puzzle_cnn", *overrides],
        "data": OmegaConf.to_container(cfg.data, resolve=True),
        "settings": {"scales": args.scales, "method": args.method, "limit": args.limit},
    }
    atomic_write_text(args.out, json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")
    return report


if __name__ == "__main__":
    main(sys.argv[1:])
