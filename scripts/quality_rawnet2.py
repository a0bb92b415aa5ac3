"""Quality bar of the RawNet2 family: train the default recipe, then print its test figures beside the LFCC-GMM's.

    python scripts/quality_rawnet2.py [hydra overrides ...]         (what `make quality` runs: model=rawnet2)
    python scripts/quality_rawnet2.py model=rawnet2_lite            (the compact network)
    python scripts/quality_rawnet2.py model=rawnet2_ocsoftmax       (one-class training, OC-softmax)
    python scripts/quality_rawnet2.py model=rawnet2_logband         (log band energies, steps averaged)
    python scripts/quality_rawnet2.py --seeds 42,1,2,3 model=rawnet2_logband data.num_train=4000 \
        trainer.max_epochs=6 'data.val_attacks=[A08]'                (four seeds fused: the figure that meets the bar)

Trains `model=rawnet2` (plus the overrides) through train.py exactly as a user would, reads the run's metrics.json,
and compares the test split of `data=spoof_synth` with the classic countermeasure, LFCC + two GMMs, fitted on the
same train split by `scripts/rawnet2_baselines.py` (reused from `outputs/baselines/spoof_baselines.json` when that
file was made from the same splits, else computed: ~1 min of fitting on 2 cores). Writes `quality.json` in the
run directory and exits non-zero if the bar is missed: on the attacks held out of training (bona fide test clips
against the spoofs of A05-A07), EER <= 5 % and below the LFCC-GMM's. With ``--seeds``, one run per training seed
(``<run>/seed<s>``, each keeping its best checkpoint by its own validation), then their score-level fusion
(`abr_lab.rawnet2.ensemble`, ``<run>/fused.ckpt``) tested: the bar is read on the fused detector, every seed's row
printed beside it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

import rawnet2_baselines  # noqa: E402

from abr_lab.config import compose_config  # noqa: E402
from abr_lab.evaluate import evaluate  # noqa: E402
from abr_lab.rawnet2.ensemble import ensemble_checkpoints  # noqa: E402

BASELINES = rawnet2_baselines.DEFAULT_OUT
RUNS = REPO / "outputs" / "quality" / "rawnet2"
BAR_EER = 0.05
SETTINGS = ("num_train", "num_test", "seed", "min_seconds", "max_seconds", "bonafide_fraction")  # baseline options


def data_settings(overrides: list[str]) -> dict[str, Any]:
    """The run's spoof_synth train and test splits: where they lie and what made them (what the baseline must share;
    the val split, `val_attacks` included, plays no part in it)."""
    with tempfile.TemporaryDirectory() as tmp:
        data = compose_config(overrides, output_dir=tmp, root_dir=REPO).data
        return {
            "data_dir": str(Path(data.data_dir)),
            "num_train": data.num_train,
            "num_test": data.num_test,
            "seed": data.seed,
            "min_seconds": data.min_seconds,
            "max_seconds": data.max_seconds,
            "bonafide_fraction": data.bonafide_fraction,
            "train_attacks": sorted(data.train_attacks),
            "test_attacks": sorted(data.test_attacks),
        }


def baseline_figures(data: dict[str, Any]) -> dict[str, Any]:
    """The LFCC-GMM's test figures, from the cache when it was made on the same splits, else fitted now."""
    if BASELINES.exists():
        report = json.loads(BASELINES.read_text())
        made_on = {
            "data_dir": report["data_dir"],
            "train_attacks": report["train_attacks"],
            "test_attacks": report["test_attacks"],
            **{k: report["settings"].get(k) for k in SETTINGS},
        }
        if made_on == data and "lfcc_gmm" in report["results"]:
            return report["results"]["lfcc_gmm"]
    argv = ["--data-dir", data["data_dir"], "--train-attacks", *data["train_attacks"]]
    argv += ["--test-attacks", *data["test_attacks"]]
    argv += [f"--{key.replace('_', '-')}={data[key]}" for key in SETTINGS]
    return rawnet2_baselines.main(argv)["results"]["lfcc_gmm"]


def model_figures(test: dict[str, float]) -> dict[str, Any]:
    """The model's test figures from metrics.json in the layout of the baseline report."""
    per_attack = {key.removeprefix("test/eer_"): value for key, value in test.items() if key.startswith("test/eer_A")}
    return {
        "overall": {"eer": test["test/eer"], "min_tdcf": test["test/min_tdcf"]},
        "unseen": {"eer": test["test/eer_unseen"], "min_tdcf": test["test/min_tdcf_unseen"]},
        "per_attack": {attack: {"eer": eer} for attack, eer in sorted(per_attack.items())},
        "auroc": test["test/auroc"],
    }


def table(rows: dict[str, dict[str, Any]]) -> str:
    """One line per model: EER and min t-DCF over all and unseen attacks, then the EER of each attack."""
    attacks = sorted(set().union(*(r["per_attack"] for r in rows.values())))
    head = f"{'model':<10} {'EER %':>7} {'t-DCF':>7} {'EER unseen %':>13} {'t-DCF unseen':>13}"
    lines = [head + "".join(f" {a + ' %':>8}" for a in attacks)]
    for name, r in rows.items():
        line = f"{name:<10} {100 * r['overall']['eer']:>7.2f} {r['overall']['min_tdcf']:>7.3f}"
        line += f" {100 * r['unseen']['eer']:>13.2f} {r['unseen']['min_tdcf']:>13.3f}"
        line += "".join(f" {100 * r['per_attack'][a]['eer']:>8.2f}" for a in attacks)
        lines.append(line)
    return "\n".join(lines)


def train_run(run_dir: Path, overrides: list[str]) -> dict[str, Any]:
    """Train ``model=rawnet2`` plus `overrides` through train.py into `run_dir`; its metrics.json contents."""
    command = [sys.executable, str(REPO / "train.py"), "model=rawnet2", f"hydra.run.dir={run_dir}", *overrides]
    subprocess.run(command, cwd=REPO, check=True)
    return json.loads((run_dir / "metrics.json").read_text())


def parse_seeds(argv: list[str]) -> tuple[list[int], list[str]]:
    """``--seeds 42,1,2`` (or ``--seeds=42,1,2``) anywhere in `argv`, and the Hydra overrides around it."""
    seeds: list[int] = []
    overrides: list[str] = []
    args = iter(argv)
    for arg in args:
        if arg == "--seeds" or arg.startswith("--seeds="):
            value = arg.partition("=")[2] if "=" in arg else next(args, "")
            try:
                seeds = [int(seed) for seed in value.split(",")]
            except ValueError:
                raise SystemExit(f"--seeds {value!r}: expected comma-separated integers, e.g. --seeds 42,1,2") from None
            if len(seeds) < 2 or len(set(seeds)) != len(seeds):
                raise SystemExit(f"--seeds {value!r}: name two or more different seeds")
        else:
            overrides.append(arg)
    return seeds, overrides


def main(argv: list[str]) -> int:
    seeds, overrides = parse_seeds(argv)
    run_dir = RUNS / time.strftime("%Y-%m-%d_%H-%M-%S")
    start = time.time()
    rows: dict[str, dict[str, Any]] = {}
    if seeds:
        summaries = {seed: train_run(run_dir / f"seed{seed}", [*overrides, f"seed={seed}"]) for seed in seeds}
        rows |= {f"seed{seed}": model_figures(summary["test"]) for seed, summary in summaries.items()}
        fused = run_dir / "fused.ckpt"
        ensemble_checkpoints([summary["best_checkpoint"] for summary in summaries.values()], fused)
        name, test = "fused", evaluate(fused, output_dir=run_dir / "fused")["test"]
    else:
        name, test = "rawnet2", train_run(run_dir, overrides)["test"]
    minutes = (time.time() - start) / 60
    rows[name] = model_figures(test)
    rows["lfcc_gmm"] = baseline_figures(data_settings(["model=rawnet2", *overrides]))

    print(f"\nRawNet2 on spoof_synth, test split ({minutes:.1f} min of training; run: {run_dir})")
    print("unseen = bona fide test clips against the spoofs of attacks absent from training")
    print(table(rows))
    mine, theirs = rows[name]["unseen"]["eer"], rows["lfcc_gmm"]["unseen"]["eer"]
    passed = mine <= BAR_EER and mine < theirs
    verdict = "PASS" if passed else "FAIL"
    print(f"bar ({name}): unseen-attack EER <= {100 * BAR_EER:.0f} % and below the LFCC-GMM's: {verdict}")
    report = {"rows": rows, "passed": passed, "minutes": minutes, "overrides": overrides, "seeds": seeds}
    (run_dir / "quality.json").write_text(json.dumps(report, indent=2))
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
