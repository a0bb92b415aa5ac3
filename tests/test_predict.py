"""predict.py's dispatch and arguments: the family comes from the checkpoint, options are checked against the
family's, dotted keys override the stored config, the output lands beside the input (never on it), and every
mistake ends in a message that names it. The families' own behaviour is tested in tests/<family>/test_predict.py."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from abr_lab.config import compose_config
from abr_lab.predict import FAMILIES, family_of, main, parse_arguments, predict
from abr_lab.train import train
from tests.conftest import TINY_LSTM

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny LSTM extractor checkpoint: the cheapest family to train."""
    root = tmp_path_factory.mktemp("predict")
    cfg = compose_config([*TINY_LSTM, "trainer.max_epochs=1", "logger=none"], output_dir=root / "run", root_dir=root)
    return Path(train(cfg)["best_checkpoint"])


@pytest.fixture
def signal_file(tmp_path: Path) -> Path:
    path = tmp_path / "signal.npy"
    np.save(path, np.sin(np.linspace(0.0, 6.0, 120)))
    return path


@pytest.mark.parametrize(
    ("target", "family"),
    [
        ("abr_lab.optimized_unet.OptimizedUNetModule", "optimized_unet"),
        ("abr_lab.optimized_unet.module.OptimizedUNetModule", "optimized_unet"),
        ("abr_lab.rawnet2.RawNet2Module", "rawnet2"),
        ("abr_lab.puzzle_cnn.PuzzleModule", "puzzle_cnn"),
        ("abr_lab.lstm_extractor.LSTMExtractorModule", "lstm_extractor"),
    ],
)
def test_the_family_is_the_subpackage_of_the_module(target: str, family: str) -> None:
    name, module = family_of(OmegaConf.create({"model": {"_target_": target}}))
    assert name == family and module.__name__ == f"abr_lab.{family}.predict"
    assert {"OPTIONS", "SUFFIX", "BATCH_SIZE", "run"} <= set(vars(module))


def test_a_model_without_a_predictor_is_named() -> None:
    with pytest.raises(ValueError, match="torch.nn.Linear.*no predictor.*optimized_unet"):
        family_of(OmegaConf.create({"model": {"_target_": "torch.nn.Linear"}}))


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["ckpt_path=a.ckpt"], "input is required"),
        ([], "ckpt_path and input are required"),
        (["ckpt_path=a.ckpt", "input"], "argument 'input': expected key=value"),
        (["ckpt_path=a.ckpt", "input=x", "input=y"], "'input' is given twice"),
        (["ckpt_path=a.ckpt", "input=x", "overrides=data.x=1"], "dotted key=value"),
    ],
)
def test_malformed_arguments_stop_with_the_usage(argv: list[str], message: str) -> None:
    with pytest.raises(SystemExit, match=message) as info:
        parse_arguments(argv)
    assert "usage: python predict.py" in str(info.value)


def test_arguments_split_into_own_and_config_overrides() -> None:
    own, overrides = parse_arguments(["ckpt_path=a.ckpt", "input=x.csv", "freq=3", "data.fs=500", "model.lr=0.1"])
    assert own == {"ckpt_path": "a.ckpt", "input": "x.csv", "freq": "3"}
    assert overrides == ["data.fs=500", "model.lr=0.1"]


def test_main_writes_beside_the_input_and_says_where(checkpoint: Path, signal_file: Path, capsys) -> None:
    main([f"ckpt_path={checkpoint}", f"input={signal_file}", "freq=[1,3]", "batch_size=1", "device=cpu"])
    out = signal_file.with_name("signal.predictions.csv")
    assert f"predictions written to {out}" in capsys.readouterr().out
    assert out.read_text().splitlines()[0] == "time_s,mixture,extracted_1hz,extracted_3hz"
    assert len(out.read_text().splitlines()) == 1 + 120


def test_unknown_option_lists_the_accepted_ones(checkpoint: Path, signal_file: Path) -> None:
    with pytest.raises(SystemExit, match=r"unknown option 'frq' for the lstm_extractor family; accepted: ckpt_path, "):
        main([f"ckpt_path={checkpoint}", f"input={signal_file}", "frq=3"])
    with pytest.raises(ValueError, match="accepted: .*batch_size, device, freq"):
        predict(checkpoint, signal_file, puzzle="p.png")  # another family's option


def test_config_overrides_are_applied_and_unknown_keys_are_named(checkpoint: Path, signal_file: Path) -> None:
    out = predict(checkpoint, signal_file, overrides=["data.batch_size=2"], freq=1)
    assert out.read_text().splitlines()[2].startswith("0.001,")  # the model's own rate (fs = 1000 Hz)
    with pytest.raises(SystemExit, match="unknown option 'data.sample_rate'"):
        main([f"ckpt_path={checkpoint}", f"input={signal_file}", "data.sample_rate=8000"])


def test_bad_values_and_paths_are_named(checkpoint: Path, signal_file: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="batch_size=0: need a whole number >= 1"):
        predict(checkpoint, signal_file, batch_size="0")
    with pytest.raises(ValueError, match="device='tpu'"):
        predict(checkpoint, signal_file, device="tpu")
    with pytest.raises(ValueError, match="is the input itself"):
        predict(checkpoint, signal_file, out=signal_file)
    with pytest.raises(ValueError, match="is a folder"):
        predict(checkpoint, signal_file, out=tmp_path)
    with pytest.raises(SystemExit, match="input='.*missing.npy': no such file or folder"):
        main([f"ckpt_path={checkpoint}", f"input={tmp_path / 'missing.npy'}"])
    with pytest.raises(SystemExit, match="no such checkpoint file"):
        main([f"ckpt_path={tmp_path / 'none.ckpt'}", f"input={signal_file}"])
    (tmp_path / "fake.ckpt").write_text("not a checkpoint")
    with pytest.raises(SystemExit, match="not a readable PyTorch checkpoint"):
        main([f"ckpt_path={tmp_path / 'fake.ckpt'}", f"input={signal_file}"])


def test_a_wrong_input_format_ends_in_a_message_not_a_traceback(checkpoint: Path, tmp_path: Path) -> None:
    (tmp_path / "image.png").write_bytes(b"\x89PNG")
    with pytest.raises(SystemExit, match=r"predict.py: error: .*image.png: unsupported file type '.png'"):
        main([f"ckpt_path={checkpoint}", f"input={tmp_path / 'image.png'}"])


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks the message of a machine without CUDA")
def test_cuda_without_a_gpu_is_refused(checkpoint: Path, signal_file: Path) -> None:
    with pytest.raises(ValueError, match="CUDA is not available"):
        predict(checkpoint, signal_file, device="cuda")


def test_help_lists_every_family(capsys) -> None:
    main(["--help"])
    text = capsys.readouterr().out
    assert "usage: python predict.py" in text
    for family in FAMILIES:
        assert f"{family} (output " in text
    for option in ("puzzle", "freq", "export_fs_hz", "batch_size", "device"):
        assert f"  {option} " in text


def test_the_root_script_runs(checkpoint: Path, signal_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "cli.csv"
    result = subprocess.run(
        [sys.executable, str(REPO / "predict.py"), f"ckpt_path={checkpoint}", f"input={signal_file}", f"out={out}"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert f"predictions written to {out}" in result.stdout
    assert out.read_text().startswith("time_s,mixture,extracted_1hz")
