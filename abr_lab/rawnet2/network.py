"""RawNet2 networks: the ASVspoof 2021 baseline (`RawNet2`), the seed's compact residual CNN (`RawNet2Lite`), and
an ensemble of either (`RawNet2Ensemble`, score-level fusion).

All map a batch of raw 16 kHz waveforms (b, t) to two logits (b, 2), class 0 = spoof, 1 = bona fide. Neither ends
in a sigmoid or softmax: losses take logits, and the detection score is the log-odds of bona fide,
``logits[:, 1] − logits[:, 0]`` (`bonafide_score`), which ranks clips exactly as the reference's log-softmax does but
never saturates.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from abr_lab.layers.cosine import OneClassCosineHead
from abr_lab.layers.sinc import SincFilterbank
from abr_lab.registry import create_model, register_variant

FAMILY = "rawnet2"
ENSEMBLE = "rawnet2_ensemble"  # the registered name of `RawNet2Ensemble`
SPOOF, BONAFIDE = 0, 1
CLASS_NAMES = ("spoof", "bonafide")
HEADS = ("linear", "one_class")
FRONT_ENDS = ("abs_pool", "log_energy")
READOUTS = ("last", "mean")
LOG_FLOOR = 1e-10  # floor of the band energies before the log: digital silence stays finite (as LFCC's)


def classifier_head(head: str, in_features: int, num_classes: int, scale: float, centre: float) -> nn.Module:
    """The last layer: ``linear`` (the reference's FC) or ``one_class`` (`OneClassCosineHead`, bona fide the target
    direction; with `model.logit_margin` it trains as OC-softmax)."""
    if head == "linear":
        return nn.Linear(in_features, num_classes)
    if head == "one_class":
        if num_classes != len(CLASS_NAMES):
            raise ValueError(f"head='one_class' scores two classes (spoof, bonafide), got num_classes={num_classes}")
        return OneClassCosineHead(in_features, scale=scale, centre=centre)
    raise ValueError(f"head={head!r}: expected one of {'|'.join(HEADS)}")


def bonafide_score(logits: Tensor) -> Tensor:
    """Detection score from (b, 2) logits: log P(bona fide) − log P(spoof), (b,). Higher means bona fide."""
    return logits[:, BONAFIDE] - logits[:, SPOOF]


def log_band_energies(bands: Tensor, frame_length: int, frame_shift: int) -> Tensor:
    """Log mean power of each band per frame: (b, c, t) -> (b, c, 1 + (t − frame_length) // frame_shift).

    With band-pass filtered audio as input this is a log filterbank energy (what LFCC or log-mel features hold before
    their DCT), a smooth envelope in which a gain or a level difference between bands is an additive offset, where
    the reference's |·| and max-pool keep a rectified waveform on a linear scale.
    """
    power = F.avg_pool1d(bands.square(), frame_length, frame_shift)  # (b, c, frames)
    return torch.log(power.clamp_min(LOG_FLOOR))


def _as_waveforms(x: Tensor) -> Tensor:
    """(b, t) or (b, 1, t) -> (b, 1, t), refusing anything else with the shape in the message."""
    if x.ndim == 2:
        return x[:, None, :]
    if x.ndim == 3 and x.shape[1] == 1:
        return x
    raise ValueError(f"expected waveforms of shape (batch, samples) or (batch, 1, samples), got {tuple(x.shape)}")


class FeatureMapScaling(nn.Module):
    """Filter-wise feature-map scaling (Jung et al. 2020): s = sigmoid(W · mean_t(x) + b); x <- x·s + s.

    Each filter gets a scale in (0, 1) computed from its own time-average, applied both multiplicatively and
    additively, so informative filters are emphasised without ever being switched off completely.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.fc = nn.Linear(channels, channels)

    def forward(self, x: Tensor) -> Tensor:
        s = torch.sigmoid(self.fc(x.mean(dim=-1)))[:, :, None]  # (b, c) -> (b, c, 1)
        return x * s + s  # (b, c, t)


class RawNet2Block(nn.Module):
    """Residual block of the reference: conv3 -> BN -> LeakyReLU(0.3) -> conv3, 1×1 conv on the skip when the width
    changes, sum, max-pool 3 (`pool`; 1 keeps every frame); (b, c_in, t) -> (b, c_out, t // pool).

    `legacy_preact_bn` reproduces the reference's pre-activation ``bn1`` (every block but the first): it is computed
    (its running statistics move) and its output discarded, because the reference passes the block's input, not the
    normalised one, to ``conv1``. Its weight and bias therefore never get a gradient. Only useful to load the
    reference's checkpoints, whose state dicts hold those tensors.
    """

    def __init__(
        self, in_channels: int, out_channels: int, first: bool, legacy_preact_bn: bool = False, pool: int = 3
    ) -> None:
        super().__init__()
        if pool < 1:
            raise ValueError(f"pool={pool}: need >= 1")
        self.bn1 = nn.BatchNorm1d(in_channels) if legacy_preact_bn and not first else None
        self.conv1 = nn.Conv1d(in_channels, out_channels, kernel_size=3, padding=1)
        self.bn2 = nn.BatchNorm1d(out_channels)
        self.conv2 = nn.Conv1d(out_channels, out_channels, kernel_size=3, padding=1)
        self.conv_downsample = (
            nn.Conv1d(in_channels, out_channels, kernel_size=1) if in_channels != out_channels else None
        )
        self.pool = nn.MaxPool1d(pool) if pool > 1 else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        if self.bn1 is not None:
            F.leaky_relu(self.bn1(x), 0.3)  # the reference's discarded pre-activation (updates running stats)
        out = F.leaky_relu(self.bn2(self.conv1(x)), 0.3)  # (b, c_out, t)
        out = self.conv2(out)  # (b, c_out, t)
        skip = x if self.conv_downsample is None else self.conv_downsample(x)  # (b, c_out, t)
        return self.pool(out + skip)  # (b, c_out, t // pool)


class RawNet2(nn.Module):
    """The ASVspoof 2021 RawNet2 baseline (Tak et al., ICASSP 2021), end to end on raw waveforms.

    sinc filterbank (mel-spaced band-pass) -> |·| -> max-pool 3 -> BN -> SELU -> six residual blocks, each followed by
    feature-map scaling -> BN -> SELU -> GRU (last step) -> FC -> FC (logits). With the defaults (the reference
    config: 64,600-sample input, 20 filters of 1,025 taps, blocks 20-20-128-128-128-128, GRU 3 × 1,024, FC 1,024)
    it has 17,620,562 parameters, 17,621,410 with `legacy_preact_bn` (the reference's count).

    Args:
        sinc_channels: number of sinc band-pass filters.
        sinc_kernel: taps per filter (even numbers are made odd).
        sample_rate: of the input, Hz; the filters span 0 .. sample_rate / 2, spaced by `sinc_scale`.
        sinc_learnable: learn the filters' cut-offs (Jung et al. 2020) instead of the fixed mel bank.
        sinc_scale: spacing of the cut-offs, ``mel`` (the reference) or ``linear`` (`SincFilterbank`).
        block_channels: output width of each residual block (the first block's input is `sinc_channels` wide).
        gru_hidden, gru_layers: the GRU summarising the frame sequence.
        fc_hidden: width of the first fully connected layer (no activation follows it, as the reference).
        num_classes: logits out (2: spoof, bona fide).
        legacy_preact_bn: keep the reference's computed-then-discarded BN in each block (see `RawNet2Block`).
        head: the last layer, ``linear`` (the reference) or ``one_class`` (cosine to one bona fide direction,
            `OneClassCosineHead`; in place of FC 2, on the FC 1 embedding).
        head_scale, head_centre: the ``one_class`` head's log-odds ``head_scale · (cos − head_centre)``.
        front_end: what follows the sinc filters: ``abs_pool`` (the reference: |·|, max-pool 3) or ``log_energy``
            (`log_band_energies`: log mean power per `frame_length`-sample frame every `frame_shift` samples).
        frame_length, frame_shift: the ``log_energy`` frames, in samples (320 and 160 = 20 ms every 10 ms at
            16 kHz, LFCC's framing).
        block_pool: max-pool of each residual block, one size for all or one per block (3 = the reference).
        readout: what the FC layers read, ``last`` (the reference: the GRU's last step, which can decide on a few
            frames) or ``mean`` (the GRU's steps averaged; with the linear head that is the mean of per-step logits,
            so every part of the clip counts, as in the LFCC baselines' mean frame score).
    """

    def __init__(
        self,
        sinc_channels: int = 20,
        sinc_kernel: int = 1024,
        sample_rate: float = 16_000.0,
        sinc_learnable: bool = False,
        sinc_scale: str = "mel",
        block_channels: Sequence[int] = (20, 20, 128, 128, 128, 128),
        gru_hidden: int = 1024,
        gru_layers: int = 3,
        fc_hidden: int = 1024,
        num_classes: int = 2,
        legacy_preact_bn: bool = False,
        head: str = "linear",
        head_scale: float = 20.0,
        head_centre: float = 0.55,
        front_end: str = "abs_pool",
        frame_length: int = 320,
        frame_shift: int = 160,
        block_pool: int | Sequence[int] = 3,
        readout: str = "last",
    ) -> None:
        super().__init__()
        if not block_channels:
            raise ValueError("block_channels: need at least one residual block")
        if front_end not in FRONT_ENDS:
            raise ValueError(f"front_end={front_end!r}: expected one of {'|'.join(FRONT_ENDS)}")
        if readout not in READOUTS:
            raise ValueError(f"readout={readout!r}: expected one of {'|'.join(READOUTS)}")
        if frame_length < 1 or frame_shift < 1:
            raise ValueError(f"frame_length={frame_length}, frame_shift={frame_shift}: need >= 1")
        pools = [block_pool] * len(block_channels) if isinstance(block_pool, int) else [int(p) for p in block_pool]
        if len(pools) != len(block_channels):
            raise ValueError(f"block_pool={list(pools)}: need one size or one per block ({len(block_channels)})")
        self.front_end, self.readout = front_end, readout
        self.frame_length, self.frame_shift = frame_length, frame_shift
        self.sinc = SincFilterbank(sinc_channels, sinc_kernel, sample_rate, learnable=sinc_learnable, scale=sinc_scale)
        self.first_bn = nn.BatchNorm1d(sinc_channels)
        widths = [sinc_channels, *block_channels]
        self.blocks = nn.ModuleList(
            RawNet2Block(c_in, c_out, first=i == 0, legacy_preact_bn=legacy_preact_bn, pool=pool)
            for i, (c_in, c_out, pool) in enumerate(zip(widths[:-1], widths[1:], pools, strict=True))
        )
        self.pools = tuple(pools)
        self.fms = nn.ModuleList(FeatureMapScaling(c) for c in block_channels)
        self.bn_before_gru = nn.BatchNorm1d(widths[-1])
        self.gru = nn.GRU(widths[-1], gru_hidden, num_layers=gru_layers, batch_first=True)
        self.fc1 = nn.Linear(gru_hidden, fc_hidden)
        self.fc2 = classifier_head(head, fc_hidden, num_classes, head_scale, head_centre)

    @property
    def min_samples(self) -> int:
        """Shortest input that leaves at least one frame for the GRU."""
        frames = math.prod(self.pools)  # front-end frames the blocks need for one
        if self.front_end == "abs_pool":
            return self.sinc.kernel_size - 1 + 3 * frames
        return self.sinc.kernel_size - 1 + self.frame_length + (frames - 1) * self.frame_shift

    def forward(self, x: Tensor) -> Tensor:
        x = _as_waveforms(x)  # (b, 1, t)
        if x.shape[-1] < self.min_samples:
            raise ValueError(f"RawNet2 needs at least {self.min_samples} samples per clip, got {x.shape[-1]}")
        x = self.sinc(x)  # (b, c0, t − k + 1)
        if self.front_end == "abs_pool":
            x = F.max_pool1d(x.abs(), 3)  # (b, c0, t1 = (t − k + 1) // 3)
        else:
            x = log_band_energies(x, self.frame_length, self.frame_shift)  # (b, c0, t1 = frames of 10 ms)
        x = F.selu(self.first_bn(x))
        for block, fms in zip(self.blocks, self.fms, strict=True):
            x = fms(block(x))  # (b, c_i, t_i / pool_i)
        x = F.selu(self.bn_before_gru(x))  # (b, c, frames)
        x, _ = self.gru(x.transpose(1, 2))  # (b, frames, h)
        x = x[:, -1] if self.readout == "last" else x.mean(dim=1)  # (b, h): the last step, or all steps averaged
        return self.fc2(self.fc1(x))  # (b, fc) -> (b, classes) logits


class RawNet2Ensemble(nn.Module):
    """Several networks of one registered variant whose logits are averaged: score-level fusion, as ASVspoof
    systems fuse their countermeasures.

    Because the score is linear in the logits (`bonafide_score`), the ensemble's score is exactly the mean of the
    members' scores. Members trained apart (another seed, other data) swing on different clips of attacks that
    training never saw, so their mean is steadier than any one of them (the RawNet2 section of the README has the
    figures). Combine trained checkpoints with `abr_lab.rawnet2.ensemble.ensemble_checkpoints`; trained from scratch
    (``model.arch=rawnet2_ensemble``), each member learns from its own loss (`RawNet2Module.training_step`), a deep
    ensemble in one run whose members differ by their initial weights.

    Args:
        member: the registered variant of every member (``rawnet2``, ``rawnet2_logband``, ...).
        size: number of members (>= 2).
        **member_kwargs: overrides of the variant, the same for every member.
    """

    def __init__(self, member: str = "rawnet2", size: int = 2, **member_kwargs: Any) -> None:
        super().__init__()
        if member == ENSEMBLE:
            raise ValueError(f"RawNet2Ensemble: member={ENSEMBLE!r}: an ensemble of ensembles is one ensemble")
        if size < 2:
            raise ValueError(f"RawNet2Ensemble: size={size}: need at least two members")
        self.member = member
        self.members = nn.ModuleList(create_model(member, **member_kwargs) for _ in range(size))

    def member_logits(self, x: Tensor) -> Tensor:
        """(b, t) waveforms -> (m, b, 2): each member's logits."""
        return torch.stack([net(x) for net in self.members])

    def forward(self, x: Tensor) -> Tensor:
        return self.member_logits(x).mean(dim=0)  # (m, b, 2) -> (b, 2) logits


# The reference implementation's module names (Tak et al.'s `model.py`) -> ours, for loading its checkpoints.
_REFERENCE_PREFIXES: tuple[tuple[str, str], ...] = (
    *((f"block{i}.0.", f"blocks.{i}.") for i in range(16)),
    *((f"fc_attention{i}.0.", f"fms.{i}.fc.") for i in range(16)),
    ("fc1_gru.", "fc1."),
    ("fc2_gru.", "fc2."),
)


def convert_reference_state_dict(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """A state dict saved by the reference RawNet2 renamed for `RawNet2(legacy_preact_bn=True)`.

    Keys that are already ours (``first_bn``, ``bn_before_gru``, ``gru``) pass unchanged; the reference stores no
    sinc filters (it rebuilt them every forward pass), and neither do we (a non-persistent buffer).
    """
    out = {}
    for key, value in state_dict.items():
        key = key.removeprefix("module.")  # saved from nn.DataParallel
        for old, new in _REFERENCE_PREFIXES:
            if key.startswith(old):
                key = new + key[len(old) :]
                break
        out[key] = value
    return out


class LiteBlock(nn.Module):
    """Residual block that owns its skip path: conv3(stride) -> BN -> LeakyReLU -> conv3 -> BN, plus the input
    (or its 1×1 strided projection when the shape changes), then LeakyReLU; (b, c_in, t) -> (b, c_out, t / stride)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.main = nn.Sequential(
            nn.Conv1d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=False),
            nn.BatchNorm1d(out_channels),
            nn.LeakyReLU(0.3),
            nn.Conv1d(out_channels, out_channels, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm1d(out_channels),
        )
        self.skip: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.skip = nn.Sequential(
                nn.Conv1d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm1d(out_channels),
            )

    def forward(self, x: Tensor) -> Tensor:
        return F.leaky_relu(self.main(x) + self.skip(x), 0.3)  # (b, c_out, t / stride)


class RawNet2Lite(nn.Module):
    """The seed's compact 1-D ResNet on raw waveforms (0.58 M parameters), with each block owning its skip path.

    stem conv (32) -> blocks 32, 32→64 /2, 64, 64→128 /2, 128, 128→256 /2 -> global average pool -> FC 64 ->
    LeakyReLU -> FC (logits). With the seed's stem (kernel 3, stride 1) the first two blocks run at the full
    sample rate: a training step keeps 324 MB of activations per 64,600-sample clip in fp32 (81 MB with
    ``stem_kernel=8, stem_stride=4``; `scripts/benchmark.py rawnet2`); `stem_stride` > 1 downsamples at once.

    Args:
        stem_channels: width of the stem and of the first blocks.
        stem_kernel, stem_stride: the stem convolution (3, 1 = the seed's).
        num_classes: logits out.
        head, head_scale, head_centre: the last layer, as `RawNet2`'s.
    """

    def __init__(
        self,
        stem_channels: int = 32,
        stem_kernel: int = 3,
        stem_stride: int = 1,
        num_classes: int = 2,
        head: str = "linear",
        head_scale: float = 20.0,
        head_centre: float = 0.55,
    ) -> None:
        super().__init__()
        if stem_kernel < 1 or stem_stride < 1:
            raise ValueError(f"stem_kernel={stem_kernel}, stem_stride={stem_stride}: need >= 1")
        c = stem_channels
        self.stem = nn.Sequential(
            nn.Conv1d(1, c, kernel_size=stem_kernel, stride=stem_stride, padding=stem_kernel // 2, bias=False),
            nn.BatchNorm1d(c),
            nn.LeakyReLU(0.3),
        )
        plan = [(c, c, 1), (c, 2 * c, 2), (2 * c, 2 * c, 1), (2 * c, 4 * c, 2), (4 * c, 4 * c, 1), (4 * c, 8 * c, 2)]
        self.blocks = nn.Sequential(*(LiteBlock(i, o, s) for i, o, s in plan))
        self.fc1 = nn.Linear(8 * c, 64)
        self.fc2 = classifier_head(head, 64, num_classes, head_scale, head_centre)

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem(_as_waveforms(x))  # (b, c, t / stride)
        x = self.blocks(x)  # (b, 8c, t / (8 stride))
        x = x.mean(dim=-1)  # (b, 8c) global average pool
        return self.fc2(F.leaky_relu(self.fc1(x), 0.3))  # (b, classes) logits


register_variant("rawnet2", RawNet2, FAMILY)
register_variant("rawnet2_lite", RawNet2Lite, FAMILY)
register_variant(ENSEMBLE, RawNet2Ensemble, FAMILY)
# RawNet2 on log band energies: the LFCC baselines' view of the signal (20 linear bands, log power every 10 ms)
# through the reference's residual blocks, FMS and GRU; the blocks pool only at the end (frames of a
# 64,600-sample clip: 396 -> 44 for the GRU), and the clip score is the mean over the GRU's steps
register_variant(
    "rawnet2_logband",
    RawNet2,
    FAMILY,
    sinc_scale="linear",
    front_end="log_energy",
    block_pool=(1, 1, 1, 1, 3, 3),
    readout="mean",
)
# a few thousand parameters and 64-tap filters: for tests and smoke runs on clips of ~0.3 s
register_variant(
    "rawnet2_tiny",
    RawNet2,
    FAMILY,
    sinc_channels=8,
    sinc_kernel=64,
    block_channels=(8, 8, 16, 16),
    gru_hidden=16,
    gru_layers=1,
    fc_hidden=16,
)
