"""predict.py for the LSTM extractor: a mixture (CSV or .npy) -> the extracted sinusoid of each frequency, equal to
what the module computes on the same signal; malformed inputs are refused with the file and the problem named."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from abr_lab.checkpoint import checkpoint_config, load_module
from abr_lab.config import compose_config
from abr_lab.lstm_extractor.network import build_inputs
from abr_lab.predict import predict
from abr_lab.train import train
from tests.conftest import TINY_LSTM


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One tiny one-epoch run shared by every test of the module."""
    root = tmp_path_factory.mktemp("lstm_predict")
    cfg = compose_config([*TINY_LSTM, "trainer.max_epochs=1", "logger=none"], output_dir=root / "run", root_dir=root)
    return Path(train(cfg)["best_checkpoint"])


def mixture(n: int = 400, fs: float = 1000.0) -> np.ndarray:
    t = np.arange(n) / fs
    return np.sin(2 * np.pi * 3 * t) + 0.5 * np.sin(2 * np.pi * 7 * t + 0.3)


def expected(checkpoint: Path, signal: np.ndarray) -> dict[str, np.ndarray]:
    """The module's own output on `signal` for every frequency: one pass from zero state."""
    module = load_module(checkpoint, checkpoint_config(checkpoint))
    k = len(module.hparams.freqs)
    x = torch.as_tensor(signal, dtype=torch.float32)[None].expand(k, -1)  # (k, t)
    with torch.no_grad():
        pred, _ = module.net(build_inputs(x, torch.eye(k)))  # (k, t)
    return {f"extracted_{f:g}hz": pred[i].numpy() for i, f in enumerate(module.hparams.freqs)}


def read_columns(path: Path) -> dict[str, np.ndarray]:
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    return {key: np.array([float(r[key]) for r in rows]) for key in rows[0]}


def test_every_frequency_is_extracted_as_the_module_does(checkpoint: Path, tmp_path: Path) -> None:
    signal = mixture()
    src = tmp_path / "recording.csv"
    np.savetxt(src, np.c_[np.arange(signal.size) / 1000.0, signal], delimiter=",", header="time,mixture", comments="")
    out = predict(checkpoint, src)
    assert out == tmp_path / "recording.predictions.csv"  # the default: beside the input
    columns = read_columns(out)
    assert list(columns) == ["time_s", "mixture", "extracted_1hz", "extracted_3hz", "extracted_5hz", "extracted_7hz"]
    np.testing.assert_allclose(columns["time_s"], np.arange(signal.size) / 1000.0)  # the model's fs
    np.testing.assert_allclose(columns["mixture"], signal, rtol=1e-7)
    for key, values in expected(checkpoint, signal).items():
        np.testing.assert_allclose(columns[key], values, rtol=1e-5, atol=1e-6, err_msg=key)


def test_npy_input_and_chosen_frequencies(checkpoint: Path, tmp_path: Path) -> None:
    signal = mixture(250)
    np.save(tmp_path / "mix.npy", signal.astype(np.float32))
    out = predict(checkpoint, tmp_path / "mix.npy", tmp_path / "out" / "x.csv", freq="[7, 3]", batch_size=1)
    columns = read_columns(out)
    assert list(columns) == ["time_s", "mixture", "extracted_7hz", "extracted_3hz"]
    reference = expected(checkpoint, signal.astype(np.float32))
    for key in ("extracted_7hz", "extracted_3hz"):
        np.testing.assert_allclose(columns[key], reference[key], rtol=1e-5, atol=1e-6)
    one = read_columns(predict(checkpoint, tmp_path / "mix.npy", tmp_path / "one.csv", freq=3))
    assert list(one) == ["time_s", "mixture", "extracted_3hz"]


def test_a_single_unnamed_column_is_the_mixture(checkpoint: Path, tmp_path: Path) -> None:
    signal = mixture(50)
    (tmp_path / "plain.txt").write_text("\n".join(f"{v:.17g}" for v in signal) + "\n")
    columns = read_columns(predict(checkpoint, tmp_path / "plain.txt", freq=1))
    np.testing.assert_allclose(columns["mixture"], signal)


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("two.csv", "0.1,0.2\n0.3,0.4\n", "2 columns .*'mixture'"),
        ("named.csv", "time,signal\n0,1\n0.001,2\n", r"columns \(time, signal\)"),
        ("nan.csv", "mixture\n0.5\nnan\n", "line 3, column 'mixture'.*not a finite number"),
        ("text.csv", "mixture\n0.5\nabc\n", "line 3.*'abc' is not a number"),
        ("short.csv", "mixture\n0.5\n", "1 sample"),
        ("sound.wav", "RIFF", "unsupported file type '.wav'"),
    ],
)
def test_malformed_inputs_are_named(checkpoint: Path, tmp_path: Path, name: str, content: str, message: str) -> None:
    (tmp_path / name).write_text(content)
    with pytest.raises(ValueError, match=message) as info:
        predict(checkpoint, tmp_path / name)
    assert name in str(info.value)
    assert not any(p.name.endswith(".predictions.csv") for p in tmp_path.iterdir())  # nothing written


def test_wrong_arrays_and_frequencies_are_refused(checkpoint: Path, tmp_path: Path) -> None:
    np.save(tmp_path / "two_d.npy", np.zeros((10, 2)))
    with pytest.raises(ValueError, match=r"two_d.npy.*shape \(10, 2\); expected a 1-D array"):
        predict(checkpoint, tmp_path / "two_d.npy")
    np.save(tmp_path / "inf.npy", np.array([0.0, np.inf, 1.0]))
    with pytest.raises(ValueError, match="inf.npy: sample 1 is inf"):
        predict(checkpoint, tmp_path / "inf.npy")
    np.save(tmp_path / "ok.npy", mixture(20))
    with pytest.raises(ValueError, match=r"freq=2: the model extracts only 1, 3, 5, 7 Hz"):
        predict(checkpoint, tmp_path / "ok.npy", freq=2)
    with pytest.raises(ValueError, match=r"freq='fast': expected a frequency"):
        predict(checkpoint, tmp_path / "ok.npy", freq="fast")
