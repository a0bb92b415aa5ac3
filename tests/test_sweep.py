"""Sweeps: the Optuna search config of every family, a real Optuna sweep with a diverged trial and its continuation,
summary.csv of plain and submitit multiruns, and `abr_lab.sweep.write_summary` on hand-made job folders."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import hydra
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, OmegaConf

from abr_lab.sweep import SUMMARY_FILE, write_summary
from abr_lab.train import CONFIG_DIR
from tests.conftest import TINY_LSTM

# Optuna 2's storage on SQLAlchemy 1.4 (the `sweep` extra's pins) warns about SQLAlchemy 2.0
pytestmark = pytest.mark.filterwarnings("ignore:Deprecated API features detected")
REPO = Path(__file__).resolve().parents[1]
FAMILIES = ("optimized_unet", "lstm_extractor", "rawnet2", "puzzle_cnn")
# an Optuna sweep of the tiny LSTM whose job 1 diverges: its weights turn NaN after the first batch (tests/
# sweep_callbacks.py), so its objective is NaN and Optuna must record the trial as failed
OPTUNA_SWEEP = (
    "-m",
    "hparams_search=lstm_extractor_optuna",
    "debug=fdr",
    "+callbacks.diverge._target_=tests.sweep_callbacks.DivergeOnJob",
    "+callbacks.diverge.job_num=${hydra:job.num}",
    "+callbacks.diverge.diverging_job=1",
)


def _compose(*overrides: str) -> DictConfig:
    """The config `python train.py <overrides>` composes, with its `hydra` node."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(config_name="train", overrides=list(overrides), return_hydra_config=True)


def _train_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """`python train.py <args> <tiny LSTM>` in `cwd`; fails the test unless it exits 0."""
    # one thread per process: the models are tiny, and OpenMP threads spinning on a busy 2-core machine are slow
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, str(REPO / "train.py"), *args, *TINY_LSTM, "logger=csv"]
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def _summary(sweep: Path) -> list[dict[str, str]]:
    with open(sweep / SUMMARY_FILE, newline="") as f:
        return list(csv.DictReader(f))


def _job_dirs(sweep: Path) -> list[Path]:
    return sorted(p for p in sweep.iterdir() if p.is_dir() and not p.name.startswith("."))


def _admits(distribution: Any, value: Any) -> bool:
    """Whether an Optuna distribution can draw `value` (a choice, or within an interval's bounds)."""
    if hasattr(distribution, "choices"):
        return value in distribution.choices
    return distribution.low <= value <= distribution.high


def _num_parameters(model_cfg: DictConfig) -> int:
    return sum(p.numel() for p in hydra.utils.instantiate(model_cfg, _convert_="all").parameters())


# --- the search configs -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
def test_search_config_composes_for_its_family(family, tmp_path):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    from hydra_plugins.hydra_optuna_sweeper._impl import create_params_from_overrides

    cfg = _compose(f"hparams_search={family}_optuna", f"hydra.sweep.dir={tmp_path}")
    plain = _compose(f"model={family}")  # the family without the search
    assert cfg.hydra.runtime.choices.model == family
    assert cfg.hydra.runtime.choices["hydra/sweeper"] == "optuna"
    assert cfg.data._target_ == plain.data._target_  # the model's own `override /data` still applies
    sweeper = cfg.hydra.sweeper
    assert sweeper.storage == f"sqlite:///{tmp_path}/optuna.db"  # in the sweep folder: a continued sweep finds it
    assert sweeper.direction == f"{cfg.monitor.mode}imize"
    assert cfg.optimized_metric == cfg.monitor.metric  # the best checkpoint's value is what is optimised
    assert "${hydra.job.num}" in OmegaConf.to_container(cfg.hydra.sweep)["subdir"]

    distributions, fixed = create_params_from_overrides([f"{k}={v}" for k, v in sweeper.params.items()])
    assert not fixed and set(distributions) == set(sweeper.params)  # every entry is a range or a choice
    for key, distribution in distributions.items():
        if ".arch_kwargs." not in key:  # the search config adds the network's searched arguments itself
            assert OmegaConf.select(plain, key) is not None, f"{key} is not a key of model={family}"
        value = OmegaConf.select(cfg, key)
        assert _admits(distribution, value), f"{key}: the recipe's {value!r} is outside {distribution}"
    # the network's searched arguments are real arguments, set at the variant's own values: the same network
    assert _num_parameters(cfg.model) == _num_parameters(plain.model)


def test_search_direction_follows_the_monitored_mode():
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    cfg = _compose("hparams_search=lstm_extractor_optuna", "monitor.mode=max")
    assert cfg.hydra.sweeper.direction == "maximize"
    cfg = _compose("hparams_search=lstm_extractor_optuna")
    assert cfg.hydra.sweeper.storage.startswith("sqlite:///multirun/")  # relative to where train.py starts


# --- an Optuna sweep with a failed trial, continued -------------------------------------------------------------


@pytest.fixture(scope="module")
def optuna_sweep(tmp_path_factory) -> Path:
    """The folder of a 3-trial Optuna sweep (fast_dev_run) whose second trial diverges."""
    pytest.importorskip("optuna")
    root = tmp_path_factory.mktemp("optuna")
    _train_cli(*OPTUNA_SWEEP, "hydra.sweeper.n_trials=3", cwd=root)
    (sweep,) = (root / "multirun").iterdir()
    return sweep


def _trials(sweep: Path) -> list[Any]:
    import optuna

    return optuna.load_study(study_name="lstm_extractor", storage=f"sqlite:///{sweep}/optuna.db").trials


def test_optuna_sweep_records_a_nan_trial_as_failed_and_goes_on(optuna_sweep):
    import optuna

    trials = _trials(optuna_sweep)
    states = [t.state for t in trials]
    assert len(trials) == 3 and states.count(optuna.trial.TrialState.FAIL) == 1
    assert states.count(optuna.trial.TrialState.COMPLETE) == 2

    rows = _summary(optuna_sweep)
    assert [row["job"] for row in rows] == [p.name for p in _job_dirs(optuna_sweep)] and len(rows) == 3
    failed = [row for row in rows if row["status"] == "objective not finite"]
    assert len(failed) == 1 and failed[0]["job"].endswith("_1") and failed[0]["objective"] == ""
    completed = [float(row["objective"]) for row in rows if row["status"] == "ok"]
    best = optuna.load_study(study_name="lstm_extractor", storage=f"sqlite:///{optuna_sweep}/optuna.db").best_value
    assert len(completed) == 2 and best == pytest.approx(min(completed))
    # what each trial was given is what its job ran with
    for trial, row in zip(trials, rows, strict=True):
        assert float(row["model.lr"]) == pytest.approx(trial.params["model.lr"])


def test_continued_optuna_sweep_adds_trials_beside_the_earlier_ones(optuna_sweep, tmp_path):
    sweep = tmp_path / "sweep"
    shutil.copytree(optuna_sweep, sweep)
    before = {p.name: (p / "metrics.json").read_bytes() for p in _job_dirs(sweep)}
    stamps = {p.name: (p / "metrics.json").stat().st_mtime_ns for p in _job_dirs(sweep)}

    _train_cli(*OPTUNA_SWEEP, "hydra.sweeper.n_trials=1", f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    trials = _trials(sweep)
    assert [t.number for t in trials] == [0, 1, 2, 3]
    jobs = _job_dirs(sweep)
    assert len(jobs) == 4 and set(before) < {p.name for p in jobs}
    for name, content in before.items():  # the earlier trials' folders are untouched
        assert (sweep / name / "metrics.json").read_bytes() == content
        assert (sweep / name / "metrics.json").stat().st_mtime_ns == stamps[name]
    assert len(_summary(sweep)) == 4


# --- summary.csv of multiruns -------------------------------------------------------------------------------------


def test_plain_multirun_summary_lists_each_job_with_its_objective(tmp_path):
    _train_cli("-m", "model.lr=1e-3,2e-3", "trainer.max_epochs=1", cwd=tmp_path)
    (sweep,) = (tmp_path / "multirun").iterdir()
    rows = _summary(sweep)
    assert [row["job"] for row in rows] == ["0", "1"]
    for row, lr in zip(rows, (1e-3, 2e-3), strict=True):
        metrics = json.loads((sweep / row["job"] / "metrics.json").read_text())
        assert row["status"] == "ok" and float(row["model.lr"]) == pytest.approx(lr)
        assert float(row["objective"]) == pytest.approx(metrics["objective"])
        assert float(row["objective"]) == pytest.approx(metrics["best_score"])  # the best checkpoint's val/mse
        assert float(row["test/mse"]) == pytest.approx(metrics["test"]["test/mse"])


def test_submitit_local_multirun_makes_one_sweep_with_a_summary(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    launcher = ["hydra/launcher=submitit_local", "hydra.launcher.timeout_min=5", "hydra.launcher.cpus_per_task=1"]
    _train_cli("-m", *launcher, "hydra.launcher.mem_gb=2", "debug=fdr", "model.lr=1e-3,2e-3", cwd=tmp_path)
    (sweep,) = (tmp_path / "multirun").iterdir()
    assert [p.name for p in _job_dirs(sweep)] == ["0", "1"]
    for job in ("0", "1"):
        assert json.loads((sweep / job / "metrics.json").read_text())["test"]["test/mse"] is not None
    rows = _summary(sweep)
    assert [(row["job"], row["status"]) for row in rows] == [("0", "ok"), ("1", "ok")]


# --- write_summary on hand-made job folders -----------------------------------------------------------------------


def _job(sweep: Path, name: str, overrides: list[str], metrics: dict[str, Any] | str | None = None) -> None:
    """A job folder as Hydra and train.py leave it: `.hydra/overrides.yaml` and (unless None) `metrics.json`."""
    (sweep / name / ".hydra").mkdir(parents=True)
    (sweep / name / ".hydra" / "overrides.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(overrides)))
    if metrics is not None:
        text = metrics if isinstance(metrics, str) else json.dumps(metrics)
        (sweep / name / "metrics.json").write_text(text)


def _metrics(objective: float | None, metric: str | None = "val/mse") -> dict[str, Any]:
    return {
        "objective": objective,
        "optimized_metric": metric,
        "monitor": "val/mse",
        "best_score": objective,
        "epochs": 2,
        "global_step": 8,
        "test": {"test/mse": 0.5, "test/corr": 0.7},
        "best_checkpoint": None,  # not a column
    }


def test_write_summary_columns_statuses_and_job_order(tmp_path):
    _job(tmp_path, "10", ["model.lr=0.01", "+data.batch_size=16"], _metrics(0.2))
    _job(tmp_path, "2", ["model.lr=0.002"], _metrics(None))  # NaN objective: metrics.json holds null
    _job(tmp_path, "0", ["model.lr=0.001"], _metrics(0.3))
    _job(tmp_path, "1", ["model.lr=0.003"])  # failed before metrics.json, or still running
    _job(tmp_path, "3", ["model.lr=0.004"], "{not json")
    _job(tmp_path, "4", ["model.lr=0.005"], _metrics(None, metric=None))  # no optimized_metric: nothing to judge
    _job(tmp_path, "5", ["model.lr=0.006"], _metrics(None, metric="val/other"))  # a metric the run never logged

    path = write_summary(tmp_path)
    assert path == tmp_path / SUMMARY_FILE
    with open(path, newline="") as f:
        header = next(csv.reader(f))
    figures = ["objective", "best_score", "epochs", "global_step", "test/corr", "test/mse"]
    assert header == ["job", "status", "model.lr", *figures, "data.batch_size"]
    rows = _summary(tmp_path)
    assert [row["job"] for row in rows] == ["0", "1", "2", "3", "4", "5", "10"]
    status = {row["job"]: row["status"] for row in rows}
    assert status["0"] == status["4"] == status["10"] == "ok"
    assert status["1"] == "no metrics.json (failed or running)"
    assert status["2"] == "objective not finite"
    assert status["5"] == "val/other not logged"
    assert status["3"].startswith("unreadable metrics.json")
    assert rows[0]["objective"] == "0.3" and rows[0]["test/mse"] == "0.5" and rows[0]["data.batch_size"] == ""
    assert rows[-1]["data.batch_size"] == "16"  # `+key=value` overrides are listed under the key
    assert rows[1]["objective"] == rows[2]["objective"] == ""


def test_write_summary_rewrites_atomically(tmp_path):
    _job(tmp_path, "0", ["model.lr=0.001"], _metrics(0.3))
    write_summary(tmp_path)
    _job(tmp_path, "1", ["model.lr=0.002"], _metrics(0.1))
    write_summary(tmp_path)
    assert [row["job"] for row in _summary(tmp_path)] == ["0", "1"]
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == [SUMMARY_FILE]  # no temporary file left


def test_write_summary_orders_timestamped_job_folders_by_time_then_number(tmp_path):
    # the Optuna search configs name job folders <time>_<job number>
    names = ["2026-01-01_00-00-00_0", "2026-01-01_00-00-00_2", "2026-01-01_00-00-00_10", "2026-01-01_00-09-00_0"]
    for name in reversed(names):
        _job(tmp_path, name, ["model.lr=0.001"], _metrics(0.3))
    write_summary(tmp_path)
    assert [row["job"] for row in _summary(tmp_path)] == names
