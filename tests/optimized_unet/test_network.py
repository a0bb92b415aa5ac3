"""The U-Net's architecture: variants run and train, toggles change what they say, attention only where long."""

from __future__ import annotations

import shutil

import pytest
import torch
import torch.nn.functional as F

from abr_lab.layers import AttentionSkipFusion, ConcatSkipFusion, EntropyProbe, MultiScaleAttention, ResCNNStack
from abr_lab.optimized_unet.network import (
    ConvBlock,
    OptimizedHierarchicalUNet,
    ResidualS4D,
    level_lengths,
    max_over_time,
)
from abr_lab.registry import create_model, list_models

TINY = dict(channels=(8, 16), cond_dim=8, heads=2, state_size=8, bottleneck_s4_layers=1, rescnn_blocks=1)


def run(net: OptimizedHierarchicalUNet, batch: int = 3) -> dict[str, torch.Tensor]:
    return net(torch.randn(batch, 1, net.signal_length), torch.randn(batch, 4))


@pytest.mark.parametrize("name", list_models("optimized_unet"))
def test_registered_variants_forward_and_every_parameter_gets_a_gradient(name: str) -> None:
    torch.manual_seed(0)
    net = create_model(name)
    out = run(net, batch=2)
    w = net.num_waves
    expected = {
        "signal": (2, 1, 300),
        "presence": (2, w),
        "latency": (2, w),
        "latency_log_sigma": (2, w),
        "amplitude": (2, w),
        "amplitude_log_sigma": (2, w),
        "class": (2, 5),
        "threshold": (2,),
        "threshold_log_sigma": (2,),
    }
    for key, shape in expected.items():
        assert out[key].shape == shape, key
        assert torch.isfinite(out[key]).all(), key
    assert ((out["latency"] >= 0) & (out["latency"] <= 1)).all()  # a position inside the window
    # every output reaches the loss: a sum of all of them sends a gradient to every parameter
    sum(v.sum() for v in out.values()).backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, f"no (finite) gradient: {missing}"


def test_default_variant_is_at_most_ten_million_parameters() -> None:
    net = create_model("optimized_unet")
    assert sum(p.numel() for p in net.parameters()) <= 10_000_000


def test_level_lengths() -> None:
    assert level_lengths(300, 4) == [300, 150, 75, 38, 19]


@pytest.mark.parametrize("min_len", [20, 50, 100, 1000])
def test_transformers_only_where_the_sequence_is_long_enough(min_len: int) -> None:
    net = OptimizedHierarchicalUNet(signal_length=300, min_attention_len=min_len, **{**TINY, "channels": (8, 8, 8)})
    # stem stride 2: levels of 150, 75, 38 steps (bottleneck 19)
    assert net.lengths == [150, 75, 38, 19]
    for level in [*net.encoder, *net.decoder]:
        assert (len(level.transformers) > 0) == (level.length >= min_len), (level.length, min_len)
    assert net.transformer_levels()["encoder"] == [n for n in (150, 75, 38) if n >= min_len]
    assert not any(isinstance(m, torch.nn.MultiheadAttention) for m in net.bottleneck.modules())


def test_stem_stride_one_runs_the_unet_at_full_resolution() -> None:
    net = OptimizedHierarchicalUNet(signal_length=100, stem_stride=1, **TINY)
    assert net.lengths[0] == 100
    assert net.positions[0] == 0 and net.positions[-1] == 1
    assert run(net)["signal"].shape == (3, 1, 100)


def test_bottleneck_options() -> None:
    kinds = {}
    for kind in ("s4", "rescnn", "s4_rescnn"):
        net = OptimizedHierarchicalUNet(bottleneck=kind, **TINY)
        kinds[kind] = (net.bottleneck.rescnn is not None, len(net.bottleneck.s4))
        assert run(net)["class"].shape == (3, 5)
    assert kinds == {"s4": (False, 1), "rescnn": (True, 0), "s4_rescnn": (True, 1)}
    assert isinstance(OptimizedHierarchicalUNet(bottleneck="rescnn", **TINY).bottleneck.rescnn, ResCNNStack)
    with pytest.raises(ValueError, match="bottleneck='mamba'"):
        OptimizedHierarchicalUNet(bottleneck="mamba", **TINY)


def _count(net: torch.nn.Module, cls: type) -> int:
    return sum(isinstance(m, cls) for m in net.modules())


def test_toggles_change_the_architecture() -> None:
    base = OptimizedHierarchicalUNet(**TINY)
    assert _count(base, AttentionSkipFusion) == 2 and _count(base, ConcatSkipFusion) == 1  # + full-resolution skip
    assert _count(base, MultiScaleAttention) == 1
    assert all(block.cross_attention is not None for lvl in base.decoder for block in lvl.transformers)
    assert hasattr(base.extractors, "cross_attention")

    no_skip_attention = OptimizedHierarchicalUNet(use_attention_skip_connections=False, **TINY)
    assert _count(no_skip_attention, AttentionSkipFusion) == 0 and _count(no_skip_attention, ConcatSkipFusion) == 3

    no_msa = OptimizedHierarchicalUNet(use_multi_scale_attention=False, **TINY)
    assert _count(no_msa, MultiScaleAttention) == 0

    no_cross = OptimizedHierarchicalUNet(use_cross_attention=False, **TINY)
    assert all(block.cross_attention is None for lvl in no_cross.decoder for block in lvl.transformers)

    shared = OptimizedHierarchicalUNet(use_task_specific_extractors=False, **TINY)
    assert not hasattr(shared.extractors, "cross_attention") and hasattr(shared.extractors, "shared")
    assert _count(shared, MultiScaleAttention) == 0
    for net in (no_skip_attention, no_msa, no_cross, shared):
        out = run(net)
        assert all(torch.isfinite(v).all() for v in out.values())


def test_s4d_layers_are_bidirectional_real_s4d() -> None:
    net = OptimizedHierarchicalUNet(**TINY)
    layers = [m for m in net.modules() if isinstance(m, ResidualS4D)]
    assert layers and all(layer.s4.bidirectional for layer in layers)
    names = {n.rsplit(".", 1)[-1] for n, _ in net.named_parameters() if ".kernel." in n}
    assert names == {"log_dt", "log_A_real", "A_imag", "C"}


def test_static_parameters_condition_the_output() -> None:
    torch.manual_seed(0)
    net = OptimizedHierarchicalUNet(**TINY).eval()
    for film in [m for m in net.modules() if m.__class__.__name__ == "FiLM"]:
        torch.nn.init.normal_(film.proj.weight, std=0.1)  # FiLM starts as the identity: give it a say
    x = torch.randn(2, 1, 300)
    a, b = net(x, torch.zeros(2, 4)), net(x, torch.ones(2, 4))
    assert not torch.allclose(a["signal"], b["signal"])


def test_transformer_gate_zero_removes_the_transformers() -> None:
    torch.manual_seed(0)
    net = OptimizedHierarchicalUNet(**TINY).eval()
    x, s = torch.randn(2, 1, 300), torch.randn(2, 4)
    net.transformer_gate.fill_(0.0)
    gated = net(x, s)["signal"]
    for level in [*net.encoder, *net.decoder]:
        level.transformers = torch.nn.ModuleList()
    assert torch.allclose(gated, net(x, s)["signal"], atol=1e-6)


def test_network_traces_into_one_graph_in_training_and_under_the_health_probe() -> None:
    """`model.compile=true` compiles the network whole: the training forward and backward, and the validation
    forward the health monitor probes for attention entropies, each trace without a graph break (`fullgraph=True`
    raises at one). A break there used to split the compiled network into ~70 per-layer graphs after the first
    validation."""
    torch.manual_seed(0)
    net = OptimizedHierarchicalUNet(**TINY, use_multi_scale_attention=True, use_cross_attention=True)
    compiled = torch.compile(net, backend="eager", fullgraph=True)
    x, s = torch.randn(2, 1, 300), torch.randn(2, 4)
    sum(v.sum() for v in compiled(x, s).values()).backward()
    probes = [m for m in net.modules() if isinstance(m, EntropyProbe)]
    assert probes
    for probe in probes:
        probe.probe = True
    net.eval()
    with torch.no_grad():
        compiled(x, s)
    assert all(p.entropy is not None and torch.isfinite(p.entropy) for p in probes if p.entropy is not None)


@pytest.mark.skipif(shutil.which("c++") is None, reason="Inductor's CPU backend needs a C++ compiler")
def test_max_over_time_trains_finite_when_compiled_under_bf16_autocast() -> None:
    """The threshold extractor's pattern (conv block, ReLU, maximum over time, projection) compiled by Inductor under
    bf16 autocast, as ``trainer=gpu model.compile=true`` trains: with `amax` in place of `max_over_time` every input
    gradient here was NaN from the first backward (and every gradient of the tiny U-Net); eager was finite."""
    torch.manual_seed(0)
    block, proj = ConvBlock(8, 8), torch.nn.Linear(8, 8)
    x = torch.randn(8, 8, 150, requires_grad=True)
    step = torch.compile(lambda x: proj(max_over_time(F.relu(block(x)))).float().sum())  # Inductor: ~5 s
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = step(x.bfloat16())
    loss.backward()
    assert torch.isfinite(x.grad).all() and all(torch.isfinite(p.grad).all() for p in block.parameters())


def test_network_uses_no_amax() -> None:
    """Every maximum in the network is `max_over_time` (why: above): none of `amax`'s compiled backward left."""
    graphs = []

    def record(gm: torch.fx.GraphModule, _: object) -> object:
        graphs.append(gm)
        return gm.forward

    net = OptimizedHierarchicalUNet(**TINY, use_multi_scale_attention=True, use_cross_attention=True)
    torch.compile(net, backend=record, fullgraph=True)(torch.randn(2, 1, 300), torch.randn(2, 4))
    (graph,) = graphs
    targets = {str(getattr(node.target, "__name__", node.target)) for node in graph.graph.nodes}
    assert "max" in targets and "amax" not in targets


def test_wrong_input_shape_is_named() -> None:
    net = OptimizedHierarchicalUNet(**TINY)
    with pytest.raises(ValueError, match=r"expected \(B, 1, 300\)"):
        net(torch.randn(2, 1, 299), torch.randn(2, 4))
