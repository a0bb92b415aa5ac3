"""Quality bar of the optimized U-Net: train a recipe, print its test figures beside the baselines and the oracle.

    python scripts/quality_unet.py [hydra overrides ...]            (what `make quality` runs: the default recipe)
    python scripts/quality_unet.py experiment=unet_full             (the full model; for a GPU)

Trains through train.py exactly as a user would (default: `python train.py`, i.e. model=optimized_unet on data=abr),
reads the run's metrics.json, and compares the held-out test split with

- the two baselines of `scripts/abr_baselines.py` (gradient-boosted trees on the recording, the plain 1-D CNN),
  reused from `outputs/baselines/abr_baselines.json` when that file was made from
  the same data file, else computed (~9 min on 2 cores);
- the oracle: the same trees reading the simulator's clean waveform instead of the recording (cached likewise in
  `outputs/baselines/abr_oracle.json`). What the oracle misses is ambiguous by nature (a normal ear tested below its
  threshold shows no response, like a deaf one); the distance between the model and the oracle is what a better
  model could still gain.

Writes `quality.json` in the run directory and exits non-zero if a bar is missed. Bars (per recording, test split):
macro-F1 >= 0.70; wave-V latency R² >= 0.90 and amplitude R² >= 0.80 over present peaks; threshold R² >= 0.70 and
MAE <= 8 dB; correlation of the denoised signal with the clean waveform >= 0.90 over recordings with a response;
each better than both the trees and the CNN; no class with recall 0.
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

import abr_baselines  # noqa: E402
import hydra  # noqa: E402

from abr_lab.config import compose_config  # noqa: E402

BASELINES = REPO / "outputs" / "baselines" / "abr_baselines.json"
ORACLE = REPO / "outputs" / "baselines" / "abr_oracle.json"
# (metric key, label, bar, higher is better, compared with the baselines)
CHECKS: tuple[tuple[str, str, float, bool, bool], ...] = (
    ("class/macro_f1", "macro-F1", 0.70, True, True),
    ("peaks/latency_r2_V", "wave V latency R²", 0.90, True, True),
    ("peaks/amplitude_r2_V", "wave V amplitude R²", 0.80, True, True),
    ("threshold/r2", "threshold R²", 0.70, True, True),
    ("threshold/mae", "threshold MAE dB", 8.0, False, True),
    ("signal/corr_response", "signal corr (clean, response)", 0.90, True, False),
)
COLUMNS = (
    ("macro-F1", "class/macro_f1", "{:.3f}"),
    ("bal acc", "class/balanced_accuracy", "{:.3f}"),
    ("V lat R²", "peaks/latency_r2_V", "{:.3f}"),
    ("V lat MAE", "peaks/latency_mae_V", "{:.3f}"),
    ("V amp R²", "peaks/amplitude_r2_V", "{:.3f}"),
    ("V amp MAE", "peaks/amplitude_mae_V", "{:.4f}"),
    ("thr R²", "threshold/r2", "{:.3f}"),
    ("thr MAE", "threshold/mae", "{:.2f}"),
    ("corr", "signal/corr_response", "{:.3f}"),
)


def data_file(overrides: list[str]) -> str:
    """The ABR file the run trained on, as the baselines' reports name it."""
    with tempfile.TemporaryDirectory() as tmp:
        cfg = compose_config(overrides, output_dir=tmp, root_dir=REPO)
    return str(hydra.utils.instantiate(cfg.data, _convert_="all").data_path())


def cached(path: Path, data: str, which: list[str], overrides: list[str]) -> dict[str, dict[str, float]]:
    """Baseline rows from `path` if it was made from the file `data` with every row of `which`, else computed."""
    if path.is_file():
        report = json.loads(path.read_text())
        if report.get("data") == data and all(name in report["results"] for name in which):
            return {name: report["results"][name] for name in which}
    report = abr_baselines.main(["--which", *which, "--out", str(path), *overrides])
    return report["results"]


def table(rows: dict[str, dict[str, float]]) -> str:
    lines = [f"{'model':<14} " + " ".join(f"{h:>9}" for h, _, _ in COLUMNS)]
    for name, row in rows.items():
        cells = [fmt.format(row[key]) if key in row else "-" for _, key, fmt in COLUMNS]
        lines.append(f"{name:<14} " + " ".join(f"{c:>9}" for c in cells))
    return "\n".join(lines)


def verdicts(model: dict[str, float], rows: dict[str, dict[str, float]]) -> tuple[list[str], bool]:
    """One line per bar and whether all hold."""
    lines, passed = [], True
    for key, label, bar, higher, vs_baselines in CHECKS:
        value = model.get(key)
        ok = value is not None and (value >= bar if higher else value <= bar)
        detail = f"{label}: {value:.3f} (bar {'>=' if higher else '<='} {bar})" if value is not None else f"{label}: -"
        if vs_baselines and value is not None:
            for name in ("gbt", "cnn"):
                other = rows[name].get(key)
                better = other is None or (value > other if higher else value < other)
                ok = ok and better
                detail += f", {name} {other:.3f}" if other is not None else ""
        lines.append(f"  {'PASS' if ok else 'FAIL'}  {detail}")
        passed = passed and ok
    zero = [k.rsplit("_", 1)[-1] for k, v in model.items() if k.startswith("class/recall_") and v == 0]
    lines.append(f"  {'FAIL' if zero else 'PASS'}  no class with recall 0{': ' + ', '.join(zero) if zero else ''}")
    return lines, passed and not zero


def main(overrides: list[str]) -> int:
    run_dir = REPO / "outputs" / "quality" / "optimized_unet" / time.strftime("%Y-%m-%d_%H-%M-%S")
    overrides = ["model=optimized_unet", *overrides]  # the family's recipe even if the framework's default changes
    command = [sys.executable, str(REPO / "train.py"), f"hydra.run.dir={run_dir}", *overrides]
    start = time.time()
    subprocess.run(command, cwd=REPO, check=True)
    minutes = (time.time() - start) / 60
    metrics = json.loads((run_dir / "metrics.json").read_text())
    model = {k.removeprefix("test/"): v for k, v in metrics["test"].items()}
    data = data_file(overrides)

    data_overrides = [o for o in overrides if o.startswith(("data", "+data"))]
    rows: dict[str, Any] = {"optimized_unet": model}
    rows.update(cached(BASELINES, data, ["gbt", "cnn"], data_overrides))
    rows.update(cached(ORACLE, data, ["gbt_oracle"], data_overrides))

    print(f"\nOptimized U-Net, test split of {data} ({minutes:.1f} min incl. data and test; run: {run_dir})")
    print(table(rows))
    per_class = ", ".join(f"{k.removeprefix('class/recall_')} {v:.2f}" for k, v in model.items() if "recall_" in k)
    print(f"U-Net recall per class: {per_class}")
    oracle = rows["gbt_oracle"]
    gap = {k: oracle[k] - model[k] for k in ("class/macro_f1", "threshold/r2") if k in oracle and k in model}
    print("distance to the oracle (oracle - U-Net): " + ", ".join(f"{k} {v:+.3f}" for k, v in gap.items()))
    lines, passed = verdicts(model, rows)
    print("\n".join(["bars:", *lines]))
    report = {"rows": rows, "passed": passed, "minutes": minutes, "overrides": overrides, "run": str(run_dir)}
    (run_dir / "quality.json").write_text(json.dumps(report, indent=2))
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
