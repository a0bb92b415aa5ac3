"""Attention blocks on (B, C, L) feature maps: transformer layer (self- and optional cross-attention), gated
attention skip fusion, and multi-scale attention.

Every block takes and returns channels-first maps like the convolutions around it; the transpose to the
(B, L, C) layout of `nn.MultiheadAttention` happens inside. Positions are given by a fixed sinusoidal encoding
(`sinusoidal_positions`) added to the attention inputs (never to the residual stream, so a block at gate 0 is
exactly the identity), so attention can use where a sample lies on the time axis: the latency of a wave is a
position, and a decoder step should find the skip's step at the same time.

Dropout acts on the residual branches, never on the attention weights: weight dropout forces PyTorch's reference
attention kernel, which on a CPU is ~4× slower than the fused one at the U-Net's sequence lengths.

Every attention here is an `EntropyProbe`: while its `probe` flag is set (the health monitor sets it for one
validation batch per epoch), it also computes its attention weights and records their entropy, so collapsed
(every query on one key) or never-trained (uniform) attention shows up in TensorBoard.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def sinusoidal_positions(length: int, channels: int, device: torch.device | None = None) -> Tensor:
    """The fixed encoding of Vaswani et al. (2017), channels-first: (C, L). Odd C leaves the last channel zero."""
    position = torch.arange(length, device=device, dtype=torch.float32).unsqueeze(0)  # (1, L)
    half = channels // 2
    freq = torch.exp(-math.log(10000.0) * torch.arange(half, device=device, dtype=torch.float32) / max(half, 1))
    angles = freq.unsqueeze(-1) * position  # (C/2, L)
    encoding = torch.zeros(channels, length, device=device)
    encoding[0 : 2 * half : 2], encoding[1 : 2 * half : 2] = torch.sin(angles), torch.cos(angles)
    return encoding  # (C, L)


def attention_entropy(weights: Tensor) -> Tensor | None:
    """Mean entropy of attention rows (..., L, S), divided by log S: 0 = each query on one key, 1 = uniform.

    None for a single key (S = 1), where attention has no choice to make."""
    keys = weights.shape[-1]
    if keys < 2:
        return None
    p = weights.detach().float()
    return (-(p * p.clamp_min(1e-12).log()).sum(-1) / math.log(keys)).mean()


class EntropyProbe:
    """Mixin of attention layers: with `probe` set, the next forward passes record `entropy`
    (`attention_entropy` of their weights, a 0-dim tensor; NaN where the layer's block was gated off); otherwise
    they run at full speed and record nothing."""

    probe: bool = False
    entropy: Tensor | None = None

    def init_probe(self) -> None:
        """Give the instance its own `probe` and `entropy` from the start: `torch.compile` guards on where an
        attribute lives, so the health monitor's first assignment would otherwise recompile the network."""
        self.probe, self.entropy = False, None


class ProbedAttention(EntropyProbe, nn.MultiheadAttention):
    """`nn.MultiheadAttention` with an entropy probe (same parameters and state-dict keys)."""

    _OPTIONS = ("key_padding_mask", "need_weights", "attn_mask", "average_attn_weights", "is_causal")

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self.init_probe()

    def forward(self, query: Tensor, key: Tensor, value: Tensor, *args, **kwargs) -> tuple[Tensor, Tensor | None]:
        if not self.probe:
            return super().forward(query, key, value, *args, **kwargs)
        kwargs.update(zip(self._OPTIONS, args, strict=False))  # nn.MultiheadAttention's positional options
        kwargs.update(need_weights=True, average_attn_weights=False)
        out, weights = super().forward(query, key, value, **kwargs)
        self.entropy = attention_entropy(weights)  # weights (B, H, L, S)
        return out, weights


def _check_heads(channels: int, heads: int) -> None:
    if heads < 1 or channels % heads:
        raise ValueError(f"channels={channels} must be a positive multiple of heads={heads}")


class TransformerBlock(nn.Module):
    """Pre-norm transformer layer: self-attention, optional cross-attention to a context map, feed-forward.

    `gate` scales every residual branch (1 = a plain transformer layer, 0 = the identity): a curriculum can bring
    attention in gradually over an S4-only warm-up.
    """

    def __init__(
        self, channels: int, heads: int = 4, ff_mult: int = 2, dropout: float = 0.1, cross_attention: bool = False
    ) -> None:
        super().__init__()
        _check_heads(channels, heads)
        self.norm_self = nn.LayerNorm(channels)
        self.self_attention = ProbedAttention(channels, heads, batch_first=True)
        self.cross_attention: ProbedAttention | None = None
        if cross_attention:
            self.norm_query = nn.LayerNorm(channels)
            self.norm_context = nn.LayerNorm(channels)
            self.cross_attention = ProbedAttention(channels, heads, batch_first=True)
        self.norm_ff = nn.LayerNorm(channels)
        self.ff = nn.Sequential(
            nn.Linear(channels, ff_mult * channels),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(ff_mult * channels, channels),
        )
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, context: Tensor | None = None, gate: float | Tensor = 1.0) -> Tensor:
        # x (B, C, L); context (B, C, Lc) for cross-attention
        h = x.transpose(1, 2)  # (B, L, C)
        q = self.norm_self(h) + _positions(h)  # (B, L, C)
        h = h + gate * self.dropout(self.self_attention(q, q, q, need_weights=False)[0])  # (B, L, C)
        if self.cross_attention is not None:
            if context is None:
                raise ValueError("this TransformerBlock has cross-attention: pass the context map")
            c = context.transpose(1, 2)  # (B, Lc, C)
            kv = self.norm_context(c) + _positions(c)
            attended = self.cross_attention(self.norm_query(h) + _positions(h), kv, kv, need_weights=False)[0]
            h = h + gate * self.dropout(attended)  # (B, L, C)
        h = h + gate * self.dropout(self.ff(self.norm_ff(h)))  # (B, L, C)
        if self.self_attention.probe:
            for attention in (self.self_attention, self.cross_attention):
                if attention is not None:
                    attention.entropy = gated_entropy(attention.entropy, gate)
        return h.transpose(1, 2)  # (B, C, L)


def gated_entropy(entropy: Tensor | None, gate: float | Tensor) -> Tensor | None:
    """`entropy` as measured, or NaN where the block's `gate` is 0 (gated off: its weights mean nothing yet). A
    tensor gate is compared on its device: reading it to the host here would stop a GPU run and cut a compiled
    graph in two."""
    if entropy is None:
        return None
    if isinstance(gate, Tensor):
        return entropy.masked_fill(gate.to(entropy.device) == 0, math.nan)
    return entropy.new_full((), math.nan) if gate == 0 else entropy


def _positions(h: Tensor) -> Tensor:
    """The sinusoidal encoding for a (B, L, C) sequence, as (L, C)."""
    return sinusoidal_positions(h.shape[1], h.shape[2], h.device).T.to(h.dtype)


class AttentionSkipFusion(nn.Module):
    """Merges an encoder skip map into the decoder: decoder features query the skip, and a learned sigmoid gate per
    position and channel decides how much of the attended skip to add.

    Unlike concatenation, the decoder selects what it takes from the skip, and the gate can close it entirely
    (e.g. to keep the encoder's noise out of a denoised output).
    """

    def __init__(self, channels: int, heads: int = 4) -> None:
        super().__init__()
        _check_heads(channels, heads)
        self.norm_query = nn.LayerNorm(channels)
        self.norm_skip = nn.LayerNorm(channels)
        self.attention = ProbedAttention(channels, heads, batch_first=True)
        self.value = nn.Linear(channels, channels)
        self.gate = nn.Linear(2 * channels, channels)

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        # x (B, C, L) decoder features, skip (B, C, Ls) encoder features
        q = self.norm_query(x.transpose(1, 2))  # (B, L, C)
        kv = self.norm_skip(skip.transpose(1, 2))  # (B, Ls, C)
        attended = self.attention(q + _positions(q), kv + _positions(kv), kv, need_weights=False)[0]  # (B, L, C)
        gate = torch.sigmoid(self.gate(torch.cat([q, attended], dim=-1)))  # (B, L, C)
        return x + (gate * self.value(attended)).transpose(1, 2)  # (B, C, L)


class ConcatSkipFusion(nn.Module):
    """The plain U-Net skip: concatenate decoder and skip maps (same length), mix with a 1×1 convolution."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.mix = nn.Conv1d(2 * channels, channels, kernel_size=1)

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        # x (B, C, L), skip (B, C, L)
        return x + self.mix(torch.cat([x, skip], dim=1))  # (B, C, L)


class MultiScaleAttention(EntropyProbe, nn.Module):
    """Self-attention with one head per temporal scale: for each scale k a depthwise convolution of width k smooths
    the map, the head of that scale computes its queries, keys and values from the smoothed map, and a 1×1
    convolution fuses the heads' outputs into a residual update.

    Small k keeps sharp peaks (waves I and III last ~0.5 ms), larger k sees broad ones (a late, wide wave V). One
    head per scale costs what a single multi-head attention costs, rather than one full attention per scale.
    """

    def __init__(self, channels: int, scales: Sequence[int] = (1, 3, 5, 7), head_dim: int | None = None):
        super().__init__()
        self.init_probe()
        if not scales or any(k < 1 or k % 2 == 0 for k in scales):
            raise ValueError(f"scales={list(scales)}: need odd kernel widths >= 1")
        self.scales = tuple(int(k) for k in scales)
        self.head_dim = head_dim or max(1, channels // len(self.scales))
        self.norm = nn.GroupNorm(1, channels)
        self.smooth = nn.ModuleList(
            nn.Conv1d(channels, channels, kernel_size=k, padding=k // 2, groups=channels) for k in self.scales
        )
        self.qkv = nn.ModuleList(nn.Conv1d(channels, 3 * self.head_dim, kernel_size=1) for _ in self.scales)
        self.fuse = nn.Conv1d(len(self.scales) * self.head_dim, channels, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        # x (B, C, L)
        h = self.norm(x)
        qkv = [proj(smooth(h)) for smooth, proj in zip(self.smooth, self.qkv, strict=True)]  # S × (B, 3d, L)
        q, k, v = (t.contiguous() for t in torch.stack(qkv, dim=1).transpose(-1, -2).chunk(3, dim=-1))  # (B, S, L, d)
        attended = F.scaled_dot_product_attention(q, k, v)  # (B, S, L, d)
        if self.probe:
            self.entropy = attention_entropy((q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])).softmax(-1))
        b, s, length, d = attended.shape
        attended = attended.transpose(-1, -2).reshape(b, s * d, length)  # (B, S·d, L): heads side by side
        return x + self.fuse(attended)  # (B, C, L)
