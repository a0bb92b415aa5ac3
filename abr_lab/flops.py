"""FLOP formulas for the kernels `torch.utils.flop_counter.FlopCounterMode` has none for, registered on import.

PyTorch's table counts matrix products, convolutions and the GPU attention kernels. Without these formulas it counts
0 for the fused attention kernel CPUs run (the U-Net's attention), `nn.MultiheadAttention`'s fused kernel (its fast
path in eval mode without gradients, as in the model summary), the oneDNN LSTM layer CPUs run (the LSTM extractor's
network) and cuDNN's recurrent kernel (every LSTM and GRU on a GPU), forward and backward, so Lightning's model
summary and `scripts/benchmark.py` would show those layers as free. Counted as PyTorch counts the rest: 2 FLOPs per
multiply-add of the matrix products (a recurrent layer: each weight matrix once per time step and sequence; its
gates' elementwise ops are not counted). Still not counted: FFTs (the S4D convolutions) and elementwise ops.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch.utils.flop_counter import (
    flop_registry,
    register_flop_formula,
    sdpa_backward_flop_count,
    sdpa_flop_count,
)

aten = torch.ops.aten

FLOPS_NOT_COUNTED = "FFTs (the S4D convolutions) and elementwise ops (activations, norms, softmax, S4D kernel powers)"


def recurrent_flops(input_shape: Sequence[int], weight_shapes: Sequence[Sequence[int] | None]) -> int:
    """FLOPs of a recurrent kernel: every weight matrix (gates × inputs, input-to-hidden, hidden-to-hidden or
    projection) multiplies one vector per time step and sequence. `input_shape` is (t, b, in), (b, t, in) or packed
    (t·b, in); biases (1-D) are additions and not counted."""
    vectors = math.prod(input_shape[:-1])  # time steps × sequences
    return 2 * vectors * sum(math.prod(w) for w in weight_shapes if w is not None and len(w) == 2)


def mkldnn_rnn_layer_flop(
    input_shape: Sequence[int], w_ih: Sequence[int], w_hh: Sequence[int], *args: Any, **kwargs: Any
) -> int:
    """One layer and direction of the oneDNN LSTM that `nn.LSTM` runs on a CPU."""
    return recurrent_flops(input_shape, [w_ih, w_hh])


def cudnn_rnn_flop(
    input_shape: Sequence[int], weight_shapes: Sequence[Sequence[int]], *args: Any, **kwargs: Any
) -> int:
    """cuDNN's LSTM / GRU / RNN, every layer and direction in one call (their weights listed in `weight_shapes`)."""
    return recurrent_flops(input_shape, weight_shapes)


def mkldnn_rnn_layer_backward_flop(
    input_shape: Sequence[int], w_ih: Sequence[int], w_hh: Sequence[int], *args: Any, **kwargs: Any
) -> int:
    """Its backward: each product twice again (the gradients of its inputs and of its weights)."""
    return 2 * recurrent_flops(input_shape, [w_ih, w_hh])


def cudnn_rnn_backward_flop(
    input_shape: Sequence[int], weight_shapes: Sequence[Sequence[int]], *args: Any, **kwargs: Any
) -> int:
    """Its backward (data and weight gradients): each product twice again."""
    return 2 * recurrent_flops(input_shape, weight_shapes)


def native_multi_head_attention_flop(
    query: Sequence[int], key: Sequence[int], value: Sequence[int], embed_dim: int, *args: Any, **kwargs: Any
) -> int:
    """`nn.MultiheadAttention`'s fused kernel (its fast path in eval mode without gradients): the input projections
    of query, key and value, the attention over every head (2 products of Lq x Lk x E), the output projection.
    Shapes are (b, l, E), as the fast path needs ``batch_first``."""
    b, lq = query[0], query[1]
    lk = key[1]
    projections = 2 * b * embed_dim * embed_dim * (lq + lk + lk + lq)  # q, k, v in; out
    return projections + 2 * (2 * b * lq * lk * embed_dim)


def cpu_attention_flop(
    query: Sequence[int], key: Sequence[int], value: Sequence[int], *args: Any, **kwargs: Any
) -> int:
    """The fused attention kernel of CPUs: the formula PyTorch gives its GPU kernels."""
    return sdpa_flop_count(query, key, value)


def cpu_attention_backward_flop(
    grad: Sequence[int], query: Sequence[int], key: Sequence[int], value: Sequence[int], *args: Any, **kwargs: Any
) -> int:
    return sdpa_backward_flop_count(grad, query, key, value)


FORMULAS = {
    "mkldnn_rnn_layer": mkldnn_rnn_layer_flop,
    "mkldnn_rnn_layer_backward": mkldnn_rnn_layer_backward_flop,
    "_cudnn_rnn": cudnn_rnn_flop,
    "_cudnn_rnn_backward": cudnn_rnn_backward_flop,
    "_native_multi_head_attention": native_multi_head_attention_flop,
    "_scaled_dot_product_flash_attention_for_cpu": cpu_attention_flop,
    "_scaled_dot_product_flash_attention_for_cpu_backward": cpu_attention_backward_flop,
}


def register() -> None:
    """Add each formula to PyTorch's table unless this build has the op's own (a later PyTorch may) or lacks the op."""
    for name, formula in FORMULAS.items():
        op = getattr(aten, name, None)
        if op is not None and op not in flop_registry:
            register_flop_formula(op)(formula)


register()
