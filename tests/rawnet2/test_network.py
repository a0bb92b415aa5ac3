"""RawNet2 networks: the reference's parameter count and shapes, FMS, gradients, the compact variant's skips, the
log-band-energy front end and the mean read-out."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from abr_lab.layers.cosine import OneClassCosineHead
from abr_lab.rawnet2.network import (
    FeatureMapScaling,
    RawNet2,
    RawNet2Lite,
    bonafide_score,
    convert_reference_state_dict,
    log_band_energies,
)
from abr_lab.registry import create_model

# The reference (Tak et al. 2021, config: filts [20, [20, 20], [20, 128], [128, 128]], GRU 3 × 1024, FC 1024, 2
# classes), counted layer by layer: first BN 40; block0 2,480; block1 2,520; block2 60,072; blocks 3-5 3 × 99,072;
# FMS 2 × 420 + 4 × 16,512; BN before GRU 256; GRU 3,545,088 + 2 × 6,297,600; FC1 1,049,600; FC2 2,050.
REFERENCE_PARAMETERS = 17_621_410
# the pre-activation BNs the reference computes and discards: blocks 1-5, (20 + 20 + 128 · 3) · 2
LEGACY_BN_PARAMETERS = 848


def count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_reference_parameter_count() -> None:
    assert count(RawNet2(legacy_preact_bn=True)) == REFERENCE_PARAMETERS
    assert count(RawNet2()) == REFERENCE_PARAMETERS - LEGACY_BN_PARAMETERS


def test_reference_shapes_through_the_network() -> None:
    net = RawNet2().eval()
    x = torch.randn(2, 64_600)
    with torch.no_grad():
        front = net.sinc(x[:, None])
        assert front.shape == (2, 20, 64_600 - 1_024)  # 1,025 taps, no padding
        logits = net(x)
    assert logits.shape == (2, 2)
    assert net(x[:, None]).shape == (2, 2)  # (b, 1, t) accepted too
    # 63,576 -> /3 (first pool) -> /3 six times: the GRU sees 29 frames
    assert (64_600 - 1_024) // 3 // 3**6 == 29


def test_input_errors_name_the_shape() -> None:
    net = create_model("rawnet2_tiny")
    with pytest.raises(ValueError, match=r"\(batch, samples\)"):
        net(torch.randn(2, 3, 500))
    with pytest.raises(ValueError, match="at least"):
        net(torch.randn(2, 100))


def test_feature_map_scaling_formula() -> None:
    fms = FeatureMapScaling(3)
    x = torch.randn(2, 3, 7)
    s = torch.sigmoid(x.mean(-1) @ fms.fc.weight.T + fms.fc.bias)[:, :, None]
    torch.testing.assert_close(fms(x), x * s + s)


@pytest.mark.parametrize("legacy", [False, True])
def test_every_parameter_gets_a_gradient_except_the_legacy_bn(legacy: bool) -> None:
    net = create_model("rawnet2_tiny", legacy_preact_bn=legacy)
    net(torch.randn(4, 3_000)).sum().backward()
    without = [n for n, p in net.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    if legacy:
        assert without and all(".bn1." in n for n in without)
        assert sorted(without) == sorted(n for n, _ in net.named_parameters() if ".bn1." in n)
    else:
        assert without == []


def test_legacy_bn_still_updates_its_running_statistics() -> None:
    net = create_model("rawnet2_tiny", legacy_preact_bn=True).train()
    bn1 = net.blocks[1].bn1
    before = bn1.running_mean.clone()
    net(torch.randn(4, 3_000))
    assert not torch.equal(before, bn1.running_mean)


def test_reference_state_dict_loads_after_renaming() -> None:
    ours = RawNet2(legacy_preact_bn=True).state_dict()
    to_reference = {"blocks.": "block{}.0.", "fms.": "fc_attention{}.0.", "fc1.": "fc1_gru.", "fc2.": "fc2_gru."}
    reference = {}
    for key, value in ours.items():
        for prefix, pattern in to_reference.items():
            if key.startswith(prefix):
                rest = key[len(prefix) :]
                if "{}" in pattern:
                    index, rest = rest.split(".", 1)
                    rest = rest.removeprefix("fc.") if prefix == "fms." else rest
                    key = pattern.format(index) + rest
                else:
                    key = pattern + rest
                break
        reference["module." + key] = value
    assert "block2.0.conv_downsample.weight" in {k.removeprefix("module.") for k in reference}
    net = RawNet2(legacy_preact_bn=True)
    net.load_state_dict(convert_reference_state_dict(reference), strict=True)


def test_lite_blocks_own_their_skips_and_train() -> None:
    net = RawNet2Lite()
    assert count(net) == 579_426  # the seed's 0.58 M
    skips = [block.skip for block in net.blocks]
    assert len({id(s) for s in skips if not isinstance(s, nn.Identity)}) == 3  # one projection per width change
    net(torch.randn(2, 4_000)).sum().backward()
    assert all(p.grad is not None for p in net.parameters())


def test_lite_strided_stem_shrinks_activations() -> None:
    x = torch.randn(1, 8_000)
    plain, strided = RawNet2Lite(), RawNet2Lite(stem_kernel=9, stem_stride=4)
    assert plain.stem(x[:, None]).shape[-1] == 8_000
    assert strided.stem(x[:, None]).shape[-1] == 2_000
    assert strided(x).shape == (1, 2)


def test_score_is_the_bonafide_log_odds() -> None:
    logits = torch.tensor([[0.0, 2.0], [3.0, -1.0]])
    torch.testing.assert_close(bonafide_score(logits), torch.tensor([2.0, -4.0]))
    log_probs = logits.log_softmax(dim=1)
    torch.testing.assert_close(bonafide_score(logits), log_probs[:, 1] - log_probs[:, 0])


def test_tiny_network_separates_an_easy_split() -> None:
    """White noise (bona fide) vs low-passed noise (spoof): a few dozen steps suffice."""
    torch.manual_seed(0)
    net = create_model("rawnet2_tiny")
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)

    def batch(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        noise = torch.randn(n, 3_000)
        smooth = torch.nn.functional.avg_pool1d(torch.randn(n, 1, 3_008), 9, stride=1)[:, 0] * 3
        return torch.cat([noise, smooth]), torch.cat([torch.ones(n), torch.zeros(n)]).long()

    for _ in range(40):
        x, y = batch(16)
        loss = torch.nn.functional.cross_entropy(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    x, y = batch(32)
    with torch.no_grad():
        scores = bonafide_score(net(x))
    assert scores[y == 1].min() > scores[y == 0].max()


@pytest.mark.parametrize("arch", ["rawnet2_tiny", "rawnet2_lite"])
def test_one_class_head_replaces_the_last_layer(arch: str) -> None:
    net = create_model(arch, head="one_class", head_scale=10.0, head_centre=0.5)
    assert isinstance(net.fc2, OneClassCosineHead)
    scores = bonafide_score(net(torch.randn(3, 4_000)))
    assert scores.shape == (3,) and bool((scores.abs() <= 10.0 * 1.5 + 1e-4).all())  # scale · (±1 − centre)
    with pytest.raises(ValueError, match="head='cosine'"):
        create_model(arch, head="cosine")
    with pytest.raises(ValueError, match="num_classes=3"):
        create_model(arch, head="one_class", num_classes=3)


def test_log_band_energies_hand_computed() -> None:
    # band 0: constant 2 (power 4); band 1: alternating ±3 (power 9); band 2: silence (floored, finite)
    t = torch.arange(10)
    bands = torch.stack([torch.full((10,), 2.0), 3.0 * (-1.0) ** t, torch.zeros(10)])[None]  # (1, 3, 10)
    out = log_band_energies(bands, frame_length=4, frame_shift=2)
    assert out.shape == (1, 3, 1 + (10 - 4) // 2)
    torch.testing.assert_close(out[0, 0], torch.full((4,), float(torch.log(torch.tensor(4.0)))))
    torch.testing.assert_close(out[0, 1], torch.full((4,), float(torch.log(torch.tensor(9.0)))))
    torch.testing.assert_close(out[0, 2], torch.full((4,), float(torch.log(torch.tensor(1e-10)))))
    # a gain is an additive offset of the log energies, the same in every band and frame
    louder = log_band_energies(10 * bands[:, :2], frame_length=4, frame_shift=2)
    torch.testing.assert_close(louder, out[:, :2] + 2 * torch.log(torch.tensor(10.0)))


def test_logband_variant_shapes_and_shortest_input() -> None:
    net = create_model("rawnet2_logband").eval()
    assert count(net) == REFERENCE_PARAMETERS - LEGACY_BN_PARAMETERS  # the same layers, another front end
    assert net.sinc.scale == "linear" and net.pools == (1, 1, 1, 1, 3, 3)
    frames = []
    net.gru.register_forward_hook(lambda module, inputs, output: frames.append(output[0].shape[1]))
    with torch.no_grad():
        assert net(torch.randn(2, 64_600)).shape == (2, 2)
        # 63,576 filtered samples -> 1 + (63,576 − 320) // 160 = 396 frames of 10 ms -> /3 /3: 44 GRU steps
        assert frames == [(1 + (64_600 - 1_024 - 320) // 160) // 9] == [44]
        assert net(torch.randn(1, net.min_samples)).shape == (1, 2)
        with pytest.raises(ValueError, match=f"at least {net.min_samples}"):
            net(torch.randn(1, net.min_samples - 1))


def test_reference_shortest_input_is_exact() -> None:
    net = create_model("rawnet2_tiny").eval()
    with torch.no_grad():
        assert net(torch.randn(1, net.min_samples)).shape == (1, 2)
        with pytest.raises(ValueError, match="at least"):
            net(torch.randn(1, net.min_samples - 1))


def test_mean_readout_is_the_mean_of_per_step_logits() -> None:
    net = create_model("rawnet2_tiny", readout="mean").eval()
    steps = []
    net.gru.register_forward_hook(lambda module, inputs, output: steps.append(output[0]))
    with torch.no_grad():
        logits = net(torch.randn(3, 4_000))
        per_step = net.fc2(net.fc1(steps[0]))  # (b, frames, 2)
    assert steps[0].shape[1] > 1
    torch.testing.assert_close(logits, per_step.mean(dim=1))
    # the reference reads the last step only
    last = create_model("rawnet2_tiny").eval()
    last.load_state_dict(net.state_dict())
    steps.clear()
    last.gru.register_forward_hook(lambda module, inputs, output: steps.append(output[0]))
    with torch.no_grad():
        x = torch.randn(3, 4_000)
        torch.testing.assert_close(last(x), last.fc2(last.fc1(steps[0][:, -1])))


def test_logband_every_parameter_gets_a_gradient() -> None:
    net = create_model("rawnet2_tiny", front_end="log_energy", block_pool=(1, 1, 3, 3), readout="mean")
    net(torch.randn(4, 6_000)).sum().backward()
    assert [n for n, p in net.named_parameters() if p.grad is None or p.grad.abs().sum() == 0] == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"front_end": "mel"}, "front_end='mel'"),
        ({"readout": "max"}, "readout='max'"),
        ({"block_pool": (3, 3)}, "one per block"),
        ({"block_pool": 0}, "pool=0"),
        ({"frame_shift": 0}, "frame_shift=0"),
    ],
)
def test_bad_front_end_options_are_refused(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        create_model("rawnet2_tiny", **kwargs)
