"""Blocks shared between model families: `s4d` (diagonal state-space layer), `rescnn` (multi-scale residual CNN),
`attention` (transformer, skip-fusion and multi-scale attention blocks), `film` (feature-wise modulation), `sinc`
(mel- or linearly spaced sinc band-pass filterbank), `fpn` (feature pyramid network), `cosine` (one-class cosine
head of OC-softmax)."""

from abr_lab.layers.attention import (
    AttentionSkipFusion,
    ConcatSkipFusion,
    EntropyProbe,
    MultiScaleAttention,
    ProbedAttention,
    TransformerBlock,
    attention_entropy,
    sinusoidal_positions,
)
from abr_lab.layers.cosine import OneClassCosineHead
from abr_lab.layers.film import FiLM
from abr_lab.layers.fpn import FeaturePyramid
from abr_lab.layers.rescnn import ResCNNBlock, ResCNNStack
from abr_lab.layers.s4d import S4D, S4DKernel
from abr_lab.layers.sinc import SincFilterbank

__all__ = [
    "S4D",
    "AttentionSkipFusion",
    "ConcatSkipFusion",
    "EntropyProbe",
    "FeaturePyramid",
    "FiLM",
    "MultiScaleAttention",
    "OneClassCosineHead",
    "ProbedAttention",
    "ResCNNBlock",
    "ResCNNStack",
    "S4DKernel",
    "SincFilterbank",
    "TransformerBlock",
    "attention_entropy",
    "sinusoidal_positions",
]
