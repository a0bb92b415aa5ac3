"""Blocks shared between model families: `s4d` (diagonal state-space layer), `rescnn` (multi-scale residual CNN),
`attention` (transformer, skip-fusion and multi-scale attention blocks), `film` (feature-wise modulation)."""

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
from abr_lab.layers.film import FiLM
from abr_lab.layers.rescnn import ResCNNBlock, ResCNNStack
from abr_lab.layers.s4d import S4D, S4DKernel

__all__ = [
    "S4D",
    "AttentionSkipFusion",
    "ConcatSkipFusion",
    "EntropyProbe",
    "FiLM",
    "MultiScaleAttention",
    "ProbedAttention",
    "ResCNNBlock",
    "ResCNNStack",
    "S4DKernel",
    "TransformerBlock",
    "attention_entropy",
    "sinusoidal_positions",
]
