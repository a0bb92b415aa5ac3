"""Deployment path of a trained spoofing detector: score a folder of audio files, export to TorchScript.

    python -m abr_lab.rawnet2.deploy predict CKPT FOLDER OUT.csv   # one row per WAV/FLAC file
    python -m abr_lab.rawnet2.deploy export CKPT OUT.pt            # TorchScript, checked against the checkpoint

Both rebuild the model from the checkpoint alone and read the clip rule (sample rate, clip length) from the
DataModule hyperparameters saved with it. Scoring is `abr_lab.rawnet2.predict` (what ``python predict.py`` runs
too): the score is the bona fide log-odds, higher means bona fide; the CSV also gives P(bona fide) = sigmoid(score).
"""

from __future__ import annotations

import argparse
import io
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from abr_lab.atomic import atomic_path
from abr_lab.rawnet2.module import RawNet2Module
from abr_lab.rawnet2.predict import Scorer, clip_rule, score_files, score_folder

__all__ = ["Scorer", "export_torchscript", "load_detector", "predict_folder", "score_files"]


def load_detector(ckpt_path: str | Path) -> tuple[RawNet2Module, int, int]:
    """The module in eval mode on the CPU, and the (sample_rate, clip_samples) it was trained with."""
    ckpt_path = Path(ckpt_path)
    if not ckpt_path.is_file():
        raise FileNotFoundError(f"{ckpt_path}: checkpoint not found")
    module = RawNet2Module.load_from_checkpoint(ckpt_path, map_location="cpu", weights_only=True).eval()
    data = torch.load(ckpt_path, map_location="cpu", weights_only=True).get("datamodule_hyper_parameters", {})
    return module, *clip_rule(data)


def predict_folder(ckpt_path: str | Path, folder: str | Path, out: str | Path, batch_size: int = 16) -> Path:
    """Score every WAV/FLAC file under `folder` into the CSV `out` (file, score, p_bonafide), written atomically
    (`abr_lab.rawnet2.predict.score_folder`, the same path as ``python predict.py``)."""
    module, sample_rate, clip_samples = load_detector(ckpt_path)
    return score_folder(Scorer(module.net), folder, out, sample_rate, clip_samples, batch_size)


def export_torchscript(ckpt_path: str | Path, out: str | Path, atol: float = 1e-4) -> Path:
    """Trace the checkpoint's scorer to TorchScript at `out`, after checking it gives the same scores.

    The check runs the checkpoint and the reloaded TorchScript file on random clips of the training length and on a
    shorter one, and refuses to write the file if any score differs by more than `atol`.
    """
    module, _, clip_samples = load_detector(ckpt_path)
    scorer = Scorer(module.net).eval()
    generator = torch.Generator().manual_seed(0)
    example = 0.1 * torch.randn(2, clip_samples, generator=generator)
    with torch.inference_mode(), warnings.catch_warnings():
        # shape checks become constants in the trace (TracerWarning), and torch >= 2.9 marks torch.jit deprecated
        # (FutureWarning): the equivalence check below is what vouches for the file
        warnings.simplefilter("ignore", category=torch.jit.TracerWarning)
        warnings.simplefilter("ignore", category=FutureWarning)
        traced = torch.jit.trace(scorer, example, check_trace=False)
        buffer = io.BytesIO()
        torch.jit.save(traced, buffer)
        reloaded = torch.jit.load(io.BytesIO(buffer.getvalue()))
    max_diff = max_score_difference(scorer, reloaded, clip_samples, generator)
    if max_diff > atol:
        raise RuntimeError(f"TorchScript export of {ckpt_path} differs by {max_diff:.2e} > {atol:g}; not written")
    with atomic_path(out) as tmp:
        tmp.write_bytes(buffer.getvalue())
    return Path(out)


def max_score_difference(a: nn.Module, b: nn.Module, clip_samples: int, generator: torch.Generator) -> float:
    """Largest |score difference| of two scorers over random clips of `clip_samples` and of 3/4 of that length."""
    worst = 0.0
    with torch.inference_mode():
        for length in (clip_samples, clip_samples * 3 // 4):
            x = 0.1 * torch.randn(3, length, generator=generator)
            worst = max(worst, float((a(x) - b(x)).abs().max()))
    return worst


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m abr_lab.rawnet2.deploy", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    predict = commands.add_parser("predict", help="score a folder of WAV/FLAC files into a CSV")
    predict.add_argument("ckpt", type=Path)
    predict.add_argument("folder", type=Path)
    predict.add_argument("out", type=Path)
    predict.add_argument("--batch-size", type=int, default=16)
    export = commands.add_parser("export", help="export the scorer to TorchScript (checked to 1e-4)")
    export.add_argument("ckpt", type=Path)
    export.add_argument("out", type=Path)
    args = parser.parse_args(argv)
    if args.command == "predict":
        print(predict_folder(args.ckpt, args.folder, args.out, args.batch_size))
    else:
        print(export_torchscript(args.ckpt, args.out))


if __name__ == "__main__":
    main()
