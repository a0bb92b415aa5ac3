"""Quality bar of the PuzzleCNN family: train the default recipe, then print its test figures beside template matching.

    python scripts/quality_puzzle_cnn.py [hydra overrides ...]      (what `make quality-puzzle` runs: model=puzzle_cnn)
    python scripts/quality_puzzle_cnn.py --run outputs/quality/puzzle_cnn/<run>     (the figures of a finished run)

Trains `model=puzzle_cnn` (plus the overrides) through train.py exactly as a user would, reads the run's
metrics.json, and compares the test split (photographs never seen in training, at the configured grid, 16 x 16 by
default) with OpenCV template matching of the piece at four rotations and three scales (`scripts/puzzle_baselines.py`;
reused from `outputs/baselines/puzzle_baselines.json` when that file was made on the same data config, else run now:
~0.7 s per piece on one core). The run's best checkpoint is tested with each of the three things it can know of
a puzzle's grid (``model.grid``: ``none``, ``pieces`` read off the puzzle's pieces together, ``told``; the ones the
run was not trained with through evaluate.py), one row each. Writes `quality.json` in the run directory and exits
non-zero if the bar is missed by the model that is given nothing but images, the piece photos and the puzzle's,
and reads the grid off each test puzzle's pieces taken together, as the test split holds them and a solver has
them (``model.grid=pieces``): rotation accuracy >= 95 %, accuracy at IoU >= 0.5 >= 80 %, prediction spread ratio
>= 0.8, and better than template matching on both rotation accuracy and accuracy at IoU >= 0.5. The same checks of
each piece taken alone (``none``, training's default) and of the model told the grid are reported beside it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

import puzzle_baselines  # noqa: E402

from abr_lab.atomic import atomic_write_text  # noqa: E402
from abr_lab.checkpoint import checkpoint_config  # noqa: E402
from abr_lab.config import compose_config  # noqa: E402
from abr_lab.evaluate import evaluate  # noqa: E402

BARS = {"rotation_accuracy": 0.95, "acc_iou50": 0.80, "spread_ratio": 0.8}
BEAT_BASELINE = ("rotation_accuracy", "acc_iou50")
KEYS = ("iou", "acc_iou50", "centre_error", "rotation_accuracy", "spread_ratio")
READ = (*KEYS, "grid_read")
BAR_GRID = "pieces"  # the row the exit status judges: images only, each puzzle's pieces together
GRID_ROWS = {"none": "puzzle_cnn", "pieces": "puzzle_cnn, grid read", "told": "puzzle_cnn, grid told"}


def data_config(overrides: list[str]) -> dict[str, Any]:
    """The run's resolved data config (what the baseline must share)."""
    with tempfile.TemporaryDirectory() as tmp:
        cfg = compose_config(["model=puzzle_cnn", *overrides], output_dir=tmp, root_dir=REPO)
        return OmegaConf.to_container(cfg.data, resolve=True)


def baseline_figures(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Template matching's test figures, from the cache when it was made on the same data, else computed now."""
    cache = puzzle_baselines.DEFAULT_OUT
    if cache.exists():
        report = json.loads(cache.read_text())
        if report.get("data") == data and report.get("split") == "test" and report["settings"].get("limit") is None:
            return report["results"]["template_ccoeff_normed"]
    data_overrides = [o for o in overrides if o.startswith(("data.", "data="))]
    return puzzle_baselines.main(data_overrides)["results"]["template_ccoeff_normed"]


def test_figures(test: dict[str, float]) -> dict[str, float]:
    """`KEYS` of a run's or an evaluation's test metrics, and ``grid_read`` where the grid was read (grid=pieces)."""
    return {key.removeprefix("test/"): value for key, value in test.items() if key.removeprefix("test/") in READ}


def grid_figures(run_dir: Path, best: str, source: str, add: bool) -> dict[str, float]:
    """The run's `best` checkpoint on the test split with ``model.grid`` = `source` (evaluate.py); `add` for a run
    from before the option, whose config lacks the key (``+model.grid``)."""
    override = f"{'+' if add else ''}model.grid={source}"
    summary = evaluate(best, [override], output_dir=run_dir / "evaluate" / f"grid_{source}")
    return test_figures(summary["test"])


def table(rows: dict[str, dict[str, Any]]) -> str:
    head = f"{'model':<22} {'IoU':>6} {'acc@0.5':>8} {'centre err':>11} {'rot acc':>8} {'spread':>7}"
    lines = [head]
    for name, r in rows.items():
        lines.append(
            f"{name:<22} {r['iou']:>6.3f} {r['acc_iou50']:>8.3f} {r['centre_error']:>11.3f}"
            f" {r['rotation_accuracy']:>8.3f} {r['spread_ratio']:>7.3f}"
        )
    return "\n".join(lines)


def verdict(mine: dict[str, float], baseline: dict[str, float]) -> dict[str, bool]:
    checks = {f"{key} >= {bar}": mine[key] >= bar for key, bar in BARS.items()}
    checks.update({f"{key} above template matching": mine[key] > baseline[key] for key in BEAT_BASELINE})
    return checks


def train_run(overrides: list[str]) -> tuple[Path, float]:
    """Train the recipe into a new run directory; (the directory, minutes of training and testing)."""
    run_dir = REPO / "outputs" / "quality" / "puzzle_cnn" / time.strftime("%Y-%m-%d_%H-%M-%S")
    command = [sys.executable, str(REPO / "train.py"), "model=puzzle_cnn", f"hydra.run.dir={run_dir}", *overrides]
    start = time.time()
    subprocess.run(command, cwd=REPO, check=True)
    return run_dir, (time.time() - start) / 60


def main(argv: list[str]) -> int:
    if argv[:1] == ["--run"]:
        if len(argv) != 2:
            raise SystemExit("usage: quality_puzzle_cnn.py --run <run directory>  (no overrides: the run has its own)")
        run_dir = Path(argv[1])
        earlier = json.loads((run_dir / "quality.json").read_text())
        overrides, minutes = list(earlier["overrides"]), earlier["minutes"]
    else:
        overrides = argv
        run_dir, minutes = train_run(overrides)
    summary = json.loads((run_dir / "metrics.json").read_text())
    data = data_config(overrides)
    trained_with = OmegaConf.select(checkpoint_config(summary["best_checkpoint"]), "model.grid")
    older = trained_with is None  # a run from before model.grid, which knew nothing of the grid
    trained_with = "none" if older else trained_with
    figures = {trained_with: test_figures(summary["test"])}
    for source in GRID_ROWS:
        if source not in figures:
            figures[source] = grid_figures(run_dir, summary["best_checkpoint"], source, older)
    baseline_run = baseline_figures(data, overrides)  # once: on a cache miss this runs template matching (~12 min)
    baseline = {key: baseline_run[key] for key in KEYS}
    rows = {name: figures[source] for source, name in GRID_ROWS.items()} | {"template_matching": baseline}

    grid = f"{data['rows']} x {data['cols']}"
    print(f"\nPuzzleCNN, test split: photos {data.get('test_images', 'of the folder')}, grid {grid}, puzzle")
    print(
        f"{data['puzzle_size']} px ({minutes:.1f} min of training and testing; run: {run_dir}; trained with"
        f" model.grid={trained_with})"
    )
    print(table(rows))
    print(f"model.grid=pieces read the grid right on {figures['pieces']['grid_read']:.0%} of the test puzzles")
    checks = {source: verdict(figures[source], baseline) for source in GRID_ROWS}
    others = [source for source in GRID_ROWS if source != BAR_GRID]
    for check, ok in checks[BAR_GRID].items():
        beside = ", ".join(f"grid {s}: {'yes' if checks[s][check] else 'NO'}" for s in others)
        print(f"  {check}: {'yes' if ok else 'NO'}   ({beside})")
    passed = all(checks[BAR_GRID].values())
    verdict_word = "PASS" if passed else "FAIL"
    print(f"bar, images only, the grid read off each puzzle's pieces (model.grid={BAR_GRID}): {verdict_word}")
    for source in others:
        print(f"the same checks, model.grid={source}: {'PASS' if all(checks[source].values()) else 'FAIL'}")
    report = {
        "rows": rows,
        "checks": checks,
        "passed": passed,
        "bar_grid": BAR_GRID,
        "trained_with_grid": trained_with,
        "minutes": minutes,
        "overrides": overrides,
    }
    atomic_write_text(run_dir / "quality.json", json.dumps(report, indent=2))  # --run rewrites it: never half of it
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
