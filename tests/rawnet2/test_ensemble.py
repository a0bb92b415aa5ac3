"""RawNet2 ensembles: the mean of the members' logits, members that learn apart, checkpoints fused after training."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from abr_lab.checkpoint import checkpoint_config, instantiate_datamodule
from abr_lab.evaluate import evaluate
from abr_lab.metrics import compute_eer
from abr_lab.rawnet2 import RawNet2Module
from abr_lab.rawnet2.deploy import export_torchscript, load_detector
from abr_lab.rawnet2.ensemble import ensemble_checkpoints
from abr_lab.rawnet2.network import RawNet2Ensemble, bonafide_score
from abr_lab.registry import create_model
from abr_lab.train import train
from tests.rawnet2.test_module import spoof_cfg
from tests.test_scripts import load

TINY_ENSEMBLE = ("model.arch=rawnet2_ensemble", "+model.arch_kwargs.member=rawnet2_tiny", "+model.arch_kwargs.size=2")


def test_the_ensemble_score_is_the_mean_of_its_members_scores() -> None:
    torch.manual_seed(0)
    net = create_model("rawnet2_ensemble", member="rawnet2_tiny", size=3).eval()
    assert isinstance(net, RawNet2Ensemble) and len(net.members) == 3
    first, second = (dict(m.named_parameters())["fc2.weight"] for m in net.members[:2])
    assert not torch.equal(first, second)  # each member starts from its own weights
    x = 0.1 * torch.randn(4, 4_000)
    with torch.no_grad():
        members = [m(x) for m in net.members]  # (b, 2) each
        torch.testing.assert_close(net(x), torch.stack(members).mean(0))
        torch.testing.assert_close(bonafide_score(net(x)), torch.stack([bonafide_score(m) for m in members]).mean(0))
    with pytest.raises(ValueError, match="size=1"):
        RawNet2Ensemble("rawnet2_tiny", size=1)
    with pytest.raises(ValueError, match="ensemble of ensembles"):
        RawNet2Ensemble("rawnet2_ensemble")


def test_each_member_learns_from_its_own_loss_as_if_trained_alone() -> None:
    torch.manual_seed(0)
    module = RawNet2Module(arch="rawnet2_ensemble", arch_kwargs={"member": "rawnet2_tiny", "size": 2})
    alone = create_model("rawnet2_tiny")
    alone.load_state_dict(module.net.members[1].state_dict())
    batch = {"audio": 0.1 * torch.randn(6, 4_000), "label": torch.tensor([0, 1, 0, 1, 1, 0])}
    module.training_step(batch, 0).backward()
    module.loss(alone(batch["audio"]), batch["label"]).backward()
    for (name, param), (_, reference) in zip(
        module.net.members[1].named_parameters(), alone.named_parameters(), strict=True
    ):
        torch.testing.assert_close(param.grad, reference.grad, msg=name)

    # the members' parts get their learning-rate multipliers, as a single network's do
    module = RawNet2Module(arch="rawnet2_ensemble", arch_kwargs={"member": "rawnet2_tiny"}, lr_multipliers={"gru": 0.5})
    groups = {group["name"]: group for group in module.configure_optimizers().param_groups}
    gru = {id(p) for m in module.net.members for p in m.gru.parameters()}
    assert gru == {id(p) for name in ("gru", "gru/no_decay") for p in groups[name]["params"]}
    assert groups["gru"]["lr"] == pytest.approx(0.5e-4)


def test_a_deep_ensemble_trains_in_one_run(tmp_path) -> None:
    summary = train(spoof_cfg(tmp_path, *TINY_ENSEMBLE))
    assert "test/eer_unseen" in summary["test"]
    module, _, _ = load_detector(summary["best_checkpoint"])
    assert isinstance(module.net, RawNet2Ensemble) and module.net.member == "rawnet2_tiny"


@pytest.fixture(scope="module")
def members(tmp_path_factory) -> tuple[Path, list[Path]]:
    """Two tiny runs of one variant, trained with different seeds on the same data."""
    tmp_path = tmp_path_factory.mktemp("members")
    paths = [Path(train(spoof_cfg(tmp_path, f"seed={s}", run=f"s{s}"))["best_checkpoint"]) for s in (1, 2)]
    return tmp_path, paths


def test_fused_checkpoints_score_the_mean_evaluate_and_export(members) -> None:
    tmp_path, paths = members
    out = tmp_path / "fused.ckpt"
    load("ensemble_rawnet2").main([*map(str, paths), "--out", str(out)])
    fused, _, clip_samples = load_detector(out)
    singles = [load_detector(path)[0] for path in paths]
    x = 0.1 * torch.randn(5, clip_samples)
    with torch.inference_mode():
        scores = [single.score(x) for single in singles]
        assert not torch.allclose(scores[0], scores[1])  # two detectors, not one twice
        torch.testing.assert_close(fused.score(x), (scores[0] + scores[1]) / 2)
    saved = torch.load(out, map_location="cpu", weights_only=False)
    assert saved["ensemble_of"] == [str(p.resolve()) for p in paths] and "optimizer_states" not in saved
    assert saved["abr_lab_config"]["model"]["arch_kwargs"] == {"member": "rawnet2_tiny", "size": 2}

    # evaluate.py rebuilds it from the file; its EER is that of the members' mean test scores
    result = evaluate(out)["test"]
    datamodule = instantiate_datamodule(checkpoint_config(out))
    datamodule.prepare_data()
    datamodule.setup("test")
    batches = list(datamodule.test_dataloader())
    with torch.inference_mode():
        mean = torch.cat([sum(s.score(b["audio"]) for s in singles) / 2 for b in batches]).numpy()
    labels = torch.cat([b["label"] for b in batches]).numpy()
    eer, _ = compute_eer(mean[labels == 1], mean[labels == 0])
    assert result["test/eer"] == pytest.approx(eer, abs=1e-6)

    scripted = torch.jit.load(str(export_torchscript(out, tmp_path / "fused.pt")))
    with torch.inference_mode():
        torch.testing.assert_close(scripted(x), fused.score(x), atol=1e-4, rtol=0)


def test_members_of_different_networks_are_refused_naming_the_file(members, tmp_path) -> None:
    _, paths = members
    other = Path(train(spoof_cfg(tmp_path, "+model.arch_kwargs.fc_hidden=8", run="narrow"))["best_checkpoint"])
    out = tmp_path / "fused.ckpt"
    with pytest.raises(ValueError, match=r"narrow/checkpoints/.*fc_hidden"):
        ensemble_checkpoints([paths[0], other], out)
    relabelled = tmp_path / "relabelled.ckpt"  # same shapes, another variant named: still refused
    ckpt = torch.load(paths[1], map_location="cpu", weights_only=False)
    ckpt["hyper_parameters"]["arch_kwargs"] = {"gru_layers": 1}
    torch.save(ckpt, relabelled)
    with pytest.raises(ValueError, match=r"relabelled\.ckpt: network rawnet2_tiny \{'gru_layers': 1\} differs"):
        ensemble_checkpoints([paths[0], relabelled], out)
    with pytest.raises(ValueError, match="at least two"):
        ensemble_checkpoints(paths[:1], out)
    with pytest.raises(ValueError, match="is one of the inputs"):
        ensemble_checkpoints(paths, paths[1])
    fused = ensemble_checkpoints(paths, tmp_path / "pair.ckpt")
    with pytest.raises(ValueError, match="already an ensemble"):
        ensemble_checkpoints([tmp_path / "pair.ckpt", paths[0]], out)
    assert fused["hyper_parameters"]["arch"] == "rawnet2_ensemble"
    assert not out.exists()  # nothing half-written
