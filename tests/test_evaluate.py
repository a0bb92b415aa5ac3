"""evaluate.py rebuilds a run from its checkpoint alone and reproduces its test metrics; 2-process training writes
one checkpoint directory and reports the metrics one process computes on the same data."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from abr_lab.checkpoint import CONFIG_KEY, checkpoint_config
from abr_lab.config import compose_config
from abr_lab.evaluate import evaluate, parse_arguments
from abr_lab.train import train
from tests.conftest import TINY_LSTM, TINY_PUZZLE, TINY_SPOOF, TINY_UNET

REPO = Path(__file__).resolve().parents[1]

# Every family, two epochs; the LSTM and RawNet2 runs train in two CPU processes (test splits of 4 and 20 examples:
# divisible by 2, so DistributedSampler repeats none).
FAMILIES = {
    "lstm_extractor": [*TINY_LSTM, "trainer=ddp_sim"],
    "rawnet2": [*TINY_SPOOF, "trainer=ddp_sim"],
    "optimized_unet": TINY_UNET,
    "puzzle_cnn": TINY_PUZZLE,
}


@pytest.mark.parametrize("family", list(FAMILIES))
def test_evaluate_reproduces_the_training_runs_test_metrics(family, tmp_path):
    cfg = compose_config([*FAMILIES[family], "trainer.max_epochs=2", "logger=csv"], tmp_path / "run", tmp_path)
    summary = train(cfg)
    assert summary["epochs"] == 2

    # one checkpoint directory, each file written once (by rank 0 under DDP)
    checkpoints = sorted(tmp_path.rglob("*.ckpt"))
    assert {p.parent for p in checkpoints} == {tmp_path / "run" / "checkpoints"}
    assert {p.name for p in checkpoints} == {Path(summary["best_checkpoint"]).name, "last.ckpt"}

    # one process, rebuilt from the checkpoint alone: the (synced) test metrics of the training run
    result = evaluate(summary["best_checkpoint"])
    assert set(result["test"]) == set(summary["test"])
    for name, value in summary["test"].items():
        assert result["test"][name] == pytest.approx(value, abs=1e-4), name
    written = json.loads(
        (tmp_path / "run" / "evaluate" / Path(summary["best_checkpoint"]).stem / "metrics.json").read_text()
    )
    assert written["test"] == pytest.approx(result["test"])
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["test"] == pytest.approx(summary["test"])

    if family == "lstm_extractor":  # the command line, with a config override, once
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        out = tmp_path / "cli"
        cmd = [
            sys.executable,
            str(REPO / "evaluate.py"),
            f"ckpt_path={summary['best_checkpoint']}",
            f"output_dir={out}",
        ]
        done = subprocess.run([*cmd, "data.batch_size=2"], env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        assert json.loads((out / "metrics.json").read_text())["test"]["test/mse"] == pytest.approx(
            summary["test"]["test/mse"], abs=1e-4
        )
        assert "test/mse" in done.stdout


def test_checkpoint_errors_name_the_file_and_the_key(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such checkpoint"):
        checkpoint_config(tmp_path / "missing.ckpt")
    (tmp_path / "junk.ckpt").write_text("not a checkpoint")
    with pytest.raises(ValueError, match="junk.ckpt.*not a readable"):
        checkpoint_config(tmp_path / "junk.ckpt")
    torch.save({"state_dict": {}}, tmp_path / "bare.ckpt")
    with pytest.raises(ValueError, match=f"carries no run config.*{CONFIG_KEY}"):
        checkpoint_config(tmp_path / "bare.ckpt")
    torch.save({"state_dict": {}, CONFIG_KEY: {"data": {"batch_size": 4}}}, tmp_path / "ok.ckpt")
    assert checkpoint_config(tmp_path / "ok.ckpt", ["data.batch_size=8"]).data.batch_size == 8
    with pytest.raises(ValueError, match="unknown option 'data.batch'.*add one with '\\+data.batch=...'"):
        checkpoint_config(tmp_path / "ok.ckpt", ["data.batch=8"])
    # an option newer than the run is added as Hydra adds one; adding one the run has is refused
    added = checkpoint_config(tmp_path / "ok.ckpt", ["+model.grid=told", "+data.seed=3"])
    assert added.model.grid == "told" and added.data == {"batch_size": 4, "seed": 3}
    with pytest.raises(ValueError, match="'data.batch_size' is already a key.*drop the '\\+'"):
        checkpoint_config(tmp_path / "ok.ckpt", ["+data.batch_size=8"])


def test_evaluate_arguments():
    own, overrides = parse_arguments(["ckpt_path=a.ckpt", "split=val", "data.root=/x"])
    assert own == {"ckpt_path": "a.ckpt", "split": "val"} and overrides == ["data.root=/x"]
    for bad, message in ((["split=val"], "ckpt_path is required"), (["ckpt=a"], "unknown argument 'ckpt'")):
        with pytest.raises(SystemExit, match=message):
            parse_arguments(bad)
