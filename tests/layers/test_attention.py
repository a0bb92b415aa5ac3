"""Attention blocks and FiLM: shapes, identities at gate 0 / init, and that each block uses what it is given."""

from __future__ import annotations

import math

import pytest
import torch

from abr_lab.layers import (
    AttentionSkipFusion,
    ConcatSkipFusion,
    FiLM,
    MultiScaleAttention,
    TransformerBlock,
    sinusoidal_positions,
)
from abr_lab.layers.attention import ProbedAttention, gated_entropy


def test_sinusoidal_positions_match_the_formula() -> None:
    enc = sinusoidal_positions(length=5, channels=4)
    assert enc.shape == (4, 5)
    # channel pair j uses frequency 10000^(-j / (C/2)); position 3, pair 1: sin(3 / 100), cos(3 / 100)
    assert enc[2, 3].item() == pytest.approx(math.sin(3 / 100.0), abs=1e-6)
    assert enc[3, 3].item() == pytest.approx(math.cos(3 / 100.0), abs=1e-6)
    assert enc[0, 0].item() == 0.0 and enc[1, 0].item() == 1.0


def test_transformer_block_shapes_and_gate_zero_is_identity() -> None:
    torch.manual_seed(0)
    block = TransformerBlock(8, heads=2, cross_attention=True).eval()
    x, ctx = torch.randn(3, 8, 20), torch.randn(3, 8, 12)
    assert block(x, ctx).shape == (3, 8, 20)
    assert torch.equal(block(x, ctx, gate=0.0), x)
    with pytest.raises(ValueError, match="context"):
        block(x)


def test_cross_attention_reads_the_context() -> None:
    torch.manual_seed(0)
    block = TransformerBlock(8, heads=2, cross_attention=True).eval()
    x, ctx = torch.randn(2, 8, 10), torch.randn(2, 8, 10)
    assert not torch.allclose(block(x, ctx), block(x, ctx + 1.0 * torch.randn_like(ctx)))
    self_only = TransformerBlock(8, heads=2).eval()
    assert self_only.cross_attention is None


def test_heads_must_divide_channels() -> None:
    with pytest.raises(ValueError, match="heads"):
        TransformerBlock(10, heads=4)


def test_attention_skip_fusion_is_gated_and_reads_the_skip() -> None:
    torch.manual_seed(0)
    fusion = AttentionSkipFusion(8, heads=2).eval()
    x, skip = torch.randn(2, 8, 16), torch.randn(2, 8, 16)
    out = fusion(x, skip)
    assert out.shape == x.shape
    assert not torch.allclose(out, fusion(x, torch.randn_like(skip)))
    # a gate closed by its bias lets the decoder features through unchanged
    with torch.no_grad():
        fusion.gate.weight.zero_()
        fusion.gate.bias.fill_(-1e4)
    assert torch.allclose(fusion(x, skip), x)


def test_concat_skip_fusion_shape() -> None:
    assert ConcatSkipFusion(6)(torch.randn(2, 6, 9), torch.randn(2, 6, 9)).shape == (2, 6, 9)


def test_multi_scale_attention_one_head_per_scale() -> None:
    torch.manual_seed(0)
    msa = MultiScaleAttention(16, scales=(1, 3, 5, 7))
    assert [conv.kernel_size[0] for conv in msa.smooth] == [1, 3, 5, 7]
    assert msa.head_dim == 4 and msa.fuse.in_channels == 16
    x = torch.randn(2, 16, 30, requires_grad=True)
    out = msa(x)
    assert out.shape == x.shape
    out.sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in msa.parameters())
    with pytest.raises(ValueError, match="odd"):
        MultiScaleAttention(16, scales=(2, 4))


def test_film_starts_as_identity_and_then_modulates() -> None:
    film = FiLM(4, cond_dim=3)
    x, cond = torch.randn(2, 4, 7), torch.randn(2, 3)
    assert torch.equal(film(x, cond), x)
    with torch.no_grad():
        film.proj.bias.copy_(torch.tensor([1.0, 0, 0, 0, 0, 0, 0, 2.0]))  # gamma_0 = 1, beta_3 = 2
    out = film(x, cond)
    assert torch.allclose(out[:, 0], 2 * x[:, 0])
    assert torch.allclose(out[:, 3], x[:, 3] + 2)


def test_gated_entropy_is_nan_where_the_gate_is_zero() -> None:
    entropy = torch.tensor(0.25)
    assert gated_entropy(None, torch.tensor(0.0)) is None  # nothing measured
    assert gated_entropy(entropy, 1.0) is entropy and gated_entropy(entropy, torch.tensor(0.5)).item() == 0.25
    assert math.isnan(gated_entropy(entropy, 0.0).item()) and math.isnan(gated_entropy(entropy, torch.tensor(0.0)))


def test_probed_block_traces_into_one_graph_with_a_tensor_gate() -> None:
    """The probe's gate check stays on the device: `fullgraph=True` raises at any graph break (a host read would
    be one), and the entropy comes back NaN at gate 0, measured otherwise."""
    torch.manual_seed(0)
    block = TransformerBlock(channels=8, heads=2, cross_attention=True).eval()
    for attention in (block.self_attention, block.cross_attention):
        attention.probe = True
    compiled = torch.compile(block, backend="eager", fullgraph=True)
    x, ctx = torch.randn(2, 8, 10), torch.randn(2, 8, 6)
    compiled(x, ctx, gate=torch.tensor(1.0))
    assert 0.0 < block.self_attention.entropy.item() < 1.0 and 0.0 < block.cross_attention.entropy.item() < 1.0
    compiled(x, ctx, gate=torch.tensor(0.0))
    assert math.isnan(block.self_attention.entropy.item()) and math.isnan(block.cross_attention.entropy.item())


def test_probe_attributes_belong_to_the_instance() -> None:
    """`torch.compile` guards on where `probe` lives: set on the instance from the start, the health monitor's first
    assignment does not recompile the network."""
    for layer in (ProbedAttention(8, 2, batch_first=True), MultiScaleAttention(8, scales=(1, 3))):
        assert layer.__dict__["probe"] is False and layer.__dict__["entropy"] is None
