"""predict.py for RawNet2: a folder of audio files (or one file) -> one score per file, equal to the module's score
of the clip training would cut; the same CSV as `deploy predict` (one scoring path); bad inputs named, nothing
half-written."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from abr_lab.checkpoint import checkpoint_config, load_module
from abr_lab.config import compose_config
from abr_lab.predict import main, predict
from abr_lab.rawnet2.audio import AudioError, fit_clip, read_audio
from abr_lab.rawnet2.deploy import predict_folder
from abr_lab.train import train
from tests.conftest import TINY_SPOOF

CLIP = 4_000  # TINY_SPOOF's data.clip_samples


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("spoof_predict")
    cfg = compose_config([*TINY_SPOOF, "logger=none"], output_dir=root / "run", root_dir=root)
    return Path(train(cfg)["best_checkpoint"])


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three files: one longer than the clip, one shorter (tiled), one at 48 kHz (resampled)."""
    folder = tmp_path_factory.mktemp("audio") / "clips"
    (folder / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    sf.write(folder / "a.wav", 0.1 * rng.standard_normal(5_000).astype(np.float32), 16_000)
    sf.write(folder / "sub" / "b.flac", 0.1 * rng.standard_normal(1_500).astype(np.float32), 16_000)
    sf.write(folder / "c.wav", 0.1 * rng.standard_normal(12_000).astype(np.float32), 48_000)
    return folder


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_a_folder_is_scored_file_by_file_as_the_module_scores_clips(checkpoint: Path, folder: Path) -> None:
    out = predict(checkpoint, folder, batch_size=2)
    assert out == folder.with_name("clips.predictions.csv")
    rows = read_rows(out)
    assert [r["file"] for r in rows] == ["a.wav", "c.wav", "sub/b.flac"]
    module = load_module(checkpoint, checkpoint_config(checkpoint))
    clips = [fit_clip(read_audio(folder / r["file"], 16_000), CLIP) for r in rows]
    with torch.inference_mode():
        expected = module.score(torch.from_numpy(np.stack(clips))).numpy()  # (3,)
    for row, score in zip(rows, expected, strict=True):
        assert float(row["score"]) == pytest.approx(float(score), rel=1e-5, abs=1e-6)
        assert float(row["p_bonafide"]) == pytest.approx(1 / (1 + np.exp(-score)), rel=1e-5)


def test_deploy_predict_is_the_same_scoring_path(checkpoint: Path, folder: Path, tmp_path: Path) -> None:
    ours = predict(checkpoint, folder, tmp_path / "predict.csv")
    theirs = predict_folder(checkpoint, folder, tmp_path / "deploy.csv")
    assert ours.read_text() == theirs.read_text()


def test_one_file_is_scored_too(checkpoint: Path, folder: Path, tmp_path: Path) -> None:
    rows = read_rows(predict(checkpoint, folder / "sub" / "b.flac", tmp_path / "one.csv"))
    assert [r["file"] for r in rows] == ["b.flac"]


def test_wrong_inputs_are_named_and_nothing_is_written(checkpoint: Path, folder: Path, tmp_path: Path) -> None:
    table = tmp_path / "scores.csv"
    table.write_text("file,score\n")
    with pytest.raises(AudioError, match=r"scores.csv: a .csv file; expected a folder of audio files"):
        predict(checkpoint, table, tmp_path / "out.csv")
    (tmp_path / "empty").mkdir()
    with pytest.raises(AudioError, match="empty: no audio files"):
        predict(checkpoint, tmp_path / "empty", tmp_path / "out.csv")
    bad = tmp_path / "mixed"
    bad.mkdir()
    (bad / "good.wav").write_bytes((folder / "a.wav").read_bytes())
    (bad / "bad.wav").write_text("not audio")
    with pytest.raises(SystemExit, match="bad.wav: not a readable audio file"):
        main([f"ckpt_path={checkpoint}", f"input={bad}", f"out={tmp_path / 'out.csv'}"])
    assert not (tmp_path / "out.csv").exists()
