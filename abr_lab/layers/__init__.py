"""Blocks shared between model families: `s4d` (diagonal state-space layer), `rescnn` (multi-scale residual CNN)."""

from abr_lab.layers.rescnn import ResCNNBlock, ResCNNStack
from abr_lab.layers.s4d import S4D, S4DKernel

__all__ = ["S4D", "ResCNNBlock", "ResCNNStack", "S4DKernel"]
