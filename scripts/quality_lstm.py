"""Quality bar of the LSTM extractor: train the default recipe, then print its test MSE beside the baselines'.

    python scripts/quality_lstm.py [extra hydra overrides]      (what `make quality` runs)

Trains `experiment=lstm_extractor` through train.py exactly as a user would, reads the run's metrics.json, runs the
Kalman and band-pass baselines on the same test split, prints a table, writes `quality.json` in the run directory,
and exits non-zero if the bar is missed (test MSE <= 0.10 over whole signals and below the band-pass filter's).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

from lstm_baselines import baselines  # noqa: E402

BAR_MSE = 0.10


def main(overrides: list[str]) -> int:
    run_dir = REPO / "outputs" / "quality" / "lstm_extractor" / time.strftime("%Y-%m-%d_%H-%M-%S")
    command = [sys.executable, str(REPO / "train.py"), "experiment=lstm_extractor", f"hydra.run.dir={run_dir}"]
    start = time.time()
    subprocess.run([*command, *overrides], cwd=REPO, check=True)
    minutes = (time.time() - start) / 60
    test = json.loads((run_dir / "metrics.json").read_text())["test"]
    lstm = {"mse": test["test/mse"], "mse_settled": test["test/mse_settled"]}
    rows = {"lstm": lstm, **baselines(["experiment=lstm_extractor", *overrides])}

    print(f"\nLSTM extractor, per_signal test split ({minutes:.1f} min of training; run: {run_dir})")
    print(f"{'model':<10} {'MSE (0-10 s)':>14} {'MSE (1-10 s)':>14}")
    for name, r in rows.items():
        print(f"{name:<10} {r['mse']:>14.4f} {r['mse_settled']:>14.4f}")
    passed = lstm["mse"] <= BAR_MSE and lstm["mse"] < rows["bandpass"]["mse"]
    gap = lstm["mse"] / rows["kalman"]["mse"]
    print(f"bar: MSE <= {BAR_MSE} and below band-pass: {'PASS' if passed else 'FAIL'}; LSTM / Kalman = {gap:.1f}x")
    (run_dir / "quality.json").write_text(json.dumps({"rows": rows, "passed": passed, "minutes": minutes}, indent=2))
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
