"""RawNet2Module end to end on the tiny generated task: challenge metrics, DET figures, curriculum, deployment."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf
import torch
import torch.nn.functional as F
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from abr_lab.config import compose_config
from abr_lab.layers.cosine import OneClassCosineHead
from abr_lab.rawnet2 import RawNet2Module
from abr_lab.rawnet2.audio import AudioError
from abr_lab.rawnet2.deploy import export_torchscript, load_detector, predict_folder
from abr_lab.train import train
from tests.conftest import TINY_SPOOF


def spoof_cfg(tmp_path: Path, *overrides: str, run: str = "run"):
    return compose_config([*TINY_SPOOF, *overrides], output_dir=tmp_path / run, root_dir=tmp_path)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, dict]:
    """One tiny two-epoch run shared by the tests that only read its outputs."""
    tmp_path = tmp_path_factory.mktemp("spoof")
    summary = train(spoof_cfg(tmp_path, "trainer.max_epochs=2"))
    return tmp_path / "run", summary


def test_weighted_cross_entropy_hand_computed() -> None:
    module = RawNet2Module(arch="rawnet2_tiny")
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    labels = torch.tensor([0, 1])  # spoof (weight 0.1), bona fide (weight 0.9)
    nll = torch.tensor([np.log1p(np.exp(-2.0)), np.log1p(np.exp(-1.0))])
    expected = (0.1 * nll[0] + 0.9 * nll[1]) / (0.1 + 0.9)
    torch.testing.assert_close(module.loss(logits, labels), expected.float())
    with pytest.raises(ValueError, match="class_weights"):
        RawNet2Module(arch="rawnet2_tiny", class_weights=(1.0,))


def test_reference_optimiser() -> None:
    module = RawNet2Module(arch="rawnet2_tiny", lr_multipliers={"gru": 0.5})
    optimizer = module.configure_optimizers()
    assert isinstance(optimizer, torch.optim.Adam)
    groups = {g["name"]: g for g in optimizer.param_groups}
    assert groups["front"]["lr"] == pytest.approx(1e-4) and groups["front"]["weight_decay"] == pytest.approx(1e-4)
    assert groups["gru"]["lr"] == pytest.approx(5e-5)
    assert groups["head/no_decay"]["weight_decay"] == 0.0
    with pytest.raises(ValueError, match="unknown part 'trunk'"):
        RawNet2Module(arch="rawnet2_tiny", lr_multipliers={"trunk": 1.0}).configure_optimizers()


def test_warmup_cosine_schedule() -> None:
    module = RawNet2Module(arch="rawnet2_tiny", lr=1e-3, schedule="warmup_cosine", warmup_steps=2, min_lr_ratio=0.1)
    module._trainer = SimpleNamespace(estimated_stepping_batches=10)  # what the scheduler reads of the Trainer
    config = module.configure_optimizers()
    optimizer, scheduler = config["optimizer"], config["lr_scheduler"]["scheduler"]
    assert config["lr_scheduler"]["interval"] == "step"
    rates = []
    for _ in range(12):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert rates[:3] == pytest.approx([5e-4, 1e-3, 1e-3])  # warm-up over 2 batches, then the peak
    assert rates[10] == pytest.approx(1e-4) and rates[11] == pytest.approx(1e-4)  # the floor, and it stays there
    assert all(a >= b for a, b in zip(rates[1:], rates[2:], strict=False))
    with pytest.raises(ValueError, match="schedule='cosine'"):
        RawNet2Module(arch="rawnet2_tiny", schedule="cosine")


def test_run_reports_challenge_metrics(trained) -> None:
    run, summary = trained
    test = json.loads((run / "metrics.json").read_text())["test"]
    for key in ("test/eer", "test/min_tdcf", "test/auroc", "test/eer_unseen", "test/min_tdcf_unseen"):
        assert key in test and 0.0 <= test[key] <= 2.0, key
    for attack in ("A01", "A02", "A05", "A06", "A07"):  # every test attack, seen and unseen
        assert f"test/eer_{attack}" in test
    assert "test/eer_A03" not in test  # a training attack absent from the test split
    assert {"test/recall_bonafide", "test/pred_share_spoof"} <= set(test)
    assert summary["best_checkpoint"] and Path(summary["best_checkpoint"]).is_file()

    events = EventAccumulator(str(run / "tensorboard"), size_guidance={"images": 0}).Reload()
    assert {"val/eer", "val/min_tdcf", "val/auroc", "train/loss"} <= set(events.Tags()["scalars"])
    assert {"val/det", "test/det"} <= set(events.Tags()["images"])


def test_checkpoint_scores_a_folder_and_exports(trained, tmp_path) -> None:
    run, summary = trained
    ckpt = summary["best_checkpoint"]
    module, sample_rate, clip_samples = load_detector(ckpt)
    assert (sample_rate, clip_samples) == (16_000, 4_000)  # the clip rule travels with the checkpoint

    folder = tmp_path / "audio"
    rng = np.random.default_rng(0)
    (folder / "sub").mkdir(parents=True)
    sf.write(folder / "a.wav", 0.1 * rng.standard_normal(5_000).astype(np.float32), 16_000)
    sf.write(folder / "sub" / "b.flac", 0.1 * rng.standard_normal(1_500).astype(np.float32), 16_000)  # tiled
    sf.write(folder / "c.wav", 0.1 * rng.standard_normal(12_000).astype(np.float32), 48_000)  # resampled
    rows = list(csv.DictReader((predict_folder(ckpt, folder, tmp_path / "scores.csv")).open()))
    assert [r["file"] for r in rows] == ["a.wav", "c.wav", "sub/b.flac"]
    first = torch.from_numpy(sf.read(folder / "a.wav", dtype="float32")[0][:4_000])[None]
    with torch.inference_mode():
        expected = float(module.score(first))
    assert float(rows[0]["score"]) == pytest.approx(expected, abs=1e-5)
    assert float(rows[0]["p_bonafide"]) == pytest.approx(1 / (1 + np.exp(-expected)), abs=1e-5)

    exported = export_torchscript(ckpt, tmp_path / "detector.pt")
    scripted = torch.jit.load(str(exported))
    x = 0.1 * torch.randn(4, 4_000)
    with torch.inference_mode():
        torch.testing.assert_close(scripted(x), module.score(x), atol=1e-4, rtol=0)

    (folder / "bad.wav").write_text("not audio")
    with pytest.raises(AudioError, match="bad.wav"):
        predict_folder(ckpt, folder, tmp_path / "scores2.csv")
    assert not (tmp_path / "scores2.csv").exists()  # nothing half-written


def test_clip_curriculum_reaches_the_training_data(tmp_path) -> None:
    """The ramp starts at 1 s (16,000 samples) and reaches data.clip_samples (here 4,000) at half-way."""
    train(spoof_cfg(tmp_path, "trainer.max_epochs=2", "curriculum=spoof_clip_ramp"))
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard")).Reload()
    values = [e.value for e in events.Scalars("curriculum/data.clip_samples")]
    assert values[0] == pytest.approx(16_000) and values[-1] == pytest.approx(4_000)


def test_lite_variant_trains_with_a_strided_stem(tmp_path) -> None:
    cfg = spoof_cfg(
        tmp_path, "model=rawnet2_lite", "model.arch=rawnet2_lite", "+model.arch_kwargs.stem_stride=4", "debug=fdr"
    )
    summary = train(cfg)
    assert "test/eer" in summary["test"]


def test_forward_gives_logits_and_names_a_wrong_shape() -> None:
    module = RawNet2Module(arch="rawnet2_tiny")
    with pytest.raises(ValueError, match=r"\(batch, samples\)"):
        module(torch.randn(2, 2, 3_000))
    assert F.softmax(module(torch.randn(2, 3_000)), dim=1).shape == (2, 2)  # logits, no softmax inside


def test_one_class_recipe_trains_as_oc_softmax_and_exports(tmp_path) -> None:
    """model=rawnet2_ocsoftmax: the cosine head and the margin loss reach training, checkpoint and export."""
    summary = train(spoof_cfg(tmp_path, "model=rawnet2_ocsoftmax"))
    assert "test/eer_unseen" in summary["test"]
    module, _, _ = load_detector(summary["best_checkpoint"])
    assert isinstance(module.net.fc2, OneClassCosineHead) and module.hparams.logit_margin == 7.0
    x = 0.1 * torch.randn(3, 4_000)
    embeddings = []
    module.net.fc2.register_forward_hook(lambda _, inputs, __: embeddings.append(inputs[0]))
    with torch.inference_mode():
        scores = module.score(x)
        cos = module.net.fc2.cosine(embeddings[0])
    torch.testing.assert_close(scores, 20.0 * (cos - 0.55), atol=1e-4, rtol=0)  # log-odds = α (cos − centre)
    scripted = torch.jit.load(str(export_torchscript(summary["best_checkpoint"], tmp_path / "detector.pt")))
    with torch.inference_mode():
        torch.testing.assert_close(scripted(x), scores, atol=1e-4, rtol=0)


def test_margin_loss_hand_computed() -> None:
    module = RawNet2Module(arch="rawnet2_tiny", class_weights=(1.0, 1.0), logit_margin=2.0)
    logits = torch.tensor([[0.0, 3.0], [0.0, 1.0]])  # log-odds 3 and 1
    labels = torch.tensor([1, 0])  # bona fide past its margin of 2, a spoof on the wrong side
    expected = (np.log1p(np.exp(2.0 - 3.0)) + np.log1p(np.exp(1.0 + 2.0))) / 2
    torch.testing.assert_close(module.loss(logits, labels), torch.tensor(expected, dtype=torch.float32))
    with pytest.raises(ValueError, match="logit_margin"):
        RawNet2Module(arch="rawnet2_tiny", logit_margin=-1.0)


def test_logband_recipe_composes_and_a_tiny_log_energy_network_trains_and_exports(tmp_path) -> None:
    """model=rawnet2_logband names the variant; its front end and mean read-out survive training and export."""
    cfg = compose_config(["model=rawnet2_logband"], output_dir=tmp_path / "composed", root_dir=tmp_path)
    assert cfg.model.arch == "rawnet2_logband" and cfg.model.lr == pytest.approx(1e-4)  # the reference recipe
    options = {"front_end": "log_energy", "frame_length": 160, "frame_shift": 80, "block_pool": "[1,1,3,3]"}
    options["readout"] = "mean"
    summary = train(spoof_cfg(tmp_path, *(f"+model.arch_kwargs.{key}={value}" for key, value in options.items())))
    assert "test/eer_unseen" in summary["test"]
    module, _, _ = load_detector(summary["best_checkpoint"])  # rebuilt from the checkpoint's hyperparameters
    assert (module.net.front_end, module.net.readout, module.net.pools) == ("log_energy", "mean", (1, 1, 3, 3))
    x = 0.1 * torch.randn(3, 4_000)
    with torch.inference_mode():
        scores = module.score(x)
    scripted = torch.jit.load(str(export_torchscript(summary["best_checkpoint"], tmp_path / "detector.pt")))
    with torch.inference_mode():
        torch.testing.assert_close(scripted(x), scores, atol=1e-4, rtol=0)
