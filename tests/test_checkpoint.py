"""Checkpoint averaging: the mean of the weights, a file that evaluates like the run's own, clear refusals."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from abr_lab.checkpoint import average_checkpoints
from abr_lab.evaluate import evaluate
from abr_lab.train import train
from tests.test_scripts import load


def test_the_average_of_three_epochs_is_their_mean_and_evaluates_but_does_not_resume(tiny_cfg, tmp_path):
    train(tiny_cfg("trainer.max_epochs=3", "callbacks.model_checkpoint.save_top_k=-1"))
    ckpts = tmp_path / "run" / "checkpoints"
    paths = [ckpts / f"epoch{epoch:03d}.ckpt" for epoch in range(3)]
    out = ckpts / "mean_000-002.ckpt"
    load("average_checkpoints").main([*map(str, paths), "--out", str(out)])

    states = [torch.load(p, map_location="cpu", weights_only=True)["state_dict"] for p in paths]
    averaged = torch.load(out, map_location="cpu", weights_only=False)
    for key, value in averaged["state_dict"].items():
        torch.testing.assert_close(value, (states[0][key] + states[1][key] + states[2][key]) / 3)
    assert not torch.equal(states[0]["net.head.weight"], states[2]["net.head.weight"])  # training moved them
    assert averaged["averaged_from"] == [str(p.resolve()) for p in paths]
    assert "optimizer_states" not in averaged and averaged["epoch"] == 2

    result = evaluate(out)  # rebuilt from the file alone, like any checkpoint of the run
    assert result["test"]["test/mse"] > 0
    assert (tmp_path / "run" / "evaluate" / "mean_000-002" / "metrics.json").is_file()

    with pytest.raises(KeyError, match="optimizer"):  # no optimizer state to resume from
        train(tiny_cfg("trainer.max_epochs=4", f"ckpt_path={out}", run="resumed"))


def _write(path: Path, state: dict[str, torch.Tensor]) -> Path:
    torch.save({"state_dict": state, "epoch": 0}, path)
    return path


def test_checkpoints_of_different_networks_are_refused_naming_file_and_key(tmp_path):
    a = _write(tmp_path / "a.ckpt", {"w": torch.zeros(2, 3), "steps": torch.tensor(4)})
    wider = _write(tmp_path / "wider.ckpt", {"w": torch.zeros(2, 4), "steps": torch.tensor(5)})
    fewer = _write(tmp_path / "fewer.ckpt", {"steps": torch.tensor(5)})
    more = _write(tmp_path / "more.ckpt", {"w": torch.ones(2, 3), "b": torch.ones(2), "steps": torch.tensor(5)})
    out = tmp_path / "out.ckpt"
    with pytest.raises(ValueError, match=r"wider\.ckpt: state_dict key 'w' .*shape \(2, 4\)"):
        average_checkpoints([wider, a], out)
    with pytest.raises(ValueError, match=r"fewer\.ckpt: state_dict key 'w' .*no such key"):
        average_checkpoints([fewer, a], out)
    with pytest.raises(ValueError, match=r"more\.ckpt: state_dict key 'b' is not in .*a\.ckpt"):
        average_checkpoints([more, a], out)
    with pytest.raises(ValueError, match="at least two"):
        average_checkpoints([a], out)
    last = _write(tmp_path / "last.ckpt", {"w": torch.ones(2, 3), "steps": torch.tensor(9)})
    with pytest.raises(ValueError, match=r"output .*a\.ckpt is one of the inputs"):
        average_checkpoints([a, last], a)  # the result never replaces a source
    assert not out.exists()  # nothing half-written
    assert torch.equal(torch.load(a, weights_only=True)["state_dict"]["w"], torch.zeros(2, 3))

    # integer buffers (BatchNorm's num_batches_tracked) come from the last file, floats are averaged
    state = average_checkpoints([a, last], out)["state_dict"]
    torch.testing.assert_close(state["w"], torch.full((2, 3), 0.5))
    assert state["steps"].item() == 9
