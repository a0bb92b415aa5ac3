"""The optimized hierarchical U-Net: one network for every ABR task.

Flow (B = batch, T = samples, s = stem stride, C_i = width of level i, L_i = its length, L_0 = ceil(T / s),
L_{i+1} = ceil(L_i / 2)):

    static (B, 4) ──► embedding (B, D) ─────────────── FiLM at every level, and every head
    signal (B, 1, T) ──► stem conv (B, C_0, T) ──────────────────────────────────┐ full-resolution skip
      └► patches of s samples (B, C_0, L_0)                                      │
      └► encoder level i:  conv block → transformer (only if L_i >= min_attention_len) → S4D ─► skip_i (B, C_i, L_i)
                           → downsample ×2 → FiLM                                │
      └► bottleneck:       S4D layers and/or ResCNN stack + global-context path (no attention: the sequence is short)
      └► decoder level i:  S4D → upsample ×2 to L_i → transformer with self- and cross-attention to skip_i (only if
                           L_i >= min_attention_len) → skip fusion (attention, gated; or concat) → FiLM
      └► back to T samples, fused with the stem's map (B, C_0, T) ◄──────────────┘
      └► task extractors:  signal (dilated convs at full resolution: continuity), peaks (local convs + multi-scale
                           attention), class (attention pooling: global), threshold (amplitude statistics), then
                           cross-task attention between the four task summaries
      └► heads:            signal (B, 1, T) per time step; peaks: presence logits, latency (a soft-argmax position on
                           the time axis, so any latency inside the window is reachable) and amplitude with log σ;
                           class logits (B, 5); threshold mean and log σ

Outputs are in the units the LightningModule standardises from (see `OptimizedHierarchicalUNet.forward`); the
network knows nothing of ms, µV or dB.

A generative network (`generative=True`, joint generation) has a second path through the same trunk, `denoise`:

    noised clean signal x_t (B, 1, T), t (B,) ──► static embedding (or the learned null embedding)
                                                  + timestep embedding (+ class embedding, or its null row) (B, D)
      └► the trunk above, FiLM-conditioned at every level by that (B, D) ──► full-resolution map (B, C_0, T)
      └► diffusion head: conv block → 1×1 conv ──► v prediction (B, 1, T)

The task extractors and heads are not on it: they only ever read recordings (the analysis path, `forward`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from abr_lab.layers import (
    S4D,
    AttentionSkipFusion,
    ConcatSkipFusion,
    FiLM,
    MultiScaleAttention,
    ProbedAttention,
    ResCNNStack,
    TransformerBlock,
)
from abr_lab.optimized_unet.diffusion import TimestepEmbedding
from abr_lab.registry import register_variant

FAMILY = "optimized_unet"
BOTTLENECKS = ("s4", "rescnn", "s4_rescnn")
TASKS = ("signal", "peaks", "class", "threshold")


def level_lengths(signal_length: int, depth: int) -> list[int]:
    """Sequence length at each encoder level and at the bottleneck: [T, ceil(T/2), ...], depth + 1 entries."""
    lengths = [signal_length]
    for _ in range(depth):
        lengths.append((lengths[-1] + 1) // 2)
    return lengths


def _groups(channels: int) -> int:
    """GroupNorm groups: 8 when they divide the width, else 1 (LayerNorm over channels and time)."""
    return 8 if channels % 8 == 0 else 1


def max_over_time(x: Tensor, keepdim: bool = False) -> Tensor:
    """The maximum over the last (time) axis, with its gradient on the arg max.

    Not `amax`: its backward finds the maxima again by comparing every element with the saved maximum and divides by
    how many matched. Compiled under bf16 autocast, Inductor recomputes the elements in float32 and the comparison
    with the bf16-rounded maximum can match none: 0 / 0, and every gradient of the network NaN from the first step
    (the tiny U-Net, `torch.compile` on the CPU, 2026-12-07; `tests/optimized_unet/test_network.py` reproduces it on
    one block). The values are the same; on ties the gradient goes to one element instead of being shared.
    """
    return x.max(dim=-1, keepdim=keepdim).values


class ConvBlock(nn.Module):
    """Two convolutions with GroupNorm and GELU, plus a (1×1 when widths differ) residual path."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 5, dilation: int = 1) -> None:
        super().__init__()
        padding = dilation * (kernel_size // 2)
        self.body = nn.Sequential(
            nn.Conv1d(in_channels, out_channels, kernel_size, padding=padding, dilation=dilation),
            nn.GroupNorm(_groups(out_channels), out_channels),
            nn.GELU(),
            nn.Conv1d(out_channels, out_channels, kernel_size, padding=padding, dilation=dilation),
            nn.GroupNorm(_groups(out_channels), out_channels),
        )
        self.residual = (
            nn.Identity() if in_channels == out_channels else nn.Conv1d(in_channels, out_channels, kernel_size=1)
        )

    def forward(self, x: Tensor) -> Tensor:
        return F.gelu(self.body(x) + self.residual(x))  # (B, C_out, L)


class ResidualS4D(nn.Module):
    """x + S4D(GroupNorm(x)): a pre-norm residual wrapper, so stacked S4D layers start near the identity."""

    def __init__(self, channels: int, state_size: int, dropout: float) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(_groups(channels), channels)
        self.s4 = S4D(channels, state_size=state_size, bidirectional=True, dropout=dropout)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.s4(self.norm(x))  # (B, C, L)


class EncoderLevel(nn.Module):
    """conv block → transformer (long sequences only) → S4D → downsample ×2 → FiLM. Returns (down, skip)."""

    def __init__(
        self,
        in_channels: int,
        channels: int,
        length: int,
        cond_dim: int,
        min_attention_len: int,
        transformer_layers: int,
        heads: int,
        state_size: int,
        dropout: float,
    ) -> None:
        super().__init__()
        self.length = length
        self.conv = ConvBlock(in_channels, channels)
        n_layers = transformer_layers if length >= min_attention_len else 0
        self.transformers = nn.ModuleList(TransformerBlock(channels, heads, dropout=dropout) for _ in range(n_layers))
        self.s4 = ResidualS4D(channels, state_size, dropout)
        self.down = nn.Conv1d(channels, channels, kernel_size=3, stride=2, padding=1)
        self.film = FiLM(channels, cond_dim)

    def forward(self, x: Tensor, cond: Tensor, gate: float | Tensor = 1.0) -> tuple[Tensor, Tensor]:
        # x (B, C_in, L), cond (B, D)
        h = self.conv(x)  # (B, C, L)
        for block in self.transformers:
            h = block(h, gate=gate)  # (B, C, L)
        skip = self.s4(h)  # (B, C, L)
        down = self.film(self.down(skip), cond)  # (B, C, ceil(L / 2))
        return down, skip


class Bottleneck(nn.Module):
    """The coarsest level: S4D layers (`s4`), the ResCNN stack (`rescnn`) or both (`s4_rescnn`), then a global
    context path that adds a summary of the whole sequence (mean and max over time, through an MLP) to every
    position, and FiLM. No attention: at this length (~T/16) attention has too few tokens to be useful."""

    def __init__(
        self,
        channels: int,
        cond_dim: int,
        kind: str,
        s4_layers: int,
        rescnn_blocks: int,
        state_size: int,
        dropout: float,
    ) -> None:
        super().__init__()
        if kind not in BOTTLENECKS:
            raise ValueError(f"bottleneck={kind!r}: choose one of {list(BOTTLENECKS)}")
        self.kind = kind
        self.rescnn = ResCNNStack(channels, num_blocks=rescnn_blocks, dropout=dropout) if "rescnn" in kind else None
        n_s4 = s4_layers if "s4" in kind.split("_") else 0
        self.s4 = nn.Sequential(*(ResidualS4D(channels, state_size, dropout) for _ in range(n_s4)))
        self.context = nn.Sequential(nn.Linear(2 * channels, channels), nn.GELU(), nn.Linear(channels, channels))
        self.film = FiLM(channels, cond_dim)

    def forward(self, x: Tensor, cond: Tensor) -> Tensor:
        # x (B, C, Lb)
        if self.rescnn is not None:
            x = self.rescnn(x)  # (B, C, Lb)
        x = self.s4(x)  # (B, C, Lb)
        summary = torch.cat([x.mean(-1), max_over_time(x)], dim=-1)  # (B, 2C)
        x = x + self.context(summary).unsqueeze(-1)  # (B, C, Lb)
        return self.film(x, cond)


class DecoderLevel(nn.Module):
    """S4D → upsample ×2 to the skip's length → transformer with self- and cross-attention to the skip (long
    sequences only) → skip fusion (gated attention or concat) → FiLM."""

    def __init__(
        self,
        in_channels: int,
        channels: int,
        length: int,
        cond_dim: int,
        min_attention_len: int,
        transformer_layers: int,
        heads: int,
        state_size: int,
        dropout: float,
        cross_attention: bool,
        attention_skip: bool,
    ) -> None:
        super().__init__()
        self.length = length
        self.s4 = ResidualS4D(in_channels, state_size, dropout)
        self.up = nn.ConvTranspose1d(in_channels, channels, kernel_size=4, stride=2, padding=1)
        n_layers = transformer_layers if length >= min_attention_len else 0
        self.transformers = nn.ModuleList(
            TransformerBlock(channels, heads, dropout=dropout, cross_attention=cross_attention) for _ in range(n_layers)
        )
        self.fusion: nn.Module = AttentionSkipFusion(channels, heads) if attention_skip else ConcatSkipFusion(channels)
        self.film = FiLM(channels, cond_dim)

    def forward(self, x: Tensor, skip: Tensor, cond: Tensor, gate: float | Tensor = 1.0) -> Tensor:
        # x (B, C_in, L/2), skip (B, C, L)
        h = self.up(self.s4(x))[..., : skip.shape[-1]]  # (B, C, L): 2·ceil(L/2) >= L, cropped
        for block in self.transformers:
            h = block(h, skip, gate=gate)  # (B, C, L)
        h = self.fusion(h, skip)  # (B, C, L)
        return self.film(h, cond)


class AttentionPool(nn.Module):
    """A learned query attends over time: a weighted average that can focus on the informative stretch."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.score = nn.Conv1d(channels, 1, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        # x (B, C, L)
        weights = torch.softmax(self.score(x), dim=-1)  # (B, 1, L)
        return (x * weights).sum(-1)  # (B, C)


class TaskExtractors(nn.Module):
    """Task-specific features, and cross-task attention between the tasks' summaries.

    The signal task reads the full-resolution map (B, C, T); the others read the decoder's output at the top
    level's resolution (B, C, L_0).

    - signal: dilated convolutions (dilation 1, 2, 4) — temporal continuity of the waveform;
    - peaks: small convolutions, then multi-scale attention (if enabled) — local, sharp structure;
    - class: attention pooling over the sequence, next to the bottleneck's mean — the global pattern;
    - threshold: per-channel mean, standard deviation and maximum of rectified features, next to the recording's
      own log energy in early / middle / late windows — amplitude, which is what falls as the level nears threshold.
    Cross-task attention: the four summaries (B, 4, C) attend to each other; the class and threshold vectors take
    the result, and the sequence tasks add their token back to every position.

    With `enabled=False` the tasks share one trunk: a convolution block whose output feeds peaks, class and
    threshold alike, and the signal reads the full-resolution map as it is (the ablation of the seed).
    """

    def __init__(
        self,
        channels: int,
        bottleneck_channels: int,
        heads: int,
        enabled: bool,
        multi_scale_attention: bool,
        scales: Sequence[int],
    ) -> None:
        super().__init__()
        self.enabled = enabled
        c = channels
        self.bottleneck_proj = nn.Linear(bottleneck_channels, c)
        if not enabled:
            self.shared = ConvBlock(c, c)
            self.pool = AttentionPool(c)
            self.vector_proj = nn.Linear(2 * c + 3, c)
            return
        self.signal = nn.Sequential(
            ConvBlock(c, c, dilation=1), ConvBlock(c, c, dilation=2), ConvBlock(c, c, dilation=4)
        )
        peak_layers: list[nn.Module] = [ConvBlock(c, c, kernel_size=3)]
        if multi_scale_attention:
            peak_layers.append(MultiScaleAttention(c, scales))
        self.peaks = nn.Sequential(*peak_layers)
        self.class_conv = ConvBlock(c, c)
        self.class_pool = AttentionPool(c)
        self.class_proj = nn.Linear(2 * c, c)
        self.threshold_conv = ConvBlock(c, c)
        self.threshold_proj = nn.Linear(3 * c + 3, c)
        self.task_embedding = nn.Parameter(torch.zeros(len(TASKS), c))
        self.cross_norm = nn.LayerNorm(c)
        self.cross_attention = ProbedAttention(c, heads, batch_first=True)

    def forward(self, full: Tensor, coarse: Tensor, bottleneck: Tensor, signal: Tensor) -> dict[str, Tensor]:
        # full (B, C, T), coarse (B, C, L0) decoder output, bottleneck (B, Cb, Lb), signal (B, 1, T) the recording
        global_context = self.bottleneck_proj(bottleneck.mean(-1))  # (B, C)
        energy = window_log_energy(signal)  # (B, 3)
        if not self.enabled:
            shared = self.shared(coarse)  # (B, C, L0)
            vector = self.vector_proj(torch.cat([self.pool(shared), global_context, energy], -1))  # (B, C)
            return {"signal": full, "peaks": shared, "class": vector, "threshold": vector}
        signal_features = self.signal(full)  # (B, C, T)
        peak_features = self.peaks(coarse)  # (B, C, L0)
        class_in = torch.cat([self.class_pool(self.class_conv(coarse)), global_context], -1)  # (B, 2C)
        class_vector = self.class_proj(class_in)  # (B, C)
        t = F.relu(self.threshold_conv(coarse))  # (B, C, L0) rectified: amplitude-like
        threshold_stats = torch.cat([t.mean(-1), t.std(-1), max_over_time(t), energy], dim=-1)  # (B, 3C + 3)
        threshold_vector = self.threshold_proj(threshold_stats)  # (B, C)

        tokens = torch.stack(
            [signal_features.mean(-1), peak_features.mean(-1), class_vector, threshold_vector], dim=1
        )  # (B, 4, C)
        q = self.cross_norm(tokens + self.task_embedding)  # (B, 4, C)
        tokens = tokens + self.cross_attention(q, q, q, need_weights=False)[0]  # (B, 4, C)
        return {
            "signal": signal_features + tokens[:, 0].unsqueeze(-1),  # (B, C, T)
            "peaks": peak_features + tokens[:, 1].unsqueeze(-1),  # (B, C, L0)
            "class": tokens[:, 2],  # (B, C)
            "threshold": tokens[:, 3],  # (B, C)
        }


def window_log_energy(signal: Tensor) -> Tensor:
    """log of the mean square of the recording in three equal windows (early, middle, late): (B, 1, T) -> (B, 3)."""
    windows = signal.squeeze(1).tensor_split(3, dim=-1)  # 3 × (B, ~T/3)
    return torch.stack([torch.log(w.pow(2).mean(-1) + 1e-6) for w in windows], dim=-1)  # (B, 3)


class PeakHead(nn.Module):
    """Waves I/III/V: presence logit, latency and amplitude, each with a log σ.

    Per wave a score map over time is turned into a distribution p (softmax); the latency is its expected position
    (a soft-argmax, as a fraction of the window: every latency the recording can show is reachable, unlike a
    squashed range) and the amplitude the p-weighted average of an amplitude map. The features under p, the peak's
    own, give log σ of both, and the presence logit together with the best score.
    """

    def __init__(self, channels: int, cond_dim: int, num_waves: int = 3) -> None:
        super().__init__()
        self.num_waves = num_waves
        self.score = nn.Conv1d(channels, num_waves, kernel_size=1)
        self.amplitude = nn.Conv1d(channels, num_waves, kernel_size=1)
        self.local = nn.Sequential(nn.Linear(channels + cond_dim + 1, channels), nn.GELU(), nn.Linear(channels, 3))

    def forward(self, x: Tensor, cond: Tensor, positions: Tensor) -> dict[str, Tensor]:
        # x (B, C, L), cond (B, D), positions (L,): where each of the L steps lies, as a fraction of the window
        b = x.shape[0]
        scores = self.score(x)  # (B, W, L)
        p = torch.softmax(scores, dim=-1)  # (B, W, L)
        latency = (p * positions).sum(-1)  # (B, W) fraction of the window
        amplitude = (p * self.amplitude(x)).sum(-1)  # (B, W)
        at_peak = torch.einsum("bwl,bcl->bwc", p, x)  # (B, W, C) features under each wave's distribution
        best = max_over_time(scores, keepdim=True)  # (B, W, 1)
        local_in = torch.cat([at_peak, cond.unsqueeze(1).expand(b, self.num_waves, -1), best], dim=-1)
        presence, latency_log_sigma, amplitude_log_sigma = self.local(local_in).unbind(-1)  # (B, W) each
        return {
            "presence": presence,
            "latency": latency,
            "latency_log_sigma": latency_log_sigma,
            "amplitude": amplitude,
            "amplitude_log_sigma": amplitude_log_sigma,
        }


class OptimizedHierarchicalUNet(nn.Module):
    """Multi-task ABR U-Net (see the module docstring for the flow).

    Args:
        signal_length: T, samples per recording (fixes each level's length, hence where attention is used).
        num_static: static parameters per recording (age, intensity, rate, Fmp).
        num_classes: hearing-loss classes.
        num_waves: labelled waves (I, III, V).
        channels: width of each encoder level, top to bottom; the bottleneck has the last width.
        cond_dim: width of the static-parameter embedding that FiLM and the heads receive.
        stem_stride: the U-Net runs on patches of this many samples (L_0 = ceil(T / stem_stride)); the signal path
            returns to full resolution through an upsampling and the stem's full-resolution features. 2 at 20 kHz
            keeps 0.1-ms steps (a wave I lasts ~0.5 ms) and makes every attention 4× cheaper; 1 = no patching.
        min_attention_len: transformer layers only at levels whose sequence is at least this long.
        transformer_layers: transformer layers per level where they are used.
        heads: attention heads everywhere.
        state_size: S4D state size N (N/2 complex modes per channel).
        bottleneck: `s4`, `rescnn` or `s4_rescnn`.
        bottleneck_s4_layers: S4D layers in the bottleneck (for `s4` and `s4_rescnn`).
        rescnn_blocks: ResCNN blocks in the bottleneck (for `rescnn` and `s4_rescnn`).
        dropout: on residual branches (attention, feed-forward, S4D) and in the ResCNN stack.
        use_task_specific_extractors: separate feature extractors per task plus cross-task attention (else one
            shared trunk).
        use_attention_skip_connections: gated attention skip fusion (else concatenation + 1×1 convolution).
        use_multi_scale_attention: multi-scale attention in the peak extractor.
        use_cross_attention: decoder transformers also attend to the mirrored encoder level.
        multi_scale_scales: depthwise-convolution widths of the multi-scale attention (one head each).
        generative: add the diffusion path (`denoise`): a timestep embedding and a learned null embedding of the
            static parameters, both entering the FiLM conditioning of every level, and a v-prediction head on the
            full-resolution map. `forward` (analysis) is unchanged by it.
        class_conditioning: `denoise` is also conditioned on the hearing-loss class (an embedding with a null row).
    """

    def __init__(
        self,
        signal_length: int = 300,
        num_static: int = 4,
        num_classes: int = 5,
        num_waves: int = 3,
        channels: Sequence[int] = (32, 64, 96, 128),
        cond_dim: int = 64,
        stem_stride: int = 2,
        min_attention_len: int = 50,
        transformer_layers: int = 1,
        heads: int = 4,
        state_size: int = 32,
        bottleneck: str = "s4",
        bottleneck_s4_layers: int = 2,
        rescnn_blocks: int = 3,
        dropout: float = 0.1,
        use_task_specific_extractors: bool = True,
        use_attention_skip_connections: bool = True,
        use_multi_scale_attention: bool = True,
        use_cross_attention: bool = True,
        multi_scale_scales: Sequence[int] = (1, 3, 5, 7),
        generative: bool = False,
        class_conditioning: bool = False,
    ) -> None:
        super().__init__()
        channels = tuple(int(c) for c in channels)
        if not channels:
            raise ValueError("channels: need at least one level")
        if stem_stride < 1 or signal_length < 2 * stem_stride:
            raise ValueError(f"stem_stride={stem_stride}, signal_length={signal_length}: need 1 <= 2·stride <= T")
        self.signal_length, self.num_classes, self.num_waves = signal_length, num_classes, num_waves
        self.stem_stride = stem_stride
        self.lengths = level_lengths(-(-signal_length // stem_stride), len(channels))
        # scales every transformer block's residual branches (0 = S4 only); a curriculum may ramp it in from 0. A
        # buffer, so a checkpoint evaluates with the gate it was trained under.
        self.register_buffer("transformer_gate", torch.ones(()))
        top = channels[0]
        # where each patch's centre lies, as a fraction of the window: the peak head's time axis
        centres = torch.arange(self.lengths[0]) * stem_stride + (stem_stride - 1) / 2
        self.register_buffer("positions", (centres / (signal_length - 1)).clamp(max=1.0), persistent=False)

        self.static_embedding = nn.Sequential(nn.Linear(num_static, cond_dim), nn.GELU(), nn.Linear(cond_dim, cond_dim))
        self.stem = nn.Sequential(nn.Conv1d(1, top, kernel_size=7, padding=3), nn.GELU())
        self.patch = nn.Conv1d(top, top, kernel_size=stem_stride, stride=stem_stride)
        # learned position embedding of the patches: ABR waves are time-locked to the click, so every level may use
        # where it is on the time axis (zero at init: learned only where it helps)
        self.position_embedding = nn.Parameter(torch.zeros(top, self.lengths[0]))
        common = dict(cond_dim=cond_dim, min_attention_len=min_attention_len, heads=heads, state_size=state_size)
        self.encoder = nn.ModuleList(
            EncoderLevel(
                in_channels=top if i == 0 else channels[i - 1],
                channels=c,
                length=self.lengths[i],
                transformer_layers=transformer_layers,
                dropout=dropout,
                **common,
            )
            for i, c in enumerate(channels)
        )
        self.bottleneck = Bottleneck(
            channels[-1], cond_dim, bottleneck, bottleneck_s4_layers, rescnn_blocks, state_size, dropout
        )
        self.decoder = nn.ModuleList(
            DecoderLevel(
                in_channels=channels[-1] if i == len(channels) - 1 else channels[i + 1],
                channels=c,
                length=self.lengths[i],
                transformer_layers=transformer_layers,
                dropout=dropout,
                cross_attention=use_cross_attention,
                attention_skip=use_attention_skip_connections,
                **common,
            )
            for i, c in reversed(list(enumerate(channels)))
        )
        self.unpatch = nn.ConvTranspose1d(top, top, kernel_size=stem_stride, stride=stem_stride)
        self.full_fusion = ConcatSkipFusion(top)  # full resolution: exact alignment, no attention
        self.extractors = TaskExtractors(
            top,
            channels[-1],
            heads,
            enabled=use_task_specific_extractors,
            multi_scale_attention=use_multi_scale_attention and use_task_specific_extractors,
            scales=multi_scale_scales,
        )
        self.signal_head = nn.Conv1d(top, 1, kernel_size=1)
        self.peak_head = PeakHead(top, cond_dim, num_waves)
        self.class_head = nn.Sequential(nn.Linear(top + cond_dim, top), nn.GELU(), nn.Linear(top, num_classes))
        self.threshold_head = nn.Sequential(nn.Linear(top + cond_dim, top), nn.GELU(), nn.Linear(top, 2))
        if class_conditioning and not generative:
            raise ValueError("class_conditioning=True needs generative=True (it conditions the diffusion path)")
        self.generative, self.class_conditioning = generative, class_conditioning
        if generative:
            self.time_embedding = TimestepEmbedding(cond_dim)
            self.null_static = nn.Parameter(torch.zeros(cond_dim))  # "no parameters given": classifier-free guidance
            self.class_embedding = nn.Embedding(num_classes + 1, cond_dim) if class_conditioning else None  # last: null
            self.diffusion_head = nn.Sequential(ConvBlock(top, top), nn.Conv1d(top, 1, kernel_size=1))

    def trunk(self, signal: Tensor, cond: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The shared U-Net: full-resolution map (B, C0, T), decoder output (B, C0, L0), bottleneck (B, Cb, Lb)."""
        if signal.ndim != 3 or signal.shape[1] != 1 or signal.shape[-1] != self.signal_length:
            raise ValueError(f"signal has shape {tuple(signal.shape)}, expected (B, 1, {self.signal_length})")
        t, gate = self.signal_length, self.transformer_gate
        full = self.stem(signal)  # (B, C0, T)
        pad = self.lengths[0] * self.stem_stride - t
        h = self.patch(F.pad(full, (0, pad))) + self.position_embedding  # (B, C0, L0)
        skips = []
        for level in self.encoder:
            h, skip = level(h, cond, gate)  # (B, C_i, L_{i+1}), (B, C_i, L_i)
            skips.append(skip)
        z = self.bottleneck(h, cond)  # (B, C_last, L_depth)
        h = z
        for level, skip in zip(self.decoder, reversed(skips), strict=True):
            h = level(h, skip, cond, gate)  # (B, C_i, L_i)
        full = self.full_fusion(self.unpatch(h)[..., :t], full)  # (B, C0, T)
        return full, h, z

    def forward(self, signal: Tensor, static: Tensor) -> dict[str, Tensor]:
        """signal (B, 1, T) normalised recording, static (B, num_static) normalised parameters.

        Returns a dict of tensors: ``signal`` (B, 1, T) on the input's scale; ``presence`` (B, W) logits;
        ``latency`` (B, W) position as a fraction of the window [0, 1] and ``latency_log_sigma`` (B, W) of it in
        the same unit; ``amplitude`` / ``amplitude_log_sigma`` (B, W) on the input's scale; ``class`` (B, C)
        logits; ``threshold`` / ``threshold_log_sigma`` (B,) standardised.
        """
        cond = self.static_embedding(static)  # (B, D)
        full, h, z = self.trunk(signal, cond)  # (B, C0, T), (B, C0, L0), (B, Cb, Lb)
        features = self.extractors(full, h, z, signal)  # per task: (B, C0, T), (B, C0, L0) or (B, C0)
        peaks = self.peak_head(features["peaks"], cond, self.positions)  # (B, W) each
        class_logits = self.class_head(torch.cat([features["class"], cond], -1))  # (B, num_classes)
        threshold, threshold_log_sigma = self.threshold_head(torch.cat([features["threshold"], cond], -1)).unbind(-1)
        return {
            "signal": self.signal_head(features["signal"]),  # (B, 1, T)
            **peaks,
            "class": class_logits,
            "threshold": threshold,  # (B,)
            "threshold_log_sigma": threshold_log_sigma,  # (B,)
        }

    def generative_condition(
        self, static: Tensor, t: Tensor, label: Tensor | None = None, drop: Tensor | None = None
    ) -> Tensor:
        """FiLM conditioning of the diffusion path (B, D): the static embedding (the null embedding where `drop`),
        plus the timestep's embedding, plus the class's (the null class where `drop` or no `label`)."""
        if not self.generative:
            raise RuntimeError("this network has no diffusion path: build it with generative=True")
        b = static.shape[0]
        cond = self.static_embedding(static)  # (B, D)
        if drop is not None:
            cond = torch.where(drop.reshape(b, 1), self.null_static.expand(b, -1), cond)  # (B, D)
        cond = cond + self.time_embedding(t.expand(b) if t.ndim == 0 else t)  # (B, D)
        if self.class_embedding is not None:
            null = torch.full((b,), self.num_classes, dtype=torch.long, device=static.device)
            index = null if label is None else label.long()
            if drop is not None:
                index = torch.where(drop.reshape(b), null, index)
            cond = cond + self.class_embedding(index)  # (B, D)
        return cond

    def denoise(
        self, x_t: Tensor, static: Tensor, t: Tensor, label: Tensor | None = None, drop: Tensor | None = None
    ) -> Tensor:
        """The diffusion path: v prediction (B, 1, T) for the noised clean signal `x_t` (B, 1, T) at noise level
        `t` (B,) in [0, 1], given normalised static parameters (B, num_static), the class (B,) if the network is
        class-conditioned, and which examples to treat as unconditional (`drop`, (B,) bool)."""
        cond = self.generative_condition(static, t, label, drop)  # (B, D)
        full, _, _ = self.trunk(x_t, cond)  # (B, C0, T)
        return self.diffusion_head(full)  # (B, 1, T)

    def heads(self) -> dict[str, nn.Module]:
        """The output heads by task: signal, peaks (presence, latency, amplitude), class, threshold (and the
        diffusion head of a generative network)."""
        heads: dict[str, nn.Module] = {
            "signal": self.signal_head,
            "peaks": self.peak_head,
            "class": self.class_head,
            "threshold": self.threshold_head,
        }
        if self.generative:
            heads["diffusion"] = self.diffusion_head
        return heads

    def transformer_levels(self) -> dict[str, list[int]]:
        """Lengths of the encoder and decoder levels that hold transformer layers (for tests and summaries)."""
        return {
            "encoder": [lvl.length for lvl in self.encoder if len(lvl.transformers)],
            "decoder": [lvl.length for lvl in self.decoder if len(lvl.transformers)],
        }


# Registered variants. `optimized_unet` is the full model (5.5 M parameters; the GPU recipe, experiment=unet_full);
# `optimized_unet_cpu` (0.85 M) runs on patches of 4 samples (0.2 ms at 20 kHz: attention at one level each way)
# so the default recipe trains on a 2-core CPU within 20 minutes; `optimized_unet_tiny` is for tests.
register_variant("optimized_unet", OptimizedHierarchicalUNet, FAMILY, channels=(64, 128, 192, 256), cond_dim=128)
register_variant(
    "optimized_unet_cpu", OptimizedHierarchicalUNet, FAMILY, channels=(32, 48, 64, 96), cond_dim=64, stem_stride=4
)
register_variant(
    "optimized_unet_tiny",
    OptimizedHierarchicalUNet,
    FAMILY,
    channels=(8, 16),
    cond_dim=8,
    heads=2,
    state_size=8,
    bottleneck_s4_layers=1,
    rescnn_blocks=1,
    multi_scale_scales=(1, 3),
)
