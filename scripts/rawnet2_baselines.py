"""Test-split scores of the classic ASVspoof countermeasure, LFCC + two GMMs, on the synthetic spoofing data.

    python scripts/rawnet2_baselines.py [--data-dir <repo>/data/spoof_synth] [--num-train 2000] [--num-test 2000]
                                        [--seed 42] [--train-attacks A01 A02 A03 A04] [--test-attacks A01 A02 ...]
                                        [--min-seconds 2.5] [--max-seconds 4.5] [--bonafide-fraction 0.2]
                                        [--model lfcc_gmm] [--n-components 128] [--max-iter 100]
                                        [--hidden 256 256] [--max-epochs 30] [--max-frames 200000] [--model-seed 0]
                                        [--out outputs/baselines/spoof_baselines.json]

The train and test splits are those the RawNet2 DataModule reads (generated once by
`abr_lab.rawnet2.generator.write_split` into ``--data-dir``, then cached; the defaults match the DataModule's).
The countermeasure (see `abr_lab.rawnet2.baselines`) is fitted on the train split and scores the test split:
``--model lfcc_gmm`` (default; `LFCCGMM`, the bar's baseline, options ``--n-components --max-iter``) or
``--model lfcc_mlp`` (`LFCCMLP`, a perceptron on the same frames, options ``--hidden --max-epochs``; written to
``spoof_baselines_lfcc_mlp.json`` unless ``--out`` says otherwise, so the GMM report the quality script reuses is
never replaced by it). Reported: EER and
min t-DCF over the whole test split; the same on the unseen attacks only (bona fide test clips against the spoofs of
attacks absent from training: the generalisation a countermeasure is judged on); and the EER of each attack against
all bona fide test clips. Prints a table and writes the figures, with the fitting time, as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from abr_lab.atomic import atomic_write_text
from abr_lab.metrics.spoof import compute_eer, compute_min_tdcf
from abr_lab.rawnet2.baselines import LFCCGMM, LFCCMLP, FrameCountermeasure
from abr_lab.rawnet2.generator import ATTACK_IDS, SpoofSynthSpec, read_split, write_split

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "outputs" / "baselines" / "spoof_baselines.json"
MLP_OUT = DEFAULT_OUT.with_name("spoof_baselines_lfcc_mlp.json")
MODEL_OPTIONS = {  # each countermeasure's own options and their defaults
    "lfcc_gmm": {"n_components": 128, "max_iter": 100},
    "lfcc_mlp": {"hidden": [256, 256], "max_epochs": 30},
}
DEFAULT_DATA_DIR = REPO / "data" / "spoof_synth"  # where `data=spoof_synth` (paths.data_dir) puts the splits


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR, help="cache of the generated splits")
    parser.add_argument("--num-train", type=int, default=2000, help="clips in the train split (DataModule default)")
    parser.add_argument("--num-test", type=int, default=2000, help="clips in the test split (DataModule default)")
    parser.add_argument("--seed", type=int, default=42, help="seed of the data generator (DataModule default)")
    corpus = SpoofSynthSpec()  # the corpus options default to the DataModule's
    parser.add_argument("--train-attacks", nargs="+", default=list(corpus.train_attacks), help="attacks of train")
    parser.add_argument("--test-attacks", nargs="+", default=list(corpus.test_attacks), help="attacks of test")
    parser.add_argument("--min-seconds", type=float, default=corpus.min_seconds, help="shortest utterance")
    parser.add_argument("--max-seconds", type=float, default=corpus.max_seconds, help="longest utterance")
    parser.add_argument("--bonafide-fraction", type=float, default=corpus.bonafide_fraction, help="bona fide share")
    parser.add_argument("--model", choices=sorted(MODEL_OPTIONS), default="lfcc_gmm", help="the countermeasure")
    parser.add_argument("--n-components", type=int, help="lfcc_gmm: Gaussians per class (default 128; reference 512)")
    parser.add_argument("--max-iter", type=int, help="lfcc_gmm: EM iterations at most (default 100)")
    parser.add_argument("--hidden", type=int, nargs="+", help="lfcc_mlp: hidden layer widths (default 256 256)")
    parser.add_argument("--max-epochs", type=int, help="lfcc_mlp: passes over the frames at most (default 30)")
    parser.add_argument("--max-frames", type=int, default=200_000, help="frames per class kept for fitting")
    parser.add_argument("--model-seed", type=int, default=0, help="frame subsampling and the model's initialisation")
    parser.add_argument("--out", type=Path, help=f"default: {DEFAULT_OUT} (lfcc_gmm), {MLP_OUT} (lfcc_mlp)")
    args = parser.parse_args(argv)
    for model, options in MODEL_OPTIONS.items():
        for option, default in options.items():
            if model != args.model and getattr(args, option) is not None:
                parser.error(f"--{option.replace('_', '-')} is an option of --model {model}, not of {args.model}")
            if getattr(args, option) is None:
                setattr(args, option, default)
    if args.out is None:
        args.out = DEFAULT_OUT if args.model == "lfcc_gmm" else MLP_OUT
    return args


def countermeasure(args: argparse.Namespace) -> tuple[FrameCountermeasure, dict[str, Any]]:
    """The countermeasure `args` ask for and its settings (recorded in the report)."""
    settings = {option: getattr(args, option) for option in MODEL_OPTIONS[args.model]}
    if args.model == "lfcc_gmm":
        model = LFCCGMM(args.n_components, args.max_frames, args.max_iter, seed=args.model_seed)
    else:
        model = LFCCMLP(args.hidden, args.max_frames, args.max_epochs, seed=args.model_seed)
    return model, settings | {"max_frames": args.max_frames, "model_seed": args.model_seed, "lfcc": model.lfcc_options}


def split_clips(data_dir: Path, spec: SpoofSynthSpec, split: str, num_clips: int, seed: int) -> tuple[Any, list]:
    """The split (read from its cache, generated first if absent) and its clips as a list of float32 arrays."""
    clips = read_split(write_split(data_dir, spec, split, num_clips, seed, progress=True))
    return clips, [clips.clip(i) for i in range(len(clips))]


def spoof_metrics(bonafide: np.ndarray, spoof: np.ndarray) -> dict[str, float]:
    """EER, its threshold and min t-DCF of one bona fide / spoof comparison, with the clip counts."""
    eer, threshold = compute_eer(bonafide, spoof)
    return {
        "eer": eer,
        "threshold": threshold,
        "min_tdcf": compute_min_tdcf(bonafide, spoof),
        "num_bonafide": int(bonafide.size),
        "num_spoof": int(spoof.size),
    }


def evaluate(scores: np.ndarray, label: np.ndarray, attack: np.ndarray, train_attacks: set[str]) -> dict[str, Any]:
    """Overall, unseen-attack and per-attack figures of test `scores` (higher = bona fide)."""
    names = np.asarray(ATTACK_IDS)[attack]  # (n,) attack id per clip, "-" for bona fide
    bonafide, is_spoof = scores[label == 1], label == 0
    unseen = is_spoof & ~np.isin(names, sorted(train_attacks))
    if not unseen.any():
        raise ValueError(f"the test split holds no spoof of an attack unseen in training ({sorted(train_attacks)})")
    per_attack = {
        str(a): spoof_metrics(bonafide, scores[is_spoof & (names == a)]) for a in sorted(set(names[is_spoof]))
    }
    return {
        "overall": spoof_metrics(bonafide, scores[is_spoof]),
        "unseen": spoof_metrics(bonafide, scores[unseen]),
        "per_attack": per_attack,
        "unseen_attacks": sorted(set(names[unseen])),
    }


def table(figures: dict[str, Any], train_attacks: set[str]) -> str:
    """One row for all spoofs, one for the unseen attacks, one per attack (``*`` = unseen in training)."""
    rows = [("all attacks", figures["overall"]), ("unseen", figures["unseen"])]
    rows += [(f"{a}{'' if a in train_attacks else ' *'}", m) for a, m in figures["per_attack"].items()]
    lines = [f"{'spoofs':<12} {'EER %':>7} {'min t-DCF':>9} {'n spoof':>7}"]
    lines += [f"{n:<12} {100 * m['eer']:>7.2f} {m['min_tdcf']:>9.4f} {m['num_spoof']:>7d}" for n, m in rows]
    return "\n".join(lines)


def main(argv: list[str]) -> dict[str, Any]:
    args = parse_args(argv)
    spec = SpoofSynthSpec(
        min_seconds=args.min_seconds,
        max_seconds=args.max_seconds,
        bonafide_fraction=args.bonafide_fraction,
        train_attacks=tuple(args.train_attacks),
        test_attacks=tuple(args.test_attacks),
    )
    train_attacks = set(spec.attacks("train")) - {"-"}
    train, train_clips = split_clips(args.data_dir, spec, "train", args.num_train, args.seed)
    test, test_clips = split_clips(args.data_dir, spec, "test", args.num_test, args.seed)

    model, model_settings = countermeasure(args)
    start = time.perf_counter()
    model.fit(train_clips, np.asarray(train.label))
    fit_seconds = time.perf_counter() - start
    start = time.perf_counter()
    scores = model.score_many(test_clips)
    score_seconds = time.perf_counter() - start

    figures = evaluate(scores, np.asarray(test.label), np.asarray(test.attack), train_attacks)
    figures |= {"fit_seconds": fit_seconds, "score_seconds": score_seconds}
    print(f"\n{args.model}, {len(train_clips)} train / {len(test_clips)} test clips")
    print(f"fit {fit_seconds:.0f} s, scoring {score_seconds:.0f} s; * = attack unseen in training")
    print(table(figures, train_attacks))
    report = {
        "results": {args.model: figures},
        "data_dir": str(args.data_dir),
        "train_attacks": sorted(train_attacks),
        "test_attacks": sorted(set(spec.attacks("test")) - {"-"}),
        "settings": {
            "num_train": args.num_train,
            "num_test": args.num_test,
            "seed": args.seed,
            "min_seconds": args.min_seconds,
            "max_seconds": args.max_seconds,
            "bonafide_fraction": args.bonafide_fraction,
            **model_settings,
        },
    }
    atomic_write_text(args.out, json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")
    return report


if __name__ == "__main__":
    main(sys.argv[1:])
