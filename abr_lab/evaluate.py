"""Evaluate a checkpoint on its run's test split: `python evaluate.py ckpt_path=<file> [key=value ...]`, or
`abr-eval ckpt_path=...`.

The DataModule and the LightningModule are rebuilt from the checkpoint alone (the config train.py stored in it,
`abr_lab.checkpoint`); ``key=value`` arguments override that config (``data.data_dir=/elsewhere``,
``trainer.accelerator=gpu``). One process, whatever the run used: the metrics are those the training run's synced
test computed (they reduce exactly across processes). `metrics.json` goes to ``output_dir=`` (default
``<run dir>/evaluate/<checkpoint name>/``), never over the training run's own.
"""

from __future__ import annotations

import logging
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L

from abr_lab.checkpoint import checkpoint_config, instantiate_datamodule, load_module, run_dir_of
from abr_lab.run_dir import write_metrics

log = logging.getLogger(__name__)

USAGE = "usage: python evaluate.py ckpt_path=<checkpoint> [output_dir=<dir>] [split=test|val] [config.key=value ...]"


def evaluate(
    ckpt_path: str | Path,
    overrides: Sequence[str] = (),
    output_dir: str | Path | None = None,
    split: str = "test",
) -> dict[str, Any]:
    """Test (or validate) the checkpoint's model on its data; writes and returns the `metrics.json` contents."""
    if split not in ("test", "val"):
        raise ValueError(f"split={split!r}: choose test or val")
    cfg = checkpoint_config(ckpt_path, overrides)
    out = Path(output_dir) if output_dir else run_dir_of(ckpt_path) / "evaluate" / Path(ckpt_path).stem
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)
    datamodule = instantiate_datamodule(cfg)
    model = load_module(ckpt_path, cfg)
    trainer = L.Trainer(
        accelerator=cfg.trainer.get("accelerator", "auto"),
        devices=1,
        precision=cfg.trainer.get("precision", "32-true"),
        deterministic=cfg.trainer.get("deterministic", False),
        logger=False,
        enable_checkpointing=False,
        default_root_dir=str(out),
    )
    run = trainer.test if split == "test" else trainer.validate
    # ckpt_path also restores the DataModule's state (e.g. the U-Net's train-split normalisation); the training
    # callbacks whose states the checkpoint holds (checkpointing, curriculum, ...) have no part in an evaluation
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*callbacks used to create the checkpoint need to be provided")
        results = run(model, datamodule=datamodule, ckpt_path=str(ckpt_path))
    summary = {
        split: results[0] if results else {},
        "checkpoint": str(Path(ckpt_path).resolve()),
        "overrides": list(overrides),
        "num_parameters": sum(p.numel() for p in model.parameters()),
    }
    path = write_metrics(out, summary)
    log.info("metrics: %s", path)
    return summary


def parse_arguments(argv: Sequence[str]) -> tuple[dict[str, str], list[str]]:
    """Split ``key=value`` arguments into evaluate's own (no dot in the key) and config overrides (dotted)."""
    own: dict[str, str] = {}
    overrides: list[str] = []
    for arg in argv:
        key, sep, value = arg.partition("=")
        if not sep:
            raise SystemExit(f"argument {arg!r}: expected key=value\n{USAGE}")
        if "." in key:
            overrides.append(arg)
        elif key in ("ckpt_path", "output_dir", "split"):
            own[key] = value
        else:
            raise SystemExit(f"unknown argument {key!r}: evaluate takes ckpt_path, output_dir, split\n{USAGE}")
    if "ckpt_path" not in own:
        raise SystemExit(f"ckpt_path is required\n{USAGE}")
    return own, overrides


def main(argv: Sequence[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    own, overrides = parse_arguments(sys.argv[1:] if argv is None else argv)
    summary = evaluate(own["ckpt_path"], overrides, own.get("output_dir"), own.get("split", "test"))
    split = own.get("split", "test")
    for name, value in sorted(summary[split].items()):
        print(f"{name:32s} {value:.6g}")


if __name__ == "__main__":
    main()
